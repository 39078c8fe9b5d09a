"""What a test app saw, and how it is shown when an assertion fails.

:class:`Published` is one event published through the app (its publisher, its cause);
:class:`Letter` one dead-lettered event with the ``.tsk`` line it failed on. :func:`report`
renders both as the causal tree that a failing assertion prints, so the message says what
*was* published instead of just ``False``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tusk_events.events import Event
from tusk_events.runtime.dlq import DeadLetter

_PAYLOAD_WIDTH = 160
_WHERE = re.compile(r"^(?P<file>.+?):(?P<line>\d+) in \w+: ")


@dataclass(eq=False)
class Published:
    """One event published through a test app, in the order it was published."""

    event: Event
    service: str | None
    """The service whose handler published it; None for the test itself or a startup fujsen."""
    _index: Mapping[str, Published] = field(repr=False, default_factory=dict)

    @property
    def id(self) -> str:
        return self.event.id

    @property
    def type(self) -> str:
        return self.event.type

    @property
    def payload(self) -> Any:
        return self.event.payload

    @property
    def metadata(self) -> dict[str, Any]:
        return self.event.metadata

    @property
    def caused_by(self) -> Published | None:
        """The event whose handling published this one (None for a root)."""
        cause = self.event.causation_id
        return None if cause is None else self._index.get(cause)

    @property
    def effects(self) -> list[Published]:
        """The events published while handling this one, in order."""
        return [p for p in self._index.values() if p.event.causation_id == self.id]

    def __repr__(self) -> str:
        by = f" by {self.service}" if self.service else ""
        return f"<Published {self.type} {_short(self.payload)}{by}>"


@dataclass(frozen=True)
class Letter:
    """One dead-lettered event: why, where in the ``.tsk``, after how many attempts."""

    service: str
    event: Event
    reason: str
    traceback: str
    attempts: int
    id: str

    @classmethod
    def of(cls, letter: DeadLetter) -> Letter:
        return cls(letter.service, letter.event, letter.reason, letter.traceback, letter.attempts, letter.id)

    @property
    def type(self) -> str:
        return self.event.type

    @property
    def payload(self) -> Any:
        return self.event.payload

    @property
    def location(self) -> str | None:
        """``file:line`` of the fujsen line that failed, when the failure came from one."""
        m = _WHERE.match(self.reason)
        return f"{m['file']}:{m['line']}" if m else None

    @property
    def line(self) -> int | None:
        """The ``.tsk`` line number the handler failed on, when it did fail in a fujsen."""
        m = _WHERE.match(self.reason)
        return int(m["line"]) if m else None


def matches(expected: Any, actual: Any) -> bool:
    """Whether ``actual`` fits ``expected``: a dict matches when every key it names matches
    (extra keys are fine, nested dicts likewise); a callable is a predicate; anything else is ==."""
    if callable(expected) and not isinstance(expected, type):
        return bool(expected(actual))
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and matches(v, actual[k]) for k, v in expected.items()
        )
    return bool(expected == actual)


def describe(expected: Any) -> str:
    if callable(expected) and not isinstance(expected, type):
        return f"accepted by {getattr(expected, '__name__', repr(expected))}"
    return f"matching {_short(expected)}"


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _PAYLOAD_WIDTH else text[: _PAYLOAD_WIDTH - 3] + "..."


def report(published: Sequence[Published], letters: Sequence[Letter]) -> str:
    """The published events as a causal tree (a cause above its effects), then the dead letters."""
    lines = [f"published ({len(published)} events, causes above their effects):"]
    if not published:
        lines.append("  (nothing)")
    index = {p.id: p for p in published}
    children: dict[str | None, list[Published]] = {}
    for p in published:
        parent = p.event.causation_id if p.event.causation_id in index else None
        children.setdefault(parent, []).append(p)

    def walk(parent: str | None, depth: int) -> None:
        for p in children.get(parent, []):
            by = f"  <- {p.service}" if p.service else ""
            lines.append(f"{'  ' * (depth + 1)}{p.type} {_short(p.payload)}{by}")
            walk(p.id, depth + 1)

    walk(None, 0)
    if letters:
        lines.append(f"dead letters ({len(letters)}):")
        for d in letters:
            lines.append(f"  {d.service}: {d.type} {_short(d.payload)} after {d.attempts} attempts: {d.reason}")
    else:
        lines.append("dead letters: none")
    return "\n".join(lines)



__all__ = ["Letter", "Published", "describe", "matches", "report"]
