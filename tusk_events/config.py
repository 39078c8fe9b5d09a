"""The TSK object: a parsed .tsk document whose fujsen can be executed.

Every fujsen is checked and compiled when the document is loaded. A fujsen the sandbox
refuses does not refuse the document: ``refused_fujsen`` lists every refusal (``check``
and ``run`` report them all and fail) and ``execute_fujsen`` on it raises its
:class:`SandboxViolation`, with its line.

Operator values (``@query``, ``@date``, ``@file``, ``@cache``, unknown operators, ...) that
need I/O, the clock or something this runtime cannot do stay unevaluated in ``.data``
(a :class:`~tusk_events.lang.operators.Deferred`: a string holding the source text, so
``.data`` stays JSON-safe); ``get_value`` and fujsen globals read them through an
:class:`~tusk_events.lang.operators.OperatorContext` built here: the env mapping, the
config's folder, ``query`` on the event store, the trust level.

Fujsen globals, from weakest to strongest:

1. runtime defaults: ``event_bus`` (the env's ``EVENT_BUS``, else ``memory://``) and
   ``event_store`` (the env's ``EVENT_STORE``, else ``sqlite:///events.db``);
2. top-level keys of the document (``$globals`` included);
3. keys of *other* sections, where only one section defines the key (or all agree) — the
   docs' ``[dead_letter_queue]`` fujsen uses ``event_bus`` from ``[event_system]``;
4. the section's own keys;
5. the injected helpers (``redis json time math datetime uuid hashlib query execute``),
   which a config key cannot shadow.
"""

from __future__ import annotations

import linecache
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tusk_events.contracts.model import Contracts
from tusk_events.defaults import (
    BUS_ENV_VAR,
    DEFAULT_BUS_URL,
    DEFAULT_STORE_URL,
    FUJSEN_TIMEOUT_S,
    STORE_ENV_VAR,
    TRUST_DEFAULT,
)
from tusk_events.errors import ConfigError, FujsenError, SandboxViolation, TuskError
from tusk_events.fujsen.executor import FujsenRunner
from tusk_events.fujsen.guards import safe_builtins
from tusk_events.fujsen.helpers import helper_globals
from tusk_events.fujsen.sandbox import CompiledFujsen, compile_fujsen
from tusk_events.lang.operators import Deferred, OperatorContext, evaluate, has_deferred

_CODE = re.compile(r"\s*(?:#[^\n]*\n\s*)*def\s+\w+\s*\(")
# A fujsen written in JavaScript (the other SDKs' docs): refused with its own message.
_JAVASCRIPT = re.compile(
    r"\s*(?://[^\n]*\n\s*)*(?:function\s*\w*\s*\(|(?:const|let|var)\s+\w+\s*=|"
    r"(?:async\s+)?\([\w\s,]*\)\s*=>|\w+\s*=>)"
)
_BUS_SCHEMES = ("memory://", "redis://", "rediss://", "unix://", "amqp://", "amqps://", "nats://", "kafka://")
_string_counter = 0

TRUST_LEVELS = ("trusted", "untrusted")
"""The values ``trust`` accepts: an untrusted config gets process isolation and the operator's policy."""


def _trust_level(trust: str | None) -> str:
    value = TRUST_DEFAULT if trust is None else trust
    if value not in TRUST_LEVELS:
        raise ConfigError(f"trust must be one of {', '.join(TRUST_LEVELS)}, not {trust!r}")
    return value


def _visible_env(env: Mapping[str, str] | None, trust: str | None, allow: Iterable[str] = ()) -> Mapping[str, str]:
    """What ``@env`` may read: all of ``env`` for a trusted config, only the operator's ``allow`` names otherwise.

    The one place the parser's view of the environment is decided, so an untrusted config
    never sees a host secret the operator did not list (``--env-allow NAME``).
    """
    source: Mapping[str, str] = os.environ if env is None else env
    if _trust_level(trust) == "trusted":
        return source
    return {name: source[name] for name in allow if name in source}


_SECRET_PARAMS = ("pass", "secret", "token", "key", "user")


def public_url(url: str) -> str:
    """``url`` without user, password and credential-like query parameters: what an untrusted fujsen sees."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("@")[-1]
    netloc = parts.netloc.rpartition("@")[2]
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if not any(word in k.lower() for word in _SECRET_PARAMS)])
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _is_fujsen_key(key: str, value: Any) -> bool:
    if not isinstance(value, str) or isinstance(value, Deferred):
        return False
    return key == "fujsen" or key.endswith("_fujsen") or bool(_CODE.match(value))


def _entry_name(key: str) -> str:
    return key[: -len("_fujsen")] if key.endswith("_fujsen") else key


class TSK:
    """A loaded .tsk config.

        >>> cfg = TSK.from_file("configs/event_system.tsk", env={"EVENT_BUS": "memory://"})
        >>> event = cfg.execute_fujsen("event_system", "publish_event", "user_registered", {"user_id": 123})
        >>> event["type"]
        'user_registered'
    """

    def __init__(
        self,
        data: dict[str, Any],
        *,
        value_lines: Mapping[tuple[str, ...], int] | None = None,
        path: str | None = None,
        env: Mapping[str, str] | None = None,
        fujsen_timeout: float | None = None,
        text: str | None = None,
        isolation: str | None = None,
        unsupported: list[tuple[str, int, int]] | None = None,
        trust: str | None = None,
        env_allow: Iterable[str] = (),
    ) -> None:
        from tusk_events.fujsen.isolation import isolation_level

        self.data = data
        # "trusted" or "untrusted" (chosen by the operator, never by the config): an untrusted
        # config runs isolated, its limits are capped by the operator's, its URLs are the operator's
        self.trust = _trust_level(trust)
        if self.trust == "untrusted":
            if isolation == "inline":
                raise ConfigError("an untrusted config runs its fujsen in worker processes, not inline")
            isolation = "process"
        # "inline" or "process" (worker pool); the argument overrides the config's `isolation`
        self.isolation = isolation_level(data, isolation)
        self.path = path
        # the operator's environment (bus and store URLs); @env saw only _visible_env of it
        self.env: Mapping[str, str] = os.environ if env is None else env
        # what operators (``@env`` and the lazy ones) may read: the one view both use
        self.visible_env: Mapping[str, str] = _visible_env(self.env, self.trust, env_allow)
        self.fujsen_timeout = FUJSEN_TIMEOUT_S if fujsen_timeout is None else float(fujsen_timeout)
        self._lines = dict(value_lines or {})
        self._filename = path or self._register_source(text)
        self._compiled: dict[tuple[str, str], CompiledFujsen] = {}
        # (section, key) -> why the sandbox refused that fujsen (raised when it is run)
        self._refused: dict[tuple[str, str], SandboxViolation] = {}
        self.unsupported_operators: list[tuple[str, int, int]] = list(unsupported or [])
        """``(operator, line, column)`` of every operator that loads as an inert value."""
        self._operators: OperatorContext | None = None
        self._runners: dict[tuple[str, str], FujsenRunner] = {}
        self._globals: dict[str, dict[str, Any]] = {}
        self._helpers = helper_globals(
            bus_urls=self._bus_urls(), store_url=self.store_url, extra={"publish": self._publish},
            untrusted=self.trust == "untrusted",
        )
        self._bus: Any = None
        self._compile_all()
        self.contracts = Contracts.load(data, path=self._filename, lines=self._lines)

    # -- loading ------------------------------------------------------------------------

    @classmethod
    def from_string(
        cls,
        text: str,
        *,
        env: Mapping[str, str] | None = None,
        path: str | None = None,
        fujsen_timeout: float | None = None,
        isolation: str | None = None,
        trust: str | None = None,
        env_allow: Iterable[str] = (),
    ) -> TSK:
        """Parse ``text``; ``env`` is what ``@env`` reads (default ``os.environ``).

        With ``trust="untrusted"`` ``@env`` reads only the names in ``env_allow``.
        """
        from tusk_events.lang.parser import load

        parsed = load(text, env=_visible_env(env, trust, env_allow), path=path)
        return cls(
            parsed.data, value_lines=parsed.value_lines, path=path, env=env,
            fujsen_timeout=fujsen_timeout, text=text, isolation=isolation, trust=trust,
            unsupported=parsed.unsupported, env_allow=env_allow,
        )

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        env: Mapping[str, str] | None = None,
        fujsen_timeout: float | None = None,
        isolation: str | None = None,
        trust: str | None = None,
        env_allow: Iterable[str] = (),
    ) -> TSK:
        """Read and parse a .tsk file; errors carry its path."""
        p = Path(path)
        try:
            text = _decode(p, p.read_bytes())
        except OSError as err:
            raise ConfigError(f"cannot read {p}: {err.strerror or err}") from err
        return cls.from_string(
            text, env=env, path=str(path), fujsen_timeout=fujsen_timeout, isolation=isolation,
            trust=trust, env_allow=env_allow,
        )

    @staticmethod
    def _register_source(text: str | None) -> str:
        """Give a config loaded from a string a name tracebacks can show lines from."""
        global _string_counter
        _string_counter += 1
        name = f"<tsk-string-{_string_counter}>"
        if text is not None:
            lines = text.splitlines(keepends=True)
            linecache.cache[name] = (len(text), None, lines, name)
        return name

    # -- plain values -------------------------------------------------------------------

    def get_section(self, name: str) -> dict[str, Any] | None:
        """The section ``name`` (dotted names reach nested sections), or None."""
        node: Any = self.data
        for part in name.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node if isinstance(node, dict) else None

    def get_value(self, section: str, key: str, default: Any = None) -> Any:
        """``key`` of ``section``, with operator values read now (see :meth:`resolve`)."""
        sect = self.get_section(section)
        return default if sect is None or key not in sect else self.resolve(sect[key])

    def resolve(self, value: Any) -> Any:
        """``value`` with every unevaluated operator inside it read (``@query`` runs, ...)."""
        if not has_deferred(value):
            return value
        return evaluate(value, self.operator_context)

    @property
    def operator_context(self) -> OperatorContext:
        """What operators may read: this config's env, folder, event store and trust level."""
        if self._operators is None:
            from tusk_events.lang.parser import load

            self._operators = OperatorContext(
                loader=load,
                env=self.visible_env,
                path=self._filename,
                folder=Path(self.path).parent if self.path else None,
                query=self._helpers.get("query"),
                trust=getattr(self, "trust", "trusted"),
            )
        return self._operators

    @property
    def refused_fujsen(self) -> list[SandboxViolation]:
        """Every fujsen the sandbox refused, in document order (empty when all compiled)."""
        return list(self._refused.values())

    def to_string(self, *, redacted: bool = False) -> str:
        """A .tsk document that parses back to the same ``data`` (fujsen included);
        ``redacted`` writes ``@env.secure`` values as ``"***"``."""
        from tusk_events.lang.dumps import dumps
        from tusk_events.lang.operators import redact

        return dumps(redact(self.data) if redacted else self.data)

    @property
    def bus_url(self) -> str:
        """The bus this config uses: ``event_bus`` of its sections, else ``EVENT_BUS``, else memory://.

        An untrusted config's own ``event_bus`` is ignored: the operator names the bus.
        """
        for sect in self.sections().values() if self.trust == "trusted" else ():
            url = sect.get("event_bus")
            if isinstance(url, str) and url:
                return url
        return self.env.get(BUS_ENV_VAR) or DEFAULT_BUS_URL

    @property
    def store_url(self) -> str:
        """The event store: ``event_store`` of its sections, else ``EVENT_STORE``, else SQLite.

        An untrusted config's own ``event_store`` is ignored: the operator names the store.
        """
        for sect in self.sections().values() if self.trust == "trusted" else ():
            url = sect.get("event_store")
            if isinstance(url, str) and url:
                return url
        return self.env.get(STORE_ENV_VAR) or DEFAULT_STORE_URL

    def sections(self) -> dict[str, dict[str, Any]]:
        """Every section (nested ones by dotted name), the document's top level as ''."""
        out: dict[str, dict[str, Any]] = {}

        def walk(prefix: str, node: dict[str, Any]) -> None:
            for key, value in node.items():
                if isinstance(value, dict):
                    name = f"{prefix}.{key}" if prefix else key
                    out[name] = value
                    if not Contracts.owns(name):  # schemas are data, not settings
                        walk(name, value)

        walk("", self.data)
        return out

    def _bus_urls(self) -> set[str] | dict[str, str]:
        if self.trust == "untrusted":
            # only the operator's bus, under the name the fujsen sees (no credentials)
            return {public_url(self.bus_url): self.bus_url}
        urls = {DEFAULT_BUS_URL}
        env_url = self.env.get(BUS_ENV_VAR)
        if env_url:
            urls.add(env_url)

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)
            elif isinstance(node, str) and node.startswith(_BUS_SCHEMES) and "\n" not in node:
                urls.add(node)

        walk(self.data)
        return urls

    # -- helpers -----------------------------------------------------------------------

    def bind_helpers(self, **functions: Callable[..., Any]) -> None:
        """Replace or add helpers (the runtime binds its own ``publish``); rebinds every fujsen."""
        self._helpers.update(functions)
        self._globals.clear()
        self._runners.clear()

    def _publish(self, type: str, payload: Any = None, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``publish(type, payload)`` for fujsen outside a runtime: straight onto the config's bus."""
        from tusk_events.fujsen import budget

        def send() -> dict[str, Any]:
            if self._bus is None:
                from tusk_events.bus import connect

                channel = self.get_value_anywhere("event_channel")
                bus = connect(self.bus_url, **({"channel": channel} if isinstance(channel, str) else {}))
                self._bus = self.contracts.guard(bus)
            return self._bus.publish(type, payload, metadata=dict(metadata or {})).to_dict()

        if not isinstance(type, str) or not type:
            from tusk_events.fujsen.guards import violate

            violate("publish(): the event type must be a non-empty string")
        return budget.blocking(send)

    def get_value_anywhere(self, key: str) -> Any:
        """``key`` from the first section (or the top level) that defines it."""
        if key in self.data and not isinstance(self.data[key], dict):
            return self.data[key]
        for values in self.sections().values():
            if key in values:
                return values[key]
        return None

    # -- fujsen ------------------------------------------------------------------------

    def _compile_all(self) -> None:
        for section, values in self.sections().items():
            for key, value in values.items():
                if _is_fujsen_key(key, value) or (
                    key.endswith("_fujsen") and isinstance(value, str)
                    and _JAVASCRIPT.match(value)
                ):
                    path = tuple(section.split(".")) + (key,)
                    first = self._lines.get(path, 1)
                    try:
                        if _JAVASCRIPT.match(value):
                            raise SandboxViolation(
                                f"{self._filename}:{first}: fujsen '{key}' is JavaScript; "
                                "JavaScript fujsen are not supported (write it in Python)"
                            )
                        self._compiled[(section, key)] = compile_fujsen(
                            value, name=key, filename=self._filename, first_line=first
                        )
                    except SandboxViolation as err:
                        self._refused[(section, key)] = err

    def fujsen_names(self, section: str) -> list[str]:
        """The names ``execute_fujsen`` accepts for ``section`` (refused ones excluded)."""
        names: list[str] = []
        for (sect, key), compiled in self._compiled.items():
            if sect != section:
                continue
            if key == "fujsen":
                names.extend(compiled.functions)
            else:
                names.append(_entry_name(key))
        return names

    def fujsen(self, section: str, name: str) -> Callable[..., Any]:
        """The callable for ``section``'s fujsen ``name`` (resolved and bound once; for hot paths)."""
        runner = self._runners.get((section, name))
        if runner is None:
            runner = self._runners[(section, name)] = self._resolve(section, name)
        return runner

    def execute_fujsen(self, section: str, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``section``'s fujsen ``name`` with ``args``; errors are :class:`FujsenError`."""
        return self.fujsen(section, name)(*args, **kwargs)

    def _resolve(self, section: str, name: str) -> FujsenRunner:
        if self.get_section(section) is None:
            known = ", ".join(sorted(self.sections())) or "none"
            raise FujsenError(f"no section [{section}] in {self._filename} (sections: {known})")
        for key in (name, f"{name}_fujsen"):
            refused = self._refused.get((section, key))
            if refused is not None:
                raise refused
            compiled = self._compiled.get((section, key))
            if compiled is not None:
                entry = _pick_entry(compiled, name)
                if entry is not None:
                    return self._runner(section, compiled, entry)
                raise FujsenError(
                    f"{self._filename}:{compiled.first_line}: fujsen '{key}' defines "
                    f"{', '.join(compiled.functions) or 'no function'}, none named '{name}'"
                )
        compiled = self._compiled.get((section, "fujsen"))
        if compiled is not None and name in compiled.functions:
            return self._runner(section, compiled, name)
        if (section, "fujsen") in self._refused:
            raise self._refused[(section, "fujsen")]
        available = ", ".join(self.fujsen_names(section)) or "none"
        raise FujsenError(f"no fujsen '{name}' in [{section}] (available: {available})")

    def _runner(self, section: str, compiled: CompiledFujsen, entry: str) -> FujsenRunner:
        sect = self.get_section(section) or {}
        # a service's `timeout` is the budget of its handler calls
        timeout = sect.get("fujsen_timeout", sect.get("timeout") if "subscribe" in sect else None)
        if timeout is None:
            timeout = self.fujsen_timeout
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise FujsenError(f"[{section}] fujsen_timeout must be a positive number of seconds")
        if self.trust == "untrusted":
            timeout = min(timeout, self.fujsen_timeout)  # the operator's budget is a ceiling
        if self.isolation == "process":
            from tusk_events.fujsen.isolation import IsolatedRunner, pool_for

            return IsolatedRunner(  # type: ignore[return-value]  # same call interface
                compiled, entry, section, self._section_globals(section), float(timeout),
                pool=pool_for(self),
            )
        return FujsenRunner(compiled, entry, section, self._section_globals(section), float(timeout))

    def _readable(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` read (operators evaluated); one that cannot be read is left out, so a
        fujsen that uses it fails on its name rather than every fujsen failing."""
        out: dict[str, Any] = {}
        for k, v in values.items():
            try:
                out[k] = self.resolve(v)
            except TuskError:
                continue
        return out

    def _section_globals(self, section: str) -> dict[str, Any]:
        g = self._globals.get(section)
        if g is not None:
            return g
        g = {"event_bus": self.bus_url, "event_store": self.store_url}
        g.update(self._readable({k: v for k, v in self.data.items() if not isinstance(v, dict)}))
        seen: dict[str, list[Any]] = {}
        for name, values in self.sections().items():
            if name == section:
                continue
            for k, v in values.items():
                if not isinstance(v, dict):
                    seen.setdefault(k, []).append(v)
        for k, vs in seen.items():
            if all(v == vs[0] for v in vs):
                g.update(self._readable({k: vs[0]}))
        own = self.get_section(section) or {}
        g.update(self._readable(own))
        if self.trust == "untrusted":
            # the operator's URLs, without credentials, whatever the config wrote
            g["event_bus"] = public_url(self.bus_url)
            g["event_store"] = public_url(self.store_url)
        g.update(self._helpers)
        g["__builtins__"] = _BUILTINS
        g["__name__"] = f"fujsen:{section}"
        self._globals[section] = g
        return g


def _decode(path: Path, raw: bytes) -> str:
    """The UTF-8 text of a config file; a binary or mis-encoded file is a one-line ConfigError."""
    if b"\x00" in raw[:8192]:
        raise ConfigError(f"{path}: a binary file, not a .tsk config (it contains NUL bytes)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        before = raw[: err.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        raise ConfigError(
            f"{path}:{line}:{column}: not UTF-8 text (byte 0x{raw[err.start]:02x}); "
            "save the .tsk file as UTF-8"
        ) from None


def _pick_entry(compiled: CompiledFujsen, name: str) -> str | None:
    if name in compiled.functions:
        return name
    if len(compiled.functions) == 1:
        return compiled.functions[0]
    return None


_BUILTINS = safe_builtins()

__all__ = ["TRUST_LEVELS", "TSK", "public_url"]
