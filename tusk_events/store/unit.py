"""One handling of one event by one service, as one store transaction (exactly-once effects).

A :class:`Unit` is opened by the runtime before a handler runs. Everything the handler does
through ``query``/``execute`` runs in the unit's transaction, the events it publishes are kept
and appended at commit together with an outbox row each (the relay puts them on the bus), and
the transaction also writes the tracking row ``(service, event id)``. So either all of a
handling's store effects are committed, with its tracking row, or none are; a second delivery
of the same event finds the row and does nothing.

The transaction starts lazily, on the first SQL statement or at commit, and the tracking row
is claimed first thing: a concurrent handling of the same event waits for the first one's
commit and then sees the row (:class:`~tusk_events.errors.AlreadyHandled` raised into the
handler, and :meth:`Unit.commit` returns False). Claiming first also gives every transaction
the same lock order (tracking row, then the store's write lock), so two units cannot deadlock.
"""

from __future__ import annotations

import abc
import contextvars
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tusk_events.errors import AlreadyHandled, StoreError
from tusk_events.events import Event

if TYPE_CHECKING:
    from tusk_events.store.base import EventStore
    from tusk_events.store.sqlguard import Checked

HANDLED = "handled"
"""Tracking outcome: the handler ran and its effects are committed."""

DEAD = "dead-lettered"
"""Tracking outcome: the event went to the dead-letter queue; a redrive may handle it again,
and the store re-delivery leaves it alone."""


current_unit: contextvars.ContextVar[Unit | None] = contextvars.ContextVar(
    "tusk_current_unit", default=None
)
"""The handling in progress in this thread: the fujsen helpers ``query``/``execute`` run their
SQL in it (when it is on their store), the runtime's ``publish`` adds to it."""


class Unit(abc.ABC):
    """The transaction of one handling; use :meth:`commit` or :meth:`rollback` exactly once."""

    # one per handled event: slots make it cheaper to build
    __slots__ = ("began", "broken", "closed", "duplicate", "event_id", "events", "service", "store")

    def __init__(self, store: EventStore, service: str, event_id: str) -> None:
        self.store = store
        self.service = service
        self.event_id = event_id
        self.events: list[Event] = []
        self.duplicate = False
        """True once the claim found the tracking row: the handling must be dropped."""
        self.broken: str | None = None
        """Why the transaction cannot be committed (it was lost mid-way), or None."""
        self.began = False
        self.closed = False

    # --- what a handler does -------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        checked, values = self.store._prepare(sql, params)
        rows, _ = self._statement(checked, values, want_rows=True)
        return rows

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        checked, values = self.store._prepare(sql, params)
        _, rowcount = self._statement(checked, values, want_rows=False)
        return -1 if checked.verb == "select" else rowcount

    def add(self, event: Event) -> None:
        """Keep an event the handler published: appended, with its outbox row, at commit."""
        self._usable()
        self.events.append(event)

    def _statement(
        self, checked: Checked, values: tuple[Any, ...], *, want_rows: bool
    ) -> tuple[list[tuple[Any, ...]], int]:
        self._usable()
        if not self.began:
            self._start()
        if self.duplicate:
            raise AlreadyHandled(f"{self.service} has already handled event {self.event_id}")
        return self._run(checked, values, want_rows=want_rows)

    def _usable(self) -> None:
        if self.closed:
            raise StoreError("this handling's transaction is already finished")
        if self.broken is not None:
            raise StoreError(f"this handling's transaction was lost: {self.broken}")

    def _start(self) -> None:
        try:
            self._begin()
        except StoreError as e:
            self.broken = str(e)
            raise
        self.began = True

    # --- the end -------------------------------------------------------------------------

    def commit(self) -> bool:
        """Commit effects and tracking row; False (rolled back) when the event was handled."""
        if self.closed:
            raise StoreError("this handling's transaction is already finished")
        if self.broken is not None:
            self.rollback()
            raise StoreError(f"this handling's transaction was lost: {self.broken}")
        try:
            if not self.began:
                self._start()
            if self.duplicate:
                self._finish(commit=False)
                return False
            self._finish(commit=True)
            return True
        finally:
            self.closed = True

    def rollback(self) -> None:
        """Drop everything (idempotent): the handler failed, or the event was a duplicate."""
        if self.closed:
            return
        self.closed = True
        if self.began:
            self._finish(commit=False)

    # --- per backend ---------------------------------------------------------------------

    @abc.abstractmethod
    def _begin(self) -> None:
        """Open the transaction and claim the tracking row (set ``duplicate`` if taken)."""

    @abc.abstractmethod
    def _run(
        self, checked: Checked, values: tuple[Any, ...], *, want_rows: bool
    ) -> tuple[list[tuple[Any, ...]], int]:
        """Run guarded fujsen SQL inside the transaction, with the fujsen restrictions."""

    @abc.abstractmethod
    def _finish(self, *, commit: bool) -> None:
        """Append ``events`` with outbox rows and COMMIT, or ROLLBACK; release the connection."""


__all__ = ["DEAD", "HANDLED", "Unit", "current_unit"]
