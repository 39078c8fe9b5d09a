"""Who publishes and who consumes each event type: read from the configs' sections and from
their fujsen's code (``publish("type", ...)`` literals, keys read from the event), with ``ast``.

Contracts, compatibility checks, AsyncAPI documents and the architecture graph all use it.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tusk_events.errors import ConfigError

if TYPE_CHECKING:
    from tusk_events.contracts.model import TSK


# --- who sends and receives what ------------------------------------------------------------


@dataclass(frozen=True)
class Sender:
    """A section that publishes events: declared (``publishes``) or read off its fujsen."""

    section: str
    types: tuple[str, ...]
    declared: bool
    in_code: tuple[str, ...] = ()
    """The types its fujsen publish as literals (``publish("type", ...)``)."""


@dataclass(frozen=True)
class Receiver:
    """A service: the types it subscribes to, how they are delivered, the fields it reads."""

    section: str
    types: tuple[str, ...]
    delivery: str
    reads: frozenset[str]


@dataclass(frozen=True)
class Flows:
    """Who publishes and who consumes each event type, across one or more configs."""

    senders: tuple[Sender, ...]
    receivers: tuple[Receiver, ...]

    @classmethod
    def of(cls, configs: Iterable[TSK]) -> Flows:
        senders: list[Sender] = []
        receivers: list[Receiver] = []
        for cfg in configs:
            for section, values in cfg.sections().items():
                trees = _code_trees(values)
                in_code = tuple(dict.fromkeys(t for tree in trees for t in _published_literals(tree)))
                declared = _type_list(values.get("publishes"), section, "publishes")
                if declared is not None:
                    senders.append(Sender(section, declared, True, in_code))
                elif in_code:
                    senders.append(Sender(section, in_code, False, in_code))
                subscribed = _type_list(values.get("subscribe"), section, "subscribe")
                if subscribed:
                    delivery = values.get("delivery", "durable")
                    reads = frozenset(k for tree in trees for k in _read_keys(tree))
                    receivers.append(Receiver(section, subscribed, str(delivery), reads))
        return cls(tuple(senders), tuple(receivers))

    @property
    def types(self) -> list[str]:
        """Every event type published or consumed, in order of appearance."""
        seen: dict[str, None] = {}
        for s in self.senders:
            seen.update(dict.fromkeys(s.types))
        for r in self.receivers:
            seen.update(dict.fromkeys(r.types))
        return list(seen)

    def consumers(self, event_type: str) -> list[Receiver]:
        return [r for r in self.receivers if event_type in r.types]

    def producers(self, event_type: str) -> list[Sender]:
        return [s for s in self.senders if event_type in s.types]

    def readers(self, event_type: str) -> dict[str, set[str]]:
        """Field name -> the services subscribed to ``event_type`` whose handlers read it."""
        out: dict[str, set[str]] = {}
        for r in self.consumers(event_type):
            for key in r.reads:
                out.setdefault(key, set()).add(r.section)
        return out


def _type_list(value: Any, section: str, key: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(t, str) and t for t in items):
        raise ConfigError(f"[{section}] {key} must be an event type or a list of them, not {value!r}")
    return tuple(dict.fromkeys(items))


def _code_trees(values: Mapping[str, Any]) -> list[ast.AST]:
    trees: list[ast.AST] = []
    for value in values.values():
        if isinstance(value, str) and "def " in value:
            try:
                trees.append(ast.parse(textwrap.dedent(value)))
            except SyntaxError:
                continue
    return trees


def _published_literals(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "publish":
            arg = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg == "type"), None)
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield arg.value


def _read_keys(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                yield key.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("get", "pop", "setdefault") and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield node.args[0].value


__all__ = ["Flows", "Receiver", "Sender"]
