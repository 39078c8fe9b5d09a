"""Exactly-once handling: each attempt of a handler is one store transaction with its tracking row.

For every (service, event id) handled, the store gets a tracking row in the same transaction
as everything the handler did through ``execute`` and ``publish`` (published events are
appended there, each with an outbox row). The runtime commits, then acknowledges on the bus:

- a crash before the commit loses the whole attempt (the bus delivers the event again);
- a crash after the commit and before the ack: the next delivery finds the tracking row and
  is acknowledged without running the handler;
- two deliveries running at once (a claim after a visibility timeout): the second one's first
  SQL statement, or its commit, waits for the first and then finds the row; its work is rolled
  back.

After the commit the events the handler published are put on the bus and given to the ``sync``
services (by the relay, :mod:`tusk_events.runtime.relay`); a crash in between leaves them in
the outbox, and the relay sends them later. Effects through the ``redis`` helper are outside
the transaction: they stay at least once.

A handling that changed nothing in the store (no SQL, nothing published) has no effects to
make exactly once; its tracking row only spares a re-run. Those rows are written in batches
(``TRACKING_BATCH`` rows or ``TRACKING_FLUSH_S``, and at each relay pass and at stop), so such
handlers do not pay a commit each. A crash can lose the last batch: the bus's own record still
stops a second run, unless the bus lost its data too; then the handler runs again, and only
its ``redis`` effects (at least once anyway) repeat.

Broadcast delivery is not tracked (every runtime instance handles a broadcast, by design).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from tusk_events.defaults import TRACKING_BATCH, TRACKING_FLUSH_S, TRACKING_IDLE_S
from tusk_events.errors import StoreError
from tusk_events.events import Event
from tusk_events.store import EventStore
from tusk_events.store.unit import DEAD, HANDLED, Unit, current_unit

log = logging.getLogger(__name__)


class Attempt:
    """One run of a handler (a context manager): commit on success, roll back on failure.

    ``duplicate`` is True afterwards when another handling had committed the event. A failure
    after the store connection was lost is raised as :class:`StoreError` (the event stays
    unacknowledged and is delivered again), not as the handler's failure. A class rather than
    a generator, with as little as possible in it: it runs once per event.
    """

    __slots__ = ("duplicate", "token", "tracker", "unit")

    def __init__(self, tracker: Tracker | None, unit: Unit | None = None) -> None:
        self.tracker = tracker
        self.unit = unit
        self.token: contextvars.Token[Unit | None] | None = None
        self.duplicate = False

    def __enter__(self) -> Attempt:
        if self.unit is not None:
            self.token = current_unit.set(self.unit)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        unit, tracker = self.unit, self.tracker
        if unit is None or tracker is None:
            return False
        assert self.token is not None
        current_unit.reset(self.token)
        if exc is not None:
            _rollback(unit)
            if unit.duplicate:
                self.duplicate = True
                return True
            if unit.broken is not None:
                raise StoreError(
                    f"the event store failed while {unit.service} handled {unit.event_id}: "
                    f"{unit.broken}"
                ) from exc
            return False
        if not unit.began and not unit.events:  # nothing to commit but the tracking row
            unit.closed = True
            tracker._pure_done(unit.service, unit.event_id)
        elif not unit.commit():
            self.duplicate = True
        elif unit.events and tracker.on_commit is not None:
            tracker.on_commit(unit.events)
        return False


_UNTRACKED = Attempt(None)
"""The attempt of an untracked handling: does nothing, never changes (shared)."""


class Tracker:
    """Tracking for one runtime; ``enabled=False`` gives the untracked path (at least once)."""

    def __init__(
        self,
        store: EventStore,
        *,
        enabled: bool = True,
        on_commit: Callable[[list[Event]], Any] | None = None,
    ) -> None:
        self.store = store
        self.enabled = enabled
        self.on_commit = on_commit
        """Called with the events a committed attempt published (the relay sends them)."""
        self._pure: dict[tuple[str, str], None] = {}
        self._writing: dict[tuple[str, str], None] = {}
        """The batch being written (taken whole from ``_pure``): still handled for :meth:`done`."""
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None

    def done(self, service: str, event: Event, tracked: bool = True) -> bool:
        """True when ``service`` has handled ``event`` (its tracking row says so)."""
        if not (self.enabled and tracked):
            return False
        key = (service, event.id)
        if key in self._pure or key in self._writing:
            return True
        return self.store.tracked(service, event.id) == HANDLED

    def attempt(self, service: str, event: Event, tracked: bool = True) -> Attempt:
        """The context of one run of the handler (see :class:`Attempt`)."""
        if not (self.enabled and tracked):
            return _UNTRACKED
        return Attempt(self, self.store.unit(service, event.id))

    def _pure_done(self, service: str, event_id: str) -> None:
        with self._lock:
            pure = self._pure
            pure[(service, event_id)] = None
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_loop, name="tusk-tracking", daemon=True
                )
                self._flusher.start()
            elif len(pure) == TRACKING_BATCH:  # once per batch: a wake-up is not free
                self._wake.set()

    def _flush_loop(self) -> None:
        """Write batched rows off the handling threads (a commit is slow; handlers need not wait).

        The thread stays while rows keep coming, and ends after ``TRACKING_IDLE_S`` without
        any: starting a thread (and its SQLite connection) per batch cost more than the rows.
        """
        idle_since: float | None = None
        while True:
            if len(self._pure) < TRACKING_BATCH:  # else a full batch is waiting already
                self._wake.wait(TRACKING_FLUSH_S)
            self._wake.clear()
            if self.flush():
                idle_since = None
                continue
            now = time.monotonic()
            if idle_since is None:
                idle_since = now
            with self._lock:
                if not self._pure and now - idle_since >= TRACKING_IDLE_S:
                    self._flusher = None
                    return

    def flush(self) -> int:
        """Write the batched tracking rows of handlings without store effects; returns how many.

        The batch is taken whole (a swap, not a copy and a removal row by row): the handling
        threads wait on the lock and the GIL for no per-row work of this thread.
        """
        with self._flush_lock:
            with self._lock:
                rows = self._pure
                if not rows:
                    return 0
                self._writing, self._pure = rows, {}
            try:
                self.store.track_many(rows, HANDLED)
            except StoreError as e:  # kept for the next flush
                log.warning("cannot record %d tracking rows: %s", len(rows), e)
                with self._lock:
                    rows.update(self._pure)
                    self._pure, self._writing = rows, {}
                return 0
            self._writing = {}
            return len(rows)

    def defer(self, event: Event) -> bool:
        """Keep an event a handler publishes for its attempt's commit; False outside one."""
        unit = current_unit.get()
        if unit is None or unit.store is not self.store:
            return False
        unit.add(event)
        return True

    def dead_lettered(self, service: str, event: Event) -> None:
        """Record that the event went to the DLQ: the store re-delivery then leaves it alone."""
        if self.enabled:
            try:
                self.store.track(service, event.id, DEAD)
            except StoreError as e:  # the DLQ entry exists; this only saves a re-delivery
                log.warning("cannot record dead-lettered %s for %s: %s", event.id, service, e)

    def forget(self, service: str, event_ids: Iterable[str]) -> None:
        """Before a redrive: the dead-lettered events may be handled again."""
        if self.enabled:
            self.store.untrack(service, list(event_ids))


def _rollback(unit: Unit) -> None:
    try:
        unit.rollback()
    except StoreError as e:
        unit.broken = unit.broken or str(e)


__all__ = ["Attempt", "Tracker"]
