"""Fixtures for the event store: one contract, run against SQLite (a temp file) and PostgreSQL.

The PostgreSQL store creates a role per schema for fujsen SQL; roles belong to the whole
server, so ``pg_store_url`` drops it after the test (the shared fixture drops the schema).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tusk_events.store import EventStore, open_store

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def drop_fujsen_role(url: str) -> None:
    import psycopg

    from tusk_events.store.postgres import fujsen_role_name

    with psycopg.connect(url, autocommit=True) as conn:
        schema, database = conn.execute("SELECT current_schema(), current_database()").fetchone()
        if schema is None:
            return
        role = fujsen_role_name(database, schema)
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


@pytest.fixture
def pg_store_url(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL store URL in a fresh schema; its fujsen role is dropped afterwards."""
    yield postgres_url
    drop_fujsen_role(postgres_url)


@pytest.fixture
def sqlite_store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/events.db"


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_store_url")
    return request.getfixturevalue("pg_store_url")


@pytest.fixture
def store(store_url: str) -> Iterator[EventStore]:
    with open_store(store_url) as s:
        yield s
