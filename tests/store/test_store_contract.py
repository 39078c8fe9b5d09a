"""The EventStore contract, run against every backend (see conftest.BACKENDS)."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime

import pytest
from store_support import docs_fujsen

from tusk_events.errors import StoreError
from tusk_events.events import Event, new_event
from tusk_events.store import EventStore, StoredEvent, open_store
from tusk_events.store.base import SCHEMA_VERSION

T0 = 1_704_103_200.0  # 2024-01-01 10:00:00 UTC
CANONICAL = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{0,5}[1-9])?")
SECOND = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def ev(type: str = "t", payload: object = None, ts: float | None = None, **meta: object) -> Event:
    e = new_event(type, payload, meta or None)
    if ts is not None:
        e.timestamp = ts
    return e


# --- append -------------------------------------------------------------------------------


def test_append_returns_false_for_a_stored_id(store: EventStore) -> None:
    e = ev("user_registered", {"name": "Ada"})
    assert store.append(e) is True
    assert store.append(e) is False
    assert store.count() == 1


def test_append_many_counts_only_new_events(store: EventStore) -> None:
    first = [ev("a", {"i": i}) for i in range(5)]
    assert store.append_many(first) == 5
    again = first[2:] + [ev("a", {"i": 5}), ev("a", {"i": 6})]
    assert store.append_many(again) == 2
    twice = ev("b")
    assert store.append_many([twice, twice]) == 1
    assert store.append_many([]) == 0
    assert store.count() == 8


def test_append_many_is_all_or_nothing(store: EventStore) -> None:
    store.append(ev("kept"))
    bad = [ev("x", {"i": 1}), ev("x", {"i": 2}), ev("x", {"oops": object()}), ev("x", {"i": 4})]
    with pytest.raises(StoreError, match="not JSON-serialisable"):
        store.append_many(bad)
    assert store.count() == 1
    assert store.append_many(bad[:2]) == 2  # nothing of the failed batch was kept


def test_append_many_accepts_a_generator(store: EventStore) -> None:
    assert store.append_many(ev("g", {"i": i}) for i in range(30)) == 30
    assert [e.payload["i"] for e in store.replay()] == list(range(30))


def test_round_trip_keeps_the_envelope(store: EventStore) -> None:
    e = ev("order_placed", {"total": 12.5, "items": ["a", "é", None], "ok": True}, ts=T0 + 0.123456)
    store.append(e)
    (stored,) = store.replay()
    assert isinstance(stored, StoredEvent)
    assert stored.seq >= 1
    back = stored.to_event()
    assert (back.id, back.type, back.payload, back.metadata) == (
        e.id,
        e.type,
        e.payload,
        e.metadata,
    )
    assert back.timestamp == pytest.approx(e.timestamp, abs=1e-6)
    assert stored.timestamp_text == "2024-01-01 10:00:00.123456"
    d = stored.to_dict()
    assert d["seq"] == stored.seq and d["id"] == e.id and d["payload"] == e.payload
    assert isinstance(stored.payload_json, str)


def test_empty_metadata_reads_back_as_empty_dict(store: EventStore) -> None:
    store.append(Event("bare", payload=None))
    (stored,) = store.replay()
    assert stored.metadata == {} and stored.payload is None


def test_get_finds_by_envelope_id(store: EventStore) -> None:
    e = ev("x", {"k": 1})
    store.append_many([ev("y"), e, ev("z")])
    got = store.get(e.id)
    assert got is not None and got.payload == {"k": 1} and got.type == "x"
    assert store.get("no-such-id") is None


# --- replay -------------------------------------------------------------------------------


def test_replay_is_in_store_order_and_filters(store: EventStore) -> None:
    events = [ev("even" if i % 2 == 0 else "odd", {"i": i}, ts=T0 + i) for i in range(20)]
    store.append_many(events)
    all_ = list(store.replay())
    assert [e.payload["i"] for e in all_] == list(range(20))
    seqs = [e.seq for e in all_]
    assert seqs == sorted(seqs) and len(set(seqs)) == 20

    assert [e.payload["i"] for e in store.replay(type="odd")] == list(range(1, 20, 2))
    assert [e.payload["i"] for e in store.replay(since=T0 + 14)] == list(range(15, 20))
    assert [e.payload["i"] for e in store.replay(type="even", since=T0 + 9)] == [10, 12, 14, 16, 18]
    cursor = all_[11].seq
    assert [e.payload["i"] for e in store.replay(after_id=cursor)] == list(range(12, 20))
    assert [e.payload["i"] for e in store.replay(type="odd", after_id=cursor)] == [13, 15, 17, 19]
    assert list(store.replay(type="missing")) == []
    assert list(store.replay(after_id=all_[-1].seq)) == []


def test_replay_in_batches(store: EventStore) -> None:
    store.append_many(ev("b", {"i": i}, ts=T0 + i) for i in range(50))
    expected = list(range(50))
    for batch in (1, 7, 49, 50, 51, 1000):
        assert [e.payload["i"] for e in store.replay(batch=batch)] == expected
    assert [e.payload["i"] for e in store.replay(since=T0 + 10, batch=7)] == list(range(11, 50))
    with pytest.raises(ValueError):
        store.replay(batch=0)


def test_replay_is_lazy_and_fetches_batch_by_batch(sqlite_store_url: str) -> None:
    with open_store(sqlite_store_url) as store:
        store.append_many(ev("b", {"i": i}) for i in range(50))
        calls = []
        original = store._execute  # type: ignore[attr-defined]

        def spy(sql: str, params: tuple = ()) -> list:
            rows = original(sql, params)
            calls.append(len(rows))
            return rows

        store._execute = spy  # type: ignore[attr-defined]
        it = store.replay(batch=7)
        assert calls == []
        next(it)
        assert max(calls) <= 7
        assert len(list(it)) == 49
        assert calls[1:] == [7, 7, 7, 7, 7, 7, 7, 1]  # after the max(id) probe


def test_replay_covers_events_committed_before_it_started(store: EventStore) -> None:
    store.append_many(ev("s", {"i": i}) for i in range(10))
    it = store.replay(batch=3)
    got = [next(it)]
    store.append_many(ev("s", {"i": i}) for i in range(10, 20))
    got += list(it)
    assert [e.payload["i"] for e in got] == list(range(10))
    assert store.count() == 20


def test_abandoned_replay_releases_its_connection(store: EventStore) -> None:
    store.append_many(ev("a") for _ in range(20))
    for _ in range(30):  # more than any pool size
        it = store.replay(batch=2)
        next(it)
        it.close()
    assert store.count() == 20


# --- since semantics ------------------------------------------------------------------------


def test_since_is_strictly_after_with_second_precision_strings(store: EventStore) -> None:
    store.append_many(
        [
            ev("s", "at", ts=T0),  # exactly 10:00:00
            ev("s", "half", ts=T0 + 0.5),
            ev("s", "next", ts=T0 + 1),
            ev("s", "before", ts=T0 - 0.25),
        ]
    )
    for since in (
        "2024-01-01 10:00:00",
        "2024-01-01T10:00:00",
        "2024-01-01T10:00:00Z",
        "2024-01-01T12:00:00+02:00",
        "2024-01-01 10:00:00.000000",
        T0,
        datetime(2024, 1, 1, 10, 0, 0, tzinfo=UTC),
    ):
        assert [e.payload for e in store.replay(since=since)] == ["half", "next"], since
        assert store.count(since=since) == 2
    assert [e.payload for e in store.replay(since="2024-01-01 10:00:00.5")] == ["next"]
    assert store.count(since="2024-01-01") == 4
    with pytest.raises(StoreError, match="not a point in time"):
        list(store.replay(since="yesterday"))


def test_fujsen_since_filter_normalises_iso_parameters(store: EventStore) -> None:
    store.append_many(
        [ev("s", "at", ts=T0), ev("s", "half", ts=T0 + 0.5), ev("s", "next", ts=T0 + 1)]
    )
    sql = "SELECT payload FROM event_store WHERE timestamp > ? ORDER BY id"
    for since in ("2024-01-01 10:00:00", "2024-01-01T10:00:00", "2024-01-01T10:00:00.000Z"):
        assert store.query(sql, [since]) == [('"half"',), ('"next"',)], since


# --- count and stats ----------------------------------------------------------------------


def test_count_and_stats(store: EventStore) -> None:
    empty = store.stats()
    assert empty["total"] == 0 and empty["types"] == {} and empty["first_timestamp"] is None
    store.append_many([ev("b", ts=T0 + 2), ev("a", ts=T0 + 1), ev("b", ts=T0 + 3.25)])
    assert store.count() == 3
    assert store.count(type="b") == 2
    assert store.count(type="b", since=T0 + 2) == 1
    stats = store.stats()
    assert stats["backend"] == store.backend
    assert stats["schema_version"] == store.schema_version == SCHEMA_VERSION
    assert stats["total"] == 3
    assert stats["types"] == {"a": 1, "b": 2}
    assert list(stats["types"]) == ["a", "b"]
    assert stats["first_timestamp"] == "2024-01-01 10:00:01"
    assert stats["last_timestamp"] == "2024-01-01 10:00:03.25"
    assert stats["last_seq"] == max(e.seq for e in store.replay())


# --- the docs' fujsen SQL ------------------------------------------------------------------


def test_docs_store_event_and_replay_events_run_unchanged(store: EventStore) -> None:
    f = docs_fujsen(store)
    assert f["store_event"]("user_registered", {"name": "Ada", "n": 1}) is True
    assert f["store_event"]("order_placed", {"total": 9.5}) is True
    rows = f["replay_events"]()
    assert [(r["event_type"], r["payload"]) for r in rows] == [
        ("user_registered", {"name": "Ada", "n": 1}),
        ("order_placed", {"total": 9.5}),
    ]
    for r in rows:
        assert isinstance(r["timestamp"], str) and SECOND.fullmatch(r["timestamp"])
    assert [r["event_type"] for r in f["replay_events"]("order_placed")] == ["order_placed"]
    assert f["replay_events"](since="2000-01-01 00:00:00") == rows
    assert f["replay_events"]("order_placed", "2999-01-01 00:00:00") == []
    # rows written by raw SQL are events too
    stored = list(store.replay())
    assert [s.type for s in stored] == ["user_registered", "order_placed"]
    assert stored[0].id is None and stored[0].payload == {"name": "Ada", "n": 1}
    e = stored[0].to_event()
    assert e.id == stored[0].to_event().id and len(e.id) == 36


def test_docs_sql_gives_the_same_rows_on_sqlite_and_postgresql(
    sqlite_store_url: str, pg_store_url: str
) -> None:
    results = []
    for url in (sqlite_store_url, pg_store_url):
        with open_store(url) as store:
            f = docs_fujsen(store)
            f["store_event"]("a", {"x": [1, 2, {"y": None}], "s": "é"})
            f["store_event"]("b", "text")
            store.append(ev("c", {"z": 1}, ts=T0 + 0.5))
            rows = f["replay_events"]() + f["replay_events"]("a")
            rows += f["replay_events"](since="2024-01-01 10:00:00")
            raw = store.query(
                "SELECT id, event_type, payload, CASE WHEN event_id IS NULL THEN 1 ELSE 0 END, "
                "length(timestamp) FROM event_store ORDER BY id"
            )
            results.append((rows, raw))
    (rows_sqlite, raw_sqlite), (rows_pg, raw_pg) = results
    assert raw_sqlite == raw_pg
    assert [tuple(map(type, r)) for r in raw_sqlite] == [tuple(map(type, r)) for r in raw_pg]

    def shape(rows: list) -> list:  # the docs' SELECT has no ORDER BY: compare as multisets
        return sorted(
            repr((r["event_type"], r["payload"], type(r["timestamp"]), len(r["timestamp"])))
            for r in rows
        )

    assert shape(rows_sqlite) == shape(rows_pg)
    assert len(rows_sqlite) == 3 + 1 + 3


def test_fujsen_insert_may_omit_the_timestamp(store: EventStore) -> None:
    assert (
        store.execute("INSERT INTO event_store (event_type, payload) VALUES (?, ?)", ["d", "1"])
        == 1
    )
    (row,) = store.query("SELECT timestamp FROM event_store")
    assert SECOND.fullmatch(row[0])


def test_timestamps_must_be_canonical(store: EventStore) -> None:
    insert = "INSERT INTO event_store (event_type, payload, timestamp) VALUES (?, ?, ?)"
    assert store.execute(insert, ["ok", "1", "2024-01-01T10:00:00.250Z"]) == 1  # normalised
    assert store.query("SELECT timestamp FROM event_store") == [("2024-01-01 10:00:00.25",)]
    for bad in ("yesterday", "2024-1-1 10:00:00", "1704103200", 1704103200.5):
        with pytest.raises(StoreError):
            store.execute(insert, ["bad", "1", bad])
    assert store.count() == 1


def test_fujsen_datetime_now_matches_sqlite(store: EventStore) -> None:
    (now,) = store.query("SELECT datetime('now')")[0]
    assert SECOND.fullmatch(now)
    assert (
        abs(
            datetime.strptime(now, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
            - datetime.now(UTC).timestamp()
        )
        < 5
    )
    (later,) = store.query("SELECT datetime('2024-01-01 10:00:00', '+1 day', '-2 hours')")[0]
    assert later == "2024-01-02 08:00:00"


def test_fujsen_execute_counts_rows_and_query_returns_tuples(store: EventStore) -> None:
    store.append_many([ev("u", {"i": i}) for i in range(3)])
    assert (
        store.execute("UPDATE event_store SET payload = ? WHERE event_type = ?", ["{}", "u"]) == 3
    )
    assert store.execute("SELECT * FROM event_store") == -1
    assert store.query("DELETE FROM event_store WHERE id = (SELECT min(id) FROM event_store)") == []
    rows = store.query("SELECT count(*), max(payload) FROM event_store WHERE payload LIKE '%{%'")
    assert rows == [(2, "{}")] and isinstance(rows[0], tuple)
    assert store.query(
        "SELECT event_type FROM event_store WHERE payload = ? LIMIT ?", ["{}", 1]
    ) == [("u",)]


def test_fujsen_query_returns_a_bounded_number_of_rows(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tusk_events.store import base

    monkeypatch.setattr(base, "FUJSEN_SQL_MAX_ROWS", 5)
    store.append_many(ev("r") for _ in range(6))
    with pytest.raises(StoreError, match="more than 5 rows"):
        store.query("SELECT * FROM event_store")
    assert len(store.query("SELECT * FROM event_store LIMIT 5")) == 5


# --- refused fujsen SQL --------------------------------------------------------------------

REFUSED_EVERYWHERE = {
    "attach": ("ATTACH DATABASE '/tmp/x.db' AS x", "ATTACH is not allowed"),
    "pragma": ("PRAGMA user_version = 7", "PRAGMA is not allowed"),
    "create": ("CREATE TABLE t (x)", "CREATE is not allowed"),
    "drop": ("DROP TABLE event_store", "DROP is not allowed"),
    "alter": ("ALTER TABLE event_store ADD COLUMN x", "ALTER is not allowed"),
    "vacuum_into": ("VACUUM INTO '/tmp/copy.db'", "VACUUM is not allowed"),
    "copy_to": ("COPY event_store TO '/tmp/out.csv'", "COPY is not allowed"),
    "begin": ("BEGIN", "BEGIN is not allowed"),
    "two_statements": ("SELECT 1; DELETE FROM event_store", "a second statement"),
    "two_hidden_after_comment": ("SELECT 1 -- x\n; DROP TABLE event_store", "a second statement"),
    "dml_cte": (
        "WITH gone AS (DELETE FROM event_store RETURNING id) SELECT count(*) FROM gone",
        "DELETE inside WITH",
    ),
    "select_into": ("SELECT * INTO TEMP copy FROM event_store", "INTO outside INSERT"),
    "named_param": ("SELECT * FROM event_store WHERE id = :id", "named parameter"),
    "numbered_param": ("SELECT * FROM event_store WHERE id = ?1", "numbered placeholder"),
    "empty": ("  -- nothing\n", "empty"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_EVERYWHERE))
def test_refused_statements(store: EventStore, case: str) -> None:
    sql, reason = REFUSED_EVERYWHERE[case]
    store.append(ev("keep"))
    with pytest.raises(StoreError, match=re.escape(reason)) as info:
        store.execute(sql)
    assert getattr(info.value, "refused", False) is True
    assert str(info.value).startswith("statement refused:")
    assert store.count() == 1


def test_load_extension_is_refused(store: EventStore) -> None:
    with pytest.raises(StoreError, match="statement refused") as info:
        store.query("SELECT load_extension('/tmp/evil.so')")
    assert info.value.refused  # type: ignore[attr-defined]


def test_other_tables_are_out_of_reach(store: EventStore) -> None:
    with pytest.raises(StoreError, match="statement refused"):
        store.query("SELECT * FROM tusk_schema")
    with pytest.raises(StoreError, match="statement refused"):
        store.execute("UPDATE tusk_schema SET version = 99")
    assert store.schema_version == SCHEMA_VERSION


def test_placeholder_count_and_parameter_types_are_checked(store: EventStore) -> None:
    with pytest.raises(StoreError, match="1 \\? placeholder\\(s\\) but 2"):
        store.query("SELECT ? ", [1, 2])
    with pytest.raises(StoreError, match="not supported"):
        store.query("SELECT ?", [{"a": 1}])
    with pytest.raises(StoreError, match="finite"):
        store.query("SELECT ?", [float("nan")])
    assert store.query("SELECT ? || ?, '?'", ["a", "b"]) == [("ab", "?")]


def test_fujsen_sql_times_out(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import tusk_events.store.postgres as pg_mod
    import tusk_events.store.sqlite as sqlite_mod

    monkeypatch.setattr(sqlite_mod, "FUJSEN_SQL_TIMEOUT_S", 0.3)
    monkeypatch.setattr(pg_mod, "FUJSEN_SQL_TIMEOUT_S", 0.3)
    with open_store(store_url) as store:
        with pytest.raises(StoreError, match="ran longer than"):
            store.query(
                "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) "
                "SELECT count(*) FROM r"
            )
        assert store.query("SELECT 1") == [(1,)]


# --- schema --------------------------------------------------------------------------------


def test_opening_twice_migrates_once(store_url: str) -> None:
    with open_store(store_url) as a:
        a.append(ev("x"))
        with open_store(store_url) as b:
            assert b.count() == 1
            assert b.schema_version == SCHEMA_VERSION
    with open_store(store_url) as c:
        assert c.count() == 1 and c.schema_version == SCHEMA_VERSION


def test_a_newer_schema_is_refused(store: EventStore, store_url: str) -> None:
    store.close()
    if store.backend == "sqlite":
        import sqlite3

        path = store_url.split("///", 1)[1]
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE tusk_schema SET version = 99")
    else:
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as conn:
            conn.execute("UPDATE tusk_schema SET version = 99")
    with pytest.raises(StoreError, match="version 99"):
        open_store(store_url)


def test_replay_plans_use_indexes(store: EventStore) -> None:
    store.append_many(ev(f"type{i % 20}", {"i": i}, ts=T0 + i) for i in range(20_000))
    if store.backend == "postgresql":
        import psycopg

        with psycopg.connect(store.url, autocommit=True) as conn:
            conn.execute(f"ANALYZE {store.schema}.event_store")  # type: ignore[attr-defined]
    since = T0 + 19_900
    by_type_since = "\n".join(store.explain_replay(type="type3", since=since))
    by_since = "\n".join(store.explain_replay(since=since))
    by_type = "\n".join(store.explain_replay(type="type3"))
    if store.backend == "sqlite":
        assert (
            "USING COVERING INDEX event_store_type_ts (event_type=? AND timestamp>?)"
            in by_type_since
        )
        assert "USING INDEX event_store_type_id (event_type=? AND id>? AND id<?)" in by_type_since
        assert "USING COVERING INDEX event_store_ts (timestamp>?)" in by_since
        assert "USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)" in by_since
        assert "USING INDEX event_store_type_id" in by_type
    else:
        assert "Seq Scan" not in by_type_since and "event_store_type_ts" in by_type_since
        assert "Seq Scan" not in by_since and "event_store_ts" in by_since
        assert "Seq Scan" not in by_type
    assert [e.payload["i"] for e in store.replay(type="type3", since=since)] == [
        i for i in range(19_901, 20_000) if i % 20 == 3
    ]


# --- lifecycle and threads -------------------------------------------------------------------


def test_closed_store_refuses_work(store: EventStore) -> None:
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.append(ev("x"))
    with pytest.raises(StoreError, match="closed"):
        store.query("SELECT 1")


def test_threads_share_a_store(store: EventStore) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                store.append(ev("th", {"t": n, "i": i}))
            store.append_many(ev("th", {"t": n, "i": 100 + i}) for i in range(20))
            store.query("SELECT count(*) FROM event_store")
            assert sum(1 for _ in store.replay(type="th", batch=5)) >= 40
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.count(type="th") == 6 * 40


def test_memory_store_is_shared_by_threads() -> None:
    with open_store("sqlite:///:memory:") as store:
        threads = [
            threading.Thread(
                target=lambda n=n: store.append_many(ev("m", {"n": n}) for _ in range(25))
            )
            for n in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.count() == 100
        assert store.execute("DELETE FROM event_store WHERE payload = ?", ['{"n":0}']) == 25
        assert len(list(store.replay(batch=7))) == 75
