"""Kafka only (a private tansu broker): what the contract suite cannot wait for, and what Kafka does its own way.

A consumer group join takes half the session timeout on tansu (1 s with the tests' 2 s
sessions), so these tests wait up to 30 s where the contract suite waits 5.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_support import kafka_prefix_url
from bus_support import subprocess_env, wait_until

from tusk_events.bus import Delivery, connect
from tusk_events.errors import BusError
from tusk_events.events import Event

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]

JOIN_S = 30.0


class Die(BaseException):
    """A worker dying mid-batch (not an Exception: nothing catches it)."""


@pytest.fixture
def kafka_url(kafka_broker: str) -> Iterator[str]:
    yield from kafka_prefix_url(kafka_broker)


def pending(bus: Any, type: str, group: str) -> int:
    return int(bus.stream_info([type])[type].groups[group].pending)


def test_topic_names_escape_reversibly() -> None:
    from tusk_events.bus.kafka import topic_token, untoken

    for t in ("user.created", "a b/c", "ünïcode-x", "x-2d-y", "*>%"):
        token = topic_token(t)
        assert re.fullmatch(r"[A-Za-z0-9._-]+", token), token
        assert untoken(token) == t


@pytest.mark.parametrize(
    ("bad", "match"),
    [("kafka:///x", "no host"), ("kafka://h:9092/a b", "topic prefix"), ("kafka://h:9092/?partitions=x", "partitions"),
     ("kafka://h:9092/?session_timeout_ms=5", "session_timeout_ms must be at least 1000"),
     ("kafka://h:9092/?session_timeout_ms=x", "session_timeout_ms must be a number")],
)
def test_bad_urls_are_one_line_errors(bad: str, match: str) -> None:
    with pytest.raises(BusError, match=match):
        connect(bad)


def test_durable_commits_only_after_the_handler(kafka_url: str) -> None:
    with connect(kafka_url) as bus:
        seen: list[tuple[int, Delivery]] = []
        sub = bus.subscribe(lambda e, d: seen.append((pending(bus, "a", "g"), d)), ["a"], group="g", consumer="c1")
        sent = bus.publish_many(("a", i) for i in range(5))
        assert sub.run_until_idle(timeout=JOIN_S) == 5
        assert [p for p, _ in seen][0] == 5  # nothing committed while the first handler ran
        d = seen[0][1]
        assert (d.count, d.mode, d.type, d.group, d.consumer) == (1, "durable", "a", "g", "c1")
        assert d.message_id and re.fullmatch(r"\d+-\d+", d.message_id)
        assert pending(bus, "a", "g") == 0
        info = bus.stream_info(["a"])["a"]
        assert info.length == 5 and info.last_id
        assert sum(bus.partition_lag("g", ["a"]).values()) == 0  # type: ignore[attr-defined]
        assert len(sent) == 5


def test_failed_record_comes_back_after_the_visibility_timeout(kafka_url: str) -> None:
    with connect(kafka_url) as bus:
        calls: list[tuple[str, int]] = []

        def handler(event: Event, delivery: Delivery) -> None:
            calls.append((event.id, delivery.count))
            if delivery.count == 1:
                raise ValueError("first try fails")

        ev = bus.publish("a", 1)
        sub = bus.subscribe(handler, ["a"], group="g", visibility_timeout_ms=200, on_error=lambda *a: None)
        assert sub.run_until_idle(timeout=JOIN_S) == 1
        assert calls == [(ev.id, 1), (ev.id, 2)]
        assert pending(bus, "a", "g") == 0 and sub.failed == 1


def test_a_dead_members_records_go_to_the_next_counted_as_redeliveries(kafka_url: str) -> None:
    with connect(kafka_url) as bus:
        sent = bus.publish_many(("a", i) for i in range(10))
        handled: list[str] = []

        def dies_on_third(event: Event) -> None:
            if len(handled) == 2:
                raise Die()
            handled.append(event.id)

        dead = bus.subscribe(dies_on_third, ["a"], group="g", consumer="dead", batch=10)
        with pytest.raises(Die):
            dead.run()
        assert pending(bus, "a", "g") == 8  # committed exactly what was handled
        claimed: list[tuple[str, int]] = []
        alive = bus.subscribe(lambda e, d: claimed.append((e.id, d.count)), ["a"], group="g", consumer="alive")
        assert alive.run_until_idle(timeout=JOIN_S) == 8
        assert handled + [i for i, _ in claimed] == [e.id for e in sent]
        assert [c for _, c in claimed] == [2] * 8
        assert pending(bus, "a", "g") == 0


def test_two_members_of_a_group_share_its_partitions_without_duplicates(kafka_url: str) -> None:
    with connect(kafka_url + "&key=id&partitions=4") as bus:
        got: dict[str, list[str]] = {"c1": [], "c2": []}
        lock = threading.Lock()

        def make(name: str) -> Any:
            def handler(event: Event) -> None:
                with lock:
                    got[name].append(event.id)
                time.sleep(0.002)

            return handler

        bus.publish("a", -1)  # the topic exists before the members subscribe
        subs = [bus.subscribe(make(c), ["a"], group="w", consumer=c, batch=5).start(timeout=JOIN_S) for c in got]
        sent = bus.publish_many(("a", i) for i in range(200))
        wait_until(lambda: len(got["c1"]) + len(got["c2"]) >= 201, timeout=JOIN_S * 2)
        time.sleep(0.5)
        for sub in subs:
            sub.stop()
        ids = got["c1"] + got["c2"]
        assert len(ids) == len(set(ids)) == 201
        assert {e.id for e in sent} <= set(ids)
        assert got["c1"] and got["c2"], "both members should own partitions"
        assert pending(bus, "a", "w") == 0


def test_a_foreign_record_is_reported_and_the_consumer_goes_on(kafka_url: str, kafka_broker: str) -> None:
    from confluent_kafka import Producer

    with connect(kafka_url) as bus:
        bus.publish("a", 0)
        p = Producer({"bootstrap.servers": kafka_broker})
        p.produce(bus.topic("a"), b"\xff not an envelope", key=b"a")  # the bus keys by type: one partition  # type: ignore[attr-defined]
        p.produce(bus.topic("a"), None, key=b"a")  # a tombstone: no value at all  # type: ignore[attr-defined]
        assert p.flush(10) == 0
        good = bus.publish("a", 1)
        errors: list[tuple[BaseException, Event | None, Delivery]] = []
        poisoned: list[bytes] = []
        got: list[str] = []
        sub = bus.subscribe(lambda e: got.append(e.id), ["a"], group="g", on_error=lambda *a: errors.append(a),
                            on_poison=lambda raw, reason, d: poisoned.append(raw))
        assert sub.run_until_idle(timeout=JOIN_S) == 2
        assert got[-1] == good.id
        assert poisoned == [b"\xff not an envelope", b""]
        assert pending(bus, "a", "g") == 0


def test_broadcast_reaches_every_listener_from_the_time_it_started(kafka_url: str) -> None:
    with connect(kafka_url) as bus:
        bus.publish("a", "before")
        heard: dict[int, list[Any]] = {0: [], 1: []}
        subs = [bus.subscribe(lambda e, i=i: heard[i].append(e.payload), mode="broadcast").start() for i in heard]
        bus.publish_many(("a", i) for i in range(3))
        wait_until(lambda: all(len(v) == 3 for v in heard.values()), timeout=10)
        for s in subs:
            s.stop()
        assert heard == {0: [0, 1, 2], 1: [0, 1, 2]}


def test_publishing_to_an_unreachable_broker_is_a_bus_error() -> None:
    with connect("kafka://127.0.0.1:1/x", retries=0) as bus, pytest.raises(BusError, match="kafka://127.0.0.1:1"):
        bus.publish("a", 1)


DOOMED_MEMBER = """
import sys, time
from tusk_events.bus import connect
bus = connect(sys.argv[1])
out = open(sys.argv[2], "a", buffering=1)
def handle(event):
    out.write(event.id + "\\n")
    time.sleep(0.01)
bus.subscribe(handle, ["job"], group=sys.argv[3], consumer="doomed", batch=20).run()
"""


@pytest.mark.slow
def test_a_member_killed_mid_batch_loses_nothing(kafka_url: str, tmp_path: Path) -> None:
    """SIGKILL: no leave, no commit; after its session times out the group hands its partitions on."""
    import os

    redis_url = os.environ.get("TUSK_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
    url = f"{kafka_url}&key=id&state={redis_url}"  # delivery marks shared between the two processes
    group = f"workers{uuid.uuid4().hex[:8]}"
    handled_file = tmp_path / "handled.txt"
    handled_file.touch()
    with connect(url) as bus:
        sent = [e.id for e in bus.publish_many(("job", i) for i in range(300))]
        proc = subprocess.Popen([sys.executable, "-c", DOOMED_MEMBER, url, str(handled_file), group],
                                env=subprocess_env())
        try:
            wait_until(lambda: len(handled_file.read_text().split()) >= 30, timeout=JOIN_S, what="the member to start")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
        by_doomed = set(handled_file.read_text().split())
        assert pending(bus, "job", group) > 300 - len(by_doomed) - 1  # its last batch was not committed

        survivor: list[tuple[str, int]] = []
        sub = bus.subscribe(lambda e, d: survivor.append((e.id, d.count)), ["job"], group=group, consumer="survivor")
        sub.run_until_idle(timeout=JOIN_S * 2)
        ids = [i for i, _ in survivor]
        assert by_doomed | set(ids) == set(sent)
        assert len(ids) == len(set(ids))
        again = by_doomed & set(ids)  # handled, not committed: at least once
        assert again and all(c == 2 for i, c in survivor if i in again)
        assert pending(bus, "job", group) == 0
