"""Real Redis only: several processes, a consumer killed with SIGKILL, a server that goes away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bus_support import RedisServer, subprocess_env, wait_until

from tusk_events.bus import Delivery, connect
from tusk_events.errors import BusError
from tusk_events.events import Event

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

SUBSCRIBER = """
import json, sys
from tusk_events.bus import connect
bus = connect(sys.argv[1])
ids = []
sub = bus.subscribe(lambda e: ids.append(e.id), ["job"], group="remote")
sub.run_until_idle(timeout=20)
print(json.dumps(ids))
"""

PUBLISHER = """
import json, sys
from tusk_events.bus import connect
bus = connect(sys.argv[1], channel=sys.argv[3])
print(json.dumps([bus.publish("job", {"n": i}).id for i in range(int(sys.argv[2]))]))
"""

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


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


@pytest.mark.slow
def test_subscriber_in_another_process(redis_url: str) -> None:
    with connect(redis_url) as bus:
        sent = bus.publish_many(("job", i) for i in range(100))
    out = subprocess.run(
        _python(SUBSCRIBER, redis_url), capture_output=True, text=True, timeout=30, check=False, env=subprocess_env()
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [e.id for e in sent]


@pytest.mark.slow
def test_publisher_in_another_process(redis_url: str) -> None:
    channel = f"tusk_events.{os.getpid()}.{time.monotonic_ns()}"  # channels are server-wide
    with connect(redis_url, channel=channel) as bus:
        durable: list[str] = []
        broadcast: list[str] = []
        with bus.subscribe(lambda e: durable.append(e.id), ["job"], group="local"), bus.subscribe(
            lambda e: broadcast.append(e.id), ["job"], mode="broadcast"
        ):
            out = subprocess.run(
                _python(PUBLISHER, redis_url, "100", channel), capture_output=True, text=True, timeout=30, check=False,
                env=subprocess_env(),
            )
            assert out.returncode == 0, out.stderr
            sent = json.loads(out.stdout)
            wait_until(lambda: len(durable) == 100 and len(broadcast) == 100)
        assert durable == sent and broadcast == sent


@pytest.mark.slow
def test_consumer_killed_mid_stream_loses_nothing(redis_url: str, tmp_path: Path) -> None:
    handled_file = tmp_path / "handled.txt"
    handled_file.touch()
    with connect(redis_url) as bus:
        sent = [e.id for e in bus.publish_many(("job", i) for i in range(200))]
        proc = subprocess.Popen(_python(DOOMED_CONSUMER, redis_url, str(handled_file)), env=subprocess_env())
        try:
            wait_until(lambda: len(handled_file.read_text().split()) >= 30, timeout=20, what="the consumer to start")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
        by_doomed = handled_file.read_text().split()
        stranded = bus.stream_info(["job"])["job"].groups["workers"].pending
        assert stranded > 0, "the killed consumer should leave delivered, unacknowledged entries"

        survivor: list[tuple[str, int]] = []
        sub = bus.subscribe(
            lambda e, d: survivor.append((e.id, d.count)), ["job"], group="workers", consumer="survivor",
            visibility_timeout_ms=300,
        )
        sub.run_until_idle(timeout=20)
        ids = [i for i, _ in survivor]
        assert set(by_doomed) | set(ids) == set(sent)
        assert len(ids) == len(set(ids))
        assert sum(1 for _, count in survivor if count >= 2) == stranded  # the claimed ones
        assert bus.stream_info(["job"])["job"].groups["workers"].pending == 0


def test_publish_while_redis_is_down_is_a_bus_error(redis_server: RedisServer) -> None:
    with connect(redis_server.url, retries=2, retry_backoff_s=0.05, socket_connect_timeout=0.5) as bus:
        bus.publish("a", 1)
        redis_server.kill()
        t0 = time.monotonic()
        with pytest.raises(BusError) as err:
            bus.publish("a", 2)
        elapsed = time.monotonic() - t0
    assert redis_server.url in str(err.value)
    assert "after 3 attempts" in str(err.value)
    assert 0.05 + 0.1 <= elapsed < 3


def test_subscriber_survives_a_redis_restart(redis_server: RedisServer) -> None:
    with connect(redis_server.url, retries=30, retry_backoff_s=0.02, retry_backoff_max_s=0.1) as bus:
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

            redis_server.kill()  # no persistence: streams and groups are gone
            time.sleep(0.2)
            redis_server.start()

            bus.publish_many(("a", i) for i in range(10, 20))
            wait_until(lambda: durable == list(range(20)), timeout=10, what="events published after the restart")
            assert "g" in bus.stream_info(["a"])["a"].groups

            def heard_again() -> bool:
                bus.publish("b", "ping")
                time.sleep(0.02)
                return "ping" in heard

            wait_until(heard_again, timeout=10, what="the broadcast listener to resubscribe")
        assert all(d.count == 1 for d in counts)
