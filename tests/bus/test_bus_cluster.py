"""The Redis bus on a Redis Cluster: URLs, detection, one slot for every bus key, the main job,
and a master killed mid-stream (its replica takes over)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from bus_support import ROOT, subprocess_env
from cluster_support import PrivateCluster

from tusk_events.bus import connect, redis_client
from tusk_events.bus.redis_cluster import cluster_seeds
from tusk_events.errors import BusError
from tusk_events.events import Event


def test_cluster_urls_name_their_seeds() -> None:
    assert cluster_seeds("redis+cluster://a:7101,b:7102") == ("redis://a:7101", [("a", 7101), ("b", 7102)])
    assert cluster_seeds("rediss+cluster://u:pw@h:1") == ("rediss://u:pw@h:1", [("h", 1)])
    assert cluster_seeds("redis://a:7101") is None


def test_bad_cluster_url_is_one_clear_error() -> None:
    with pytest.raises(BusError, match=r"redis\+cluster://host:port"):
        connect("redis+cluster://nohostport")


def test_unreachable_cluster_is_a_bus_error() -> None:
    with pytest.raises(BusError, match="cannot reach the Redis Cluster"):
        connect("redis+cluster://127.0.0.1:1", socket_connect_timeout=0.2)


@pytest.mark.redis
def test_single_server_keeps_its_key_layout(redis_url: str) -> None:
    bus = connect(redis_url)
    try:
        assert not bus.cluster  # type: ignore[attr-defined]
        bus.publish("a", 1)
        assert redis_client(redis_url).exists("tusk:stream:a") == 1
    finally:
        bus.close()


@pytest.mark.cluster
def test_a_plain_node_url_is_detected_as_a_cluster(cluster_url: str, redis_cluster: PrivateCluster) -> None:
    bus = connect(redis_cluster.node_url)
    try:
        assert bus.cluster  # type: ignore[attr-defined]
        sent = bus.publish("user_registered", {"n": 1})
        got: list[Event] = []
        assert bus.subscribe(got.append, ["user_registered"], group="g").run_until_idle(timeout=10) == 1
        assert [e.id for e in got] == [sent.id]
    finally:
        bus.close()


@pytest.mark.cluster
def test_every_bus_key_lives_in_one_slot(cluster_url: str) -> None:
    """Streams, handled-event records and attempt counters share a slot: no CROSSSLOT, ever."""
    bus = connect(cluster_url)
    try:
        bus.publish_many([("a", 1), ("b", 2), ("c", 3)])
        sub = bus.subscribe(lambda e: None, ["a", "b", "c"], group="g", dedup_ttl_s=60, track_attempts=True)
        assert sub.run_until_idle(timeout=10) == 3
        client = redis_client(cluster_url)
        keys = [k for n in client.get_primaries() for k in n.redis_connection.keys("*")]
        assert any(b":dedup:" in k for k in keys) and sum(b":stream:" in k for k in keys) == 3
        assert len({client.keyslot(k) for k in keys}) == 1, keys
    finally:
        bus.close()


def _run_app(bus_url: str, tmp: Path, name: str) -> str:
    env = subprocess_env() | {"EVENT_BUS": bus_url, "EVENT_STORE": f"sqlite:///{tmp / name}.db"}
    proc = subprocess.run(
        [sys.executable, "-m", "tusk_events", "run", str(ROOT / "configs" / "app.tsk"), "--until-idle"],
        env=env, cwd=tmp, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode in (0, 3), proc.stderr[-2000:]
    return "\n".join(line for line in proc.stdout.splitlines() if not line.startswith("handling latency"))


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_main_job_gives_the_same_summary_as_memory(cluster_url: str, redis_cluster: PrivateCluster,
                                                   tmp_path: Path) -> None:
    on_memory = _run_app("memory://", tmp_path, "m")
    assert "published" in on_memory
    assert _run_app(redis_cluster.node_url, tmp_path, "c") == on_memory


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_master_killed_mid_stream_replica_takes_over(cluster_url: str, redis_cluster: PrivateCluster) -> None:
    """Kill the master of the bus's slot while consuming: the consumer follows the failover by itself
    and drains what survived; what a master had not yet replicated is lost (asynchronous replication)."""
    if not redis_cluster.procs:
        pytest.skip("the cluster on the ports was not started by this test run: not killing its nodes")
    bus = connect(cluster_url, retries=20, retry_backoff_s=0.1, retry_backoff_max_s=0.5)
    client = redis_client(cluster_url)
    try:
        port = int(bus.pool().connection_kwargs["port"])  # type: ignore[attr-defined]
        sent = [e.id for e in bus.publish_many(("a", i) for i in range(200))]
        client.wait(1, 2000)  # target_nodes default: replicated before the kill, so nothing is lost
        got: list[str] = []
        seen = threading.Event()

        def handle(e: Event) -> None:
            got.append(e.id)
            if len(got) == 50:
                seen.set()
            time.sleep(0.002)

        sub = bus.subscribe(handle, ["a"], group="g", visibility_timeout_ms=2000, dedup_ttl_s=600)
        runner = threading.Thread(target=sub.run, daemon=True)
        runner.start()
        assert seen.wait(30)
        t0 = time.monotonic()
        redis_cluster.kill(port)
        end = time.monotonic() + 60
        while len(set(got)) < len(sent) and time.monotonic() < end:
            time.sleep(0.1)
        recovered_s = time.monotonic() - t0
        sub.stop()
        runner.join(15)
        assert set(got) == set(sent), f"{len(set(sent) - set(got))} of {len(sent)} never handled"
        after = [e.id for e in bus.publish_many(("a", i) for i in range(10))]
        assert bus.subscribe(lambda e: None, ["a"], group="g").run_until_idle(timeout=30) == len(after)
        assert bus.stream_info(["a"])["a"].groups["g"].pending == 0
        print(f"failover: all {len(sent)} handled, {len(got) - len(set(got))} redelivered, {recovered_s:.1f}s")
    finally:
        bus.close()
        redis_cluster.start_node(port)  # rejoins as a replica of the promoted one
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = subprocess.run(["redis-cli", "-p", str(port), "cluster", "info"], capture_output=True, text=True)
            if "cluster_state:ok" in out.stdout:
                break
            time.sleep(0.2)
