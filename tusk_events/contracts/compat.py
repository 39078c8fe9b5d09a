"""Contract evolution: which changes between two configs' contracts break existing consumers.

``tusk-events check NEW.tsk --against OLD.tsk`` runs :func:`check_contracts`. Compatibility
means both ways: events valid under the old contract still pass the new one (stored events,
producers not yet redeployed), and consumers written for the old contract still find every
field they read, with the type and values they expect. Which fields a consumer reads is
taken from its handler's source (``x["field"]``, ``x.get("field")``), by name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tusk_events.contracts.flows import Flows
from tusk_events.contracts.model import ContractVersion, abbreviate
from tusk_events.defaults import CONTRACT_REF_DEPTH
from tusk_events.errors import ConfigError

if TYPE_CHECKING:
    from tusk_events.contracts.model import TSK


@dataclass(frozen=True)
class Change:
    """One difference between an old and a new contract, and whether it breaks consumers."""

    event_type: str
    label: str
    """``v1`` (a version edited in place), ``v1 -> v2`` (the latest moved), or ""."""
    path: str
    message: str
    breaking: bool

    def __str__(self) -> str:
        head = " ".join(p for p in (self.event_type, self.label) if p)
        return f"{head}: {self.path}: {self.message}" if self.path else f"{head}: {self.message}"


def compare(old: TSK, new: TSK) -> list[Change]:
    """What changed between ``old``'s and ``new``'s contracts; consumers from both configs."""
    flows = Flows.of([old, new])
    was, now = old.contracts, new.contracts
    changes: list[Change] = []
    for contract in was:
        t = contract.type
        readers = flows.readers(t)
        target = now.get(t)
        if target is None:
            users = sorted({r.section for r in flows.consumers(t)})
            if users or now.unknown_events == "reject":
                why = (f"consumed by {', '.join(users)}" if users else "unknown_events is \"reject\"")
                changes.append(Change(t, "", "", f"contract removed ({why}): its events lose their "
                                      "checks or are refused", True))
            else:
                changes.append(Change(t, "", "", "contract removed; no service consumes it", False))
            continue
        for number, cv in contract.versions.items():
            kept = target.versions.get(number)
            if kept is None:
                changes.append(Change(t, f"v{number}", "", "version removed: events stamped with it "
                                      "are refused", True))
                continue
            changes += _diff(cv, kept, f"v{number}", readers)
        if target.latest.version != contract.latest.version:
            label = f"v{contract.latest.version} -> v{target.latest.version}"
            changes += _diff(contract.latest, target.latest, label, readers)
    for contract in now:
        if contract.type not in was:
            changes.append(Change(contract.type, "", "", "contract added", False))
    if now.unknown_events == "reject" and was.unknown_events != "reject":
        for t in flows.types:
            if t not in now:
                changes.append(Change(t, "", "", "no contract, and unknown_events is now \"reject\": "
                                      "its events are refused", True))
    return changes


def _diff(old: ContractVersion, new: ContractVersion, label: str,
          readers: Mapping[str, set[str]]) -> list[Change]:
    differ = _SchemaDiff(old.schema, new.schema, readers)
    differ.walk(old.schema, new.schema, "payload", 0)
    return [Change(old.type, label, path, message, breaking) for path, message, breaking in differ.found]


_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_TIGHTEN = ("pattern", "format", "multipleOf", "uniqueItems", "contains", "propertyNames", "not",
            "dependencies", "dependentRequired", "dependentSchemas", "if", "then", "else")
_HANDLED = frozenset({"type", "enum", "const", "properties", "required", "additionalProperties",
                      "items", "$ref", *_LOWER, *_UPPER, *_TIGHTEN})
_ANNOTATIONS = frozenset({"title", "description", "examples", "default", "$comment", "deprecated",
                          "readOnly", "writeOnly", "$id", "$schema", "definitions", "$defs",
                          "contentMediaType", "contentEncoding"})


class _SchemaDiff:
    """Walks two schemas side by side; ``found`` collects ``(path, message, breaking)``."""

    def __init__(self, old_root: Any, new_root: Any, readers: Mapping[str, set[str]]) -> None:
        self.roots = (old_root, new_root)
        self.readers = readers
        self.found: list[tuple[str, str, bool]] = []

    def note(self, path: str, message: str, breaking: bool) -> None:
        self.found.append((path, message, breaking))

    def read_by(self, path: str) -> set[str]:
        name = path.rsplit(".", 1)[-1].removesuffix("[]")
        return self.readers.get(name, set()) if "." in path else set()

    def walk(self, old: Any, new: Any, path: str, depth: int) -> None:
        old, new = self.resolve(old, 0, depth), self.resolve(new, 1, depth)
        if old == new or depth > CONTRACT_REF_DEPTH:
            return
        if old is False or new is True:
            self.note(path, "now accepts any value", False)
            return
        if new is False:
            self.note(path, "now accepts no value at all", True)
            return
        old = {} if old is True else old
        if not isinstance(old, dict) or not isinstance(new, dict):
            self.note(path, "changed; not analysed, so treated as breaking", True)
            return
        self.types(old, new, path)
        self.values(old, new, path)
        self.bounds(old, new, path)
        self.objects(old, new, path, depth)
        oi, ni = old.get("items"), new.get("items")
        if oi != ni:
            if isinstance(oi, (dict, bool, type(None))) and isinstance(ni, (dict, bool, type(None))):
                self.walk(True if oi is None else oi, True if ni is None else ni, f"{path}[]", depth + 1)
            else:
                self.note(path, "items changed; not analysed, so treated as breaking", True)
        for key in sorted((old.keys() | new.keys()) - _HANDLED - _ANNOTATIONS):
            if old.get(key) != new.get(key):
                self.note(path, f"{key!r} changed; not analysed, so treated as breaking", True)

    def resolve(self, node: Any, side: int, depth: int) -> Any:
        for _ in range(CONTRACT_REF_DEPTH):
            if not (isinstance(node, dict) and isinstance(node.get("$ref"), str)):
                return node
            target: Any = self.roots[side]
            for part in node["$ref"].lstrip("#").split("/")[1:]:
                part = part.replace("~1", "/").replace("~0", "~")
                target = target.get(part) if isinstance(target, dict) else None
            extra = {k: v for k, v in node.items() if k != "$ref"}
            node = {**target, **extra} if isinstance(target, dict) and extra else target
        return node

    def types(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        ot, nt = _types(old), _types(new)
        if ot == nt:
            return
        lost = _uncovered(ot, nt)
        if lost:
            self.note(path, f"type changed from {_show_types(ot)} to {_show_types(nt)}: "
                      f"{', '.join(sorted(lost))} values are now refused", True)
        elif _uncovered(nt, ot):
            self.widened(path, f"type widened from {_show_types(ot)} to {_show_types(nt)}")

    def values(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        oe, ne = _allowed(old), _allowed(new)
        if oe == ne:
            return
        if ne is not None:
            removed = [v for v in oe if v not in ne] if oe is not None else None
            if removed is None:
                self.note(path, f"now restricted to {abbreviate(ne)}: other values are refused", True)
                return
            if removed:
                self.note(path, f"enum narrowed: {abbreviate(removed)[1:-1]} no longer allowed", True)
                return
        added = None if ne is None else [v for v in ne if oe is not None and v not in oe]
        self.widened(path, "enum removed: any value allowed" if ne is None
                     else f"enum widened: {abbreviate(added)[1:-1]} now allowed")

    def widened(self, path: str, what: str) -> None:
        readers = self.read_by(path)
        if readers:
            self.note(path, f"{what}; read by {', '.join(sorted(readers))}", True)
        else:
            self.note(path, f"{what}; no consumer reads it", False)

    def bounds(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        for keys, tighter, word in ((_LOWER, lambda o, n: n > o, "raised"),
                                    (_UPPER, lambda o, n: n < o, "lowered")):
            for key in keys:
                o, n = old.get(key), new.get(key)
                if o == n:
                    continue
                if not all(_number(x) for x in (o, n) if x is not None):
                    self.note(path, f"{key} changed from {o!r} to {n!r}", True)
                elif n is not None and (o is None or tighter(o, n)):
                    self.note(path, f"{key} {word} from {o!r} to {n!r}: values that passed are refused"
                              if o is not None else f"{key} {n!r} added: values that passed are refused", True)
                else:
                    self.note(path, f"{key} relaxed from {o!r} to {n!r}" if n is not None
                              else f"{key} {o!r} removed", False)
        for key in _TIGHTEN:
            o, n = old.get(key), new.get(key)
            if o == n:
                continue
            if n is None:
                self.note(path, f"{key} removed", False)
            else:
                self.note(path, f"{key} {'changed' if o is not None else 'added'} ({abbreviate(n)}): "
                          "values that passed may be refused", True)

    def objects(self, old: dict[str, Any], new: dict[str, Any], path: str, depth: int) -> None:
        op, np = old.get("properties") or {}, new.get("properties") or {}
        oreq, nreq = set(old.get("required") or ()), set(new.get("required") or ())
        closed_old = old.get("additionalProperties") is False
        closed_new = new.get("additionalProperties") is False
        for name in sorted(oreq - nreq):
            where = f"{path}.{name}"
            readers = self.read_by(where)
            tail = f" (read by {', '.join(sorted(readers))})" if readers else ""
            if name in np:
                self.note(where, f"no longer required: consumers may rely on it{tail}", True)
            else:
                self.note(where, f"required field removed{tail}", True)
        for name in sorted(nreq - oreq):
            self.note(f"{path}.{name}", "became required: events without it are refused"
                      if name in op else "new required field: events without it are refused", True)
        for name in sorted(set(op) - set(np)):
            if name in oreq:
                continue
            where = f"{path}.{name}"
            readers = self.read_by(where)
            if readers:
                self.note(where, f"property removed; read by {', '.join(sorted(readers))}", True)
            elif closed_new:
                self.note(where, "property removed and additionalProperties is false: events that "
                          "carry it are refused", True)
            else:
                self.note(where, "optional property removed; no consumer reads it", False)
        for name in sorted(set(np) - set(op)):
            if name in nreq:
                continue
            if closed_old:
                self.note(f"{path}.{name}", "property added where additionalProperties was false: "
                          "consumers on the old contract refuse events that carry it", True)
            else:
                self.note(f"{path}.{name}", "optional property added", False)
        for name in op:
            if name in np:
                self.walk(op[name], np[name], f"{path}.{name}", depth + 1)
        oa, na = old.get("additionalProperties"), new.get("additionalProperties")
        if oa != na:
            if na is False:
                self.note(path, "additionalProperties set to false: events with other fields are refused",
                          True)
            elif isinstance(oa, dict) or isinstance(na, dict):
                self.walk(True if oa is None else oa, True if na is None else na, f"{path}.*", depth + 1)
            else:
                self.note(path, "additional properties now allowed", False)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _types(schema: dict[str, Any]) -> frozenset[str] | None:
    t = schema.get("type")
    if t is None:
        return None
    return frozenset([t] if isinstance(t, str) else t)


def _uncovered(these: frozenset[str] | None, by: frozenset[str] | None) -> set[str]:
    """The types of ``these`` that ``by`` does not accept (None: any type)."""
    if by is None:
        return set()
    if these is None:
        return {"other"}
    return {t for t in these if t not in by and not (t == "integer" and "number" in by)}


def _show_types(types: frozenset[str] | None) -> str:
    if types is None:
        return "any"
    return " | ".join(repr(t) for t in sorted(types))


def _allowed(schema: dict[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    enum = schema.get("enum")
    return list(enum) if isinstance(enum, list) else None


# --- the check command ------------------------------------------------------------------------


def check_contracts(cfg: TSK, *, against: str | None = None, old: TSK | None = None) -> list[str]:
    """Problems with a config's contracts, one message each (``tusk-events check``).

    A section that declares ``publishes`` must declare every type its fujsen publish; under
    ``unknown_events: "reject"`` every type published or consumed needs a contract; with
    ``old`` (an older version of the config, loaded from the file named ``against``), every
    change that breaks consumers.
    """
    problems: list[str] = []
    try:
        flows = Flows.of([cfg])
    except ConfigError as err:
        return [str(err)]
    for sender in flows.senders:
        if sender.declared:
            missing = [t for t in sender.in_code if t not in sender.types]
            if missing:
                problems.append(f"[{sender.section}] publishes {', '.join(missing)} in its fujsen but "
                                "does not declare it in publishes")
    contracts = cfg.contracts
    if contracts.unknown_events == "reject":
        for t in flows.types:
            if t not in contracts:
                users = [s.section for s in flows.producers(t)] + [r.section for r in flows.consumers(t)]
                problems.append(f"{t} has no contract, and unknown_events is \"reject\" "
                                f"(used by {', '.join(dict.fromkeys(users))})")
    if old is not None:
        problems += [f"breaking change against {against}: {c}" for c in compare(old, cfg) if c.breaking]
    return problems



__all__ = ["Change", "check_contracts", "compare"]
