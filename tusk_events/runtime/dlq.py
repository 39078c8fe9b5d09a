"""Dead-letter queues: events a service could not handle, kept with why, until redriven or purged.

One Redis stream per service on the config's bus (``tusk:dlq:<service>``), so entries
survive the worker and every process of the service sees them. An entry that was not a
usable event (not JSON, not an envelope, too deep to decode) is kept as its raw bytes
(``raw``), with the reason; it cannot be redriven, only inspected and purged. Each entry holds the
original event, the reason, the fujsen traceback (with its ``.tsk`` line), the number of
attempts and when they failed. Adding an entry also announces it on the docs'
``dlq_channel`` in the shape of the docs' ``publish_dlq`` (``original_event``, ``reason``,
``timestamp``).

On ``memory://`` the queue lives as long as the process that runs the services; use a
``redis://`` bus to inspect and redrive from another process (``tusk-events dlq ...``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tusk_events.defaults import DLQ_CHANNEL
from tusk_events.events import Event

DLQ_PREFIX = "tusk:dlq:"
"""Key prefix of the per-service dead-letter streams."""


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered event."""

    id: str
    service: str
    event: Event
    reason: str
    traceback: str
    attempts: int
    first_failed_at: float
    last_failed_at: float
    raw: bytes | None = None
    """The stream entry's bytes when it was not a usable event (``event`` then only names its type)."""

    def to_dict(self) -> dict[str, Any]:
        extra = {} if self.raw is None else {"raw": self.raw.decode("utf-8", "replace")}
        return {**extra,
            "id": self.id,
            "service": self.service,
            "event": self.event.to_dict(),
            "reason": self.reason,
            "traceback": self.traceback,
            "attempts": self.attempts,
            "first_failed_at": self.first_failed_at,
            "last_failed_at": self.last_failed_at,
        }


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class DeadLetterQueue:
    """The dead-letter streams of one bus: add, list, get, purge (redrive is the runtime's)."""

    def __init__(self, client: Any, *, channel: str = DLQ_CHANNEL, prefix: str = DLQ_PREFIX) -> None:
        self.client = client
        self.channel = channel
        self.prefix = prefix
        # a Redis Cluster takes no MULTI across a key and a channel: the entry is written first
        self._atomic = type(client).__name__ != "RedisCluster"

    def key(self, service: str) -> str:
        return self.prefix + service

    def add(
        self,
        service: str,
        event: Event,
        *,
        reason: str,
        traceback: str = "",
        attempts: int = 1,
        first_failed_at: float | None = None,
    ) -> str:
        now = time.time()
        fields = {
            "service": service,
            "event": event.to_json(),
            "reason": reason,
            "traceback": traceback,
            "attempts": attempts,
            "first_failed_at": first_failed_at or now,
            "last_failed_at": now,
        }
        notice = {
            "original_event": event.to_dict(),
            "reason": reason,
            "service": service,
            "attempts": attempts,
            "timestamp": now,
        }
        return self._write(service, fields, notice)

    def add_raw(self, service: str, type: str, raw: bytes, *, reason: str, message_id: str | None = None) -> str:
        """Keep an entry that is not a usable event, its bytes unchanged, with why."""
        now = time.time()
        fields: dict[str, Any] = {
            "service": service,
            "raw": raw,
            "type": type,
            "message_id": message_id or "",
            "reason": reason,
            "traceback": "",
            "attempts": 1,
            "first_failed_at": now,
            "last_failed_at": now,
        }
        notice = {"original_event": None, "raw": raw.decode("utf-8", "replace")[:1000], "type": type,
                  "reason": reason, "service": service, "attempts": 1, "timestamp": now}
        return self._write(service, fields, notice)

    def _write(self, service: str, fields: dict[str, Any], notice: dict[str, Any]) -> str:
        """The entry and its notice in one MULTI; on a Redis Cluster (no MULTI, no pipelined
        PUBLISH there) the entry first, then the notice."""
        if not self._atomic:
            entry_id = self.client.xadd(self.key(service), fields)
            self.client.publish(self.channel, json.dumps(notice))
            return _s(entry_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.key(service), fields)
        pipe.publish(self.channel, json.dumps(notice))
        entry_id, _ = pipe.execute()
        return _s(entry_id)

    def services(self) -> list[str]:
        """Services with a dead-letter stream (empty ones included)."""
        keys = self.client.scan_iter(match=self.prefix + "*", count=1000)
        return sorted(_s(k)[len(self.prefix):] for k in keys)

    def count(self, service: str) -> int:
        return int(self.client.xlen(self.key(service)))

    def list(self, service: str | None = None, *, limit: int | None = None,
             after: str | None = None) -> list[DeadLetter]:
        """Oldest first; ``after`` (an entry id) pages on without reading what came before."""
        out: list[DeadLetter] = []
        for svc in [service] if service else self.services():
            entries = self.client.xrange(self.key(svc), min=f"({after}" if after else "-", count=limit)
            out.extend(self._entry(svc, eid, fields) for eid, fields in entries)
        return out

    def get(self, service: str, entry_id: str) -> DeadLetter | None:
        entries = self.client.xrange(self.key(service), min=entry_id, max=entry_id)
        return self._entry(service, *entries[0]) if entries else None

    def remove(self, service: str, ids: Iterable[str]) -> int:
        ids = list(ids)
        return int(self.client.xdel(self.key(service), *ids)) if ids else 0

    def purge(self, service: str | None = None, ids: Iterable[str] | None = None) -> int:
        """Delete the given entries, or every entry of ``service`` (of all services if None)."""
        if ids is not None:
            if service is None:
                raise ValueError("purging entries by id needs their service")
            return self.remove(service, ids)
        removed = 0
        for svc in [service] if service else self.services():
            removed += self.count(svc)
            self.client.delete(self.key(svc))
        return removed

    @staticmethod
    def _entry(service: str, entry_id: Any, fields: dict[Any, Any]) -> DeadLetter:
        f = {_s(k): v for k, v in fields.items()}
        raw = f.get("raw") if "event" not in f else None
        if raw is not None:
            raw = raw if isinstance(raw, bytes) else str(raw).encode()
            event = Event(type=_s(f.get("type", "?")), payload=None, id=_s(f.get("message_id") or entry_id))
        else:
            event = Event.from_json(f["event"])
        return DeadLetter(
            id=_s(entry_id),
            service=service,
            raw=raw,
            event=event,
            reason=_s(f.get("reason", b"")),
            traceback=_s(f.get("traceback", b"")),
            attempts=int(f.get("attempts", 1)),
            first_failed_at=float(f.get("first_failed_at", 0)),
            last_failed_at=float(f.get("last_failed_at", 0)),
        )


__all__ = ["DLQ_PREFIX", "DeadLetter", "DeadLetterQueue"]
