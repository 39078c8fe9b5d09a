"""The original docs' three configs run unchanged: on memory:// and the real Redis, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from pathlib import Path

import pytest

from tusk_events import TSK
from tusk_events.bus import redis_client
from tusk_events.cli import main

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def bus_url(request) -> str:
    if request.param == "memory":
        return "memory://" + uuid.uuid4().hex[:10]
    return request.getfixturevalue("redis_url")


def _listen(url: str, channel: str, ready: threading.Event, out: queue.Queue) -> None:
    ps = redis_client(url).pubsub()
    ps.subscribe(channel)
    ready.set()
    for msg in ps.listen():
        if msg["type"] == "message":
            out.put(json.loads(msg["data"]))


def test_event_system_publishes_and_subscribe_events_filters_types(bus_url):
    cfg = TSK.from_file(CONFIGS / "event_system.tsk", env={"EVENT_BUS": bus_url})
    received: queue.Queue = queue.Queue()
    threading.Thread(
        target=cfg.execute_fujsen,
        args=("event_system", "subscribe_events", received.put, ["user_registered"]),
        daemon=True,
    ).start()
    # wait until the subscriber is live (pub/sub only reaches live listeners)
    client = redis_client(bus_url)
    end = time.monotonic() + 5
    while client.pubsub_numsub("tusk_events")[0][1] < 1:
        assert time.monotonic() < end, "subscriber never subscribed"
        time.sleep(0.01)
    sent = cfg.execute_fujsen("event_system", "publish_event", "user_registered", {"user_id": 123})
    cfg.execute_fujsen("event_system", "publish_event", "user_deleted", {"user_id": 9}, {"by": "admin"})
    cfg.execute_fujsen("event_system", "publish_event", "user_registered", {"user_id": 124})
    got = [received.get(timeout=5), received.get(timeout=5)]
    assert [e["payload"] for e in got] == [{"user_id": 123}, {"user_id": 124}]
    assert got[0] == sent and set(sent) == {"type", "payload", "metadata", "timestamp"}
    with pytest.raises(queue.Empty):
        received.get(timeout=0.2)


def test_dead_letter_queue_publishes_to_tusk_dlq_with_event_bus_from_env(bus_url):
    cfg = TSK.from_file(CONFIGS / "dead_letter_queue.tsk", env={"EVENT_BUS": bus_url})
    ready, out = threading.Event(), queue.Queue()
    threading.Thread(target=_listen, args=(bus_url, "tusk_dlq", ready, out), daemon=True).start()
    assert ready.wait(5)
    time.sleep(0.05)
    original = {"type": "user_registered", "payload": {"user_id": 1}}
    sent = cfg.execute_fujsen("dead_letter_queue", "publish_dlq", original, "handler failed")
    got = out.get(timeout=5)
    assert got == sent
    assert got["original_event"] == original and got["reason"] == "handler failed"


def test_dead_letter_queue_resolves_event_bus_from_the_event_system_section(tmp_path):
    text = (CONFIGS / "event_system.tsk").read_text() + "\n" + (CONFIGS / "dead_letter_queue.tsk").read_text()
    url = "memory://" + uuid.uuid4().hex[:10]
    cfg = TSK.from_string(text, env={"EVENT_BUS": url})
    assert cfg.fujsen("dead_letter_queue", "publish_dlq")._base["event_bus"] == url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return request.getfixturevalue("postgres_url")


def test_event_sourcing_stores_and_replays_all_by_type_and_since(store_url):
    cfg = TSK.from_file(CONFIGS / "event_sourcing.tsk", env={"EVENT_STORE": store_url})
    store = cfg.fujsen("event_sourcing", "store_event")
    replay = cfg.fujsen("event_sourcing", "replay_events")
    assert store("account_opened", {"account": "A-1"}) is True
    assert store("money_deposited", {"account": "A-1", "amount": 100}) is True
    rows = replay()
    assert sorted((r["event_type"], json.dumps(r["payload"], sort_keys=True)) for r in rows) == [
        ("account_opened", '{"account": "A-1"}'),
        ("money_deposited", '{"account": "A-1", "amount": 100}'),
    ]
    stamp = rows[0]["timestamp"]
    assert isinstance(stamp, str) and len(stamp) == 19  # SQLite's datetime('now') form, on both
    assert [r["payload"]["amount"] for r in replay("money_deposited")] == [100]
    assert replay(None, "2000-01-01 00:00:00") and replay(None, "2999-01-01 00:00:00") == []
    assert replay("money_deposited", "2999-01-01 00:00:00") == []


def test_check_compiles_the_docs_configs(capsys):
    paths = [str(CONFIGS / n) for n in ("event_system.tsk", "event_sourcing.tsk", "dead_letter_queue.tsk")]
    assert main(["check", *paths]) == 0
    out = capsys.readouterr().out
    assert "event_system.tsk: ok (1 section, 2 fujsen)" in out
    assert "event_sourcing.tsk: ok (1 section, 2 fujsen)" in out
