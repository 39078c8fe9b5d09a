"""Exactly-once handling: tracking rows, the outbox, the relay and re-delivery from the store.

Embedded bus, store on SQLite (a temp file) and on PostgreSQL (a fresh schema). The fault
suite with private servers and SIGKILLs is tests/runtime/test_exactly_once_faults.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from tusk_events import TSK, ConfigError
from tusk_events.errors import BusError
from tusk_events.events import new_event
from tusk_events.runtime.core import Runtime
from tusk_events.runtime.relay import redeliver_since
from tusk_events.store.unit import DEAD, HANDLED

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

CONFIG = """
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///unused.db")
redeliver_since: "1h"

[orders]
subscribe: ["order_placed"]
delivery: "{delivery}"
retries: 2
backoff: 0.001
handle_fujsen = '''
def handle(event):
    p = event["payload"]
    execute("INSERT INTO event_store (event_type, payload) VALUES (?, ?)",
            "effect", json.dumps({{"order": event["id"]}}))
    publish("order_done", {{"order": event["id"]}})
    r = redis.from_url(event_bus)
    n = r.incr("runs:" + event["id"])
    if p.get("fail_first") and n == 1:
        raise ValueError("first attempt fails after its effects")
    if p.get("always_fail"):
        raise ValueError("never works")
    if p.get("slow"):
        time.sleep(p["slow"])
'''
"""


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/events.db"
    url: str = request.getfixturevalue("pg_store_url")
    return url


@pytest.fixture
def pg_store_url(postgres_url: str):  # type: ignore[no-untyped-def]
    from tests.store.conftest import drop_fujsen_role

    yield postgres_url
    drop_fujsen_role(postgres_url)


def runtime(store_url: str, delivery: str = "sync", bus: str | None = None, **kw: object) -> Runtime:
    env = {"EVENT_BUS": bus or "memory://" + uuid.uuid4().hex[:10], "EVENT_STORE": store_url}
    cfg = TSK.from_string(CONFIG.format(delivery=delivery), env=env, path="orders.tsk")
    return Runtime([cfg], **kw)  # type: ignore[arg-type]


def effects(rt: Runtime, event_id: str) -> int:
    return sum(1 for e in rt.store.replay(type="effect") if e.payload["order"] == event_id)


def done_events(rt: Runtime, event_id: str) -> int:
    return sum(1 for e in rt.store.replay(type="order_done") if e.payload["order"] == event_id)


def test_a_second_delivery_is_acknowledged_without_running_the_handler(store_url: str) -> None:
    with runtime(store_url) as rt:
        svc = rt.services[0]
        event = new_event("order_placed", {})
        assert rt.process(svc, event) == "handled"
        rt.client.delete(f"tusk:dedup:orders:{event.id}")  # the bus lost its dedup record
        assert rt.process(svc, event) == "duplicate"
        assert rt.client.get(f"runs:{event.id}") == b"1"  # the handler did not run again
        assert effects(rt, event.id) == 1 and done_events(rt, event.id) == 1
        assert rt.store.tracked("orders", event.id) == HANDLED
        assert rt.summary.duplicates == 1


def test_a_failed_attempt_leaves_no_effects_behind(store_url: str) -> None:
    with runtime(store_url) as rt:
        event = new_event("order_placed", {"fail_first": True})
        assert rt.process(rt.services[0], event) == "handled"
        assert rt.client.get(f"runs:{event.id}") == b"2"  # ran twice (the redis effect: at least once)
        assert effects(rt, event.id) == 1  # execute: exactly once
        assert done_events(rt, event.id) == 1  # publish: exactly once
        rt.relay.flush()  # confirmations are batched
        assert rt.store.outbox_count() == 0  # sent on the bus and confirmed


def test_two_deliveries_at_once_apply_the_effects_once(store_url: str) -> None:
    # a handler slower than the visibility timeout: the bus hands the event to a second
    # consumer while the first is still running
    with runtime(store_url) as rt:
        svc = rt.services[0]
        event = new_event("order_placed", {"slow": 0.5})
        results: list[str] = []
        threads = [
            threading.Thread(target=lambda: results.append(rt.process(svc, event)))
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results) == ["duplicate", "handled"]
        assert effects(rt, event.id) == 1 and done_events(rt, event.id) == 1


def test_dead_lettered_events_are_tracked_and_a_redrive_handles_them_again(store_url: str) -> None:
    with runtime(store_url) as rt:
        svc = rt.services[0]
        event = new_event("order_placed", {"always_fail": True})
        assert rt.process(svc, event) == "dead-lettered"
        assert effects(rt, event.id) == 0  # every failed attempt rolled back
        assert rt.store.tracked("orders", event.id) == DEAD
        # the store re-delivery leaves it alone (it has a row) ...
        assert rt.relay.redeliver() == {}
        # ... a redrive reaches the handler again (and it fails again, into the DLQ)
        assert rt.redrive("orders") == 1
        assert rt.client.get(f"runs:{event.id}") == b"6"
        assert len(rt.dlq.list("orders")) == 1


def test_host_publish_with_an_id_is_a_safe_retry(store_url: str) -> None:
    with runtime(store_url, delivery="durable") as rt:
        first = rt.publish("order_placed", {"n": 1}, id="order-1")
        again = rt.publish("order_placed", {"n": 1}, id="order-1")
        assert first.id == again.id == "order-1"
        assert rt.store.count(type="order_placed") == 1
        assert rt.bus.stream_info(["order_placed"])["order_placed"].length == 1
        rt.run_until_idle(startup=False)
        assert effects(rt, "order-1") == 1


def test_bus_down_while_host_code_publishes_the_relay_delivers_later(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with runtime(store_url, delivery="durable") as rt:
        real = rt.bus.publish_event

        def down(event):  # type: ignore[no-untyped-def]
            raise BusError("connection refused")

        monkeypatch.setattr(rt.bus, "publish_event", down)
        event = rt.publish("order_placed", {}, id="while-down")  # stored: accepted
        assert rt.store.outbox_count() == 1
        assert rt.relay.report.send_failures == 1
        monkeypatch.setattr(rt.bus, "publish_event", real)
        assert rt.relay.tick() is True  # too young: left to its publisher for RELAY_GRACE_S
        assert rt.store.outbox_count() == 1
        assert rt.relay.tick(now=time.time() + 60) is True
        assert rt.store.outbox_count() == 0
        assert rt.relay.report.sent_from_outbox == 1
        summary = rt.run_until_idle(startup=False)
        assert summary.handled == 1
        assert effects(rt, event.id) == 1
        (stored,) = list(rt.store.replay(type="order_placed"))
        assert stored.id == "while-down"


def test_after_the_bus_lost_its_data_the_store_redelivers(store_url: str) -> None:
    bus = "memory://" + uuid.uuid4().hex[:10]
    with runtime(store_url, delivery="durable", bus=bus) as rt:
        rt.relay.tick()  # the bus epoch is remembered in the store
        for i in range(5):
            rt.publish("order_placed", {"i": i})
        rt.run_until_idle(startup=False)
        # five more are stored and on the bus, then the bus loses everything
        for i in range(5, 10):
            rt.publish("order_placed", {"i": i})
        rt.relay.flush()
        rt.client.flushall()
        assert rt.bus.stream_info(["order_placed"])["order_placed"].length == 0
    with runtime(store_url, delivery="durable", bus=bus) as rt:
        summary = rt.run_until_idle(startup=False)
        assert rt.relay.report.redelivered == {"orders": 5}
        assert rt.relay.report.recovery_s is not None
        assert summary.handled == 5
        ids = [e.id for e in rt.store.replay(type="order_placed")]
        assert len(ids) == 10
        assert all(effects(rt, i) == 1 and done_events(rt, i) == 1 for i in ids)
        assert all(rt.store.tracked("orders", i) == HANDLED for i in ids)


def test_a_bus_server_restart_that_kept_the_epoch_redelivers_to_durable_services(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis back from an RDB snapshot: the epoch key survived, the tail of the streams did not
    from tusk_events.runtime import relay as relay_module

    server = {"id": "run-1"}
    monkeypatch.setattr(relay_module, "_server_id", lambda client, key="": server["id"])
    with runtime(store_url, delivery="durable") as rt:
        rt.relay.tick()  # remembers the epoch and the server
        rt.publish("order_placed", {"i": 0})
        rt.run_until_idle(startup=False)
        on_bus = rt.publish("order_placed", {"i": 1})  # survives the restart
        lost = new_event("order_placed", {"i": 2})
        rt.store.append(lost)  # was on the bus, lost with the tail
        rt.relay.flush()
        assert rt.relay.tick() is True
        assert rt.relay.report.redelivery_passes == 0  # same server: nothing to do
        server["id"] = "run-2"
        assert rt.relay.tick() is True
        assert rt.relay.report.redelivered == {"orders": 2}
        summary = rt.run_until_idle(startup=False)
        assert summary.handled == 3
        for event_id in (on_bus.id, lost.id):  # the surviving copy arrived twice, ran once
            assert rt.client.get(f"runs:{event_id}") == b"1"
            assert effects(rt, event_id) == 1 and done_events(rt, event_id) == 1
        assert rt.relay.tick() is True
        assert rt.relay.report.redelivery_passes == 1  # the new server is remembered


def test_a_bus_server_restart_leaves_sync_services_alone(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tusk_events.runtime import relay as relay_module

    server = {"id": "run-1"}
    monkeypatch.setattr(relay_module, "_server_id", lambda client, key="": server["id"])
    with runtime(store_url, delivery="sync") as rt:
        rt.relay.tick()
        rt.store.append(new_event("order_placed", {}))  # never depended on the bus
        server["id"] = "run-2"
        rt.relay.tick()
        assert rt.relay.report.redelivery_passes == 1
        assert rt.relay.report.redelivered == {}


def test_the_bus_server_id_is_the_redis_run_id() -> None:
    from tusk_events.runtime.relay import _server_id

    class Client:
        def __init__(self, info: object) -> None:
            self._info = info

        def info(self, section: str) -> object:
            if isinstance(self._info, Exception):
                raise self._info
            return self._info

    assert _server_id(Client({"run_id": "abc", "redis_version": "7.2"})) == "abc"
    cluster = {"10.0.0.2:6379": {"run_id": "b"}, "10.0.0.1:6379": {"run_id": "a"}}
    assert _server_id(Client(cluster)) == "a,b"  # a failover changes one of them
    assert _server_id(Client(ValueError("unknown command 'info'"))) == ""  # embedded bus
    assert _server_id(Client("not a mapping")) == ""


def test_a_subscriber_to_every_type_is_redelivered_every_type(store_url: str) -> None:
    from tusk_events.runtime.relay import Target

    with runtime(store_url, delivery="durable") as rt:
        stored = [new_event("order_placed", {}), new_event("refund", {}), new_event("order_done", {})]
        rt.store.append_many(stored)
        rt.relay.targets = [Target("orders", ["order_placed"], sync=False), Target("audit", None, sync=False)]
        assert rt.relay.redeliver() == {"orders": 1, "audit": 3}
        for event in stored:
            assert rt.bus.stream_info([event.type])[event.type].length == 1  # sent once for both


def test_a_first_sight_of_the_bus_does_not_redeliver_history(store_url: str) -> None:
    # events stored before tracking existed (or before this bus) are not handled again
    with runtime(store_url, delivery="durable") as rt:
        rt.store.append(new_event("order_placed", {}))
        assert rt.relay.tick() is True
        assert rt.relay.report.redelivery_passes == 0


def test_sync_services_are_redelivered_by_handling_them(store_url: str) -> None:
    with runtime(store_url, delivery="sync") as rt:
        event = new_event("order_placed", {})
        rt.store.append(event)  # stored, then the process died before handling it
        assert rt.relay.redeliver() == {"orders": 1}
        assert effects(rt, event.id) == 1
        assert rt.relay.redeliver() == {}


def test_only_one_relay_works_at_a_time(store_url: str) -> None:
    with runtime(store_url, delivery="durable") as a, runtime(store_url, delivery="durable") as b:
        b.bus = a.bus  # same bus for both relays
        b.relay.bus = a.bus
        for i in range(20):
            a.store.append_outbox(new_event("order_placed", {"i": i}))
        later = time.time() + 60
        results: list[bool] = []
        threads = [threading.Thread(target=lambda r=r: results.append(r.relay.tick(now=later)))
                   for r in (a, b, a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert a.store.outbox_count() == 0
        assert a.bus.stream_info(["order_placed"])["order_placed"].length == 20  # no double send
        assert results.count(True) >= 1
        # the lease holder is one of them; the other takes over once it expires
        holder, other = (a, b) if a.relay.report.sent_from_outbox else (b, a)
        assert other.relay.tick(now=later) is False
        assert other.relay.tick(now=later + 3600) is True


PURE = """
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///unused.db")

[counter]
subscribe: ["tick"]
handle_fujsen = '''
def handle(event):
    redis.from_url(event_bus).incr("pure:" + event["id"])
'''
"""


def test_rows_of_handlers_without_store_effects_are_written_in_batches_by_one_thread(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tusk_events.defaults import TRACKING_BATCH

    env = {"EVENT_BUS": "memory://" + uuid.uuid4().hex[:10], "EVENT_STORE": store_url}
    with Runtime([TSK.from_string(PURE, env=env, path="pure.tsk")]) as rt:
        writers: list[threading.Thread] = []  # kept alive: their identity is what is compared
        track_many = rt.store.track_many

        def recording(rows: object, outcome: str) -> None:
            writers.append(threading.current_thread())
            track_many(rows, outcome)  # type: ignore[arg-type]

        monkeypatch.setattr(rt.store, "track_many", recording)
        svc = rt.services[0]
        events = [new_event("tick", {}) for _ in range(3 * TRACKING_BATCH)]
        for event in events:
            assert rt.process(svc, event) == "handled"
        end = time.monotonic() + 30  # written in the background, without a stop or a relay pass
        while time.monotonic() < end and not all(rt.store.tracked("counter", e.id) == HANDLED for e in events):
            time.sleep(0.05)
        assert all(rt.store.tracked("counter", e.id) == HANDLED for e in events)
        assert len(writers) >= 2 and all(w is writers[0] for w in writers)  # batches, one thread (not one each)
        assert writers[0] is not threading.current_thread()  # off the handling thread
        rt.client.delete(*[f"tusk:dedup:counter:{e.id}" for e in events])  # the bus forgot them
        assert rt.process(svc, events[0]) == "duplicate"  # the store's row still stops a re-run
        assert rt.client.get(f"pure:{events[0].id}") == b"1"


def test_tracking_off_gives_todays_path(store_url: str) -> None:
    with runtime(store_url, tracking=False) as rt:
        event = new_event("order_placed", {})
        rt.process(rt.services[0], event)
        assert rt.store.tracked("orders", event.id) is None
        assert rt.store.outbox_count() == 0


def test_redeliver_since_setting() -> None:
    assert redeliver_since(None) == 24 * 3600
    assert redeliver_since(90) == 90.0
    assert redeliver_since("15m") == 900.0
    assert redeliver_since("7d") == 7 * 86400.0
    for bad in ("soon", -1, True, "-5m"):
        with pytest.raises(ConfigError, match="redeliver_since"):
            redeliver_since(bad)
