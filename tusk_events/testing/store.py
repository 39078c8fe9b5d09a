"""The event store of a test app, read the way a test wants it: a list, not a stream."""

from __future__ import annotations

from typing import Any

from tusk_events.store.base import EventStore, StoredEvent


class StoreView:
    """``app.store``: ``events(type=None)`` as a list; everything else is the store's own API."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    def events(self, type: str | None = None) -> list[StoredEvent]:
        """Every stored event (of one type) in store order; each has ``type payload metadata id seq``."""
        with self._store.replay(type=type) as replay:
            return list(replay)

    def types(self) -> list[str]:
        """The stored event types, in store order (one entry per event)."""
        return [e.type for e in self.events()]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def __repr__(self) -> str:
        return f"<StoreView of {self._store!r}>"


__all__ = ["StoreView"]
