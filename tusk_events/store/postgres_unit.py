"""A handling's transaction on PostgreSQL: one pooled connection from begin to commit.

The transaction runs as the store's user; each fujsen statement runs inside a savepoint that
first switches to the fujsen role (the prologue of :mod:`tusk_events.store.postgres`: role,
search_path, statement_timeout, and the write lock for writes), checks afterwards that role
and search_path are still the ones set, and switches back (``RESET ROLE``) so the store's own
statements (outbox, COMMIT) run with the store's rights. A statement that fails is rolled back
to its savepoint, so a handler that catches the error can go on, as it could outside a unit.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from tusk_events.defaults import FUJSEN_SQL_TIMEOUT_S
from tusk_events.errors import AlreadyHandled, StoreError
from tusk_events.store import sqlguard
from tusk_events.store.base import event_row
from tusk_events.store.unit import Unit

if TYPE_CHECKING:
    from tusk_events.store.postgres import PostgresStore
    from tusk_events.store.sqlguard import Checked

SESSION_CHANGED = "tusk: the session role or search_path changed: "
"""The marker of the error the check after a fujsen statement in a unit raises."""


def literal(value: str) -> str:
    """A string literal, read the same whatever ``standard_conforming_strings`` says."""
    if "\x00" in value:
        raise StoreError("a text value holds a NUL character, which PostgreSQL cannot store")
    return "E'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class PostgresUnit(Unit):
    """BEGIN and the claim are sent with the first statement's prologue (or at commit): one
    round trip where they took one of their own."""

    __slots__ = ("_conn", "_pending", "_pool")
    store: PostgresStore

    def __init__(self, store: PostgresStore, service: str, event_id: str) -> None:
        super().__init__(store, service, event_id)
        self._conn: Any = None
        self._pool: Any = None
        self._pending: str | None = None
        """BEGIN and the claim, not sent yet."""

    def _begin(self) -> None:
        store = self.store
        # one simple query, the values as literals (psycopg's pipeline mode saves round trips
        # too, but costs more in Python than they do)
        pending = store._begin_claim % (
            literal(self.service), literal(self.event_id), repr(time.time())
        )
        self._pool = store._unit_connection()
        try:
            self._conn = self._pool.getconn()
        except store._psycopg_pool.PoolTimeout as e:
            raise store._error("cannot begin a handling", e) from e
        self._pending = pending

    def _claim(self, then: str = "") -> None:
        """Send BEGIN and the claim (and ``then``, statements without results to read)."""
        store = self.store
        pending, self._pending = self._pending, None
        assert pending is not None
        try:
            cur = self._conn.execute(pending + then)
            cur.nextset()
            self.duplicate = cur.rowcount != 1
        except store._psycopg.Error as e:
            self.broken = str(e)
            self._release()
            raise store._error(f"cannot begin handling {self.event_id}", e) from e

    def commit(self) -> bool:
        if not self.began and not self.closed and self.broken is None:
            try:
                self._start()
            except StoreError:
                self.closed = True
                raise
        if self._pending is not None and not self.closed and self.broken is None:
            try:
                self._claim()  # the claim decides between COMMIT and ROLLBACK
            except StoreError:
                self.closed = True
                raise
        return super().commit()

    def _run(
        self, checked: Checked, values: tuple[Any, ...], *, want_rows: bool
    ) -> tuple[list[tuple[Any, ...]], int]:
        store = self.store
        psycopg = store._psycopg
        errors = psycopg.errors
        if store._fujsen_unavailable:
            raise StoreError(f"fujsen SQL is unavailable on this store: {store._fujsen_unavailable}")
        write = checked.verb != "select"
        prologue = "; SAVEPOINT tusk_fujsen; " + store._fujsen_prologue[write]
        if self._pending is not None:  # the first statement: BEGIN, claim, prologue at once
            self._claim(prologue)
            if self.duplicate:
                raise AlreadyHandled(f"{self.service} has already handled event {self.event_id}")
        else:
            try:
                self._conn.execute(prologue[2:])
            except psycopg.Error as e:
                self.broken = str(e)
                raise store._error("fujsen SQL failed", e) from e
        conn = self._conn
        try:
            with conn.cursor() as cur:
                # for an untrusted config the server refuses a result past the byte cap
                # (bounded_sql): libpq buffers at most the cap
                cur.execute(sqlguard.sql_for(checked), values, binary=True)
                rows = []
                if want_rows and cur.description is not None:
                    rows = sqlguard.fetch_capped(cur)
                rowcount = cur.rowcount
            try:  # check role and search_path, release the savepoint: one round trip
                conn.execute(store._fujsen_epilogue)
            except errors.InvalidTextRepresentation as e:
                if SESSION_CHANGED not in str(e.diag.message_primary):
                    raise
                raise sqlguard.refuse("changing the session role or search_path") from e
        except BaseException as e:
            self._back_to_savepoint()
            if isinstance(e, errors.InsufficientPrivilege):
                raise sqlguard.SqlRefused(f"statement refused: {e.diag.message_primary}") from e
            if isinstance(e, errors.QueryCanceled):
                raise StoreError(f"fujsen SQL ran longer than {FUJSEN_SQL_TIMEOUT_S} s") from e
            if isinstance(e, errors.InvalidTextRepresentation):
                too_large = sqlguard.result_too_large(e.diag.message_primary)
                if too_large is not None:
                    raise too_large from e
            if isinstance(e, psycopg.Error):
                raise store._error("fujsen SQL failed", e) from e
            raise
        return store._limit_rows(rows), rowcount

    def _back_to_savepoint(self) -> None:
        try:
            self._conn.execute("ROLLBACK TO SAVEPOINT tusk_fujsen; RESET ROLE")
        except self.store._psycopg.Error as e:
            self.broken = f"the connection failed ({e})"

    def _finish(self, *, commit: bool) -> None:
        store = self.store
        conn = self._conn
        if conn is None:  # released when BEGIN or the claim failed
            return
        if self._pending is not None:  # nothing was sent: nothing to roll back
            assert not commit, "commit() sends the claim first"
            self._pending = None
            self._release()
            return
        try:
            if commit and self.events:
                # the events as one JSON literal (encoded in C): the outbox and COMMIT in one
                # simple query, one round trip
                rows = json.dumps(list(map(event_row, self.events)))
                conn.execute(store._outbox_commit % (literal(rows), repr(time.time())))
            elif commit:
                conn.execute("COMMIT")
            else:
                conn.execute("ROLLBACK")
        except store._psycopg.Error as e:
            raise store._error(f"cannot commit handling {self.event_id}", e) from e
        finally:
            self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.putconn(conn)  # the pool rolls back an open transaction


__all__ = ["PostgresUnit"]
