"""The SQLite event store: one file, WAL mode, safe for several processes and threads.

(About 700 lines: the schema, replay's pinned query plans and the fujsen authorizer must
agree with each other; the tracking unit lives in ``sqlite_unit.py``.)

Each thread gets its own connection (WAL lets readers run while one writer writes); writes
wait up to the busy timeout for the file's write lock, and batches take it up front
(``BEGIN IMMEDIATE``) so concurrent writers queue instead of failing. ``:memory:`` stores live
in one process, so they share one connection behind a lock.

Fujsen SQL runs on a separate connection per thread with an authorizer that allows exactly:
SELECT, reads of ``event_store``, INSERT/UPDATE/DELETE of ``event_store`` (not of its ``id``,
the store position), recursive CTEs, and every function except ``load_extension``,
``fts3_tokenizer`` and the shell's file functions. Refused there: ATTACH/DETACH, VACUUM (also
``VACUUM INTO``, which SQLite reports as an ATTACH), PRAGMA (statement and table-valued
``pragma_*`` functions), CREATE/DROP/ALTER/REINDEX/ANALYZE, transaction control, and reads or
writes of any other table (``tusk_schema``, ``sqlite_master``, ``sqlite_sequence``; also
``json_each``/``json_tree``, whose set-up writes the schema). SQLite reports ``count(*)`` of a
table without a database name, as it does reads of CTEs and subqueries, so the authorizer lets
those through and the statement guard refuses the other tables by name. Loading extensions is
switched off, no database can be attached, values are limited to ``FUJSEN_SQL_MAX_LENGTH``
bytes, and a progress handler stops statements running past ``FUJSEN_SQL_TIMEOUT_S``. Unlike
PostgreSQL's identity column, SQLite accepts an explicit ``id`` in a fujsen INSERT.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Generator, Iterable, Sequence
from itertools import starmap
from typing import Any

from tusk_events.defaults import (
    FUJSEN_SQL_MAX_LENGTH,
    FUJSEN_SQL_TIMEOUT_S,
    SQLITE_BUSY_TIMEOUT_S,
    SQLITE_SYNCHRONOUS,
)
from tusk_events.errors import StoreError
from tusk_events.events import Event
from tusk_events.store import sqlguard, timestamps
from tusk_events.store.base import COLUMNS, SCHEMA_VERSION, EventStore, StoredEvent, event_row
from tusk_events.store.sqlite_sql import _INSERT, _LEASE, _OUTBOX_ADD, _TRACK
from tusk_events.store.sqlite_unit import SQLiteUnit
from tusk_events.store.unit import HANDLED, Unit

_DIGIT = "[0-9]"
_SECOND_GLOB = f"{_DIGIT * 4}-{_DIGIT * 2}-{_DIGIT * 2} {_DIGIT * 2}:{_DIGIT * 2}:{_DIGIT * 2}"

TRACE_EXPRESSION = "json_extract(metadata, '$.trace_id')"
"""The indexed expression a trace lookup must repeat word for word to use the index."""

MIGRATIONS: dict[int, list[str]] = {
    1: [
        f"""CREATE TABLE event_store (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            event_type TEXT NOT NULL,
            payload TEXT,
            timestamp TEXT NOT NULL DEFAULT (datetime('now')) CHECK (
                typeof(timestamp) = 'text' AND (
                    timestamp GLOB '{_SECOND_GLOB}'
                    OR (timestamp GLOB '{_SECOND_GLOB}.*[1-9]' AND length(timestamp) <= 26
                        AND substr(timestamp, 21) NOT GLOB '*[^0-9]*'))),
            event_id TEXT UNIQUE,
            metadata TEXT
        )""",
        "CREATE INDEX event_store_ts ON event_store (timestamp)",
        "CREATE INDEX event_store_type_ts ON event_store (event_type, timestamp)",
        "CREATE INDEX event_store_type_id ON event_store (event_type, id)",
    ],
    2: [
        """CREATE TABLE tusk_tracking (
            service TEXT NOT NULL,
            event_id TEXT NOT NULL,
            outcome TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (service, event_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE tusk_outbox (
            seq INTEGER PRIMARY KEY,
            event_id TEXT NOT NULL,
            created REAL NOT NULL
        )""",
        "CREATE TABLE tusk_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL, until REAL)",
    ],
    3: [f"CREATE INDEX event_store_trace ON event_store ({TRACE_EXPRESSION}, id)"],
}
"""Schema changes by version; each list runs in one transaction, in order."""

_SELECT = f"SELECT {COLUMNS} FROM event_store"
_E_COLUMNS = ", ".join(f"e.{c.strip()}" for c in COLUMNS.split(","))


# Replay finds the first matching id through a timestamp index (cost: the matching entries,
# which replay reads anyway), then walks the primary key, or the (event_type, id) index, in id
# order with keyset pagination. The plans are pinned: a planner that chose the timestamp
# index for a batch would sort every match again on each batch.
_FIRST_ID = {
    False: "SELECT min(id) FROM event_store INDEXED BY event_store_ts WHERE timestamp > ?",
    True: (
        "SELECT min(id) FROM event_store INDEXED BY event_store_type_ts "
        "WHERE event_type = ? AND timestamp > ?"
    ),
}
_BY_ID = f"SELECT {COLUMNS} FROM event_store NOT INDEXED WHERE"
_BY_TYPE = (
    f"SELECT {COLUMNS} FROM event_store INDEXED BY event_store_type_id WHERE event_type = ? AND"
)
_BATCH = {
    (False, False): f"{_BY_ID} id > ? AND id <= ? ORDER BY id LIMIT ?",
    (True, False): f"{_BY_TYPE} id > ? AND id <= ? ORDER BY id LIMIT ?",
    (False, True): f"{_BY_ID} id > ? AND id <= ? AND timestamp > ? ORDER BY id LIMIT ?",
    (True, True): f"{_BY_TYPE} id > ? AND id <= ? AND timestamp > ? ORDER BY id LIMIT ?",
}

_SCHEMA_CHANGES = {
    sqlite3.SQLITE_CREATE_INDEX: "CREATE INDEX",
    sqlite3.SQLITE_CREATE_TABLE: "CREATE TABLE",
    sqlite3.SQLITE_CREATE_TEMP_INDEX: "CREATE INDEX",
    sqlite3.SQLITE_CREATE_TEMP_TABLE: "CREATE TABLE",
    sqlite3.SQLITE_CREATE_TEMP_TRIGGER: "CREATE TRIGGER",
    sqlite3.SQLITE_CREATE_TEMP_VIEW: "CREATE VIEW",
    sqlite3.SQLITE_CREATE_TRIGGER: "CREATE TRIGGER",
    sqlite3.SQLITE_CREATE_VIEW: "CREATE VIEW",
    sqlite3.SQLITE_DROP_INDEX: "DROP INDEX",
    sqlite3.SQLITE_DROP_TABLE: "DROP TABLE",
    sqlite3.SQLITE_DROP_TEMP_INDEX: "DROP INDEX",
    sqlite3.SQLITE_DROP_TEMP_TABLE: "DROP TABLE",
    sqlite3.SQLITE_DROP_TEMP_TRIGGER: "DROP TRIGGER",
    sqlite3.SQLITE_DROP_TEMP_VIEW: "DROP VIEW",
    sqlite3.SQLITE_DROP_TRIGGER: "DROP TRIGGER",
    sqlite3.SQLITE_DROP_VIEW: "DROP VIEW",
    sqlite3.SQLITE_ALTER_TABLE: "ALTER TABLE",
    sqlite3.SQLITE_REINDEX: "REINDEX",
    sqlite3.SQLITE_ANALYZE: "ANALYZE",
    sqlite3.SQLITE_CREATE_VTABLE: "CREATE VIRTUAL TABLE",
    sqlite3.SQLITE_DROP_VTABLE: "DROP VIRTUAL TABLE",
}
_FUJSEN_TABLES = frozenset({"event_store"})
_DENIED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit"})
_SCHEMA_TABLES = frozenset(
    {"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"}
)


def fujsen_verdict(action: int, arg1: str | None, arg2: str | None, db: str | None) -> str | None:
    """Why the fujsen connection refuses an operation, or None to allow it."""
    if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_RECURSIVE):
        return None
    table = (arg1 or "").lower()
    if action == sqlite3.SQLITE_READ:
        # db is None for CTEs and subqueries, and for count(*) of any table (the statement
        # guard refuses the names of the store's other tables, which covers that case).
        if db is None or (table in _FUJSEN_TABLES and db == "main"):
            return None
        return f"reading {arg1}"
    if action in (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE):
        if table in _SCHEMA_TABLES:
            # SQLite asks about this write before it names the CREATE/DROP that causes it.
            return (
                "a schema change (a write to sqlite_master, which json_each and other "
                "table-valued functions also make)"
            )
        if table not in _FUJSEN_TABLES or db != "main":
            return f"writing {arg1}"
        if action == sqlite3.SQLITE_UPDATE and (arg2 or "").lower() == "id":
            return "changing event_store.id (the store position)"
        return None
    if action == sqlite3.SQLITE_FUNCTION:
        if (arg2 or "").lower() in _DENIED_FUNCTIONS:
            return f"the function {arg2}()"
        return None
    if action == sqlite3.SQLITE_PRAGMA:
        return "PRAGMA"
    if action == sqlite3.SQLITE_ATTACH:
        return "ATTACH (or VACUUM INTO)" if arg1 else "VACUUM"
    if action == sqlite3.SQLITE_DETACH:
        return "DETACH"
    if action in (sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT):
        return "transaction control"
    if action in _SCHEMA_CHANGES:
        return f"a schema change ({_SCHEMA_CHANGES[action]})"
    return f"SQLite operation #{action}"


class _Guard:
    """Authorizer and progress handler of one fujsen connection; remembers why it refused."""

    __slots__ = ("deadline", "expired", "reasons", "trusted")

    def __init__(self) -> None:
        self.trusted = False
        """Set while the store runs its own statements on this connection (a handling's
        transaction: BEGIN, the tracking row, the outbox)."""
        self.reasons: list[str] = []
        self.deadline = math.inf
        self.expired = False

    def authorize(self, action: int, arg1: Any, arg2: Any, db: Any, trigger: Any) -> int:
        if self.trusted:
            return sqlite3.SQLITE_OK
        reason = fujsen_verdict(action, arg1, arg2, db)
        if reason is None:
            return sqlite3.SQLITE_OK
        self.reasons.append(reason)
        return sqlite3.SQLITE_DENY

    @property
    def reason(self) -> str | None:
        """The most telling refusal: name the CREATE rather than its write to sqlite_master."""
        specific = [r for r in self.reasons if "sqlite_master" not in r] or self.reasons
        return specific[0] if specific else None

    def progress(self) -> int:
        if time.monotonic() > self.deadline:
            self.expired = True
            return 1
        return 0


class _Held:
    """A connection owned by one thread (and process); weakly tracked so close() finds it."""

    __slots__ = ("__weakref__", "conn", "guard", "pid")

    def __init__(self, conn: sqlite3.Connection, guard: _Guard | None) -> None:
        self.conn = conn
        self.pid = os.getpid()
        self.guard = guard


class SQLiteStore(EventStore):
    """Event store in a SQLite file (or ``:memory:``)."""

    backend = "sqlite"
    dialect = "sqlite"

    def __init__(
        self,
        path: str,
        *,
        url: str | None = None,
        busy_timeout: float = SQLITE_BUSY_TIMEOUT_S,
        synchronous: str = SQLITE_SYNCHRONOUS,
    ) -> None:
        sync = synchronous.upper()
        if sync not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise StoreError(f"unknown SQLite synchronous mode {synchronous!r}")
        self.memory = path in ("", ":memory:")
        self.path = ":memory:" if self.memory else os.path.abspath(path)
        self.url = url or f"sqlite:///{path}"
        self._busy_timeout = busy_timeout
        self._synchronous = sync
        self._closed = False
        self._local = threading.local()
        self._held: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._held_lock = threading.Lock()
        self._shared: dict[bool, _Held] = {}
        if self.memory:
            self._target = f"file:tusk-events-{uuid.uuid4().hex}?mode=memory&cache=shared"
            self._lock: contextlib.AbstractContextManager[Any] = threading.RLock()
        else:
            self._target = self.path
            self._lock = contextlib.nullcontext()
        self._migrate()

    # --- connections ---------------------------------------------------------------------

    def _connect(self, *, fujsen: bool) -> _Held:
        if self._closed:
            raise StoreError("the event store is closed")
        try:
            conn = sqlite3.connect(
                self._target,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                uri=self.memory,
                cached_statements=128,
            )
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            guard = self._restrict(conn) if fujsen else None
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the SQLite store {self.path}: {e}") from e
        held = _Held(conn, guard)
        with self._held_lock:
            self._held.add(held)
        return held

    @staticmethod
    def _restrict(conn: sqlite3.Connection) -> _Guard:
        if hasattr(conn, "enable_load_extension"):
            conn.enable_load_extension(False)
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, FUJSEN_SQL_MAX_LENGTH)
        guard = _Guard()
        conn.set_authorizer(guard.authorize)
        conn.set_progress_handler(guard.progress, 10_000)
        return guard

    def _holder(self, fujsen: bool) -> _Held:
        if self.memory:
            held = self._shared.get(fujsen)
            if held is None:
                held = self._shared[fujsen] = self._connect(fujsen=fujsen)
            return held
        attr = "fujsen" if fujsen else "main"
        held = getattr(self._local, attr, None)
        if held is None or held.pid != os.getpid():
            held = self._connect(fujsen=fujsen)
            setattr(self._local, attr, held)
        return held

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("the event store is closed")
        return self._holder(False).conn

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._held_lock:
            held = list(self._held)
            self._held.clear()
        for h in held:
            if h.pid == os.getpid():
                with contextlib.suppress(sqlite3.Error):
                    h.conn.close()
        self._shared.clear()

    # --- schema ----------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._lock:
            conn = self._conn()
            try:
                if not self.memory:
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    if str(mode).lower() != "wal":
                        raise StoreError(f"cannot switch {self.path} to WAL mode (got {mode})")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS tusk_schema "
                        "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
                    )
                    row = conn.execute(
                        "SELECT version FROM tusk_schema WHERE component = 'event_store'"
                    ).fetchone()
                    current = row[0] if row else 0
                    if current > SCHEMA_VERSION:
                        raise StoreError(
                            f"{self.path} has store schema version {current}; this version of "
                            f"tusk_events reads up to {SCHEMA_VERSION}"
                        )
                    for version in range(current + 1, SCHEMA_VERSION + 1):
                        for statement in MIGRATIONS[version]:
                            conn.execute(statement)
                    if current != SCHEMA_VERSION:
                        conn.execute(
                            "INSERT INTO tusk_schema (component, version) "
                            "VALUES ('event_store', ?) "
                            "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                            (SCHEMA_VERSION,),
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise StoreError(f"cannot prepare the SQLite store {self.path}: {e}") from e

    @property
    def schema_version(self) -> int:
        with self._lock:
            return (
                self._conn()
                .execute("SELECT version FROM tusk_schema WHERE component = 'event_store'")
                .fetchone()[0]
            )

    # --- writes --------------------------------------------------------------------------

    def append(self, event: Event) -> bool:
        row = event_row(event)
        with self._lock:
            try:
                return self._conn().execute(_INSERT, row).rowcount == 1
            except sqlite3.Error as e:
                raise StoreError(f"cannot append event {event.id}: {e}") from e

    def append_many(self, events: Iterable[Event]) -> int:
        with self._lock:
            conn = self._conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    added = conn.executemany(_INSERT, map(event_row, events)).rowcount
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise StoreError(f"cannot append events: {e}") from e
        return max(added, 0)

    # --- reads ---------------------------------------------------------------------------

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn().execute(sql, params).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"cannot read the SQLite store {self.path}: {e}") from e

    def _replay(
        self, type: str | None, since: str | None, after_id: int, batch: int
    ) -> Generator[Iterable[StoredEvent], None, None]:
        upper = self._execute("SELECT max(id) FROM event_store")[0][0]
        if upper is None or upper <= after_id:
            return
        if since is not None:
            first = self._execute(_FIRST_ID[type is not None], (type, since) if type else (since,))
            if first[0][0] is None:
                return
            after_id = max(after_id, first[0][0] - 1)
        sql = _BATCH[(type is not None, since is not None)]
        head = (type,) if type is not None else ()
        tail = (since, batch) if since is not None else (batch,)
        while True:
            rows = self._execute(sql, (*head, after_id, upper, *tail))
            if not rows:
                return
            yield starmap(StoredEvent, rows)
            if len(rows) < batch:
                return
            after_id = rows[-1][0]

    def explain_replay(self, type: str | None = None, since: Any = None) -> list[str]:
        """The query plans replay uses for these filters (for diagnostics and tests)."""
        plans = []
        head = (type,) if type is not None else ()
        tail: tuple[Any, ...] = (1,)
        if since is not None:
            since_text = timestamps.canonical(since)
            first = self._execute(
                "EXPLAIN QUERY PLAN " + _FIRST_ID[type is not None], (*head, since_text)
            )
            plans += [r[3] for r in first]
            tail = (since_text, 1)
        sql = "EXPLAIN QUERY PLAN " + _BATCH[(type is not None, since is not None)]
        plans += [r[3] for r in self._execute(sql, (*head, 0, 1, *tail))]
        return plans

    def _count(self, type: str | None, since: str | None) -> int:
        where, params = _where(type, since)
        return self._execute(f"SELECT count(*) FROM event_store{where}", params)[0][0]

    def stats(self) -> dict[str, Any]:
        types = dict(
            self._execute(
                "SELECT event_type, count(*) FROM event_store "
                "GROUP BY event_type ORDER BY event_type"
            )
        )
        first, last, last_seq = self._execute(
            "SELECT (SELECT min(timestamp) FROM event_store), "
            "(SELECT max(timestamp) FROM event_store), (SELECT max(id) FROM event_store)"
        )[0]
        return self._stats(types, first, last, last_seq)

    def get(self, event_id: str) -> StoredEvent | None:
        rows = self._execute(f"{_SELECT} WHERE event_id = ?", (event_id,))
        return StoredEvent(*rows[0]) if rows else None

    def by_trace(self, trace_id: str) -> list[StoredEvent]:
        rows = self._execute(f"{_SELECT} WHERE {TRACE_EXPRESSION} = ? ORDER BY id", (trace_id,))
        return [StoredEvent(*row) for row in rows]

    # --- tracking, outbox, leases (see tusk_events.store.unit) ---------------------------

    def unit(self, service: str, event_id: str) -> Unit:
        return SQLiteUnit(self, service, event_id)

    def _write(self, what: str, sql: str, params: tuple[Any, ...], *, lazy: bool = False) -> int:
        """One statement; ``lazy`` ones (leases, records whose loss in a crash costs a repeat,
        never an effect) commit without an fsync of their own (``synchronous = NORMAL``)."""
        with self._lock:
            try:
                with self._lazy(lazy) as conn:
                    return conn.execute(sql, params).rowcount
            except sqlite3.Error as e:
                raise StoreError(f"cannot {what}: {e}") from e

    @contextlib.contextmanager
    def _lazy(self, lazy: bool) -> Generator[sqlite3.Connection, None, None]:
        conn = self._conn()
        if not lazy or self._synchronous in ("OFF", "NORMAL") or self.memory:
            yield conn
            return
        conn.execute("PRAGMA synchronous = NORMAL")
        try:
            yield conn
        finally:
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")

    def tracked(self, service: str, event_id: str) -> str | None:
        rows = self._execute(
            "SELECT outcome FROM tusk_tracking WHERE service = ? AND event_id = ?",
            (service, event_id),
        )
        return rows[0][0] if rows else None

    def track(self, service: str, event_id: str, outcome: str) -> bool:
        return self._write("record a tracking row", _TRACK,
                           (service, event_id, outcome, time.time())) == 1

    def track_many(self, rows: Iterable[tuple[str, str]], outcome: str) -> None:
        now = time.time()
        values = [(service, event_id, outcome, now) for service, event_id in rows]
        with self._lock, self._lazy(outcome == HANDLED) as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(_TRACK, values)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise StoreError(f"cannot record tracking rows: {e}") from e

    def untrack(self, service: str, event_ids: Iterable[str]) -> int:
        with self._lock:
            try:
                return max(0, self._conn().executemany(
                    "DELETE FROM tusk_tracking WHERE service = ? AND event_id = ? "
                    "AND outcome <> 'handled'",
                    [(service, i) for i in event_ids],
                ).rowcount)
            except sqlite3.Error as e:
                raise StoreError(f"cannot forget tracking rows: {e}") from e

    def append_outbox(self, event: Event) -> bool:
        row = event_row(event)
        with self._lock:
            conn = self._conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    cur = conn.execute(_INSERT, row)
                    added = cur.rowcount == 1
                    if added:
                        conn.execute(_OUTBOX_ADD, (cur.lastrowid, event.id, time.time()))
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise StoreError(f"cannot append event {event.id}: {e}") from e
        return added

    def outbox(self, older_than: float, limit: int) -> list[StoredEvent]:
        rows = self._execute(
            f"SELECT {_E_COLUMNS} FROM tusk_outbox o JOIN event_store e ON e.id = o.seq "
            "WHERE o.created < ? ORDER BY o.seq LIMIT ?",
            (older_than, limit),
        )
        return list(starmap(StoredEvent, rows))

    def confirm(self, event_ids: Iterable[str]) -> int:
        with self._lock:
            try:
                with self._lazy(True) as conn:
                    return max(0, conn.executemany(
                        "DELETE FROM tusk_outbox WHERE event_id = ?", [(i,) for i in event_ids]
                    ).rowcount)
            except sqlite3.Error as e:
                raise StoreError(f"cannot confirm outbox rows: {e}") from e

    def outbox_count(self) -> int:
        return self._execute("SELECT count(*) FROM tusk_outbox")[0][0]

    def untracked(
        self, service: str, types: Sequence[str] | None, since: Any, after_id: int, limit: int
    ) -> list[StoredEvent]:
        if types is not None and not types:
            return []
        of_types = "" if types is None else f"e.event_type IN ({', '.join('?' * len(types))}) AND "
        rows = self._execute(
            f"SELECT {_E_COLUMNS} FROM event_store e WHERE {of_types}"
            "e.timestamp > ? AND e.id > ? AND e.event_id IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM tusk_tracking t WHERE t.service = ? AND t.event_id = e.event_id) "
            "ORDER BY e.id LIMIT ?",
            (*(types or ()), timestamps.canonical(since), after_id, service, limit),
        )
        return list(starmap(StoredEvent, rows))

    def lease(self, name: str, owner: str, ttl_s: float, now: float) -> bool:
        return self._write(
            "take a lease", _LEASE, (f"lease:{name}", owner, now + ttl_s, now), lazy=True
        ) == 1

    def meta(self, key: str) -> str | None:
        rows = self._execute("SELECT value FROM tusk_meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._write(
            "write a store record",
            "INSERT INTO tusk_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
            lazy=True,
        )

    # --- fujsen SQL ----------------------------------------------------------------------

    def _run_fujsen(
        self, checked: sqlguard.Checked, params: tuple[Any, ...], *, want_rows: bool
    ) -> tuple[list[tuple[Any, ...]], int]:
        return self._run_restricted(checked.sql, params, want_rows=want_rows)

    def _run_restricted(
        self, sql: str, params: tuple[Any, ...] = (), *, want_rows: bool = True
    ) -> tuple[list[tuple[Any, ...]], int]:
        """Run SQL on the fujsen connection (authorizer and timeout, no statement guard)."""
        with self._lock:
            if self._closed:
                raise StoreError("the event store is closed")
            held = self._holder(True)
            guard = held.guard
            assert guard is not None
            guard.reasons, guard.expired = [], False
            guard.deadline = time.monotonic() + sqlguard.statement_timeout()
            cur = None
            try:
                cur = held.conn.execute(sql, params)
                rows = []
                if want_rows and cur.description is not None:
                    rows = sqlguard.fetch_capped(cur, batched=False)  # rows and bytes, counted per row
                rowcount = cur.rowcount
            except sqlite3.Error as e:
                if guard.reason is not None:
                    raise sqlguard.refuse(guard.reason) from e
                if guard.expired:
                    raise StoreError(f"fujsen SQL ran longer than {FUJSEN_SQL_TIMEOUT_S} s") from e
                raise StoreError(f"fujsen SQL failed: {e}") from e
            finally:
                guard.deadline = math.inf
                if cur is not None:
                    cur.close()
        return self._limit_rows(rows), rowcount


def _where(type: str | None, since: str | None) -> tuple[str, tuple[Any, ...]]:
    clauses, params = [], []
    if type is not None:
        clauses.append("event_type = ?")
        params.append(type)
    if since is not None:
        clauses.append("timestamp > ?")
        params.append(since)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


__all__ = ["MIGRATIONS", "SQLiteStore", "fujsen_verdict"]
