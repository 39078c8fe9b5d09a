"""open_store(): URLs, the backend registry, and the optional PostgreSQL driver."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tusk_events.defaults import DEFAULT_STORE_URL
from tusk_events.errors import StoreError
from tusk_events.events import new_event
from tusk_events.store import EventStore, open_store, register_store, supported_schemes
from tusk_events.store.sqlite import SQLiteStore


def test_default_url_is_events_db_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert DEFAULT_STORE_URL == "sqlite:///events.db"
    monkeypatch.chdir(tmp_path)
    with open_store() as store:
        assert isinstance(store, SQLiteStore)
        assert store.path == str(tmp_path / "events.db")
        store.append(new_event("x"))
    assert (tmp_path / "events.db").exists()


def test_absolute_and_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_store(f"sqlite:///{tmp_path}/abs.db") as store:
        assert store.path == str(tmp_path / "abs.db")  # type: ignore[attr-defined]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with open_store("sqlite:///sub/rel.db") as store:
        assert store.path == str(tmp_path / "sub" / "rel.db")  # type: ignore[attr-defined]


def test_memory_store_is_private() -> None:
    with open_store("sqlite:///:memory:") as a, open_store("sqlite:///:memory:") as b:
        a.append(new_event("x"))
        assert (a.count(), b.count()) == (1, 0)


def test_sqlite_options_from_the_url(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path}/o.db?synchronous=normal&busy_timeout=2") as store:
        conn = store._conn()  # type: ignore[attr-defined]
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 2000
    with pytest.raises(StoreError, match="unknown SQLite store option"):
        open_store(f"sqlite:///{tmp_path}/o.db?cache=huge")
    with pytest.raises(StoreError, match="synchronous"):
        open_store(f"sqlite:///{tmp_path}/o.db?synchronous=sometimes")


@pytest.mark.parametrize("url", ["sqlite://relative.db", "sqlite://host/x.db"])
def test_malformed_sqlite_url(url: str) -> None:
    with pytest.raises(StoreError, match="bad SQLite URL"):
        open_store(url)


def test_unknown_scheme_names_the_supported_ones() -> None:
    with pytest.raises(StoreError) as info:
        open_store("mongodb://localhost/events")
    message = str(info.value)
    assert "'mongodb'" in message
    for scheme in ("sqlite://", "postgresql://", "postgres://"):
        assert scheme in message
    with pytest.raises(StoreError, match="not a store URL"):
        open_store("events.db")


def test_register_store(tmp_path: Path) -> None:
    seen = []

    def opener(url: str, **options: object) -> EventStore:
        seen.append((url, options))
        return SQLiteStore(str(tmp_path / "custom.db"))

    register_store("custom", opener)
    try:
        assert "custom" in supported_schemes()
        with open_store("custom://anything", flag=True) as store:
            assert store.count() == 0
        assert seen == [("custom://anything", {"flag": True})]
    finally:
        from tusk_events import store as store_pkg

        store_pkg._REGISTRY.pop("custom")


def test_missing_psycopg_is_a_store_error_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # makes "import psycopg" fail
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)
    with pytest.raises(StoreError, match=r"pip install 'tusk_events\[postgres\]'"):
        open_store("postgresql://127.0.0.1/test")
    with pytest.raises(StoreError, match="pip install"):
        open_store("postgres://127.0.0.1/test")


def test_importing_the_package_does_not_import_drivers() -> None:
    code = (
        "import sys\n"
        "sys.modules['psycopg'] = None\n"
        "sys.modules['psycopg_pool'] = None\n"
        "import tusk_events.store, tusk_events.store.postgres\n"
        "from tusk_events.store import open_store\n"
        "s = open_store('sqlite:///:memory:'); print(s.count()); s.close()\n"
        "assert sys.modules['psycopg'] is None\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


@pytest.mark.postgres
def test_unreachable_postgresql_is_a_store_error() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError, match="cannot open the PostgreSQL store"):
        open_store("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2")


@pytest.mark.postgres
def test_postgresql_url_options_and_redaction(pg_store_url: str) -> None:
    with open_store(pg_store_url + "&pool_min_size=0&pool_max_size=2") as store:
        assert store._pool.max_size == 2 and store._pool.min_size == 0  # type: ignore[attr-defined]
        assert store.backend == "postgresql"
    from tusk_events.store.postgres import _split_url

    conninfo, options, shown = _split_url(
        "postgres://u:secret@h:5/db?pool_max_size=3&sslmode=disable"
    )
    assert options == {"max_size": 3}
    assert conninfo == "postgresql://u:secret@h:5/db?sslmode=disable"
    assert "secret" not in shown and ":***@" in shown
    with pytest.raises(StoreError, match="pool_max_size"):
        _split_url("postgresql://h/db?pool_max_size=many")


@pytest.mark.postgres
def test_postgresql_needs_an_existing_schema(postgres_url: str) -> None:
    url = postgres_url.rsplit("%3D", 1)[0] + "%3Dno_such_schema_here"
    with pytest.raises(StoreError, match="no schema of the search_path"):
        open_store(url)


def test_postgresql_connections_give_up_on_a_dead_peer_in_bounded_time() -> None:
    pytest.importorskip("psycopg")
    from tusk_events.defaults import POSTGRES_DEAD_PEER_S
    from tusk_events.store.postgres import liveness

    kw = liveness("postgresql://h/db?options=-csearch_path%3Devents")
    assert kw["keepalives"] == 1
    assert kw["keepalives_idle"] + kw["keepalives_interval"] * kw["keepalives_count"] <= POSTGRES_DEAD_PEER_S
    assert kw["tcp_user_timeout"] == POSTGRES_DEAD_PEER_S * 1000
    # the server's end too (only it can roll back a vanished client's transaction); the URL's options stay
    assert kw["options"].startswith("-csearch_path=events -c tcp_keepalives_idle=")
    assert f"-c tcp_user_timeout={POSTGRES_DEAD_PEER_S * 1000}" in kw["options"]
    own = liveness("postgresql://h/db?keepalives_idle=60&options=-c%20tcp_keepalives_idle%3D60")
    assert "keepalives_idle" not in own and "options" not in own  # what the URL sets wins


@pytest.mark.postgres
def test_postgresql_sessions_carry_the_dead_peer_settings(pg_store_url: str) -> None:
    from tusk_events.defaults import POSTGRES_DEAD_PEER_S, POSTGRES_RECONNECT_WINDOW_S

    with open_store(pg_store_url) as store:
        # a pool retrying a lost server backs off for this long at most, then starts over
        assert store._pool.reconnect_timeout == POSTGRES_RECONNECT_WINDOW_S  # type: ignore[attr-defined]
        assert store._unit_connection().reconnect_timeout == POSTGRES_RECONNECT_WINDOW_S  # type: ignore[attr-defined]
        with store._connection() as conn:  # type: ignore[attr-defined]
            idle, user_timeout, path = conn.execute(
                "SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_user_timeout'), "
                "current_setting('search_path')"
            ).fetchone()
            params = conn.info.get_parameters()
    assert int(idle) == POSTGRES_DEAD_PEER_S // 2
    assert int(user_timeout) == POSTGRES_DEAD_PEER_S * 1000
    assert path.startswith("t_")  # the fixture's schema: the URL's own options were kept
    assert params["keepalives"] == "1" and params["tcp_user_timeout"] == str(POSTGRES_DEAD_PEER_S * 1000)


@pytest.mark.postgres
def test_postgresql_sessions_are_utf8_whatever_the_environment_says(
    pg_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # handling units send escaped literals: a client encoding such as SJIS, whose multibyte
    # characters can end in a backslash byte, must never be in force
    monkeypatch.setenv("PGCLIENTENCODING", "SJIS")
    with open_store(pg_store_url) as store:
        with store._unit_connection().connection() as conn:  # type: ignore[attr-defined]
            (encoding,) = conn.execute("SHOW client_encoding").fetchone()
    assert encoding == "UTF8"
