"""The event envelope, its ids, and the causal context that links events into flows.

On the wire an event is one JSON object (schema version ``ENVELOPE_VERSION``)::

    {"v": 1, "id": "0193...", "type": "user_registered", "payload": {...},
     "metadata": {"trace_id": "...", "correlation_id": "...", "causation_id": null, ...},
     "timestamp": 1764129600.123}

``type``, ``payload``, ``metadata`` and ``timestamp`` are the four fields of the original
docs' ``publish_event``; ``id`` is a UUIDv7 string, unique and ordered by creation time, and
``v`` the envelope version. Events that arrive without ``id`` or ``v`` (published by the docs'
fujsen, say) are still accepted.

An event created while another is being handled (see :func:`handling`) inherits that
event's ``trace_id`` and ``correlation_id`` and records its ``id`` as ``causation_id``: a
flow can then be followed across services.
"""

from __future__ import annotations

import contextvars
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

ENVELOPE_VERSION = 1
"""Version of the JSON envelope; bumped on any incompatible change of its fields."""

_current: contextvars.ContextVar[Event | None] = contextvars.ContextVar(
    "tusk_current_event", default=None
)

_id_lock = threading.Lock()
_last_ms = 0
_seq = 0


def new_id() -> str:
    """A UUIDv7 string: 48 bits of Unix milliseconds, a 12-bit in-process sequence, 62 random bits.

    Ids made in one process sort in creation order, even within one millisecond.
    """
    global _last_ms, _seq
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            _seq += 1
            if _seq > 0xFFF:  # sequence exhausted within a millisecond: borrow the next one
                _last_ms += 1
                _seq = 0
            ms = _last_ms
        else:
            _last_ms, _seq = ms, 0
        seq = _seq
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_trace_id() -> str:
    """A W3C-compatible 128-bit trace id (32 lowercase hex digits)."""
    return os.urandom(16).hex()


@dataclass(slots=True)
class Event:
    """One event: what happened (``type``), its data (``payload``) and where it came from."""

    type: str
    payload: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)
    timestamp: float = field(default_factory=time.time)

    @property
    def trace_id(self) -> str | None:
        return self.metadata.get("trace_id")

    @property
    def correlation_id(self) -> str | None:
        return self.metadata.get("correlation_id")

    @property
    def causation_id(self) -> str | None:
        return self.metadata.get("causation_id")

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": ENVELOPE_VERSION,
            "id": self.id,
            "type": self.type,
            "payload": self.payload,
            "metadata": self.metadata,
            "timestamp": self.timestamp,
        }

    def to_json(self) -> str:
        """The envelope as strict JSON; ValueError for NaN/Infinity, TypeError for what JSON cannot hold."""
        return _strict(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, fallback_id: str | None = None) -> Event:
        """Build an event from a decoded envelope; ``fallback_id`` names one that carries no id."""
        if not isinstance(data, Mapping) or not isinstance(data.get("type"), str):
            raise ValueError("not an event envelope: a JSON object with a string 'type' is required")
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            raise ValueError("event metadata must be a JSON object")
        event_id = data.get("id") or fallback_id or new_id()
        ts = data.get("timestamp")
        return cls(
            type=data["type"],
            payload=data.get("payload"),
            metadata=dict(metadata),
            id=str(event_id),
            timestamp=float(ts) if isinstance(ts, (int, float)) else time.time(),
        )

    @classmethod
    def from_json(cls, raw: str | bytes, *, fallback_id: str | None = None) -> Event:
        return cls.from_dict(json.loads(raw), fallback_id=fallback_id)


_strict = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
"""RFC 8259 JSON: NaN and Infinity are refused (ValueError), since other readers reject them."""


def new_event(type: str, payload: Any = None, metadata: Mapping[str, Any] | None = None) -> Event:
    """Create an event, linking it to the event currently being handled, if any."""
    md = dict(metadata or {})
    event_id = new_id()
    parent = _current.get()
    if parent is not None:
        md.setdefault("trace_id", parent.trace_id or new_trace_id())
        md.setdefault("correlation_id", parent.correlation_id or parent.id)
        md.setdefault("causation_id", parent.id)
    else:
        md.setdefault("trace_id", new_trace_id())
        md.setdefault("correlation_id", event_id)
        md.setdefault("causation_id", None)
    return Event(type=type, payload=payload, metadata=md, id=event_id)


def current_event() -> Event | None:
    """The event being handled in this context, or None."""
    return _current.get()


T = TypeVar("T")


def call_handling(event: Event, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with ``event`` as the one being handled: :func:`handling` without the
    context manager's cost, for the consumers' per-event path."""
    token = _current.set(event)
    try:
        return fn(*args)
    finally:
        _current.reset(token)


class handling:  # noqa: N801 - used as a function: ``with handling(event):``
    """Mark ``event`` as the one being handled: events created inside are caused by it.

    A class, not a generator: the runtime enters it once per handled event (the buses call
    handlers through :func:`call_handling`).
    """

    __slots__ = ("event", "token")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.token: contextvars.Token[Event | None] | None = None

    def __enter__(self) -> Event:
        self.token = _current.set(self.event)
        return self.event

    def __exit__(self, *exc: object) -> None:
        assert self.token is not None
        _current.reset(self.token)


__all__ = [
    "ENVELOPE_VERSION", "Event", "call_handling", "current_event", "handling", "new_event", "new_id", "new_trace_id",
]
