"""A handling's transaction on SQLite: the fujsen connection of the handling's thread.

The handler's SQL keeps running on the restricted connection (authorizer, timeout), so the
unit opens its transaction there: ``BEGIN IMMEDIATE`` takes the file's write lock up front (a
deferred transaction that reads first could not upgrade when another writer committed in
between), then the tracking row is claimed. The store's own statements (BEGIN, the claim, the
outbox rows, COMMIT) run with the connection's guard marked trusted. On a ``:memory:`` store
the store's lock is held from begin to commit, as every other access takes it.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any

from tusk_events.errors import StoreError
from tusk_events.store.base import event_row
from tusk_events.store.sqlite_sql import _CLAIM, _INSERT, _OUTBOX_ADD
from tusk_events.store.unit import Unit

if TYPE_CHECKING:
    from tusk_events.store.sqlguard import Checked
    from tusk_events.store.sqlite import SQLiteStore, _Held


class SQLiteUnit(Unit):
    __slots__ = ("_held", "_locked")
    store: SQLiteStore

    def __init__(self, store: SQLiteStore, service: str, event_id: str) -> None:
        super().__init__(store, service, event_id)
        self._held: _Held | None = None
        self._locked = False

    def _trusted(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        held = self._held
        assert held is not None and held.guard is not None
        held.guard.trusted = True
        try:
            return held.conn.execute(sql, params)
        finally:
            held.guard.trusted = False

    def _begin(self) -> None:
        store = self.store
        store._lock.__enter__()
        self._locked = True
        try:
            self._held = store._holder(True)
            self._trusted("BEGIN IMMEDIATE")
            cur = self._trusted(_CLAIM, (self.service, self.event_id, time.time()))
            self.duplicate = cur.rowcount != 1
        except BaseException as e:
            self._abort()
            if isinstance(e, sqlite3.Error):
                raise StoreError(f"cannot begin handling {self.event_id}: {e}") from e
            raise

    def _run(
        self, checked: Checked, values: tuple[Any, ...], *, want_rows: bool
    ) -> tuple[list[tuple[Any, ...]], int]:
        held = self._held
        assert held is not None
        try:
            return self.store._run_restricted(checked.sql, values, want_rows=want_rows)
        finally:
            if not held.conn.in_transaction:  # SQLite rolled the whole transaction back
                self.broken = "SQLite rolled the transaction back after an error"

    def _finish(self, *, commit: bool) -> None:
        try:
            if commit:
                now = time.time()
                for event in self.events:
                    cur = self._trusted(_INSERT, event_row(event))
                    if cur.rowcount == 1:
                        self._trusted(_OUTBOX_ADD, (cur.lastrowid, event.id, now))
                self._trusted("COMMIT")
        except sqlite3.Error as e:
            raise StoreError(f"cannot commit handling {self.event_id}: {e}") from e
        finally:
            self._abort()

    def _abort(self) -> None:
        """Roll back whatever is still open and release the lock."""
        held = self._held
        try:
            if held is not None and held.conn.in_transaction:
                try:
                    self._trusted("ROLLBACK")
                except sqlite3.Error:
                    pass
        finally:
            self._held = None
            if self._locked:
                self._locked = False
                self.store._lock.__exit__(None, None, None)


__all__ = ["SQLiteUnit"]
