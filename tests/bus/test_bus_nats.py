"""NATS JetStream only: a worker killed with SIGKILL, a private server restarted, foreign messages, lost streams."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_support import IN_CI, NATS_URL, nats_stream_url
from bus_support import subprocess_env, wait_until

from tusk_events.bus import Delivery, connect
from tusk_events.errors import BusError
from tusk_events.events import Event

pytestmark = [pytest.mark.nats, pytest.mark.timeout(60)]

PRIVATE_PORT = int(os.environ.get("TUSK_TEST_NATS_PRIVATE_PORT", "7460"))
"""Where the restart tests start their own nats-server."""

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
def nats_url() -> Iterator[str]:
    """A stream of its own on the shared server (see conftest's ``url``), deleted afterwards."""
    yield from nats_stream_url()


class NatsServer:
    """A private ``nats-server -js`` with a file store: kill it and start it again, the store stays."""

    def __init__(self, store: Path, port: int) -> None:
        self.store = store
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}/RESTART"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        end = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > end or self.proc.poll() is not None:
                    raise RuntimeError(f"nats-server on port {self.port} did not start") from None
                time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    if shutil.which("nats-server") is None:
        if IN_CI:
            pytest.fail("nats-server is not on PATH; under CI=true integration tests must run")
        pytest.skip("nats-server is not on PATH")
    server = NatsServer(tmp_path / "js", PRIVATE_PORT)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _raw_publish(url: str, subject: str, data: bytes) -> None:
    """Publish bytes to a JetStream subject with nats-py itself, as a foreign producer would."""
    import nats

    async def go() -> None:
        nc = await nats.connect(url.rsplit("/", 1)[0])
        await nc.jetstream().publish(subject, data)
        await nc.close()

    asyncio.run(go())


@pytest.mark.slow
def test_consumer_killed_mid_stream_loses_nothing(nats_url: str, tmp_path: Path) -> None:
    handled_file = tmp_path / "handled.txt"
    handled_file.touch()
    with connect(nats_url) as bus:
        sent = [e.id for e in bus.publish_many(("job", i) for i in range(200))]
        proc = subprocess.Popen([sys.executable, "-c", DOOMED_CONSUMER, nats_url, str(handled_file)],
                                env=subprocess_env())
        try:
            wait_until(lambda: len(handled_file.read_text().split()) >= 30, timeout=20, what="the consumer to start")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
        by_doomed = handled_file.read_text().split()
        stranded = bus.stream_info(["job"])["job"].groups["workers"].pending
        assert stranded > 0, "the killed consumer should leave delivered, unacknowledged messages"

        survivor: list[tuple[str, int]] = []
        sub = bus.subscribe(
            lambda e, d: survivor.append((e.id, d.count)), ["job"], group="workers", consumer="survivor",
            visibility_timeout_ms=300,
        )
        sub.run_until_idle(timeout=20)
        ids = [i for i, _ in survivor]
        assert set(by_doomed) | set(ids) == set(sent)
        assert len(ids) == len(set(ids))
        # the ones the dead worker held come again, counted as redeliveries
        assert sum(1 for _, count in survivor if count >= 2) >= stranded - len(set(by_doomed) & set(ids))
        assert bus.stream_info(["job"])["job"].groups["workers"].pending == 0


def test_publish_while_nats_is_down_is_a_bus_error(nats_server: NatsServer) -> None:
    with connect(nats_server.url, retries=2, retry_backoff_s=0.05) as bus:
        bus.publish("a", 1)
        nats_server.kill()
        t0 = time.monotonic()
        with pytest.raises(BusError) as err:
            bus.publish("a", 2)
        elapsed = time.monotonic() - t0
    assert nats_server.url in str(err.value) and "after 3 attempts" in str(err.value)
    assert elapsed < 30


def test_subscriber_survives_a_nats_restart(nats_server: NatsServer) -> None:
    with connect(nats_server.url, retries=50, retry_backoff_s=0.05, retry_backoff_max_s=0.2) as bus:
        durable: list[int] = []
        counts: list[Delivery] = []
        heard: list[object] = []

        def on_event(event: Event, delivery: Delivery) -> None:
            durable.append(event.payload)
            counts.append(delivery)

        with bus.subscribe(on_event, ["a"], group="g", block_ms=100, visibility_timeout_ms=500), bus.subscribe(
            lambda e: heard.append(e.payload), mode="broadcast"
        ):
            bus.publish_many(("a", i) for i in range(10))
            wait_until(lambda: durable == list(range(10)) and len(heard) == 10)

            nats_server.kill()  # the file store keeps the stream, its consumers and their acks
            time.sleep(0.3)
            nats_server.start()

            bus.publish_many(("a", i) for i in range(10, 20))
            wait_until(lambda: sorted(set(durable)) == list(range(20)), timeout=20,
                       what="events published after the restart")
            assert bus.stream_info(["a"])["a"].groups["g"].pending == 0 or wait_until(
                lambda: bus.stream_info(["a"])["a"].groups["g"].pending == 0, timeout=5) is None

            def heard_again() -> bool:
                bus.publish("b", "ping")
                time.sleep(0.05)
                return "ping" in heard

            wait_until(heard_again, timeout=10, what="the broadcast listener to resubscribe")
        assert durable[:10] == list(range(10))


def test_foreign_message_is_reported_and_acknowledged(nats_url: str) -> None:
    with connect(nats_url) as bus:
        bus.publish("a", 0)  # creates the stream
        _raw_publish(nats_url, f"{nats_url.rsplit('/', 1)[-1]}.ev.a", b"\xff not an envelope")
        good = bus.publish("a", 1)
        errors: list[tuple[BaseException, Event | None, Delivery]] = []
        got: list[Any] = []
        sub = bus.subscribe(lambda e: got.append(e.id), ["a"], group="g", on_error=lambda *a: errors.append(a))
        assert sub.run_until_idle(timeout=5) == 2
        assert got[-1] == good.id
        assert len(errors) == 1 and errors[0][1] is None
        assert errors[0][2].type == "a" and errors[0][2].message_id == "2"
        assert bus.stream_info(["a"])["a"].groups["g"].pending == 0


def test_group_is_recreated_when_its_stream_disappears(nats_url: str) -> None:
    with connect(nats_url) as bus:
        got: list[Any] = []
        with bus.subscribe(lambda e: got.append(e.payload), ["a"], group="g", block_ms=50):
            bus.publish("a", 1)
            wait_until(lambda: got == [1])
            bus.delete_stream()  # type: ignore[attr-defined]  # data loss: stream and consumers are gone
            wait_until(lambda: "g" in bus.stream_info(["a"])["a"].groups, timeout=10,
                       what="the consumer to be recreated")
            bus.publish("a", 2)
            wait_until(lambda: got == [1, 2], timeout=10)


def test_event_types_with_subject_characters_round_trip(nats_url: str) -> None:
    types = ["order.placed", "a b", "wild*card", "gt>", ".lead", "trail.", "dou..ble", "pct%41", "ünï"]
    with connect(nats_url) as bus:
        sent = bus.publish_many((t, t) for t in types)
        got: list[Event] = []
        assert bus.subscribe(got.append, types, group="g").run_until_idle(timeout=10) == len(types)
        assert sorted(e.id for e in got) == sorted(e.id for e in sent)
        assert set(bus.stream_info()) == set(types)
        only: list[str] = []
        assert bus.subscribe(lambda e: only.append(e.type), ["order.placed"], group="h").run_until_idle(timeout=5) == 1
        assert only == ["order.placed"]


@pytest.mark.parametrize(
    "bad, match",
    [("nats://127.0.0.1:4222/has.dot", "stream name"), ("nats:///S", "no host")],
)
def test_bad_urls_are_one_line_errors(bad: str, match: str) -> None:
    with pytest.raises(BusError, match=match):
        connect(bad)


def test_unreachable_server_is_a_bus_error() -> None:
    with connect(f"nats://127.0.0.1:{PRIVATE_PORT + 1}/X{uuid.uuid4().hex[:6]}", retries=0) as bus:
        with pytest.raises(BusError, match="reachable"):
            bus.ping()


def test_shared_server_answers() -> None:
    with connect(f"{NATS_URL}/P{uuid.uuid4().hex[:6]}", retries=0) as bus:
        try:
            assert 0 <= bus.ping() < 1
        except BusError as exc:
            if IN_CI:
                raise
            pytest.skip(str(exc))


def test_publishing_after_the_stream_was_deleted_creates_it_again(nats_url: str) -> None:
    with connect(nats_url, retries=2, retry_backoff_s=0.01) as bus:
        bus.publish("a", 1)
        bus.delete_stream()  # type: ignore[attr-defined]
        bus._stream_ready = True  # type: ignore[attr-defined]  # as if another process had deleted it
        bus.publish("a", 2)
        assert bus.stream_info(["a"])["a"].length == 1
