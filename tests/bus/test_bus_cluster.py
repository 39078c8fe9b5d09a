"""The Redis bus on a Redis Cluster: URLs, detection, one slot for every bus key, the main job,
and a master killed mid-stream (its replica takes over)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bus_support import ROOT, subprocess_env
from cluster_support import PrivateCluster, master_port_of, master_ports, migrate_slot, replica_ports_of
from cluster_support import cmd as cluster_cmd
from redis.crc import key_slot

from tusk_events import TSK
from tusk_events.bus import connect, redis_client
from tusk_events.bus.redis_cluster import cluster_seeds
from tusk_events.errors import BusError
from tusk_events.events import Event
from tusk_events.runtime.core import Runtime


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


def test_cluster_replies_redis_py_renames_are_still_retried() -> None:
    """redis-py turns MOVED, ASK, TRYAGAIN, CLUSTERDOWN... into classes of their own and strips
    the code from the message: they must still mean "try again", not "the consumer failed"."""
    from redis.exceptions import AskError, ClusterDownError, MovedError, ResponseError, TryAgainError

    from tusk_events.bus.redis_bus import _retryable

    for exc in (ClusterDownError("The cluster is down"), MovedError("15291 127.0.0.1:7103"),
                AskError("15291 127.0.0.1:7101"), TryAgainError("Multiple keys request during rehashing of slot"),
                ResponseError("READONLY You can't write against a read only replica.")):
        assert _retryable(exc), exc
    assert not _retryable(ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"))


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


@pytest.mark.cluster
def test_trace_reads_the_handled_records_on_a_cluster(cluster_url: str, tmp_path: Path) -> None:
    """``trace`` finds each service's handled record under the bus's hash tag; an untagged name is
    another key, in another slot, and every step would read "no record"."""
    from tusk_events.observe.tracing import HANDLED, NO_RECORD, load_trace, trace_to_dict

    env = {"EVENT_BUS": cluster_url, "EVENT_STORE": f"sqlite:///{tmp_path / 'events.db'}"}
    with Runtime([TSK.from_file(ROOT / "configs" / "app.tsk", env=env)]) as rt:
        rt.run_until_idle()
        (ada,) = [e for e in rt.store.replay(type="user_registered") if e.payload["name"] == "Ada"]
        d = trace_to_dict(load_trace(rt.configs, str(ada.metadata["trace_id"])))
    assert d["bus_consulted"] is True

    def statuses(node: dict[str, Any]) -> list[str]:
        return [s["status"] for s in node["steps"]] + [
            x for s in node["steps"] for c in s["published"] for x in statuses(c)]

    found = statuses(d["roots"][0])
    assert found and set(found) == {HANDLED}, found
    assert NO_RECORD not in found


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
    redis_cluster.wait_ok()
    bus = connect(cluster_url, retries=20, retry_backoff_s=0.1, retry_backoff_max_s=0.5)
    client = redis_client(cluster_url)
    try:
        port = int(bus.pool().connection_kwargs["port"])  # type: ignore[attr-defined]
        sent = [e.id for e in bus.publish_many(("a", i) for i in range(200))]
        master = client.get_node_from_key(ORDER_KEY)  # the slot of every bus key
        acked = client.wait(1, 5000, target_nodes=master)  # replicated before the kill: nothing is lost
        assert acked >= 1, f"the replica of {master.name} did not acknowledge the writes"
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


# --- the runtime on a cluster in trouble: a node restarted, a slot migrated ---------------------

ORDERS = """
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///unused.db")
redeliver_since: "1h"
""" + "".join(
    f"""
[{svc}]
subscribe: "order"
visibility_timeout: 1.0
retries: 10
backoff: 0.01
handle_fujsen = '''
def handle(event):
    execute("INSERT INTO event_store (event_type, payload) VALUES (?, ?)",
            "{svc}_effect", json.dumps({{"order": event["id"]}}))
    publish("{svc}_done", {{"order": event["id"]}})
'''
"""
    for svc in ("billing", "shipping")
)
SERVICES = ("billing", "shipping")
ORDER_KEY = b"{tusk}:tusk:stream:order"


def _handled_counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db, timeout=30) as conn:
        rows = conn.execute(
            "SELECT service, count(*) FROM tusk_tracking WHERE outcome = 'handled' GROUP BY service"
        ).fetchall()
    return dict(rows)


def _wait(what: str, ok: Callable[[], bool], timeout: float) -> float:
    t0 = time.monotonic()
    while not ok():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - t0


def _pending(url: str) -> int:
    bus = connect(url)
    try:
        return sum(g.pending for g in bus.stream_info(["order"])["order"].groups.values())
    except BusError:
        return -1  # not reachable yet: not done
    finally:
        bus.close()


def _check_exactly_once(store_url: str, order_ids: list[str]) -> None:
    """Every order: one tracking row, one effect row and one published event per service."""
    from tusk_events.store import open_store

    with open_store(store_url) as store:
        for svc in SERVICES:
            effects = Counter(e.payload["order"] for e in store.replay(type=f"{svc}_effect"))
            done = Counter(e.payload["order"] for e in store.replay(type=f"{svc}_done"))
            assert sorted(effects) == sorted(done) == sorted(order_ids), f"{svc}: lost events"
            assert max(effects.values()) == 1, f"{svc}: duplicate execute effects"
            assert max(done.values()) == 1, f"{svc}: duplicate publish effects"


class _Orders:
    """A worker process (``tusk-events run``) on the cluster and a host runtime publishing orders."""

    def __init__(self, tmp: Path, url: str) -> None:
        self.config = tmp / "orders.tsk"
        self.config.write_text(ORDERS)
        self.db = tmp / "events.db"
        self.store_url = f"sqlite:///{self.db}?synchronous=normal"
        self.env = subprocess_env() | {"EVENT_BUS": url, "EVENT_STORE": self.store_url}
        self.url = url
        self.log = tmp / "worker.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tusk_events", "run", str(self.config), "--no-startup"],
            env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log.open("wb"),
        )

    def runtime(self) -> Runtime:
        return Runtime([TSK.from_file(self.config, env=self.env)])

    def handled(self) -> dict[str, int]:
        return _handled_counts(self.db) if self.db.exists() else {}

    def wait_all(self, n: int, timeout: float = 90) -> float:
        took = _wait("every order handled by both services",
                     lambda: self.handled() == {s: n for s in SERVICES}, timeout)
        _wait("nothing pending", lambda: _pending(self.url) == 0, 30)
        return took

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def _publish(rt: Runtime, n: int, prefix: str) -> list[str]:
    return [rt.publish("order", {"i": i}, id=f"{prefix}-{i}").id for i in range(n)]


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_bus_master_restarted_without_its_data_the_runtime_recovers(
    cluster_url: str, redis_cluster: PrivateCluster, tmp_path: Path
) -> None:
    """The master of the bus's slot is killed and started again on its port before its replica
    takes over (failover off for the test), without persistence: streams, groups, handled
    records and the bus epoch are gone. The worker recreates its groups, the relay sees the new
    epoch and re-delivers from the store: every order handled once, nothing pending, no crash."""
    if not redis_cluster.procs:
        pytest.skip("the cluster on the ports was not started by this test run: not restarting its nodes")
    redis_cluster.wait_ok()  # a node an earlier test restarted is a synced replica again
    port = master_port_of(redis_cluster.ports[0], ORDER_KEY)
    replicas = replica_ports_of(port)
    orders = _Orders(tmp_path, cluster_url)
    try:
        for r in replicas:
            cluster_cmd(r, "CONFIG", "SET", "cluster-replica-no-failover", "yes")
        n = 300
        with orders.runtime() as rt:
            assert key_slot(rt.relay.bus_epoch_key.encode()) == key_slot(ORDER_KEY)
            ids = _publish(rt, n // 2, "before")
            _wait("part of the work done", lambda: min(orders.handled().values() or [0]) > 0, 60)
            rt.relay.tick()  # the epoch is known before the loss
            redis_cluster.restart(port)
            t0 = time.monotonic()
            ids += _publish(rt, n // 2, "after")  # the slot is down for the first ones: outbox
            rt.relay.flush()
        orders.wait_all(n)
        recovered = time.monotonic() - t0
        assert orders.proc.poll() is None, orders.log.read_text()[-2000:]
        info = connect(cluster_url).stream_info(["order"])["order"]
        assert set(info.groups) == set(SERVICES)  # recreated (some orders are on the new stream twice:
        # sent from the outbox and re-delivered; the tracking rows make the second a no-op)
        assert "recreated" in orders.log.read_text()
        print(f"node restart: all {n} handled once, recovered {recovered:.1f} s after the restart")
    finally:
        orders.stop()
        for r in replicas:
            cluster_cmd(r, "CONFIG", "SET", "cluster-replica-no-failover", "no")
        redis_cluster.wait_ok()
    _check_exactly_once(orders.store_url, ids)


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_slot_migration_while_consuming_loses_and_repeats_nothing(
    cluster_url: str, redis_cluster: PrivateCluster, tmp_path: Path
) -> None:
    """The bus's slot moves to another master (as ``redis-cli --cluster reshard`` does it) while a
    worker consumes and the host publishes: 0 lost, 0 published twice, 0 pending."""
    slot = key_slot(ORDER_KEY)
    src = master_port_of(redis_cluster.ports[0], ORDER_KEY)
    masters = master_ports(redis_cluster.ports[0])
    dst = next(p for p in masters if p != src)
    orders = _Orders(tmp_path, cluster_url)
    moved = 0
    try:
        n = 400
        with orders.runtime() as rt:
            ids = _publish(rt, n // 2, "before")
            _wait("part of the work done", lambda: min(orders.handled().values() or [0]) > 20, 60)
            result: list[int] = []
            mover = threading.Thread(
                target=lambda: result.append(migrate_slot(slot, src, dst, masters, batch=5, pause_s=0.02)))
            mover.start()
            ids += _publish(rt, n // 2, "during")
            mover.join(60)
            moved = result[0]
            rt.relay.flush()
        orders.wait_all(n)
        assert master_port_of(redis_cluster.ports[0], ORDER_KEY) == dst
        assert orders.proc.poll() is None, orders.log.read_text()[-2000:]
        assert "recreated" not in orders.log.read_text()
        print(f"slot migration: {moved} keys moved while consuming; all {n} handled once")
    finally:
        orders.stop()
    _check_exactly_once(orders.store_url, ids)


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(150)
def test_failover_tail_lost_on_the_bus_is_redelivered_from_the_store(
    cluster_url: str, redis_cluster: PrivateCluster, tmp_path: Path
) -> None:
    """What a master acknowledged but its replica never got is gone after a failover, while the
    keys (the bus epoch among them) survive on the replica: the relay sees another master serving
    the bus's slot and re-delivers, from the store, what no service has handled yet."""
    redis_cluster.wait_ok()
    config = tmp_path / "orders.tsk"
    config.write_text(ORDERS)
    store_url = f"sqlite:///{tmp_path / 'events.db'}?synchronous=normal"
    env = subprocess_env() | {"EVENT_BUS": cluster_url, "EVENT_STORE": store_url}
    with Runtime([TSK.from_file(config, env=env)]) as rt:
        rt.relay.tick()  # the epoch, and the master serving it, are known
        ids = _publish(rt, 30, "tail")
        rt.relay.flush()
        redis_client(cluster_url).xtrim(ORDER_KEY, maxlen=0, approximate=False)  # never replicated
        port = master_port_of(redis_cluster.ports[0], ORDER_KEY)
        replica = replica_ports_of(port)[0]
        cluster_cmd(replica, "CLUSTER", "FAILOVER")
        _wait("the replica serving the slot", lambda: master_port_of(replica, ORDER_KEY) == replica, 30)

        def redelivered() -> bool:
            rt.relay.tick()
            return rt.relay.report.redelivery_passes >= 1

        _wait("the relay to re-deliver", redelivered, 30)
        assert rt.relay.report.redelivered == {s: len(ids) for s in SERVICES}
    run = subprocess.run(
        [sys.executable, "-m", "tusk_events", "run", str(config), "--no-startup", "--until-idle"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode in (0, 3), run.stderr[-2000:]
    assert _pending(cluster_url) == 0
    _check_exactly_once(store_url, ids)


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_publishing_during_a_slot_migration_follows_ask(cluster_url: str, redis_cluster: PrivateCluster) -> None:
    """While the bus's slot moves key by key, a stream already moved answers ASK on the old master:
    publishes follow it to the new one (``ASKING``) instead of failing after their retries."""
    bus = connect(cluster_url)
    try:
        types = [f"t{i}" for i in range(40)]
        bus.publish_many((t, 0) for t in types)  # forty streams to move, one at a time
        src = master_port_of(redis_cluster.ports[0], ORDER_KEY)
        dst = next(p for p in master_ports(redis_cluster.ports[0]) if p != src)
        mover = threading.Thread(target=migrate_slot, args=(key_slot(ORDER_KEY), src, dst,
                                                            master_ports(redis_cluster.ports[0])),
                                 kwargs={"batch": 1, "pause_s": 0.1})
        mover.start()
        sent = 1
        while mover.is_alive():
            bus.publish_many((t, sent) for t in types)
            sent += 1
        mover.join()
        bus.publish_many((t, sent) for t in types)
        sent += 1
        info = bus.stream_info(types)
        assert {t: info[t].length for t in types} == {t: sent for t in types}
        assert sent > 3  # the publishes overlapped the migration
    finally:
        bus.close()
