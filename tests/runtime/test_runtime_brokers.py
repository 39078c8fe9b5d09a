"""The runtime on the broker buses (NATS JetStream, RabbitMQ): the same summary as memory://, foreign messages to the DLQ."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tusk_events import TSK
from tusk_events.bus import connect
from tusk_events.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "configs" / "app.tsk"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NATS_URL = os.environ.get("TUSK_TEST_NATS_URL", "nats://127.0.0.1:4222")
AMQP_URL = os.environ.get("TUSK_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

pytestmark = pytest.mark.timeout(120)

APP_GROUPS = ("welcome_email", "user_profile")
APP_TYPES = ("user_registered", "welcome_email_sent", "profile_created")

WORKER = """
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///unused.db")

[worker]
subscribe: "job"
handle_fujsen = '''
def handle(event):
    publish("job_done", {"of": event["id"]})
'''
"""


def _reachable(url: str) -> None:
    b = connect(url, retries=0)
    try:
        b.ping()
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"no broker at {url}: {exc}")
        pytest.skip(f"no broker at {url}")
    finally:
        b.close()


@pytest.fixture(params=[pytest.param("nats", marks=pytest.mark.nats), pytest.param("amqp", marks=pytest.mark.amqp),
                        pytest.param("kafka", marks=pytest.mark.kafka)])
def broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A stream (NATS) or a namespace (RabbitMQ) of its own, removed afterwards."""
    if request.param == "kafka":
        # 2 s sessions: tansu holds a group join for half the session timeout
        url = f"kafka://{request.getfixturevalue('kafka_broker')}/r{uuid.uuid4().hex[:12]}?session_timeout_ms=2000"
        yield url
        with connect(url) as b:
            b.delete_topics()  # type: ignore[attr-defined]
    elif request.param == "nats":
        pytest.importorskip("nats")
        url = f"{NATS_URL}/R{uuid.uuid4().hex[:12]}"
        _reachable(url)
        yield url
        with connect(url) as b:
            b.delete_stream()  # type: ignore[attr-defined]
    else:
        pytest.importorskip("aio_pika")
        url = f"{AMQP_URL}?namespace=r{uuid.uuid4().hex[:12]}"
        _reachable(url)
        yield url
        with connect(url) as b:  # queues declared by other processes too: named from the configs
            for g in (*APP_GROUPS, "worker"):
                for t in (*APP_TYPES, "job"):
                    b.declared.add(("q", b.group_queue(g, t)))  # type: ignore[attr-defined]
            for t in (*APP_TYPES, "job", "job_done"):
                b.declared.add(("q", b.held_queue(t)))  # type: ignore[attr-defined]
            b.ping()
            for name in (b.exchange_name, b.unrouted_name):  # type: ignore[attr-defined]
                b.declared.add(("x", name))  # type: ignore[attr-defined]
            b.delete_queues()  # type: ignore[attr-defined]


def _summary(bus_url: str, tmp_path: Path) -> list[str]:
    env = dict(os.environ)
    env.update(EVENT_BUS=bus_url, EVENT_STORE=f"sqlite:///{tmp_path / (uuid.uuid4().hex + '.db')}",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, "-m", "tusk_events", "run", str(APP), "--until-idle"],
                         env=env, capture_output=True, text=True, timeout=100)
    assert out.returncode == 3, out.stderr  # 3: the run dead-lettered an event (the bad email)
    return [line for line in out.stdout.splitlines() if not line.startswith("handling latency")]


@pytest.mark.slow
def test_app_gives_the_same_summary_as_on_memory(broker_url: str, tmp_path: Path) -> None:
    expected = _summary("memory://", tmp_path)
    assert any(line.startswith("published ") for line in expected)
    assert _summary(broker_url, tmp_path) == expected


def _foreign(url: str, rt: Runtime) -> None:
    """Put a message that is not an event envelope where the worker service reads."""
    bus = rt.bus
    if url.startswith("kafka://"):
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": url.split("://", 1)[1].split("/", 1)[0]})
        p.produce(bus.topic("job"), b"<xml>not json</xml>")  # type: ignore[attr-defined]
        assert p.flush(10) == 0
        return
    if url.startswith("nats://"):
        import nats

        async def go() -> None:
            nc = await nats.connect(url.rsplit("/", 1)[0])
            await nc.jetstream().publish(bus.subject("job"), b"<xml>not json</xml>")  # type: ignore[attr-defined]
            await nc.close()
    else:
        import aio_pika

        from tusk_events.bus.amqp import parse_url

        async def go() -> None:
            conn = await aio_pika.connect(parse_url(url)[0])
            ch = await conn.channel()
            await ch.default_exchange.publish(aio_pika.Message(b"<xml>not json</xml>"),
                                              routing_key=bus.group_queue("worker", "job"))  # type: ignore[attr-defined]
            await conn.close()

    asyncio.run(go())


def test_a_foreign_message_goes_to_the_dlq_and_the_rest_is_handled(broker_url: str, tmp_path: Path) -> None:
    env = {"EVENT_BUS": broker_url, "EVENT_STORE": f"sqlite:///{tmp_path / 'events.db'}"}
    with Runtime([TSK.from_string(WORKER, env=env)]) as rt:
        rt.bus.subscribe(lambda e: None, ["job"], group="worker")  # RabbitMQ: the group's queue exists now
        rt.publish("job", {"n": 1})
        _foreign(broker_url, rt)
        rt.publish("job", {"n": 2})
        summary = rt.run_until_idle(startup=False, timeout=60)
        letters = rt.dlq.list("worker")
        assert len(letters) == 1
        (letter,) = letters
        assert letter.raw == b"<xml>not json</xml>"  # the bytes are kept, as on Redis
        assert letter.event.type == "job"
        assert "not a usable event" in letter.reason
        assert summary.handled >= 2
