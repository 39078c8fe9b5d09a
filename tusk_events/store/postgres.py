"""The PostgreSQL event store: psycopg 3 with a connection pool, in one schema.

(About 750 lines: the schema, pool, roles and grants for fujsen, and replay must agree with
each other; the tracking unit lives in ``postgres_unit.py``.)

The store lives in the first schema of the connection's search_path (``public`` unless the
URL says otherwise, e.g. ``?options=-csearch_path%3Devents``); all its SQL names that schema
explicitly. Columns and timestamp rules are those of the SQLite store (see
:mod:`tusk_events.store.base`); text is compared byte-wise (``COLLATE "C"``) so timestamps
order the same way on both. ``datetime('now')`` and ``datetime(value, '+N unit', ...)`` exist
as a SQL function in the schema, returning SQLite's ``'YYYY-MM-DD HH:MM:SS'`` in UTC, so the
docs' SQL runs unchanged.

Writers take a transaction-scoped advisory lock before inserting, so ids are handed out and
committed in the same order and a replay cursor (``after_id``) cannot skip a slow
transaction's row. Replay reads through a server-side cursor, ``batch`` rows per fetch.

Fujsen SQL runs on its own small pool, each statement in a transaction that first does
``SET LOCAL ROLE`` to a role made for this schema (``tusk_fujsen_<schema>_<hash>``: NOLOGIN,
no attributes, member of nothing, granted only USAGE on the schema and SELECT, INSERT,
UPDATE, DELETE on ``event_store``), pins ``search_path`` to the schema (then ``pg_temp``), and
sets ``statement_timeout``. The role cannot read ``tusk_schema`` or other schemas' tables,
change the schema, write files (``COPY ... TO`` is refused before it reaches the server, and
``pg_read_file``, ``lo_export`` and server-side COPY need superuser or ``pg_*`` roles), or set
explicit ids (identity column). Because a session whose login user is a superuser could switch
the role back with ``set_config('role', ...)``, the statement guard refuses every known way of
doing that (see :mod:`tusk_events.store.sqlguard`) and the store checks after each statement
that the role and search_path are still the ones it set, rolling back otherwise. Connecting
the store as a non-superuser owner narrows what such a switch could reach.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from itertools import islice, starmap
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tusk_events.defaults import (
    FUJSEN_SQL_TIMEOUT_S,
    POSTGRES_APPEND_CHUNK,
    POSTGRES_CONNECT_TIMEOUT_S,
    POSTGRES_DEAD_PEER_S,
    POSTGRES_FUJSEN_POOL_MAX_SIZE,
    POSTGRES_POOL_MAX_SIZE,
    POSTGRES_POOL_MIN_SIZE,
    POSTGRES_POOL_TIMEOUT_S,
    POSTGRES_RECONNECT_WINDOW_S,
    POSTGRES_UNIT_POOL_MAX_SIZE,
)
from tusk_events.errors import StoreError
from tusk_events.events import Event
from tusk_events.store import sqlguard, timestamps
from tusk_events.store.base import COLUMNS, SCHEMA_VERSION, EventStore, StoredEvent, event_row
from tusk_events.store.postgres_unit import SESSION_CHANGED, PostgresUnit, literal
from tusk_events.store.timestamps import CANONICAL_PATTERN
from tusk_events.store.unit import HANDLED, Unit

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'tusk_events[postgres]'"
_E_COLUMNS = ", ".join(f"e.{c.strip()}" for c in COLUMNS.split(","))
_URL_OPTIONS = {"pool_min_size": "min_size", "pool_max_size": "max_size"}

TRACE_EXPRESSION = "(metadata::json ->> 'trace_id')"
"""The indexed expression a trace lookup must repeat word for word to use the index."""


def _driver() -> tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as e:
        raise StoreError(
            f"the PostgreSQL event store needs psycopg 3 and psycopg-pool: {INSTALL_HINT}"
        ) from e
    return psycopg, psycopg_pool


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def fujsen_role_name(database: str, schema: str) -> str:
    """The role fujsen SQL runs as for one store: one per database and schema, at most 63 bytes."""
    digest = hashlib.sha256(f"{database}\0{schema}".encode()).hexdigest()[:12]
    readable = re.sub(r"[^a-z0-9_]", "", schema.lower())[:30]
    return f"tusk_fujsen_{readable}_{digest}"


def _lock_key(purpose: str, database: str, schema: str) -> int:
    digest = hashlib.sha256(f"tusk_events:{purpose}:{database}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def migrations(schema: str) -> dict[int, list[str]]:
    """Schema changes by version, for the (quoted) schema; each list runs in one transaction."""
    s = schema
    return {
        1: [
            f"""CREATE FUNCTION {s}.datetime(value text, VARIADIC modifiers text[] DEFAULT '{{}}')
                RETURNS text LANGUAGE sql STABLE
                SET timezone = 'UTC' SET search_path = pg_catalog
                AS $fn$ SELECT to_char(value::timestamptz + COALESCE(
                    (SELECT sum(m::interval) FROM unnest(modifiers) AS m), interval '0'),
                    'YYYY-MM-DD HH24:MI:SS') $fn$""",
            f"""CREATE TABLE {s}.event_store (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                event_type text COLLATE "C" NOT NULL,
                payload text,
                timestamp text COLLATE "C" NOT NULL DEFAULT {s}.datetime('now')
                    CHECK (timestamp ~ '{CANONICAL_PATTERN}'),
                event_id text UNIQUE,
                metadata text
            )""",
            f"CREATE INDEX event_store_ts ON {s}.event_store (timestamp)",
            f"CREATE INDEX event_store_type_ts ON {s}.event_store (event_type, timestamp)",
            f"CREATE INDEX event_store_type_id ON {s}.event_store (event_type, id)",
        ],
        2: [
            f"""CREATE TABLE {s}.tusk_tracking (
                service text NOT NULL,
                event_id text NOT NULL,
                outcome text NOT NULL,
                at double precision NOT NULL,
                PRIMARY KEY (service, event_id)
            )""",
            f"""CREATE TABLE {s}.tusk_outbox (
                seq bigint PRIMARY KEY,
                event_id text NOT NULL,
                created double precision NOT NULL
            )""",
            f"CREATE TABLE {s}.tusk_meta (key text PRIMARY KEY, value text NOT NULL, "
            "until double precision)",
        ],
        3: [f"CREATE INDEX event_store_trace ON {s}.event_store (({TRACE_EXPRESSION}), id)"],
    }


def _split_url(url: str) -> tuple[str, dict[str, int], str]:
    """(conninfo for libpq, pool options, URL without password)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options: dict[str, int] = {}
    rest = []
    for key, value in query:
        if key in _URL_OPTIONS:
            try:
                options[_URL_OPTIONS[key]] = int(value)
            except ValueError as e:
                raise StoreError(f"bad {key} in the store URL: {value!r}") from e
        else:
            rest.append((key, value))
    scheme = "postgresql"
    conninfo = urlunsplit((scheme, parts.netloc, parts.path, urlencode(rest), parts.fragment))
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(":" + parts.password + "@", ":***@", 1)
    shown = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return conninfo, options, shown


def liveness(conninfo: str) -> dict[str, Any]:
    """libpq parameters that bound how long a dead peer goes unnoticed (``POSTGRES_DEAD_PEER_S``).

    Both ends: the client's keepalives and ``tcp_user_timeout``, and the same for the server's
    side of the session (``options``), because only the server can end the transaction of a
    host that vanished. What the URL sets itself is kept.
    """
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(conninfo)
    idle = max(1, POSTGRES_DEAD_PEER_S // 2)
    count = 5
    interval = max(1, (POSTGRES_DEAD_PEER_S - idle) // count)
    client = {"keepalives": 1, "keepalives_idle": idle, "keepalives_interval": interval,
              "keepalives_count": count, "tcp_user_timeout": POSTGRES_DEAD_PEER_S * 1000}
    out: dict[str, Any] = {k: v for k, v in client.items() if k not in given}
    options = str(given.get("options") or "")
    if "tcp_keepalives" not in options and "tcp_user_timeout" not in options:
        server = " ".join(f"-c tcp_{k}={v}" for k, v in (
            ("keepalives_idle", idle), ("keepalives_interval", interval), ("keepalives_count", count),
            ("user_timeout", POSTGRES_DEAD_PEER_S * 1000)))
        out["options"] = f"{options} {server}".strip()
    return out


def _batched(rows: Iterable[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


def _number_loaders() -> tuple[type, type]:
    """numeric as int or float, like SQLite returns: fujsen get JSON-ready values."""
    from psycopg.types.numeric import NumericBinaryLoader, NumericLoader

    def convert(d: Any) -> Any:
        if d.is_finite() and d.as_tuple().exponent >= 0:
            return int(d)
        return float(d)

    class Number(NumericLoader):  # type: ignore[misc]
        def load(self, data: Any) -> Any:
            return convert(super().load(data))

    class NumberBinary(NumericBinaryLoader):  # type: ignore[misc]
        def load(self, data: Any) -> Any:
            return convert(super().load(data))

    return Number, NumberBinary


class PostgresStore(EventStore):
    """Event store in a PostgreSQL schema."""

    backend = "postgresql"
    dialect = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        min_size: int | None = None,
        max_size: int | None = None,
        fujsen_max_size: int = POSTGRES_FUJSEN_POOL_MAX_SIZE,
        timeout: float = POSTGRES_POOL_TIMEOUT_S,
    ) -> None:
        self._psycopg, self._psycopg_pool = psycopg, psycopg_pool = _driver()
        conninfo, url_options, self.url = _split_url(url)
        min_size = (
            url_options.get("min_size", POSTGRES_POOL_MIN_SIZE) if min_size is None else min_size
        )
        max_size = (
            url_options.get("max_size", POSTGRES_POOL_MAX_SIZE) if max_size is None else max_size
        )
        if min_size < 0 or max_size < max(min_size, 1):
            raise StoreError(f"bad pool sizes: min {min_size}, max {max_size}")
        self._conninfo = conninfo
        # UTF8 always: handling units send some values as escaped literals (postgres_unit.literal),
        # which only a client encoding without backslash-bearing multibyte characters keeps safe
        self._kwargs: dict[str, Any] = {"autocommit": True, **liveness(conninfo), "client_encoding": "UTF8"}
        if "connect_timeout" not in conninfo:
            self._kwargs["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
        self._timeout = timeout
        self._fujsen_max_size = fujsen_max_size
        self._fujsen_pool: Any = None
        self._unit_pool: Any = None
        self._fujsen_lock = threading.Lock()
        self._closed = False
        try:
            with psycopg.connect(conninfo, **self._kwargs) as conn:
                self._inspect(conn)
                self._migrate(conn)
        except psycopg.Error as e:
            raise StoreError(f"cannot open the PostgreSQL store {self.url}: {e}") from e
        self._pool = psycopg_pool.ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs=self._kwargs,
            open=False,
            timeout=timeout,
            reconnect_timeout=POSTGRES_RECONNECT_WINDOW_S,
            name=f"tusk-events-{self.schema}",
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except psycopg_pool.PoolTimeout as e:
            self._pool.close()
            raise StoreError(f"cannot open a connection pool to {self.url}: {e}") from e

    # --- setup -----------------------------------------------------------------------------

    def _inspect(self, conn: Any) -> None:
        schema, database, superuser, shown_schema = conn.execute(
            "SELECT current_schema(), current_database(), "
            "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
            "quote_ident(current_schema())"
        ).fetchone()
        if schema is None:
            raise StoreError(
                f"no schema of the search_path of {self.url} exists; create it first "
                "(the store lives in the first schema of the search_path)"
            )
        if "%" in schema:
            raise StoreError(f"schema names with '%' are not supported: {schema!r}")
        self.schema: str = schema
        self.database: str = database
        self._superuser = bool(superuser)
        self.fujsen_role = fujsen_role_name(database, schema)
        s = quote_ident(schema)
        self._s = s
        t = f"{s}.event_store"
        self._write_lock = _lock_key("append", database, schema)
        self._sql = {
            "insert_one": (
                f"INSERT INTO {t} (event_id, event_type, payload, metadata, timestamp) "
                "SELECT %s::text, %s::text, %s::text, %s::text, %s::text "
                "FROM (SELECT pg_advisory_xact_lock(%s)) AS serialised "
                "ON CONFLICT (event_id) DO NOTHING"
            ),
            "insert_many": (
                f"INSERT INTO {t} (event_id, event_type, payload, metadata, timestamp) "
                "SELECT u.event_id, u.event_type, u.payload, u.metadata, u.ts "
                "FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[]) "
                "WITH ORDINALITY AS u(event_id, event_type, payload, metadata, ts, n) "
                "ORDER BY u.n ON CONFLICT (event_id) DO NOTHING"
            ),
            "lock": "SELECT pg_advisory_xact_lock(%s)",
            # store events and their outbox rows in one statement (a transaction of its own
            # outside a unit); the advisory lock is taken before the first insert
            "insert_outbox": (
                f"WITH ins AS (INSERT INTO {t} (event_id, event_type, payload, metadata, timestamp) "
                "SELECT u.event_id, u.event_type, u.payload, u.metadata, u.ts "
                "FROM (SELECT pg_advisory_xact_lock(%s)) AS serialised, "
                "unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[]) "
                "WITH ORDINALITY AS u(event_id, event_type, payload, metadata, ts, n) "
                "ORDER BY u.n ON CONFLICT (event_id) DO NOTHING RETURNING id, event_id) "
                f"INSERT INTO {s}.tusk_outbox (seq, event_id, created) "
                "SELECT id, event_id, %s FROM ins RETURNING event_id"
            ),
            "claim": (
                f"INSERT INTO {s}.tusk_tracking AS t (service, event_id, outcome, at) "
                "VALUES (%s, %s, 'handled', %s) ON CONFLICT (service, event_id) "
                "DO UPDATE SET outcome = 'handled', at = excluded.at WHERE t.outcome <> 'handled'"
            ),
            "track": (
                f"INSERT INTO {s}.tusk_tracking AS t (service, event_id, outcome, at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (service, event_id) "
                "DO UPDATE SET outcome = excluded.outcome, at = excluded.at "
                "WHERE t.outcome <> 'handled'"
            ),
            # the rows come as one JSON array of [service, event id] pairs: json.dumps encodes
            # it in one C call, where psycopg would dump two text arrays element by element in
            # Python, on the GIL the handling thread is waiting for
            "track_many": (
                f"INSERT INTO {s}.tusk_tracking AS t (service, event_id, outcome, at) "
                "SELECT r.row ->> 0, r.row ->> 1, %s, %s "
                "FROM jsonb_array_elements(%s::jsonb) AS r(row) "
                "ON CONFLICT (service, event_id) "
                "DO UPDATE SET outcome = excluded.outcome, at = excluded.at "
                "WHERE t.outcome <> 'handled'"
            ),
            # the same, committed without waiting for the WAL flush: one statement (its own
            # transaction on an autocommit connection) where BEGIN, SET LOCAL and COMMIT were three
            # more round trips; set_config(..., true) lasts until that transaction's commit
            "track_many_lazy": (
                f"INSERT INTO {s}.tusk_tracking AS t (service, event_id, outcome, at) "
                "SELECT r.row ->> 0, r.row ->> 1, %s, %s "
                "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS lazy, "
                "jsonb_array_elements(%s::jsonb) AS r(row) "
                "ON CONFLICT (service, event_id) "
                "DO UPDATE SET outcome = excluded.outcome, at = excluded.at "
                "WHERE t.outcome <> 'handled'"
            ),
            # the usual batch: rows for events handled once, none there yet; a plain INSERT
            # costs the server about a third less than ON CONFLICT (track_many_lazy is the
            # fallback when a row exists)
            "track_many_new": (
                f"INSERT INTO {s}.tusk_tracking (service, event_id, outcome, at) "
                "SELECT r.row ->> 0, r.row ->> 1, %s, %s "
                "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS lazy, "
                "jsonb_array_elements(%s::jsonb) AS r(row)"
            ),
            "tracked": (
                f"SELECT outcome FROM {s}.tusk_tracking WHERE service = %s AND event_id = %s"
            ),
            "untrack": (
                f"DELETE FROM {s}.tusk_tracking WHERE service = %s AND event_id = ANY(%s) "
                "AND outcome <> 'handled'"
            ),
            "outbox": (
                f"SELECT {_E_COLUMNS} FROM {s}.tusk_outbox o JOIN {t} e ON e.id = o.seq "
                "WHERE o.created < %s ORDER BY o.seq LIMIT %s"
            ),
            "confirm": f"DELETE FROM {s}.tusk_outbox WHERE event_id = ANY(%b::text[])",
            "outbox_count": f"SELECT count(*) FROM {s}.tusk_outbox",
            "untracked": (
                f"SELECT {_E_COLUMNS} FROM {t} e WHERE e.event_type = ANY(%s) "
                "AND e.timestamp > %s AND e.id > %s AND e.event_id IS NOT NULL AND NOT EXISTS "
                f"(SELECT 1 FROM {s}.tusk_tracking tr WHERE tr.service = %s "
                "AND tr.event_id = e.event_id) ORDER BY e.id LIMIT %s"
            ),
            "untracked_all": (
                f"SELECT {_E_COLUMNS} FROM {t} e WHERE "
                "e.timestamp > %s AND e.id > %s AND e.event_id IS NOT NULL AND NOT EXISTS "
                f"(SELECT 1 FROM {s}.tusk_tracking tr WHERE tr.service = %s "
                "AND tr.event_id = e.event_id) ORDER BY e.id LIMIT %s"
            ),
            "lease": (
                f"INSERT INTO {s}.tusk_meta AS m (key, value, until) VALUES (%s, %s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, until = excluded.until "
                "WHERE m.value = excluded.value OR m.until < %s"
            ),
            "meta": f"SELECT value FROM {s}.tusk_meta WHERE key = %s",
            "set_meta": (
                f"INSERT INTO {s}.tusk_meta (key, value) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            ),
            "select": f"SELECT {COLUMNS} FROM {t}",
            "count": f"SELECT count(*) FROM {t}",
            "types": (
                f"SELECT event_type, count(*) FROM {t} GROUP BY event_type ORDER BY event_type"
            ),
            "bounds": (
                f"SELECT (SELECT min(timestamp) FROM {t}), (SELECT max(timestamp) FROM {t}), "
                f"(SELECT max(id) FROM {t})"
            ),
        }
        # a handling's transaction (tusk_events.store.postgres_unit): simple queries of two
        # statements each, one round trip each, their values as literals (filled in with %)
        self._begin_claim = "BEGIN; " + self._sql["claim"]
        self._outbox_commit = (
            f"WITH ins AS (INSERT INTO {t} (event_id, event_type, payload, metadata, timestamp) "
            "SELECT u.r ->> 0, u.r ->> 1, u.r ->> 2, u.r ->> 3, u.r ->> 4 "
            f"FROM (SELECT pg_advisory_xact_lock({self._write_lock})) AS serialised, "
            "jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS u(r, n) "
            "ORDER BY u.n ON CONFLICT (event_id) DO NOTHING RETURNING id, event_id) "
            f"INSERT INTO {s}.tusk_outbox (seq, event_id, created) "
            "SELECT id, event_id, %s FROM ins; COMMIT"
        )
        role = quote_ident(self.fujsen_role)
        timeout_ms = int(FUJSEN_SQL_TIMEOUT_S * 1000)
        self._fujsen_prologue = {
            write: (f"SELECT pg_advisory_xact_lock({self._write_lock}); " if write else "")
            + f"SET LOCAL ROLE {role}; SET LOCAL search_path = {s}, pg_temp; "
            f"SET LOCAL statement_timeout = {timeout_ms}; "
            "SET LOCAL standard_conforming_strings = on; SET LOCAL TimeZone = 'UTC'"
            for write in (False, True)
        }
        # search_path as the server shows it back (quotes only where needed)
        self._fujsen_expect = (self.fujsen_role, f"{shown_schema}, pg_temp")
        # in a handling's transaction: the same check and the release in one round trip; a
        # changed role or search_path fails the check (a text cast to int, with a marker)
        # before the release, so the savepoint can still undo the statement
        expect_role, expect_path = (literal(v) for v in self._fujsen_expect)
        self._fujsen_epilogue = (
            f"SELECT CASE WHEN current_user OPERATOR(pg_catalog.=) {expect_role} "
            "AND pg_catalog.current_setting('search_path') OPERATOR(pg_catalog.=) "
            f"{expect_path} THEN 0 ELSE CAST(pg_catalog.concat('{SESSION_CHANGED}', "
            "current_user) AS pg_catalog.int4) END; RELEASE SAVEPOINT tusk_fujsen; RESET ROLE"
        )

    def _migrate(self, conn: Any) -> None:
        s = self._s
        with conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s)",
                (_lock_key("migrate", self.database, self.schema),),
            )
            # Check first: CREATE ... IF NOT EXISTS needs CREATE on the schema even when the
            # table is there, and users other than the owner may open the store.
            if conn.execute("SELECT to_regclass(%s)", (f"{s}.tusk_schema",)).fetchone()[0] is None:
                conn.execute(
                    f"CREATE TABLE {s}.tusk_schema "
                    "(component text PRIMARY KEY, version integer NOT NULL)"
                )
            row = conn.execute(
                f"SELECT version FROM {s}.tusk_schema WHERE component = 'event_store'"
            ).fetchone()
            current = row[0] if row else 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"schema {self.schema} has store schema version {current}; this version "
                    f"of tusk_events reads up to {SCHEMA_VERSION}"
                )
            steps = migrations(s)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in steps[version]:
                    conn.execute(statement)
            if current != SCHEMA_VERSION:
                conn.execute(
                    f"INSERT INTO {s}.tusk_schema (component, version) VALUES ('event_store', %s) "
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (SCHEMA_VERSION,),
                )
            self._fujsen_unavailable = self._ensure_role(conn)

    def _ensure_role(self, conn: Any) -> str | None:
        """Create and grant the fujsen role; return why fujsen SQL is unavailable, or None."""
        psycopg = self._psycopg
        role, s = quote_ident(self.fujsen_role), self._s
        try:
            with conn.transaction():  # a savepoint: a refusal leaves the migration intact
                attrs = conn.execute(
                    "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls "
                    "OR rolreplication OR rolcanlogin, "
                    "EXISTS (SELECT 1 FROM pg_auth_members WHERE member = r.oid) "
                    "FROM pg_roles r WHERE rolname = %s",
                    (self.fujsen_role,),
                ).fetchone()
                if attrs is None:
                    conn.execute(f"CREATE ROLE {role} NOLOGIN NOINHERIT")
                elif attrs[0] or attrs[1]:
                    return (
                        f"role {self.fujsen_role} exists with privileges or memberships of its "
                        "own; fujsen SQL will not run as it"
                    )
                # Grant only what is missing, so users other than the owner can open the store.
                schema_ok, table_ok, member_ok = conn.execute(
                    "SELECT has_schema_privilege(%(r)s, %(s)s, 'USAGE'), "
                    "bool_and(has_table_privilege(%(r)s, %(t)s, p)), "
                    "pg_has_role(current_user, %(r)s, 'USAGE') "
                    "FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p",
                    {"r": self.fujsen_role, "s": self.schema, "t": f"{s}.event_store"},
                ).fetchone()
                if not schema_ok:
                    conn.execute(f"GRANT USAGE ON SCHEMA {s} TO {role}")
                if not table_ok:
                    conn.execute(
                        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {s}.event_store TO {role}"
                    )
                if not member_ok:
                    conn.execute(f"GRANT {role} TO CURRENT_USER")
        except psycopg.errors.InsufficientPrivilege as e:
            reason = (
                f"cannot create or grant role {self.fujsen_role} ({e.diag.message_primary}); "
                f"create it (NOLOGIN) and grant it to the store's user"
            )
            log.warning("fujsen SQL disabled for %s: %s", self.url, reason)
            return reason
        return None

    # --- pool ------------------------------------------------------------------------------

    def _connection(self) -> Any:
        if self._closed:
            raise StoreError("the event store is closed")
        return self._pool.connection()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.close()
        if self._fujsen_pool is not None:
            self._fujsen_pool.close()
        if self._unit_pool is not None:
            self._unit_pool.close()

    def _error(self, what: str, e: Exception) -> StoreError:
        detail = getattr(getattr(e, "diag", None), "message_primary", None) or str(e)
        return StoreError(f"{what}: {detail}")

    @property
    def schema_version(self) -> int:
        with self._connection() as conn:
            return conn.execute(
                f"SELECT version FROM {self._s}.tusk_schema WHERE component = 'event_store'"
            ).fetchone()[0]

    # --- writes ----------------------------------------------------------------------------

    def append(self, event: Event) -> bool:
        row = event_row(event)
        try:
            with self._connection() as conn:
                cur = conn.execute(self._sql["insert_one"], (*row, self._write_lock))
                return cur.rowcount == 1
        except (self._psycopg.Error, self._psycopg_pool.PoolTimeout) as e:
            raise self._error(f"cannot append event {event.id}", e) from e

    def append_many(self, events: Iterable[Event]) -> int:
        added = 0
        sql = self._sql["insert_many"]
        try:
            with self._connection() as conn, conn.transaction():
                conn.execute(self._sql["lock"], (self._write_lock,))
                for chunk in _batched(map(event_row, events), POSTGRES_APPEND_CHUNK):
                    columns = [list(c) for c in zip(*chunk)]
                    added += conn.execute(sql, columns).rowcount
        except (self._psycopg.Error, self._psycopg_pool.PoolTimeout) as e:
            raise self._error("cannot append events", e) from e
        return added

    # --- reads -----------------------------------------------------------------------------

    def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._connection() as conn:
                return conn.execute(sql, params).fetchall()
        except (self._psycopg.Error, self._psycopg_pool.PoolTimeout) as e:
            raise self._error(f"cannot read the PostgreSQL store {self.url}", e) from e

    def _replay_sql(self, type: str | None, since: str | None) -> str:
        sql = self._sql["select"] + " WHERE id > %s"
        if type is not None:
            sql += " AND event_type = %s"
        if since is not None:
            sql += " AND timestamp > %s"
        return sql + " ORDER BY id"

    def _replay(
        self, type: str | None, since: str | None, after_id: int, batch: int
    ) -> Generator[Iterable[StoredEvent], None, None]:
        sql = self._replay_sql(type, since)
        params = (after_id, *(v for v in (type, since) if v is not None))
        fetch = f"FETCH FORWARD {batch} FROM tusk_replay"
        try:
            # A server-side cursor, declared and fetched by hand: cheaper per batch than
            # psycopg's named cursor, which composes its FETCH anew on every call.
            with self._connection() as conn, conn.transaction():
                cur = conn.cursor(binary=True)
                cur.execute("DECLARE tusk_replay NO SCROLL CURSOR FOR " + sql, params)
                while rows := cur.execute(fetch).fetchall():
                    yield starmap(StoredEvent, rows)
        except (self._psycopg.Error, self._psycopg_pool.PoolTimeout) as e:
            raise self._error(f"cannot replay from {self.url}", e) from e

    def explain_replay(self, type: str | None = None, since: Any = None) -> list[str]:
        """The query plan replay uses for these filters (for diagnostics and tests).

        Planned as a cursor, like replay: the planner then favours plans that start fast.
        """
        since_text = None if since is None else timestamps.canonical(since)
        sql = "EXPLAIN DECLARE tusk_explain NO SCROLL CURSOR FOR " + self._replay_sql(
            type, since_text
        )
        params = (0, *(v for v in (type, since_text) if v is not None))
        return [r[0] for r in self._fetch(sql, params)]

    def _count(self, type: str | None, since: str | None) -> int:
        clauses, params = [], []
        if type is not None:
            clauses.append("event_type = %s")
            params.append(type)
        if since is not None:
            clauses.append("timestamp > %s")
            params.append(since)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        return self._fetch(self._sql["count"] + where, tuple(params))[0][0]

    def stats(self) -> dict[str, Any]:
        types = dict(self._fetch(self._sql["types"]))
        first, last, last_seq = self._fetch(self._sql["bounds"])[0]
        return self._stats(types, first, last, last_seq)

    def get(self, event_id: str) -> StoredEvent | None:
        rows = self._fetch(self._sql["select"] + " WHERE event_id = %s", (event_id,))
        return StoredEvent(*rows[0]) if rows else None

    def by_trace(self, trace_id: str) -> list[StoredEvent]:
        rows = self._fetch(self._sql["select"] + f" WHERE {TRACE_EXPRESSION} = %s ORDER BY id", (trace_id,))
        return [StoredEvent(*row) for row in rows]

    # --- tracking, outbox, leases (see tusk_events.store.unit) ---------------------------

    def unit(self, service: str, event_id: str) -> Unit:
        return PostgresUnit(self, service, event_id)

    def _unit_connection(self) -> Any:
        """A connection for a handling's transaction, from a pool of their own (held for the
        handler's run, so they must not starve the store's pool)."""
        if self._closed:
            raise StoreError("the event store is closed")
        with self._fujsen_lock:
            if self._unit_pool is None:
                self._unit_pool = self._open_fujsen_pool(
                    POSTGRES_UNIT_POOL_MAX_SIZE, f"tusk-units-{self.schema}"
                )
        return self._unit_pool

    def _write(self, what: str, sql: str, params: Any, *, lazy: bool = False) -> Any:
        """One statement; ``lazy`` ones (leases, confirmations, batched tracking rows: records
        whose loss in a server crash costs a repeat, never an effect) do not wait for the WAL
        flush (``synchronous_commit = off``)."""
        try:
            with self._connection() as conn:
                if not lazy:
                    return conn.execute(sql, params)
                with conn.transaction():
                    conn.execute("SET LOCAL synchronous_commit = off")
                    return conn.execute(sql, params)
        except (self._psycopg.Error, self._psycopg_pool.PoolTimeout) as e:
            raise self._error(f"cannot {what}", e) from e

    def tracked(self, service: str, event_id: str) -> str | None:
        rows = self._fetch(self._sql["tracked"], (service, event_id))
        return rows[0][0] if rows else None

    def track(self, service: str, event_id: str, outcome: str) -> bool:
        cur = self._write("record a tracking row", self._sql["track"],
                          (service, event_id, outcome, time.time()))
        return bool(cur.rowcount == 1)

    def track_many(self, rows: Iterable[tuple[str, str]], outcome: str) -> None:
        pairs = json.dumps(list(rows))  # C calls only: no Python work per row
        if pairs == "[]":
            return
        # batched rows of handlings without store effects need not wait for the WAL flush
        sql = self._sql["track_many_lazy" if outcome == HANDLED else "track_many"]
        params = (outcome, time.time(), pairs)
        try:
            with self._connection() as conn:  # autocommit: the statement is its transaction
                if outcome == HANDLED:
                    try:
                        conn.execute(self._sql["track_many_new"], params)
                        return
                    except self._psycopg.errors.UniqueViolation:
                        pass  # a row was there (a dead letter redriven, a redelivery)
                conn.execute(sql, params)
        except (self._psycopg.Error, self._psycopg_pool.PoolTimeout) as e:
            raise self._error("cannot record tracking rows", e) from e

    def untrack(self, service: str, event_ids: Iterable[str]) -> int:
        cur = self._write("forget tracking rows", self._sql["untrack"], (service, list(event_ids)))
        return max(0, cur.rowcount)

    def append_outbox(self, event: Event) -> bool:
        row = event_row(event)
        cur = self._write(
            f"append event {event.id}", self._sql["insert_outbox"],
            (self._write_lock, *([v] for v in row), time.time()),
        )
        return bool(cur.rowcount == 1)

    def outbox(self, older_than: float, limit: int) -> list[StoredEvent]:
        return list(starmap(StoredEvent, self._fetch(self._sql["outbox"], (older_than, limit))))

    def confirm(self, event_ids: Iterable[str]) -> int:
        ids = list(event_ids)
        if not ids:
            return 0
        cur = self._write("confirm outbox rows", self._sql["confirm"], (ids,), lazy=True)
        return max(0, cur.rowcount)

    def outbox_count(self) -> int:
        return int(self._fetch(self._sql["outbox_count"])[0][0])

    def untracked(
        self, service: str, types: Sequence[str] | None, since: Any, after_id: int, limit: int
    ) -> list[StoredEvent]:
        rest = (timestamps.canonical(since), after_id, service, limit)
        if types is None:
            return list(starmap(StoredEvent, self._fetch(self._sql["untracked_all"], rest)))
        if not types:
            return []
        return list(starmap(StoredEvent, self._fetch(self._sql["untracked"], (list(types), *rest))))

    def lease(self, name: str, owner: str, ttl_s: float, now: float) -> bool:
        cur = self._write("take a lease", self._sql["lease"],
                          (f"lease:{name}", owner, now + ttl_s, now), lazy=True)
        return bool(cur.rowcount == 1)

    def meta(self, key: str) -> str | None:
        rows = self._fetch(self._sql["meta"], (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._write("write a store record", self._sql["set_meta"], (key, value), lazy=True)

    # --- fujsen SQL ------------------------------------------------------------------------

    def _fujsen_connection(self) -> Any:
        if self._closed:
            raise StoreError("the event store is closed")
        if self._fujsen_unavailable:
            raise StoreError(f"fujsen SQL is unavailable on this store: {self._fujsen_unavailable}")
        with self._fujsen_lock:
            if self._fujsen_pool is None:
                self._fujsen_pool = self._open_fujsen_pool()
        return self._fujsen_pool.connection()

    def _open_fujsen_pool(self, max_size: int | None = None, name: str | None = None) -> Any:
        number, number_binary = _number_loaders()

        def configure(conn: Any) -> None:
            conn.adapters.register_loader("numeric", number)
            conn.adapters.register_loader("numeric", number_binary)

        pool = self._psycopg_pool.ConnectionPool(
            self._conninfo,
            min_size=0,
            max_size=max_size or self._fujsen_max_size,
            kwargs=self._kwargs,
            configure=configure,
            open=False,
            timeout=self._timeout,
            reconnect_timeout=POSTGRES_RECONNECT_WINDOW_S,
            name=name or f"tusk-fujsen-{self.schema}",
        )
        pool.open()
        return pool

    def _run_fujsen(
        self, checked: sqlguard.Checked, params: tuple[Any, ...], *, want_rows: bool
    ) -> tuple[list[tuple[Any, ...]], int]:
        return self._run_restricted(
            sqlguard.sql_for(checked), params, want_rows=want_rows, write=checked.verb != "select"
        )

    def _run_restricted(
        self, sql: str, params: tuple[Any, ...] = (), *, want_rows: bool = True, write: bool = True
    ) -> tuple[list[tuple[Any, ...]], int]:
        """Run SQL as the fujsen role (no statement guard): (rows, rowcount)."""
        psycopg = self._psycopg
        errors = psycopg.errors
        try:
            with self._fujsen_connection() as conn, conn.transaction():
                conn.execute(self._fujsen_prologue[write])
                limit = sqlguard.statement_timeout()
                if limit < FUJSEN_SQL_TIMEOUT_S:  # the calling fujsen has less time left
                    conn.execute(f"SET LOCAL statement_timeout = {max(1, int(limit * 1000))}")
                # reads go through a server-side cursor; for an untrusted config the server also
                # refuses rows past the byte cap (bounded_sql), so libpq never buffers more
                with conn.cursor(name="tusk_fujsen") if not write else conn.cursor() as cur:
                    # binary results use the extended protocol: one statement, always.
                    cur.execute(sql, params, binary=True)
                    rows = []
                    if want_rows and cur.description is not None:
                        rows = sqlguard.fetch_capped(cur)
                    rowcount = cur.rowcount
                state = conn.execute(
                    "SELECT current_user, current_setting('search_path')"
                ).fetchone()
                if tuple(state) != self._fujsen_expect:
                    raise sqlguard.refuse("changing the session role or search_path")
        except errors.InsufficientPrivilege as e:
            raise sqlguard.SqlRefused(f"statement refused: {e.diag.message_primary}") from e
        except errors.QueryCanceled as e:
            raise StoreError(f"fujsen SQL ran longer than {FUJSEN_SQL_TIMEOUT_S} s") from e
        except errors.InvalidTextRepresentation as e:
            raise (sqlguard.result_too_large(e.diag.message_primary) or self._error("fujsen SQL failed", e)) from e
        except (psycopg.Error, self._psycopg_pool.PoolTimeout) as e:
            raise self._error("fujsen SQL failed", e) from e
        return self._limit_rows(rows), rowcount


def open_postgres(url: str, **options: Any) -> PostgresStore:
    return PostgresStore(url, **options)


__all__ = ["INSTALL_HINT", "PostgresStore", "fujsen_role_name", "migrations", "open_postgres"]
