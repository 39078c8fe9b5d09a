"""Event contracts: the payload schema, version and description of each event type, in the .tsk.

(About 620 lines: loading, compiling and the human-readable validation messages; flows and
evolution are in ``flows.py`` and ``compat.py``.)

A config declares them in a ``[contracts]`` section, one block per event type::

    [contracts]
    unknown_events: "allow"          # or "reject": an event type without a contract is refused
    title: "Sign-up events"          # optional: the AsyncAPI document's title...
    api_version: "1.2.0"             # ...and version (``tusk-events docs``)

    user_registered {
        version: 1                   # optional, 1 by default
        description: "A person signed up"
        schema: {
            type: "object"
            required: ["user_id", "email"]
            properties: {
                user_id: {type: "integer", minimum: 1}
                email: {type: "string"}
                code: {type: "string", pattern: '^[A-Z]{2}\\d+$'}
            }
        }
    }

    # several versions of one type: one block per version, named v<N>
    profile_created {
        description: "A profile exists for a user"     # shared by the versions
        v1 {
            schema: {type: "object", required: ["user_id"]}
        }
        v2 {
            description: "adds the display name"
            schema: '{"type": "object", "required": ["user_id", "display_name"]}'
        }
    }

    # a type that is not a bare word: a quoted key and an object
    "order.placed": {
        schema: {type: "object"}
    }

A schema is JSON Schema, draft-07 unless its ``$schema`` names draft-04, draft-06 or 2019-09
(draft-07 is what AsyncAPI 3.0 message payloads are written in), written as TuskLang objects
or as a JSON string. ``$ref`` may only point inside the schema (``#/definitions/...``): loading
a config never fetches anything. Write patterns in single quotes, which keep backslashes.
Formats (``email``, ``date-time``, ``uri``...) are checked. Every schema is compiled (with
fastjsonschema) when the config is loaded; a broken one is a :class:`ConfigError`.

Versions and events: an event carries the version its payload follows in
``metadata["schema_version"]``. Publishing through the runtime (``publish`` in a fujsen,
:meth:`Runtime.publish` / ``publish_event`` in host code), through a TSK's own ``publish``
helper, or through a bus wrapped by :meth:`Contracts.guard` checks the payload against that
version, or against the latest one (and stamps it) when the event names none; a payload that
breaks it raises :class:`ContractError` and nothing is stored or sent. Events that reach a
service from elsewhere are checked the same way before the handler runs; one that breaks its
contract goes to the service's dead-letter queue with the reason (``attempts`` 0: the handler
was never called). The contract section of several configs run together is merged.

Evolution (:mod:`tusk_events.contracts.compat`): :func:`~tusk_events.contracts.compat.compare` lists what changed
between two configs' contracts and which changes break existing consumers (``tusk-events check
NEW --against OLD``). Compatibility means both ways: events valid under the old contract still
pass the new one (stored events, producers not yet redeployed), and consumers written for the
old contract still find every field they read, with the type and values they expect. Which
fields a consumer reads is taken from its handler's source (``x["field"]``,
``x.get("field")``), by name.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, Self

from tusk_events.defaults import (
    CONTRACT_DEFAULT_DRAFT,
    CONTRACT_UNKNOWN_EVENTS,
    CONTRACT_VALUE_SHOWN,
    CONTRACTS_SECTION,
    SCHEMA_VERSION_KEY,
)
from tusk_events.errors import ConfigError, ContractError
from tusk_events.events import Event, new_event

if TYPE_CHECKING:
    from tusk_events.bus import Bus


class TSK(Protocol):
    """What contracts read from a config (:class:`tusk_events.config.TSK` is one); a protocol,
    so this layer never imports the config layer above it."""

    path: str | None
    env: Mapping[str, str]
    contracts: Contracts

    @property
    def bus_url(self) -> str: ...
    def sections(self) -> dict[str, dict[str, Any]]: ...
    def get_section(self, name: str) -> Any: ...
    def get_value_anywhere(self, key: str) -> Any: ...

UNKNOWN_EVENTS_MODES: tuple[str, ...] = ("allow", "reject")
_SECTION_SETTINGS = frozenset({"unknown_events", "title", "api_version", "description"})
_CONTRACT_KEYS = frozenset({"version", "description", "schema"})
_VERSION_BLOCK = re.compile(r"v([1-9][0-9]*)")
_DRAFTS = (("draft-04", "draft-04"), ("draft-06", "draft-06"), ("draft-07", "draft-07"),
           ("draft/2019-09", "2019-09"))
_REMOTE_SCHEMES = ("http", "https", "file", "ftp")


# --- the model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ContractVersion:
    """One version of one event type's contract, its validator compiled once."""

    type: str
    version: int
    description: str
    schema: Any
    """The JSON Schema as written (a dict, or a boolean)."""
    draft: str
    validator: Callable[..., Any] = field(repr=False, compare=False)
    where: str = field(default="", compare=False)
    """``path:line`` of its declaration, for messages."""

    def violation(self, payload: Any) -> str | None:
        """Why ``payload`` breaks this version (``type vN: payload.field: rule``), or None."""
        try:
            self.validator(payload, name_prefix="payload")
        except _value_error() as err:
            return f"{self.type} v{self.version}: {_describe(err)}"
        return None


@dataclass(frozen=True)
class Contract:
    """Every declared version of one event type's contract."""

    type: str
    description: str
    versions: Mapping[int, ContractVersion]
    """By version number, ascending."""

    @cached_property
    def latest(self) -> ContractVersion:
        """The version an event without ``schema_version`` is checked against (and stamped with)."""
        return self.versions[max(self.versions)]


class Contracts:
    """The contracts of one config (or of several, merged), and the checks made with them.

    An empty instance (no ``[contracts]`` section) checks nothing and costs one attribute
    test per event.
    """

    def __init__(
        self,
        contracts: Mapping[str, Contract] | None = None,
        *,
        unknown_events: str = CONTRACT_UNKNOWN_EVENTS,
        title: str | None = None,
        api_version: str | None = None,
        description: str | None = None,
        sources: Sequence[str] = (),
    ) -> None:
        if unknown_events not in UNKNOWN_EVENTS_MODES:
            raise ConfigError(f"unknown_events must be one of {', '.join(UNKNOWN_EVENTS_MODES)}, "
                              f"not {unknown_events!r}")
        self._by_type: dict[str, Contract] = dict(contracts or {})
        self.unknown_events = unknown_events
        self.title = title
        self.api_version = api_version
        self.description = description
        self.sources = tuple(sources)
        self._reject_unknown = unknown_events == "reject"
        self.active = bool(self._by_type) or self._reject_unknown
        """False when there is nothing to check: the checks return at once."""

    # -- access ------------------------------------------------------------------------------

    def __bool__(self) -> bool:
        return self.active

    def __len__(self) -> int:
        return len(self._by_type)

    def __iter__(self) -> Iterator[Contract]:
        return iter(self._by_type.values())

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._by_type

    def get(self, event_type: str) -> Contract | None:
        return self._by_type.get(event_type)

    @property
    def types(self) -> list[str]:
        return list(self._by_type)

    def __repr__(self) -> str:
        return f"<Contracts {', '.join(self._by_type) or 'none'}; unknown_events={self.unknown_events}>"

    # -- loading -----------------------------------------------------------------------------

    @staticmethod
    def owns(section: str) -> bool:
        """Whether ``section`` (a dotted name) is the contracts section, whose blocks and schemas
        are not settings: :meth:`TSK.sections` does not list them and fujsen do not see them."""
        return section == CONTRACTS_SECTION

    @classmethod
    def load(
        cls,
        data: Mapping[str, Any],
        *,
        path: str | None = None,
        lines: Mapping[tuple[str, ...], int] | None = None,
    ) -> Contracts:
        """The contracts of a parsed config (``TSK.data``); ConfigError says what and where."""
        section = data.get(CONTRACTS_SECTION)
        if section is None:
            return cls(sources=(path,) if path else ())
        loader = _Loader(path or "<string>", lines or {})
        if not isinstance(section, dict):
            raise ConfigError(f"{loader.where()}[{CONTRACTS_SECTION}] must be a section")
        settings: dict[str, Any] = {}
        contracts: dict[str, Contract] = {}
        for key, value in section.items():
            if isinstance(value, dict):
                contracts[key] = loader.contract(key, value)
            elif key in _SECTION_SETTINGS:
                if not isinstance(value, str):
                    raise ConfigError(f"{loader.where(key)}[{CONTRACTS_SECTION}] {key} must be a string, "
                                      f"not {value!r}")
                settings[key] = value
            else:
                known = ", ".join(sorted(_SECTION_SETTINGS))
                raise ConfigError(
                    f"{loader.where(key)}[{CONTRACTS_SECTION}] unknown setting {key!r} (settings: {known}; "
                    "a contract is a block: name { schema: {...} })"
                )
        unknown = settings.pop("unknown_events", CONTRACT_UNKNOWN_EVENTS)
        if unknown not in UNKNOWN_EVENTS_MODES:
            raise ConfigError(f"{loader.where('unknown_events')}[{CONTRACTS_SECTION}] unknown_events must be "
                              f"one of {', '.join(UNKNOWN_EVENTS_MODES)}, not {unknown!r}")
        return cls(contracts, unknown_events=unknown, sources=(loader.path,), **settings)

    @classmethod
    def merge(cls, many: Iterable[Contracts]) -> Contracts:
        """One set from the contracts of several configs run together.

        Versions of one type declared in different configs add up; one version declared twice
        must be the same schema. ``unknown_events`` is "reject" when any config says so.
        """
        parts = list(many)
        if len(parts) == 1:
            return parts[0]
        merged: dict[str, dict[int, ContractVersion]] = {}
        descriptions: dict[str, str] = {}
        for part in parts:
            for contract in part:
                versions = merged.setdefault(contract.type, {})
                descriptions.setdefault(contract.type, contract.description)
                for number, cv in contract.versions.items():
                    seen = versions.get(number)
                    if seen is not None and seen.schema != cv.schema:
                        raise ConfigError(
                            f"contract {contract.type} v{number} is declared twice with different "
                            f"schemas ({seen.where} and {cv.where})"
                        )
                    versions.setdefault(number, cv)
        contracts = {
            t: Contract(t, descriptions[t], {n: vs[n] for n in sorted(vs)}) for t, vs in merged.items()
        }
        reject = any(p.unknown_events == "reject" for p in parts)

        def first(attr: str) -> str | None:
            return next((getattr(p, attr) for p in parts if getattr(p, attr)), None)

        return cls(
            contracts, unknown_events="reject" if reject else "allow", title=first("title"),
            api_version=first("api_version"), description=first("description"),
            sources=[s for p in parts for s in p.sources],
        )

    # -- checking ----------------------------------------------------------------------------

    def violation(self, event: Event) -> str | None:
        """Why ``event`` breaks its contract, or None when it keeps it (or has none to keep)."""
        contract = self._by_type.get(event.type)
        if contract is None:
            if self._reject_unknown:
                return f"{event.type}: no contract for this event type (unknown_events is \"reject\")"
            return None
        wanted = event.metadata.get(SCHEMA_VERSION_KEY) if isinstance(event.metadata, dict) else None
        if wanted is None:
            return contract.latest.violation(event.payload)
        cv = contract.versions.get(wanted) if type(wanted) is int else None
        if cv is None:
            known = ", ".join(str(n) for n in contract.versions)
            return f"{event.type}: no contract version {wanted!r} (versions: {known})"
        return cv.violation(event.payload)

    def check_outgoing(self, event: Event) -> Event:
        """Refuse an event about to be published that breaks its contract; stamp its version.

        Raises :class:`ContractError`; returns the event, ``metadata["schema_version"]`` set
        to the version it was checked against when it had none.
        """
        if not self.active:
            return event
        reason = self.violation(event)
        if reason is not None:
            raise ContractError(reason)
        contract = self._by_type.get(event.type)
        if contract is not None and event.metadata.get(SCHEMA_VERSION_KEY) is None:
            event.metadata[SCHEMA_VERSION_KEY] = contract.latest.version
        return event

    def check_incoming(self, event: Event) -> str | None:
        """The dead-letter reason for an event a service received, or None when it may be handled."""
        if not self.active:
            return None
        reason = self.violation(event)
        return None if reason is None else f"contract violation: {reason}"

    def validate(self, event_type: str, payload: Any, version: int | None = None) -> int | None:
        """Check one payload; returns the version it follows (None: the type has no contract)."""
        metadata = {} if version is None else {SCHEMA_VERSION_KEY: version}
        event = self.check_outgoing(Event(event_type, payload, metadata))
        return event.metadata.get(SCHEMA_VERSION_KEY)

    def guard(self, bus: Bus) -> Bus:
        """``bus`` with its publishing checked against these contracts (``bus`` itself when
        there is nothing to check, so an uncontracted config pays nothing)."""
        if not self.active:
            return bus
        from tusk_events.bus.base import Bus as BusABC

        BusABC.register(CheckedBus)
        return CheckedBus(bus, self)  # type: ignore[return-value]


class CheckedBus:
    """A bus whose ``publish``, ``publish_event`` and ``publish_many`` check contracts first.

    ``publish_many`` checks every event before sending any. Everything else is the wrapped bus's.
    """

    def __init__(self, bus: Any, contracts: Contracts) -> None:
        self.bus = bus
        self.contracts = contracts

    def publish(self, type: str, payload: Any = None, *, metadata: Mapping[str, Any] | None = None) -> Event:
        return self.bus.publish_event(self.contracts.check_outgoing(new_event(type, payload, metadata)))

    def publish_event(self, event: Event) -> Event:
        return self.bus.publish_event(self.contracts.check_outgoing(event))

    def publish_many(self, events: Iterable[Any]) -> list[Event]:
        from tusk_events.bus.base import to_event

        checked = [self.contracts.check_outgoing(to_event(spec)) for spec in events]
        return self.bus.publish_many(checked)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bus.close()


# --- loading and compiling --------------------------------------------------------------------


class _Loader:
    """Turns the ``[contracts]`` section into :class:`Contract` objects, naming lines in errors."""

    def __init__(self, path: str, lines: Mapping[tuple[str, ...], int]) -> None:
        self.path = path
        self.lines = lines

    def where(self, *keys: str) -> str:
        for n in range(len(keys), -1, -1):
            line = self.lines.get((CONTRACTS_SECTION, *keys[:n]))
            if line is not None:
                return f"{self.path}:{line}: "
        return f"{self.path}: "

    def contract(self, name: str, block: dict[str, Any]) -> Contract:
        label = f"[{CONTRACTS_SECTION}] {name}"
        if not name:
            raise ConfigError(f"{self.where(name)}{label}: an event type cannot be empty")
        blocks = {k: v for k, v in block.items() if _VERSION_BLOCK.fullmatch(k) and isinstance(v, dict)}
        description = _text(block.get("description"), f"{self.where(name, 'description')}{label} description")
        if not blocks:
            self._keys(block, _CONTRACT_KEYS, (name,), label)
            version = block.get("version", 1)
            if type(version) is not int or version < 1:
                raise ConfigError(f"{self.where(name, 'version')}{label}: version must be an integer >= 1, "
                                  f"not {version!r}")
            cv = self.version(name, version, block, description, (name,))
            return Contract(name, description, {version: cv})
        mixed = sorted(k for k in block if k not in blocks and k != "description")
        if mixed:
            raise ConfigError(
                f"{self.where(name, mixed[0])}{label}: with version blocks (v1 {{...}}), only "
                f"description may sit beside them, not {', '.join(mixed)}"
            )
        versions: dict[int, ContractVersion] = {}
        for key in sorted(blocks, key=lambda k: int(k[1:])):
            number = int(key[1:])
            body = blocks[key]
            self._keys(body, _CONTRACT_KEYS, (name, key), f"{label} {key}")
            if "version" in body and body["version"] != number:
                raise ConfigError(f"{self.where(name, key, 'version')}{label} {key}: version "
                                  f"{body['version']!r} does not match the block name")
            own = _text(body.get("description"), f"{self.where(name, key)}{label} {key} description")
            versions[number] = self.version(name, number, body, own or description, (name, key))
        return Contract(name, description, versions)

    def _keys(self, block: dict[str, Any], allowed: frozenset[str], at: tuple[str, ...], label: str) -> None:
        for key in block:
            if key not in allowed:
                raise ConfigError(
                    f"{self.where(*at, key)}{label}: unknown key {key!r} (keys: {', '.join(sorted(allowed))}"
                    + ("; versions are blocks named v1, v2..." if len(at) == 1 else "") + ")"
                )

    def version(self, name: str, number: int, block: dict[str, Any], description: str,
                at: tuple[str, ...]) -> ContractVersion:
        label = f"[{CONTRACTS_SECTION}] {name} v{number}"
        where = self.where(*at, "schema")
        if "schema" not in block:
            raise ConfigError(f"{self.where(*at)}{label}: a contract needs a schema "
                              "(schema: {} accepts any payload)")
        schema = block["schema"]
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{where}{label}: schema is not valid JSON: {err}") from None
        if not isinstance(schema, (dict, bool)):
            raise ConfigError(f"{where}{label}: schema must be an object (or a JSON string of one), "
                              f"not {schema!r}")
        draft, validator = compile_schema(schema, f"{where}{label}")
        return ContractVersion(name, number, description, schema, draft, validator,
                               where=where.rstrip(": "))


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, not {value!r}")
    return textwrap.dedent(value).strip()


def compile_schema(schema: Any, where: str = "schema") -> tuple[str, Callable[..., Any]]:
    """``(draft, validator)`` for a JSON Schema; ConfigError (prefixed with ``where``) if it is broken.

    The validator is ``validator(payload, name_prefix="payload")``; it raises fastjsonschema's
    ``JsonSchemaValueException``, which :func:`_describe` turns into a message.
    """
    import fastjsonschema

    draft = "draft-07"
    source = schema
    if isinstance(schema, dict):
        declared = schema.get("$schema")
        if declared is None:
            source = {"$schema": CONTRACT_DEFAULT_DRAFT, **schema}
        else:
            found = [d for key, d in _DRAFTS if isinstance(declared, str) and key in declared]
            if not found:
                raise ConfigError(f"{where}: $schema {declared!r} is not supported "
                                  "(draft-04, draft-06, draft-07 or 2019-09; draft-07 when absent)")
            draft = found[0]
        for ref in _refs(schema):
            if not ref.startswith("#"):
                raise ConfigError(f"{where}: $ref {ref!r} points outside the schema; only "
                                  "references inside it (#/definitions/...) are allowed")
    try:
        validator = fastjsonschema.compile(
            source, handlers={s: _refuse_remote for s in _REMOTE_SCHEMES}, use_default=False,
        )
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    except Exception as err:  # noqa: BLE001 - a broken schema fails in many ways; all mean "invalid"
        text = str(err)
        if text == "Unknown type":
            wrong = sorted({t for t in _type_names(schema) if t not in _JSON_TYPES})
            text += ": " + ", ".join(repr(t) for t in wrong) if wrong else ""
        raise ConfigError(f"{where}: invalid schema: {text}") from None
    return draft, validator


_JSON_TYPES = frozenset({"array", "boolean", "integer", "null", "number", "object", "string"})


def _type_names(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "type" and isinstance(value, str):
                yield value
            elif key == "type" and isinstance(value, list):
                yield from (v for v in value if isinstance(v, str))
            else:
                yield from _type_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _type_names(value)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _refuse_remote(uri: str) -> Any:
    raise ConfigError(f"$ref to {uri!r}: schemas are never fetched; inline it under definitions")


def _value_error() -> type[Exception]:
    import fastjsonschema

    return fastjsonschema.JsonSchemaValueException


# --- messages -------------------------------------------------------------------------------


def abbreviate(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= CONTRACT_VALUE_SHOWN else text[: CONTRACT_VALUE_SHOWN - 3] + "..."


def _describe(err: Any) -> str:
    """``payload.field: rule`` for a fastjsonschema failure, in jsonschema's wording."""
    rule = err.rule
    value = err.value
    d = err.definition if isinstance(err.definition, dict) else {}
    v = abbreviate(value)
    text: str | None = None
    if rule == "type":
        t = d.get("type")
        text = f"{v} is not of type " + (", ".join(repr(x) for x in t) if isinstance(t, list) else repr(t))
    elif rule == "required":
        missing = [k for k in d.get("required", ()) if not (isinstance(value, dict) and k in value)]
        if missing:
            text = f"{missing[0]!r} is a required property"
    elif rule == "enum":
        text = f"{v} is not one of {abbreviate(d.get('enum'))}"
    elif rule == "const":
        text = f"{abbreviate(d.get('const'))} was expected"
    elif rule in _BOUND_WORDS:
        text = f"{v} {_BOUND_WORDS[rule]} {d.get(rule)!r}"
    elif rule in ("minLength", "minItems", "minProperties"):
        text = f"{v} should be non-empty" if d.get(rule) == 1 else f"{v} is too short"
    elif rule in ("maxLength", "maxItems"):
        text = f"{v} is too long"
    elif rule == "maxProperties":
        text = f"{v} has too many properties"
    elif rule == "pattern":
        text = f"{v} does not match {d.get('pattern')!r}"
    elif rule == "format":
        text = f"{v} is not a {d.get('format')!r}"
    elif rule == "multipleOf":
        text = f"{v} is not a multiple of {d.get('multipleOf')!r}"
    elif rule == "uniqueItems":
        text = f"{v} has non-unique elements"
    elif rule == "additionalProperties" and isinstance(value, dict):
        known = d.get("properties") or {}
        patterns = [re.compile(p) for p in (d.get("patternProperties") or {})]
        extra = [k for k in value if k not in known and not any(p.search(k) for p in patterns)]
        if extra:
            names = ", ".join(repr(k) for k in extra)
            text = f"Additional properties are not allowed ({names} {'was' if len(extra) == 1 else 'were'} unexpected)"
    elif rule == "anyOf":
        text = f"{v} is not valid under any of the given schemas"
    elif rule == "oneOf":
        text = f"{v} is not valid under exactly one of the given schemas"
    elif rule == "not":
        text = f"{v} should not be valid under {abbreviate(d.get('not'))}"
    if text is None:  # the rules above cover draft-07; keep fastjsonschema's words for the rest
        name = err.name or "payload"
        text = err.message[len(name) + 1:] if err.message.startswith(name + " ") else err.message
    return f"{err.name or 'payload'}: {text}"


_BOUND_WORDS = {
    "minimum": "is less than the minimum of",
    "maximum": "is greater than the maximum of",
    "exclusiveMinimum": "is less than or equal to the minimum of",
    "exclusiveMaximum": "is greater than or equal to the maximum of",
}


__all__ = [
    "UNKNOWN_EVENTS_MODES",
    "CheckedBus",
    "Contract",
    "ContractVersion",
    "Contracts",
    "compile_schema",
]
