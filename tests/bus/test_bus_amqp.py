"""RabbitMQ only: a worker killed with SIGKILL, connections closed by the server, foreign messages, held queues."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_support import IN_CI, amqp_namespace_url
from bus_support import subprocess_env, wait_until

from tusk_events.bus import Delivery, connect
from tusk_events.errors import BusError
from tusk_events.events import Event

pytestmark = [pytest.mark.amqp, pytest.mark.timeout(90)]

DOOMED_CONSUMER = """
import sys, time
from tusk_events.bus import connect
bus = connect(sys.argv[1])
out = open(sys.argv[2], "a", buffering=1)
def handle(event):
    out.write(event.id + "\\n")
    time.sleep(0.005)
bus.subscribe(handle, ["job"], group="workers", consumer="doomed", batch=20, visibility_timeout_ms=300).run()
"""


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """A namespace of its own on the shared RabbitMQ (see conftest's ``url``), removed afterwards."""
    yield from amqp_namespace_url()


def _connections(namespace: str) -> list[str]:
    out = subprocess.run(
        ["rabbitmqctl", "list_connections", "pid", "client_properties", "-q", "--no-table-headers"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    names = []
    for line in out.splitlines():
        name, _, props = line.partition("\t")
        if f'{{"connection_name","tusk_events {namespace}"}}' in props:
            names.append(name)
    return names


def _close_connections(namespace: str) -> int:
    """Close, from the server side, the bus connections of ``namespace`` (``rabbitmqctl close_connection``);
    returns how many went."""
    if shutil.which("rabbitmqctl") is None:
        if IN_CI:
            pytest.fail("rabbitmqctl is not on PATH; under CI=true integration tests must run")
        pytest.skip("rabbitmqctl is not on PATH")
    names = _connections(namespace)
    for name in names:
        subprocess.run(["rabbitmqctl", "close_connection", name, "closed by a test"],
                       capture_output=True, timeout=30, check=False)
    left = set(_connections(namespace))
    return sum(1 for n in names if n not in left)


def _namespace(url: str) -> str:
    return url.rsplit("namespace=", 1)[-1]


@pytest.mark.slow
def test_consumer_killed_mid_stream_loses_nothing(amqp_url: str, tmp_path: Path) -> None:
    handled_file = tmp_path / "handled.txt"
    handled_file.touch()
    with connect(amqp_url) as bus:
        survivor_sub_declared = bus.subscribe(lambda e: None, ["job"], group="workers")  # the group's queue
        del survivor_sub_declared
        sent = [e.id for e in bus.publish_many(("job", i) for i in range(200))]
        proc = subprocess.Popen([sys.executable, "-c", DOOMED_CONSUMER, amqp_url, str(handled_file)],
                                env=subprocess_env())
        try:
            wait_until(lambda: len(handled_file.read_text().split()) >= 30, timeout=30, what="the consumer to start")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
        by_doomed = handled_file.read_text().split()
        # RabbitMQ requeues what the dead connection held: the group still has it
        wait_until(lambda: bus.stream_info(["job"])["job"].groups["workers"].consumers == 0, timeout=10)
        assert bus.stream_info(["job"])["job"].groups["workers"].pending > 0

        survivor: list[tuple[str, int]] = []
        sub = bus.subscribe(
            lambda e, d: survivor.append((e.id, d.count)), ["job"], group="workers", consumer="survivor",
            visibility_timeout_ms=300,
        )
        sub.run_until_idle(timeout=60)
        ids = [i for i, _ in survivor]
        assert set(by_doomed) | set(ids) == set(sent)
        assert len(ids) == len(set(ids))
        assert any(count >= 2 for _, count in survivor), "the dead worker's deliveries come back as redeliveries"
        assert bus.stream_info(["job"])["job"].groups["workers"].pending == 0


def test_subscribers_survive_a_closed_connection(amqp_url: str) -> None:
    with connect(amqp_url, retries=30, retry_backoff_s=0.05, retry_backoff_max_s=0.3) as bus:
        durable: list[int] = []
        heard: list[object] = []
        with bus.subscribe(lambda e: durable.append(e.payload), ["a"], group="g", block_ms=100), bus.subscribe(
            lambda e: heard.append(e.payload), mode="broadcast"
        ):
            bus.publish_many(("a", i) for i in range(10))
            wait_until(lambda: durable == list(range(10)) and len(heard) == 10, timeout=20)

            assert _close_connections(_namespace(amqp_url)) >= 1

            bus.publish_many(("a", i) for i in range(10, 20))  # reconnects to publish
            wait_until(lambda: sorted(set(durable)) == list(range(20)), timeout=30,
                       what="events published after the connection was closed")

            def heard_again() -> bool:
                bus.publish("b", "ping")
                time.sleep(0.1)
                return "ping" in heard

            wait_until(heard_again, timeout=20, what="the broadcast listener to listen again")
        assert durable[:10] == list(range(10))


def test_foreign_message_is_reported_and_acknowledged(amqp_url: str) -> None:
    import aio_pika

    from tusk_events.bus.amqp import parse_url

    with connect(amqp_url) as bus:
        errors: list[tuple[BaseException, Event | None, Delivery]] = []
        got: list[str] = []
        sub = bus.subscribe(lambda e: got.append(e.id), ["a"], group="g", on_error=lambda *a: errors.append(a))
        queue = bus.group_queue("g", "a")  # type: ignore[attr-defined]

        async def foreign() -> None:
            conn = await aio_pika.connect(parse_url(amqp_url)[0])
            ch = await conn.channel()
            await ch.default_exchange.publish(aio_pika.Message(b"\xff not an envelope"), routing_key=queue)
            await conn.close()

        asyncio.run(foreign())
        good = bus.publish("a", 1)
        assert sub.run_until_idle(timeout=20) == 1
        assert got == [good.id]
        assert len(errors) == 1 and errors[0][1] is None and errors[0][2].count == 1
        assert bus.stream_info(["a"])["a"].groups["g"].pending == 0


def test_events_before_any_group_wait_in_the_held_queue(amqp_url: str) -> None:
    with connect(amqp_url, maxlen=5) as bus:
        sent = bus.publish_many(("a", i) for i in range(8))
        assert bus.stream_info(["a"])["a"].length == 5  # at most maxlen held, oldest dropped
        got: list[Any] = []
        assert bus.subscribe(lambda e: got.append(e.payload), ["a"], group="first").run_until_idle(timeout=20) == 5
        assert got == [e.payload for e in sent[3:]]
        assert bus.stream_info(["a"])["a"].length == 0
        # a queue is not a log: a group created now sees only what is published from now on
        later: list[Any] = []
        sub = bus.subscribe(lambda e: later.append(e.payload), ["a"], group="second")
        bus.publish("a", "new")
        assert sub.run_until_idle(timeout=20) == 1 and later == ["new"]


@pytest.mark.parametrize("bad, match", [("amqp:///", "no host"), ("amqp://h:notaport/", "AMQP URL|port")])
def test_bad_urls_are_one_line_errors(bad: str, match: str) -> None:
    with pytest.raises(BusError, match=match):
        connect(bad).ping()


def test_unreachable_server_is_a_bus_error() -> None:
    with connect("amqp://guest:guest@127.0.0.1:7462/?namespace=nobody", retries=1, retry_backoff_s=0.01) as bus:
        with pytest.raises(BusError, match="reachable"):
            bus.ping()
