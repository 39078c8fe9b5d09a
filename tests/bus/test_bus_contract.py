"""The bus contract: every backend (embedded memory://, real Redis) passes the same tests."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import pytest
from bus_support import ROOT, wait_until

from tusk_events.bus import Bus, Delivery, connect, redis_client
from tusk_events.errors import BusError
from tusk_events.events import Event, new_event

pytestmark = pytest.mark.timeout(30)


class Die(BaseException):
    """Ends a consumer abruptly, as a crash would: nothing after it is acknowledged."""


def pending(bus: Bus, type: str, group: str) -> int:
    info = bus.stream_info([type])[type]
    return info.groups[group].pending if group in info.groups else 0


# --- broadcast -----------------------------------------------------------------------


def test_broadcast_every_subscriber_gets_every_event(bus: Bus) -> None:
    got: list[list[Event]] = [[], []]
    subs = [bus.subscribe(got[i].append, mode="broadcast").start() for i in range(2)]
    sent = [bus.publish("a" if i % 2 else "b", {"i": i}) for i in range(20)]
    wait_until(lambda: all(len(g) == 20 for g in got), what="both subscribers to get 20 events")
    for sub in subs:
        assert sub.stop()
    for g in got:
        assert [e.id for e in g] == [e.id for e in sent]


def test_broadcast_type_filter(bus: Bus) -> None:
    got: list[Event] = []
    with bus.subscribe(got.append, ["a"], mode="broadcast"):
        bus.publish("a", 1)
        bus.publish("b", 2)
        bus.publish("a", 3)
        wait_until(lambda: len(got) == 2)
        time.sleep(0.02)
    assert [e.payload for e in got] == [1, 3]


def test_broadcast_handler_error_goes_to_on_error(bus: Bus) -> None:
    errors: list[tuple[BaseException, Event | None, Delivery]] = []
    got: list[int] = []

    def handler(event: Event) -> None:
        if event.payload == 1:
            raise RuntimeError("boom")
        got.append(event.payload)

    with bus.subscribe(handler, mode="broadcast", on_error=lambda *a: errors.append(a)) as sub:
        bus.publish("a", 1)
        bus.publish("a", 2)
        wait_until(lambda: got == [2])
    assert len(errors) == 1 and str(errors[0][0]) == "boom"
    assert errors[0][1] is not None and errors[0][1].payload == 1
    assert errors[0][2].mode == "broadcast" and sub.failed == 1


def test_broadcast_run_until_idle_returns_when_quiet(bus: Bus) -> None:
    got: list[Event] = []
    sub = bus.subscribe(got.append, mode="broadcast", block_ms=100)

    def publisher() -> None:
        sub.wait_ready(5)
        for i in range(5):
            bus.publish("a", i)

    t = threading.Thread(target=publisher)
    t.start()
    t0 = time.monotonic()
    assert sub.run_until_idle(timeout=5) == 5
    t.join()
    assert time.monotonic() - t0 < 2


# --- durable -------------------------------------------------------------------------


def test_durable_two_groups_each_get_every_event(bus: Bus) -> None:
    got: dict[str, list[str]] = {"billing": [], "mailer": []}
    subs = [bus.subscribe(lambda e, g=g: got[g].append(e.id), ["a", "b"], group=g).start() for g in got]
    sent = bus.publish_many(("a" if i % 3 else "b", i) for i in range(50))
    wait_until(lambda: all(len(v) == 50 for v in got.values()))
    for sub in subs:
        sub.stop()
    for ids in got.values():
        assert sorted(ids) == sorted(e.id for e in sent)


def test_durable_consumers_of_one_group_share_without_duplicates(bus: Bus) -> None:
    got: dict[str, list[str]] = {"c1": [], "c2": []}

    def make(name: str) -> Any:
        def handler(event: Event) -> None:
            got[name].append(event.id)
            time.sleep(0.001)

        return handler

    subs = [bus.subscribe(make(c), ["a"], group="workers", consumer=c, batch=5).start() for c in got]
    sent = bus.publish_many(("a", i) for i in range(200))
    wait_until(lambda: len(got["c1"]) + len(got["c2"]) >= 200, timeout=10)
    for sub in subs:
        sub.stop()
    all_ids = got["c1"] + got["c2"]
    assert len(all_ids) == len(set(all_ids)) == 200
    assert set(all_ids) == {e.id for e in sent}
    assert got["c1"] and got["c2"], "both consumers should have had a share"
    assert pending(bus, "a", "workers") == 0


def test_ack_only_after_handler_returns(bus: Bus) -> None:
    seen_pending: list[int] = []
    sub = bus.subscribe(lambda e: seen_pending.append(pending(bus, "a", "g")), ["a"], group="g")
    bus.publish("a", 1)
    assert sub.run_until_idle(timeout=5) == 1
    assert seen_pending == [1]  # in flight while the handler ran
    assert pending(bus, "a", "g") == 0  # acknowledged once it returned


def test_failed_handler_is_redelivered_after_visibility_timeout(bus: Bus) -> None:
    calls: list[tuple[str, int]] = []
    errors: list[tuple[BaseException, Event | None, Delivery]] = []

    def handler(event: Event, delivery: Delivery) -> None:
        calls.append((event.id, delivery.count))
        if delivery.count == 1:
            raise ValueError("first try fails")

    sub = bus.subscribe(
        handler, ["a"], group="g", visibility_timeout_ms=150, on_error=lambda *a: errors.append(a)
    )
    ev = bus.publish("a", {"x": 1})
    t0 = time.monotonic()
    assert sub.run_until_idle(timeout=5) == 1
    assert time.monotonic() - t0 >= 0.15
    assert calls == [(ev.id, 1), (ev.id, 2)]
    assert len(errors) == 1 and isinstance(errors[0][0], ValueError)
    assert errors[0][1] is not None and errors[0][1].id == ev.id
    assert errors[0][2].count == 1 and errors[0][2].message_id is not None
    assert pending(bus, "a", "g") == 0
    assert sub.handled == 1 and sub.failed == 1


def test_failed_message_stays_pending_until_claimed(bus: Bus) -> None:
    def handler(event: Event) -> None:
        raise RuntimeError("not now")

    sub = bus.subscribe(handler, ["a"], group="g", visibility_timeout_ms=60_000).start()
    bus.publish("a", 1)
    wait_until(lambda: sub.failed == 1)
    sub.stop()
    # a broker takes back what a closed channel held on its own time (RabbitMQ's queue process
    # requeues after the close is acknowledged): it is pending once it is back, and stays so
    wait_until(lambda: pending(bus, "a", "g") == 1, what="the failed message to be pending")
    time.sleep(0.2)
    assert pending(bus, "a", "g") == 1


def test_dead_consumer_messages_are_claimed(bus: Bus) -> None:
    handled_by_dead: list[str] = []

    def dies_on_third(event: Event) -> None:
        if len(handled_by_dead) == 2:
            raise Die()
        handled_by_dead.append(event.id)

    sent = bus.publish_many(("a", i) for i in range(10))
    dead = bus.subscribe(dies_on_third, ["a"], group="g", consumer="dead", batch=10, visibility_timeout_ms=100)
    with pytest.raises(Die):
        dead.run()
    assert pending(bus, "a", "g") == 8  # delivered to the dead consumer, never acknowledged

    claimed: list[tuple[str, int]] = []
    alive = bus.subscribe(
        lambda e, d: claimed.append((e.id, d.count)), ["a"], group="g", consumer="alive", visibility_timeout_ms=100
    )
    assert alive.run_until_idle(timeout=5) == 8
    assert handled_by_dead + [i for i, _ in claimed] == [e.id for e in sent]
    assert all(count == 2 for _, count in claimed)
    assert pending(bus, "a", "g") == 0


def test_maxlen_trims_streams(url: str) -> None:
    with connect(url, maxlen=20, approximate=False) as exact:
        exact.publish_many(("a", i) for i in range(100))
        assert exact.stream_info(["a"])["a"].length == 20
    with connect(url, maxlen=20) as approx:
        approx.publish_many(("b", i) for i in range(1000))
        assert 20 <= approx.stream_info(["b"])["b"].length <= 20 + 100  # whole nodes of 100 go


def test_publish_many_mixes_events_and_tuples_in_order(bus: Bus) -> None:
    own = new_event("a", {"own": True})
    sent = bus.publish_many([("a", 0), own, ("b", 1, {"tenant": "t1"})] + [("a", i) for i in range(2500)])
    assert sent[1] is own and sent[2].metadata["tenant"] == "t1"
    got: list[Event] = []
    sub = bus.subscribe(got.append, ["a", "b"], group="g", batch=500)
    assert sub.run_until_idle(timeout=10) == len(sent)
    by_type_sent = [e.id for e in sent if e.type == "a"]
    assert [e.id for e in got if e.type == "a"] == by_type_sent


def test_event_published_in_a_handler_is_caused_by_it(bus: Bus) -> None:
    def on_a(event: Event) -> None:
        bus.publish("b", {"from": event.id})

    first = bus.publish("a", 1)
    assert bus.subscribe(on_a, ["a"], group="g").run_until_idle(timeout=5) == 1
    got: list[Event] = []
    assert bus.subscribe(got.append, ["b"], group="g").run_until_idle(timeout=5) == 1
    (second,) = got
    assert second.causation_id == first.id
    assert second.trace_id == first.trace_id
    assert second.correlation_id == first.correlation_id


def test_envelope_round_trips_through_json(bus: Bus) -> None:
    sent = new_event("order.placed", {"items": [1, 2.5, None], "note": "ünïcödé ✓", "nested": {"a": [True]}},
                     {"tenant": "t1"})
    bus.publish_event(sent)
    got: list[Event] = []
    assert bus.subscribe(got.append, ["order.placed"], group="g").run_until_idle(timeout=5) == 1
    assert got[0] == sent
    assert Event.from_json(sent.to_json()) == sent


def test_docs_envelope_without_id_is_accepted(bus: Bus, url: str) -> None:
    r = redis_client(url)
    doc = {"type": "legacy", "payload": {"k": 1}, "metadata": {}, "timestamp": time.time()}
    got: list[Event] = []
    with bus.subscribe(got.append, mode="broadcast"):
        r.publish(bus.channel, json.dumps(doc))
        wait_until(lambda: len(got) == 1)
    assert got[0].type == "legacy" and got[0].payload == {"k": 1} and got[0].id
    # the same envelope written straight to the stream: its entry id stands in for the event id
    entry_id = r.xadd(bus.key("legacy"), {"event": json.dumps(doc)})
    durable: list[Event] = []
    assert bus.subscribe(durable.append, ["legacy"], group="g").run_until_idle(timeout=5) == 1
    assert durable[0].id == entry_id.decode() and durable[0].payload == {"k": 1}


def _docs_fujsen(name: str) -> str:
    text = (ROOT / "configs" / "event_system.tsk").read_text()
    match = re.search(rf"{name}_fujsen = '''\n(.*?)'''", text, re.DOTALL)
    assert match, f"{name}_fujsen not found in the docs' config"
    return match.group(1)


class _RedisModule:
    """What the fujsen see as ``redis``: ``from_url`` gives the shared per-URL client."""

    from_url = staticmethod(redis_client)


def _listeners(client: Any, channel: str) -> int:
    """Subscribers of ``channel``: on a Redis Cluster NUMSUB is per node, so summed over the nodes."""
    if hasattr(client, "get_nodes"):
        return sum(int(n.redis_connection.pubsub_numsub(channel)[0][1]) for n in client.get_nodes())
    return int(client.pubsub_numsub(channel)[0][1])


def test_docs_fujsen_interoperate_with_the_bus(bus: Bus, url: str) -> None:
    scope: dict[str, Any] = {"redis": _RedisModule, "json": json, "time": time, "event_bus": url,
                             "event_channel": bus.channel}
    exec(_docs_fujsen("publish_event"), scope)  # noqa: S102 - the docs' own code
    exec(_docs_fujsen("subscribe_events"), scope)  # noqa: S102

    # the docs' publisher -> the bus's broadcast subscriber
    got: list[Event] = []
    with bus.subscribe(got.append, ["user_registered"], mode="broadcast"):
        scope["publish_event"]("user_registered", {"user": "ada"})
        wait_until(lambda: len(got) == 1)
    assert got[0].payload == {"user": "ada"}

    # the bus's publisher -> the docs' subscriber (which loops forever: stop it by raising)
    class Enough(Exception):
        pass

    received: list[dict[str, Any]] = []

    def handler(event: dict[str, Any]) -> None:
        received.append(event)
        raise Enough

    def listen() -> None:
        try:
            scope["subscribe_events"](handler, ["user_registered"])
        except Enough:
            pass

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    wait_until(lambda: _listeners(redis_client(url), bus.channel) >= 1)
    bus.publish("ignored", 0)
    sent = bus.publish("user_registered", {"user": "grace"})
    t.join(5)
    assert [e["id"] for e in received] == [sent.id]
    assert received[0]["payload"] == {"user": "grace"}


def test_run_until_idle_returns_when_drained(bus: Bus) -> None:
    bus.publish_many(("a", i) for i in range(30))
    sub = bus.subscribe(lambda e: None, ["a", "b"], group="g", batch=7)
    assert sub.run_until_idle(timeout=5) == 30
    assert sub.idle
    t0 = time.monotonic()
    assert sub.run_until_idle(timeout=5) == 0
    assert time.monotonic() - t0 < 0.5 and sub.idle


def test_run_until_idle_gives_up_at_its_timeout(bus: Bus, caplog: pytest.LogCaptureFixture) -> None:
    def handler(event: Event) -> None:
        raise RuntimeError("never succeeds")

    bus.publish("a", 1)
    sub = bus.subscribe(handler, ["a"], group="g", visibility_timeout_ms=50)
    t0 = time.monotonic()
    assert sub.run_until_idle(timeout=0.3) == 0
    assert 0.3 <= time.monotonic() - t0 < 2
    assert not sub.idle and sub.failed >= 2
    assert "1 entries still pending" in caplog.text


def test_stop_finishes_in_flight_handler_and_acks(bus: Bus) -> None:
    entered = threading.Event()
    done: list[str] = []

    def slow(event: Event) -> None:
        entered.set()
        time.sleep(0.2)
        done.append(event.id)

    sub = bus.subscribe(slow, ["a"], group="g").start()
    ev = bus.publish("a", 1)
    assert entered.wait(5)
    assert sub.stop()
    assert done == [ev.id]
    assert pending(bus, "a", "g") == 0
    assert not sub.running


def test_stop_interrupts_a_blocked_read_promptly(bus: Bus) -> None:
    sub = bus.subscribe(lambda e: None, ["a"], group="g", block_ms=10_000).start()
    time.sleep(0.05)
    t0 = time.monotonic()
    assert sub.stop()
    assert time.monotonic() - t0 < 1.0


def test_run_stops_on_stop_event(bus: Bus) -> None:
    stop = threading.Event()
    got: list[Event] = []

    def handler(event: Event) -> None:
        got.append(event)
        stop.set()

    bus.publish("a", 1)
    bus.subscribe(handler, ["a"], group="g", block_ms=50).run(stop_event=stop)
    assert len(got) == 1


def test_types_none_durable_follows_new_types(url: str) -> None:
    with connect(url, discover_interval_s=0.05) as b:
        b.publish("early", 0)
        got: list[str] = []
        with b.subscribe(lambda e: got.append(e.type), group="all", block_ms=50):
            b.publish("late1", 1)
            b.publish("late2", 2)
            b.publish("early", 3)
            wait_until(lambda: len(got) == 4)
        assert sorted(got) == ["early", "early", "late1", "late2"]


def test_start_latest_skips_history(bus: Bus) -> None:
    bus.publish("a", "old")
    got: list[Any] = []
    with bus.subscribe(lambda e: got.append(e.payload), ["a"], group="g", start="latest"):
        bus.publish("a", "new")
        wait_until(lambda: got)
        time.sleep(0.02)
    assert got == ["new"]


def test_delivery_details_are_passed_to_two_argument_handlers(bus: Bus) -> None:
    got: list[Delivery] = []
    bus.publish("a", 1)
    sub = bus.subscribe(lambda e, d: got.append(d), ["a"], group="g", consumer="c1")
    sub.run_until_idle(timeout=5)
    (d,) = got
    assert (d.count, d.mode, d.type, d.group, d.consumer) == (1, "durable", "a", "g", "c1")
    assert d.message_id and re.fullmatch(r"\d+(-\d+)?", d.message_id)  # Redis entry id / JetStream sequence


def test_undecodable_entry_is_reported_and_dropped(bus: Bus, url: str) -> None:
    redis_client(url).xadd(bus.key("a"), {"event": b"not json"})
    good = bus.publish("a", 1)
    errors: list[Any] = []
    got: list[Event] = []
    sub = bus.subscribe(got.append, ["a"], group="g", on_error=lambda *a: errors.append(a))
    assert sub.run_until_idle(timeout=5) == 1
    assert [e.id for e in got] == [good.id]
    assert len(errors) == 1 and errors[0][1] is None
    assert pending(bus, "a", "g") == 0


def test_group_is_recreated_when_its_stream_disappears(bus: Bus, url: str) -> None:
    got: list[Any] = []
    with bus.subscribe(lambda e: got.append(e.payload), ["a"], group="g", block_ms=50):
        bus.publish("a", 1)
        wait_until(lambda: got == [1])
        redis_client(url).delete("tusk:stream:a")  # data loss: stream and group are gone
        wait_until(lambda: "g" in bus.stream_info(["a"])["a"].groups, what="the group to be recreated")
        bus.publish("a", 2)
        wait_until(lambda: got == [1, 2])


def test_publish_to_durable_or_broadcast_only(url: str) -> None:
    for publish_to, in_stream, on_channel in (("durable", 1, 0), ("broadcast", 0, 1)):
        with connect(url, publish_to=publish_to, stream_prefix=f"{publish_to}:",
                     channel=f"tusk_events.{publish_to}.{time.monotonic_ns()}") as b:
            heard: list[Event] = []
            with b.subscribe(heard.append, mode="broadcast"):
                b.publish("a", 1)
                time.sleep(0.1)
            assert len(heard) == on_channel
            assert b.stream_info(["a"])["a"].length == in_stream


def test_stream_info_reports_length_pending_and_lag(bus: Bus) -> None:
    bus.publish_many(("a", i) for i in range(5))
    bus.publish("b", 0)
    bus.subscribe(lambda e: None, ["a"], group="done").run_until_idle(timeout=5)
    with pytest.raises(Die):
        bus.subscribe(lambda e: (_ for _ in ()).throw(Die()), ["a"], group="crashed", consumer="x").run()
    info = bus.stream_info()
    assert set(info) == {"a", "b"}
    a = info["a"]
    assert a.length == 5 and a.key in ("tusk:stream:a", "{tusk}:tusk:stream:a", f"{bus.url.rsplit('/', 1)[-1]}.ev.a") and a.last_id
    assert a.groups["done"].pending == 0 and a.groups["done"].lag == 0
    # the crash holds what it had read (Redis: one entry, as reads start at one before any
    # handler time is known; brokers: their fetch); the rest is lag, where the broker can tell
    crashed = a.groups["crashed"]
    assert crashed.consumers == 1 and crashed.pending >= 1
    assert crashed.lag is None or crashed.pending + crashed.lag == 5
    if bus.url.startswith(("redis", "memory")):
        assert (crashed.pending, crashed.lag) == (1, 4)
    assert info["b"].groups == {}
    assert bus.stream_info(["missing"])["missing"].length == 0


def test_ping(bus: Bus) -> None:
    assert 0 <= bus.ping() < 1


def test_closed_bus_refuses_to_publish(url: str) -> None:
    b = connect(url)
    b.close()
    with pytest.raises(BusError, match="closed"):
        b.publish("a", 1)


def test_unserialisable_payload_is_a_bus_error(bus: Bus) -> None:
    with pytest.raises(BusError, match="JSON"):
        bus.publish("a", {"when": object()})
