"""Delivery under faults, each on a private redis-server: poison entries, slow handlers, false
dead letters, redrive, lost data, strict JSON, an unreachable bus."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from delivery_support import PrivateRedis, pending, run_cli, wait_until

from tusk_events import TSK
from tusk_events.bus import connect
from tusk_events.errors import BusError, PayloadError
from tusk_events.runtime.core import Runtime

pytestmark = pytest.mark.redis


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    srv = PrivateRedis(tmp_path).start()
    yield srv
    srv.kill()


def config(body: str) -> str:
    return (
        '[app]\nevent_bus: @env("EVENT_BUS", "memory://")\n'
        'event_store: @env("EVENT_STORE", "sqlite:///unused.db")\n\n' + body
    )


COUNTING = config("""
[worker]
subscribe: "job"
retries: 0
handle_fujsen = '''
def handle(event):
    redis.from_url(event_bus).hincrby("applied", event["id"], 1)
'''
""")


def runtime(text: str, server: PrivateRedis, tmp_path: Path, **kw: object) -> Runtime:
    env = {"EVENT_BUS": server.url, "EVENT_STORE": f"sqlite:///{tmp_path / 'events.db'}"}
    return Runtime([TSK.from_string(text, env=env)], **kw)  # type: ignore[arg-type]


POISON = {
    "nested 1,000 deep": b'{"type":"job","payload":' + b"[" * 1000 + b"]" * 1000 + b"}",
    "nested 100,000 deep": b'{"type":"job","payload":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "not UTF-8": b"\xff\xfe\x00 not json",
    "not JSON": b"{not json",
    "not an object": b"[1, 2, 3]",
    "no type": b'{"payload": 1}',
    "metadata not an object": b'{"type": "job", "metadata": [1]}',
}


@pytest.mark.timeout(120)
def test_poison_entries_of_any_shape_lose_no_consumer_and_keep_their_bytes(server, tmp_path):
    r = server.client()
    with runtime(COUNTING, server, tmp_path) as rt:
        rt.bus.publish("job", {"i": -1})  # creates the stream; the group starts at its first entry
        for raw in POISON.values():
            r.xadd("tusk:stream:job", {"event": raw})
        r.xadd("tusk:stream:job", {"something": b"else"})  # no event field at all
        rt.bus.publish_many(("job", {"i": i}) for i in range(1000))
        summary = rt.run_until_idle(startup=False, timeout=90)
        assert summary.handled == 1001
        applied = r.hgetall("applied")
        assert len(applied) == 1001 and set(applied.values()) == {b"1"}
        letters = rt.dlq.list("worker")
        assert summary.dead_lettered == len(letters) == len(POISON) + 1
        kept = sorted(d.raw for d in letters if d.raw is not None)
        assert kept == sorted([*POISON.values(), b"something=else"])
        assert all(d.reason.startswith("not a usable event:") for d in letters)
        assert any("RecursionError" in d.reason for d in letters)
        assert pending(r, "tusk:stream:job", "worker") == 0
        assert rt.redrive("worker") == 0  # bytes that are not an event cannot be redriven: they stay
        assert len(rt.dlq.list("worker")) == len(letters)


@pytest.mark.timeout(120)
def test_a_consumer_thread_that_dies_is_restarted(server, tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    stop = threading.Event()
    with runtime(COUNTING, server, tmp_path) as rt:
        thread = threading.Thread(target=rt.run, args=(stop,), kwargs={"startup": False})
        thread.start()
        wait_until(lambda: bool(rt._subscriptions) and all(s.alive for s in rt._subscriptions), 10)
        sub = rt._subscriptions[0]
        original = sub._read
        broken = {"n": 0}

        def read_once_broken(block_ms):  # a bug outside any handler: the loop itself raises
            if broken["n"] == 0:
                broken["n"] += 1
                raise RuntimeError("consumer loop bug")
            return original(block_ms)

        sub._read = read_once_broken
        wait_until(lambda: broken["n"] == 1, 10, "the loop to break")
        rt.bus.publish("job", {"i": 1})
        wait_until(lambda: server.client().hlen("applied") == 1, 15, "the restarted consumer to handle")
        stop.set()
        thread.join(15)
    assert any("died" in r.message and "restarting" in r.message for r in caplog.records)


SLOW = config("""
[worker]
subscribe: "job"
retries: 0
timeout: 30
visibility_timeout: 0.6
handle_fujsen = '''
def handle(event):
    redis.from_url(event_bus).hincrby("applied", event["id"], 1)
    time.sleep(event["payload"]["s"])
'''
""")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_slow_healthy_handlers_never_run_twice(server, tmp_path):
    """Handlers of 0.2 s and 1 s, batch 100, a 0.6 s visibility timeout, two workers: each job runs once."""
    r = server.client()
    durations = [0.2] * 12 + [1.0] * 3
    workers = [runtime(SLOW, server, tmp_path, consumer=f"w{i}") for i in range(2)]
    try:
        workers[0].bus.publish_many(("job", {"s": s}) for s in durations)
        threads = [threading.Thread(target=w.run_until_idle, kwargs={"startup": False, "timeout": 60}) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        applied = r.hgetall("applied")
        assert len(applied) == len(durations)
        assert set(applied.values()) == {b"1"}, "an event was handled twice"
        assert sum(w.summary.handled for w in workers) == len(durations)
        assert sum(w.summary.dead_lettered for w in workers) == 0
        assert pending(r, "tusk:stream:job", "worker") == 0
    finally:
        for w in workers:
            w.close()


RETRY_ONCE = COUNTING.replace("retries: 0", "retries: 1\nvisibility_timeout: 0.3")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("retries", "recorded", "started"), [(1, 1, 2), (0, 1, 1)])
def test_entries_read_but_never_started_are_not_dead_lettered(server, tmp_path, retries, recorded, started):
    """Redis's delivery count grows with every read; only started attempts count towards the DLQ.

    retries 0 counts every start exactly; retries >= 1 records starts from the second delivery
    on and counts the first as started (``recorded`` + 1 starts)."""
    r = server.client()
    with runtime(RETRY_ONCE.replace("retries: 1", f"retries: {retries}"), server, tmp_path) as rt:
        events = rt.bus.publish_many(("job", {"i": i}) for i in range(5))
        r.xgroup_create("tusk:stream:job", "worker", "0")
        ids = [mid for mid, _ in r.xreadgroup("worker", "ghost", {"tusk:stream:job": ">"})[0][1]]
        for _ in range(4):  # a reader that reads and never handles: delivery count 5
            r.xclaim("tusk:stream:job", "worker", "ghost", 0, ids)
        assert r.xpending_range("tusk:stream:job", "worker", "-", "+", 10)[0]["times_delivered"] == 5
        # one event was really started and never finished, retries + 1 times: a worker died in it
        r.set(f"tusk:attempt:worker:{events[0].id}", recorded)
        summary = rt.run_until_idle(startup=False, timeout=30)
        assert summary.handled == 4 and summary.dead_lettered == 1
        (letter,) = rt.dlq.list("worker")
        assert letter.event.id == events[0].id and f"started {started} times without finishing" in letter.reason
        assert not r.hexists("applied", events[0].id)
        assert r.keys("tusk:attempt:*") == []  # the counters go with the acks


TWO_SERVICES = config("""
[billing]
subscribe: "order"
retries: 0
handle_fujsen = '''
def handle(event):
    r = redis.from_url(event_bus)
    if r.get("down"):
        raise ValueError("billing is down")
    r.hincrby("ran:billing", event["id"], 1)
'''

[audit]
subscribe: "order"
retries: 0
handle_fujsen = '''
def handle(event):
    r = redis.from_url(event_bus)
    if r.get("down"):
        raise ValueError("audit is down")
    r.hincrby("ran:audit", event["id"], 1)
'''
""")


@pytest.mark.timeout(60)
def test_redrive_reaches_its_own_service_only_and_once(server, tmp_path):
    r = server.client()
    with runtime(TWO_SERVICES, server, tmp_path) as rt:
        r.set("down", 1)
        rt.bus.publish_many(("order", {"n": i}) for i in range(3))
        assert rt.run_until_idle(startup=False, timeout=30).dead_lettered == 6
        r.delete("down")
        assert rt.redrive("billing") == 3
        assert set(r.hgetall("ran:billing").values()) == {b"1"} and len(r.hgetall("ran:billing")) == 3
        assert r.hlen("ran:audit") == 0  # only the service that was redriven saw the events again
        assert rt.redrive("billing") == 0  # once per letter
        assert rt.dlq.count("billing") == 0 and rt.dlq.count("audit") == 3
    with runtime(TWO_SERVICES, server, tmp_path) as rt:  # nothing went back on the shared stream
        assert rt.run_until_idle(startup=False, timeout=30).handled == 0
        assert rt.redrive("audit") == 3
    assert r.hlen("ran:audit") == 3 and set(r.hgetall("ran:billing").values()) == {b"1"}


@pytest.mark.timeout(60)
def test_a_lost_group_is_reported_loudly_and_recreated(server, tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    stop = threading.Event()
    with runtime(COUNTING, server, tmp_path) as rt:
        thread = threading.Thread(target=rt.run, args=(stop,), kwargs={"startup": False})
        thread.start()
        rt.bus.publish("job", {"i": 1})
        wait_until(lambda: server.client().hlen("applied") == 1, 10)
        server.kill()  # restarted without persistence: streams, groups and counters are gone
        server.start()
        time.sleep(0.5)
        wait_until(lambda: _published(rt), 15, "the bus to take a publish again")
        wait_until(lambda: server.client().hlen("applied") == 1, 15, "the new event to be handled")
        stop.set()
        thread.join(15)
    lost = [r.message for r in caplog.records if "lost its data" in r.message]
    assert lost and "tusk:stream:job" in lost[0]


def _published(rt: Runtime) -> bool:
    try:
        rt.bus.publish("job", {"i": 2})
        return True
    except BusError:
        return False


@pytest.mark.timeout(60)
def test_payloads_are_strict_json_and_a_failed_bus_write_is_an_error(server, tmp_path):
    with runtime(COUNTING, server, tmp_path) as rt:
        before = rt.store.count()
        for bad in (float("nan"), float("inf"), -float("inf")):
            with pytest.raises(PayloadError, match="strict JSON"):
                rt.publish("job", {"x": bad})
        assert rt.store.count() == before  # refused before it was stored
        with pytest.raises(PayloadError):
            rt.bus.publish("job", [float("nan")])
        server.kill()
        # tracking on (the default): stored with an outbox row, for the relay to send later
        event = rt.publish("job", {"x": 1})
        assert rt.store.get(event.id) is not None and rt.store.outbox_count() == 1


def test_without_tracking_a_failed_bus_write_after_the_store_is_an_error(server, tmp_path):
    with runtime(COUNTING, server, tmp_path, tracking=False) as rt:
        server.kill()
        with pytest.raises(BusError, match="is in the event store but was not published"):
            rt.publish("job", {"x": 1})


@pytest.mark.timeout(60)
def test_until_idle_gives_up_when_the_bus_is_unreachable(tmp_path):
    from delivery_support import cli_env

    cfg = tmp_path / "app.tsk"
    cfg.write_text(COUNTING)
    bus = connect("redis://127.0.0.1:7408/0", retries=0)
    try:
        bus.ping()
        pytest.skip("something listens on 7408")
    except BusError:
        pass
    t0 = time.monotonic()
    out = run_cli("run", str(cfg), "--until-idle", env=cli_env("redis://127.0.0.1:7408/0", tmp_path))
    assert out.returncode == 1 and time.monotonic() - t0 < 30
    assert "Traceback" not in out.stderr
    assert "7408" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_poison_message_on_a_broadcast_is_set_aside(tmp_path):
    text = COUNTING.replace('retries: 0', 'retries: 0\ndelivery: "broadcast"')
    env = {"EVENT_BUS": "memory://poison-" + tmp_path.name, "EVENT_STORE": f"sqlite:///{tmp_path / 'e.db'}"}
    with Runtime([TSK.from_string(text, env=env)]) as rt:
        rt._subscribe_all()
        sub = rt._subscriptions[0]
        sub._on_message(b"[" * 100_000)
        sub._on_message(json.dumps({"type": "job", "payload": 1}).encode())
        assert sub.poisoned == 1
        (letter,) = rt.dlq.list("worker")
        assert letter.raw == b"[" * 100_000
