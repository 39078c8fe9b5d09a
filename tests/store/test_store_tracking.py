"""Schema 2: tracking rows, handling transactions (units), the outbox, leases; migration from 1."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tusk_events.errors import AlreadyHandled, StoreError
from tusk_events.events import new_event
from tusk_events.store import EventStore, open_store
from tusk_events.store.base import SCHEMA_VERSION
from tusk_events.store.sqlguard import SqlRefused
from tusk_events.store.sqlite import MIGRATIONS
from tusk_events.store.unit import DEAD, HANDLED

INSERT = "INSERT INTO event_store (event_type, payload) VALUES (?, ?)"


def effects(store: EventStore) -> int:
    return store.count(type="effect")


def test_a_version_1_file_is_migrated_and_keeps_its_events(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE tusk_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    for statement in MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("INSERT INTO tusk_schema VALUES ('event_store', 1)")
    conn.execute(
        "INSERT INTO event_store (event_id, event_type, payload, timestamp) "
        "VALUES ('e1', 'old', '{}', '2024-01-01 00:00:00')"
    )
    conn.commit()
    conn.close()
    with open_store(f"sqlite:///{path}") as store:
        assert store.schema_version == SCHEMA_VERSION == 3
        assert [e.event_id for e in store.by_trace("t1")] == []
        assert store.get("e1") is not None and store.count() == 1
        assert store.tracked("svc", "e1") is None
        assert store.track("svc", "e1", HANDLED)
        assert store.tracked("svc", "e1") == HANDLED


def test_a_unit_commits_effects_published_events_and_its_tracking_row(store: EventStore) -> None:
    unit = store.unit("svc", "e1")
    assert unit.execute(INSERT, ("effect", "{}")) == 1
    assert unit.query("SELECT count(*) FROM event_store WHERE event_type = 'effect'") == [(1,)]
    assert effects(store) == 0  # not visible outside before the commit
    unit.add(new_event("published", {}))
    assert unit.commit() is True
    assert effects(store) == 1 and store.count(type="published") == 1
    assert store.tracked("svc", "e1") == HANDLED
    assert store.outbox_count() == 1
    (pending,) = store.outbox(time.time() + 1, 10)
    assert pending.type == "published"
    assert store.confirm([pending.id]) == 1 and store.outbox_count() == 0


def test_a_second_unit_for_the_same_event_applies_nothing(store: EventStore) -> None:
    store.unit("svc", "e1").commit()
    again = store.unit("svc", "e1")
    with pytest.raises(AlreadyHandled):
        again.execute(INSERT, ("effect", "{}"))
    again.add(new_event("published", {}))
    assert again.commit() is False
    assert effects(store) == 0 and store.count(type="published") == 0
    # another service is tracked on its own
    other = store.unit("other", "e1")
    other.execute(INSERT, ("effect", "{}"))
    assert other.commit() is True and effects(store) == 1


def test_a_rolled_back_unit_leaves_nothing(store: EventStore) -> None:
    unit = store.unit("svc", "e1")
    unit.execute(INSERT, ("effect", "{}"))
    unit.add(new_event("published", {}))
    unit.rollback()
    assert effects(store) == 0 and store.count(type="published") == 0
    assert store.tracked("svc", "e1") is None
    assert store.unit("svc", "e1").commit() is True  # the event can still be handled


def test_a_failed_statement_inside_a_unit_does_not_poison_it(store: EventStore) -> None:
    unit = store.unit("svc", "e1")
    unit.execute(INSERT, ("effect", "{}"))
    with pytest.raises(StoreError):
        unit.execute("INSERT INTO event_store (event_type) VALUES (NULL)")  # NOT NULL
    with pytest.raises(SqlRefused):
        unit.query("SELECT * FROM tusk_tracking")
    unit.execute(INSERT, ("effect", "{}"))
    assert unit.commit() is True
    assert effects(store) == 2


def test_fujsen_sql_cannot_reach_the_tracking_tables(store: EventStore) -> None:
    store.track("svc", "e1", HANDLED)
    for sql in ("SELECT * FROM tusk_tracking", "DELETE FROM tusk_tracking",
                "SELECT * FROM tusk_outbox", "UPDATE tusk_meta SET value = 'x'"):
        with pytest.raises(SqlRefused):
            store.query(sql)
    assert store.tracked("svc", "e1") == HANDLED


def test_concurrent_units_for_one_event_serialise_on_the_tracking_row(store: EventStore) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(2)

    def handle() -> None:
        unit = store.unit("svc", "e1")
        barrier.wait()
        try:
            unit.execute(INSERT, ("effect", "{}"))
            time.sleep(0.2)
            results.append(unit.commit())
        except AlreadyHandled:
            results.append(unit.commit())

    threads = [threading.Thread(target=handle) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False, True]
    assert effects(store) == 1


def test_dead_lettered_rows_never_replace_handled_and_can_be_forgotten(store: EventStore) -> None:
    assert store.track("svc", "e1", DEAD)
    assert store.untracked("svc", ["x"], 0, 0, 10) == []
    assert store.untrack("svc", ["e1"]) == 1 and store.tracked("svc", "e1") is None
    store.track_many([("svc", "e2"), ("svc", "e3")], HANDLED)
    assert not store.track("svc", "e2", DEAD)
    assert store.untrack("svc", ["e2"]) == 0  # a handled row stays
    assert store.tracked("svc", "e3") == HANDLED
    # a redrive handles a dead-lettered event: the unit's claim replaces the row
    store.track("svc", "e4", DEAD)
    assert store.unit("svc", "e4").commit() is True
    assert store.tracked("svc", "e4") == HANDLED


def test_untracked_lists_stored_events_a_service_has_not_handled(store: EventStore) -> None:
    events = [new_event("order", {"i": i}) for i in range(5)]
    store.append_many(events)
    store.append(new_event("other", {}))
    store.track("svc", events[1].id, HANDLED)
    store.track("svc", events[3].id, DEAD)
    ids = [e.id for e in store.untracked("svc", ["order"], 0, 0, 100)]
    assert ids == [events[i].id for i in (0, 2, 4)]
    first = store.untracked("svc", ["order"], 0, 0, 1)
    assert [e.id for e in store.untracked("svc", ["order"], 0, first[0].seq, 100)] == ids[1:]
    assert store.untracked("svc", ["order"], time.time() + 60, 0, 100) == []
    other = store.untracked("svc", None, 0, 0, 100)  # a subscriber to every type
    assert [e.id for e in other] == ids + [other[-1].id] and other[-1].type == "other"
    assert store.untracked("svc", [], 0, 0, 100) == []


def test_append_outbox_is_idempotent_by_id(store: EventStore) -> None:
    event = new_event("order", {})
    assert store.append_outbox(event) is True
    assert store.append_outbox(event) is False
    assert store.count() == 1 and store.outbox_count() == 1
    assert store.outbox(time.time() - 60, 10) == []  # younger than the cut-off


def test_leases(store: EventStore) -> None:
    now = time.time()
    assert store.lease("relay", "a", 5, now)
    assert store.lease("relay", "a", 5, now + 1)  # renewed by its owner
    assert not store.lease("relay", "b", 5, now + 2)
    assert store.lease("relay", "b", 5, now + 10)  # expired: taken over
    assert store.lease("relay", "b", 0, 0) and store.lease("relay", "a", 5, now + 11)  # released
    assert store.meta("k") is None
    store.set_meta("k", "v1")
    store.set_meta("k", "v2")
    assert store.meta("k") == "v2"


@pytest.mark.postgres
@pytest.mark.parametrize("sql", [
    "SELECT set_config('search_path', 'public', false)",
    "SELECT set_config('role', 'none', true)",
])
def test_a_unit_statement_changing_the_session_is_undone_and_the_unit_goes_on(
    pg_store_url: str, sql: str
) -> None:
    """Defence behind the statement guard: the check after each statement in a unit."""
    from tusk_events.store.sqlguard import Checked

    with open_store(pg_store_url) as store:
        unit = store.unit("svc", "e1")
        unit.execute(INSERT, ("effect", "{}"))
        with pytest.raises(SqlRefused, match="session role or search_path"):
            unit._statement(Checked(sql, "select", 0), (), want_rows=True)
        assert unit.query("SELECT count(*) FROM event_store WHERE event_type = ?", ("effect",)) == [(1,)]
        unit.execute(INSERT, ("effect", "{}"))
        assert unit.commit() is True
        assert effects(store) == 2
        assert store.tracked("svc", "e1") == HANDLED


ODD = "it's a \\back\\slash, a 'quote', 100% and ünïcode \U0001f600 {braces}"


def test_odd_text_in_ids_and_published_events_is_stored_as_given(store: EventStore) -> None:
    """Values the PostgreSQL unit sends as literals come back unchanged."""
    from dataclasses import replace

    event = replace(new_event(ODD, {"text": ODD, "nul": "\x00"}, {"note": ODD}), id=ODD)
    unit = store.unit(ODD, ODD)
    unit.add(event)
    assert unit.commit() is True
    assert store.tracked(ODD, ODD) == HANDLED
    stored = store.get(ODD)
    assert stored is not None
    assert (stored.type, stored.payload["text"], stored.payload["nul"]) == (ODD, ODD, "\x00")
    assert stored.metadata["note"] == ODD
    assert [e.id for e in store.outbox(time.time() + 60, 10)] == [ODD]
    again = store.unit(ODD, ODD)
    assert again.commit() is False


@pytest.mark.postgres
def test_a_nul_in_an_id_is_refused_on_postgresql(pg_store_url: str) -> None:
    with open_store(pg_store_url) as store:
        unit = store.unit("svc", "a\x00b")
        unit.add(new_event("published", {}))
        with pytest.raises(StoreError, match="NUL"):
            unit.commit()
        assert store.count() == 0


@pytest.mark.postgres
@pytest.mark.parametrize("first", ["statement", "commit"])
def test_a_connection_lost_before_the_claim_is_sent_loses_the_unit_cleanly(
    pg_store_url: str, postgres_url: str, first: str
) -> None:
    """BEGIN and the claim travel with the first statement (or the commit): when that fails,
    the unit is lost as a whole, its connection goes back, and the next unit works."""
    import psycopg

    with open_store(pg_store_url) as store:
        unit = store.unit("svc", "e1")
        unit._start()  # a connection taken, nothing sent yet
        pid = unit._conn.info.backend_pid
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.2)
        with pytest.raises(StoreError, match="cannot begin handling e1"):
            if first == "statement":
                unit.execute(INSERT, ("effect", "{}"))
            else:
                unit.add(new_event("published", {}))
                unit.commit()
        unit.rollback()
        assert store.tracked("svc", "e1") is None
        again = store.unit("svc", "e1")
        again.execute(INSERT, ("effect", "{}"))
        assert again.commit() is True
        assert effects(store) == 1


def test_a_batch_of_handled_rows_meeting_existing_rows_is_written_whole(store: EventStore) -> None:
    """The usual batch has only new rows; one that meets rows (a dead letter, a row written
    before) still writes every row, and a handled row stays handled."""
    store.track("svc", "dead", DEAD)
    store.track_many([("svc", "old")], HANDLED)
    store.track_many([("svc", "new1"), ("svc", "dead"), ("svc", "old"), ("other", "new1")], HANDLED)
    for service, event_id in (("svc", "new1"), ("svc", "dead"), ("svc", "old"), ("other", "new1")):
        assert store.tracked(service, event_id) == HANDLED
    store.track_many([("svc", "old"), ("svc", "x")], DEAD)
    assert store.tracked("svc", "old") == HANDLED
    assert store.tracked("svc", "x") == DEAD
