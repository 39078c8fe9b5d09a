"""The database-side gate for fujsen SQL, tested past the statement guard.

``_run_restricted`` sends SQL straight to the restricted connection: these tests show that the
SQLite authorizer and the PostgreSQL role refuse what the guard would have stopped first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tusk_events.errors import StoreError
from tusk_events.events import new_event
from tusk_events.store import open_store
from tusk_events.store.base import SCHEMA_VERSION
from tusk_events.store.sqlguard import SqlRefused
from tusk_events.store.sqlite import SQLiteStore

# --- SQLite: the authorizer -------------------------------------------------------------------


@pytest.fixture
def sqlite_store(sqlite_store_url: str) -> Iterator[SQLiteStore]:
    with open_store(sqlite_store_url) as s:
        assert isinstance(s, SQLiteStore)
        s.append(new_event("seed", {"i": 1}))
        yield s


AUTHORIZER_REFUSES = {
    "ATTACH DATABASE '{tmp}/other.db' AS other": "ATTACH",
    "DETACH DATABASE main": "DETACH",
    "VACUUM INTO '{tmp}/copy.db'": "VACUUM INTO",
    "VACUUM": "VACUUM",
    "PRAGMA journal_mode = DELETE": "PRAGMA",
    "PRAGMA writable_schema = 1": "PRAGMA",
    "SELECT * FROM pragma_table_info('event_store')": "schema change",
    "CREATE TABLE t (x)": "schema change",
    "CREATE TEMP TABLE t (x)": "schema change",
    "CREATE INDEX i ON event_store (payload)": "schema change",
    "CREATE TRIGGER tr AFTER INSERT ON event_store BEGIN DELETE FROM event_store; END": (
        "schema change"
    ),
    "CREATE VIEW v AS SELECT 1": "schema change",
    "DROP TABLE event_store": "schema change",
    "DROP INDEX event_store_ts": "schema change",
    "ALTER TABLE event_store ADD COLUMN x": "ALTER TABLE",
    "ALTER TABLE event_store RENAME TO gone": "ALTER TABLE",
    "REINDEX": "REINDEX",
    "ANALYZE": "ANALYZE",
    "SELECT load_extension('/tmp/evil.so')": "load_extension",
    "SELECT * FROM tusk_schema": "reading tusk_schema",
    "UPDATE tusk_schema SET version = 2": "tusk_schema",
    "SELECT name FROM sqlite_master": "reading sqlite_master",
    "INSERT INTO sqlite_sequence (name, seq) VALUES ('event_store', 1)": "writing sqlite_sequence",
    "UPDATE event_store SET id = id + 1000": "event_store.id",
    "BEGIN": "transaction control",
    "SAVEPOINT s": "transaction control",
}


@pytest.mark.parametrize("sql", sorted(AUTHORIZER_REFUSES))
def test_authorizer_refuses(sqlite_store: SQLiteStore, tmp_path: Path, sql: str) -> None:
    with pytest.raises(SqlRefused, match=AUTHORIZER_REFUSES[sql]) as info:
        sqlite_store._run_restricted(sql.format(tmp=tmp_path))
    assert str(info.value).startswith("statement refused:")
    assert not (tmp_path / "copy.db").exists()
    assert not (tmp_path / "other.db").exists()
    assert sqlite_store.count() == 1
    assert sqlite_store.schema_version == SCHEMA_VERSION


def test_authorizer_allows_the_fujsen_work(sqlite_store: SQLiteStore) -> None:
    run = sqlite_store._run_restricted
    assert run("INSERT INTO event_store (event_type, payload) VALUES ('a', '1')") == ([], 1)
    assert run("UPDATE event_store SET payload = '2' WHERE event_type = 'a'") == ([], 1)
    rows, _ = run(
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
        "SELECT count(*), (SELECT count(*) FROM event_store) FROM r"
    )
    assert rows == [(3, 2)]
    assert run(
        "SELECT json_extract(payload, '$.i'), upper(event_type) FROM event_store WHERE id = 1"
    )[0] == [(1, "SEED")]
    assert run("DELETE FROM event_store WHERE event_type = 'a'") == ([], 1)


def test_fujsen_connection_cannot_load_extensions(sqlite_store: SQLiteStore) -> None:
    held = sqlite_store._holder(True)
    with pytest.raises(sqlite3.OperationalError, match="not authorized"):
        held.conn.execute("SELECT load_extension('/tmp/evil.so')")


def test_store_connection_is_not_restricted(sqlite_store: SQLiteStore) -> None:
    # The store's own connection is separate: it still reads tusk_schema.
    assert sqlite_store.schema_version == SCHEMA_VERSION
    assert sqlite_store._execute("PRAGMA journal_mode")[0][0] == "wal"


# --- PostgreSQL: the role -------------------------------------------------------------------------


@pytest.fixture
def pg_store(pg_store_url: str) -> Iterator:
    import psycopg

    with psycopg.connect(pg_store_url, autocommit=True) as conn:
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
        other = f"{schema}_other"
        conn.execute(f"CREATE SCHEMA {other}")
        conn.execute(f"CREATE TABLE {other}.secret (v text)")
        conn.execute(f"INSERT INTO {other}.secret VALUES ('hidden')")
        conn.execute(f"CREATE TABLE {schema}.private (v text)")
        try:
            with open_store(pg_store_url) as s:
                s.append(new_event("seed", {"i": 1}))
                s.other_schema = other  # type: ignore[attr-defined]
                yield s
        finally:
            conn.execute(f"DROP SCHEMA {other} CASCADE")


ROLE_REFUSES = [
    "SELECT * FROM {other}.secret",
    "SELECT * FROM private",
    "SELECT * FROM tusk_schema",
    "UPDATE tusk_schema SET version = 2",
    "SELECT pg_read_file('/etc/hostname')",
    "SELECT pg_ls_dir('.')",
    "SELECT lo_export(lo_from_bytea(0, 'x'), '/tmp/tusk_fujsen_lo')",
    "COPY event_store TO '/tmp/tusk_fujsen_copy'",
    "COPY (SELECT 1) TO PROGRAM 'touch /tmp/tusk_fujsen_prog'",
    "CREATE TABLE t (x int)",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "DROP TABLE event_store",
    "ALTER TABLE event_store ADD COLUMN x int",
    "TRUNCATE event_store",
    "CREATE ROLE evil SUPERUSER",
    "SELECT set_config('role', 'postgres', true), pg_read_file('/etc/hostname')",
    "SELECT set_config('search_path', 'public', false)",
]


@pytest.mark.postgres
@pytest.mark.parametrize("sql", ROLE_REFUSES)
def test_role_refuses(pg_store, sql: str) -> None:
    with pytest.raises(SqlRefused, match="statement refused"):
        pg_store._run_restricted(sql.format(other=pg_store.other_schema))
    for leftover in ("/tmp/tusk_fujsen_lo", "/tmp/tusk_fujsen_copy", "/tmp/tusk_fujsen_prog"):
        assert not Path(leftover).exists()
    assert pg_store.count() == 1
    assert pg_store.schema_version == SCHEMA_VERSION
    assert pg_store.query("SELECT current_user")[0][0] == pg_store.fujsen_role


@pytest.mark.postgres
def test_role_cannot_set_explicit_ids(pg_store) -> None:
    with pytest.raises(StoreError):
        pg_store._run_restricted("UPDATE event_store SET id = 99")
    with pytest.raises(StoreError):
        pg_store._run_restricted(
            "INSERT INTO event_store (id, event_type, payload) VALUES (99, 'x', '1')"
        )
    with pytest.raises(SqlRefused, match="overriding"):
        pg_store.execute(
            "INSERT INTO event_store (id, event_type, payload) "
            "OVERRIDING SYSTEM VALUE VALUES (?, ?, ?)",
            [99, "x", "1"],
        )


@pytest.mark.postgres
def test_the_guard_refuses_other_schemas_and_role_switches(pg_store) -> None:
    with pytest.raises(SqlRefused, match="permission denied for schema"):
        pg_store.query(f"SELECT * FROM {pg_store.other_schema}.secret")
    for sql in (
        "SELECT set_config('role', 'postgres', true)",
        "SELECT pg_catalog.\"set_config\"('role', 'postgres', true)",
        "UPDATE pg_settings SET setting = 'postgres' WHERE name = 'role'",
        "SELECT query_to_xml('select 1', true, false, '')",
        "SELECT ts_stat('select 1')",
        "SELECT pg_advisory_lock(1)",
        "SELECT lo_from_bytea(0, 'x')",
        "SELECT pg_notify('tusk', 'x')",
        "SELECT U&\"\\0073et_config\"('role', 'postgres', true)",
    ):
        with pytest.raises(SqlRefused, match="is not allowed in fujsen SQL"):
            pg_store.query(sql)


@pytest.mark.postgres
def test_fujsen_role_has_no_privileges_of_its_own(pg_store) -> None:
    import psycopg

    with psycopg.connect(pg_store.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, rolbypassrls, "
            "(SELECT count(*) FROM pg_auth_members WHERE member = r.oid) "
            "FROM pg_roles r WHERE rolname = %s",
            (pg_store.fujsen_role,),
        ).fetchone()
        assert row == (False, False, False, False, False, 0)
        grants = conn.execute(
            "SELECT table_name, string_agg(privilege_type, ',' ORDER BY privilege_type) "
            "FROM information_schema.role_table_grants WHERE grantee = %s GROUP BY table_name",
            (pg_store.fujsen_role,),
        ).fetchall()
        assert grants == [("event_store", "DELETE,INSERT,SELECT,UPDATE")]


@pytest.mark.postgres
def test_role_creation_is_idempotent_across_stores(pg_store_url: str) -> None:
    import concurrent.futures

    def open_and_count(_: int) -> int:
        with open_store(pg_store_url) as s:
            return s.query("SELECT count(*) FROM event_store")[0][0]

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        assert list(pool.map(open_and_count, range(6))) == [0] * 6


@pytest.mark.postgres
def test_non_superuser_owners(pg_store_url: str) -> None:
    """A CREATEROLE owner sets the role up; a plain user can use it, or is told what is missing."""
    import psycopg

    suffix = pg_store_url.rsplit("%3D", 1)[1]
    owner, reader = f"{suffix}_owner", f"{suffix}_reader"

    def as_user(user: str) -> str:
        return pg_store_url.replace("//postgres@", f"//{user}@", 1)

    with psycopg.connect(pg_store_url, autocommit=True) as admin:
        schema = admin.execute("SELECT current_schema()").fetchone()[0]
        admin.execute(f"CREATE ROLE {owner} LOGIN CREATEROLE")
        admin.execute(f"CREATE ROLE {reader} LOGIN")
        admin.execute(f"ALTER SCHEMA {schema} OWNER TO {owner}")
        try:
            with open_store(as_user(owner)) as store:
                assert (
                    store.execute(
                        "INSERT INTO event_store (event_type, payload) VALUES (?, ?)", ["a", "1"]
                    )
                    == 1
                )
                assert store.query("SELECT current_user")[0][0] == store.fujsen_role
                with pytest.raises(SqlRefused):
                    store._run_restricted("SELECT * FROM tusk_schema")
                # the owner can switch back to itself only: no superuser powers to reach
                with pytest.raises(SqlRefused):
                    store._run_restricted(f"SELECT set_config('role', '{owner}', true)")
            admin.execute(f"GRANT USAGE ON SCHEMA {schema} TO {reader}")
            admin.execute(
                f"GRANT SELECT, INSERT ON {schema}.event_store, {schema}.tusk_schema TO {reader}"
            )
            admin.execute(f'GRANT "{store.fujsen_role}" TO {reader}')
            with open_store(as_user(reader)) as store:  # grants exist: nothing to grant
                assert store.count() == 1
                assert store.query("SELECT count(*) FROM event_store") == [(1,)]
            admin.execute(f'REVOKE "{store.fujsen_role}" FROM {reader}')
            with open_store(
                as_user(reader)
            ) as store:  # cannot grant: fujsen SQL is off, the rest works
                assert store.count() == 1
                with pytest.raises(StoreError, match="fujsen SQL is unavailable.*grant it"):
                    store.query("SELECT 1")
        finally:
            admin.execute(f"ALTER SCHEMA {schema} OWNER TO postgres")
            for role in (owner, reader):
                admin.execute(f"REASSIGN OWNED BY {role} TO postgres")
                admin.execute(f"DROP OWNED BY {role}")
                admin.execute(f"DROP ROLE {role}")
