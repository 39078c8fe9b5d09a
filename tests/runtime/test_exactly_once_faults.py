"""Fault injection on private servers: every effect exactly once, nothing lost, nothing pending.

Handlers ``execute`` an INSERT and ``publish`` an event. Scenarios: worker processes
SIGKILLed at 20 random points of a run; the same under process isolation, pool processes
killed too; a worker stalled (SIGSTOP) in a handler slower than the visibility timeout; Redis
without persistence killed and restarted mid-run, losing every stream, group and dedup record;
Redis with AOF or RDB crashed and restarted (RDB: back to its last snapshot, the epoch kept);
PostgreSQL restarted mid-run; the bus down while host code publishes.
Sizes are modest to keep each test around a minute on a loaded machine; the twenty SIGKILLs
run over 20,000 orders with ``TUSK_FAULT_KILL_EVENTS=20000`` (and ``benchmarks/runtime.py
--only kill --kill-n 20000 --kills 20``). Each test records its recovery time (from the fault
until everything was handled); tests/runtime/conftest.py lists them after the run.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.private_servers import AOF_EVERYSEC, RDB_ONLY, PrivatePostgres, PrivateRedis
from tusk_events import TSK
from tusk_events.errors import StoreError
from tusk_events.runtime.core import Runtime

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("billing", "shipping")

def config_text(app: str = "", first: str = "", visibility_timeout: float = 1.0, service: str = "") -> str:
    """Two services whose handlers ``execute`` an INSERT and ``publish``; ``first`` runs before."""
    return f"""
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///unused.db")
redeliver_since: "1h"
{app}
""" + "".join(
        f"""
[{svc}]
subscribe: "order"
visibility_timeout: {visibility_timeout}
{service}
retries: 10
backoff: 0.01
handle_fujsen = '''
def handle(event):
    {first.replace("SERVICE", svc) or "pass"}
    execute("INSERT INTO event_store (event_type, payload) VALUES (?, ?)",
            "{svc}_effect", json.dumps({{"order": event["id"]}}))
    publish("{svc}_done", {{"order": event["id"]}})
'''
"""
        for svc in SERVICES
    )


CONFIG = config_text()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "orders.tsk"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def redis_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[PrivateRedis]:
    port = 7410 + getattr(request, "param", 0)
    server = PrivateRedis(port, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def check_exactly_once(store_url: str, order_ids: list[str]) -> None:
    """Every order: one tracking row, one effect row and one published event per service."""
    from tusk_events.store import open_store

    with open_store(store_url) as store:
        for svc in SERVICES:
            effects = Counter(e.payload["order"] for e in store.replay(type=f"{svc}_effect"))
            done = Counter(e.payload["order"] for e in store.replay(type=f"{svc}_done"))
            assert sorted(effects) == sorted(done) == sorted(order_ids), f"{svc}: lost events"
            assert max(effects.values()) == 1, f"{svc}: duplicate execute effects"
            assert max(done.values()) == 1, f"{svc}: duplicate publish effects"
            missing = [i for i in order_ids if store.tracked(svc, i) != "handled"]
            assert not missing, f"{svc}: {len(missing)} without a tracking row"


def handled_counts(sqlite_path: Path) -> dict[str, int]:
    with sqlite3.connect(sqlite_path, timeout=30) as conn:
        rows = conn.execute(
            "SELECT service, count(*) FROM tusk_tracking WHERE outcome = 'handled' GROUP BY service"
        ).fetchall()
    return dict(rows)


def outbox_rows(sqlite_path: Path) -> int:
    with sqlite3.connect(sqlite_path, timeout=30) as conn:
        return int(conn.execute("SELECT count(*) FROM tusk_outbox").fetchone()[0])


def wait_until(what: str, ok, timeout: float) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while not ok():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - t0


def pending(redis_url: str) -> int:
    import redis

    r = redis.Redis.from_url(redis_url)
    try:
        return sum(g["pending"] for g in r.xinfo_groups("tusk:stream:order"))
    finally:
        r.close()


def worker(config: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tusk_events", "run", str(config), "--no-startup"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def publish_orders(rt: Runtime, n: int, prefix: str) -> list[str]:
    ids = []
    for i in range(n):
        ids.append(rt.publish("order", {"i": i}, id=f"{prefix}-{i}").id)
    return ids


def process_env(redis_url: str, store_url: str) -> dict[str, str]:
    return dict(os.environ, EVENT_BUS=redis_url, EVENT_STORE=store_url, PYTHONPATH=str(ROOT))


class KillWatch:
    """Recovery of each SIGKILL: from the kill until every entry the dead worker held is acked.

    At the kill, the entries pending for the dead worker's consumers are noted; a thread
    watches the consumer groups until none of them is pending any more (claimed by another
    worker after the visibility timeout, handled, acknowledged).
    """

    def __init__(self, redis_url: str) -> None:
        import redis

        self.r = redis.Redis.from_url(redis_url, decode_responses=True)
        self.open: list[tuple[float, dict[str, set[str]]]] = []
        self.recoveries: list[tuple[int, float]] = []
        """(entries the dead worker held, seconds until they were all handled), per kill."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def held(self, pid: int) -> dict[str, set[str]]:
        held: dict[str, set[str]] = {}
        for svc in SERVICES:
            for c in self.r.xinfo_consumers("tusk:stream:order", svc):
                if f"-{pid}-{svc}-" in c["name"] and c["pending"]:
                    rows = self.r.xpending_range("tusk:stream:order", svc, "-", "+", 100_000, c["name"])
                    held.setdefault(svc, set()).update(row["message_id"] for row in rows)
        return held

    def killed(self, at: float, held: dict[str, set[str]]) -> None:
        with self._lock:
            self.open.append((at, held))

    def _still_pending(self, held: dict[str, set[str]]) -> bool:
        for svc, ids in held.items():
            rows = self.r.xpending_range("tusk:stream:order", svc, "-", "+", 100_000)
            if ids & {row["message_id"] for row in rows}:
                return True
        return False

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                waiting = list(self.open)
            for item in waiting:
                at, held = item
                if not self._still_pending(held):
                    with self._lock:
                        self.open.remove(item)
                        self.recoveries.append((sum(map(len, held.values())), time.monotonic() - at))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.r.close()


KILL_EVENTS = int(os.environ.get("TUSK_FAULT_KILL_EVENTS", "5000"))
"""Orders of the SIGKILL test. The full size, 20,000 (about 45 s on an idle 2-core machine,
110 s on a loaded one): ``TUSK_FAULT_KILL_EVENTS=20000``; also ``benchmarks/runtime.py
--only kill --kill-n 20000 --kills 20``."""
KILLS = 20


@pytest.mark.timeout(300)
def test_twenty_random_sigkills_of_workers_mid_run(
    config: Path, tmp_path: Path, redis_server: PrivateRedis, record_property: Any
) -> None:
    """Two worker processes; 20 SIGKILLs at random points of the run, each worker restarted."""
    n = KILL_EVENTS
    db = tmp_path / "events.db"
    store_url = f"sqlite:///{db}?synchronous=normal"
    env = process_env(redis_server.url, store_url)
    cfg = TSK.from_file(config, env=env)
    with Runtime([cfg]) as rt:
        ids = publish_orders(rt, n, "order")
        rt.relay.flush()
    rng = random.Random(17)
    # random points of the run (share of all handlings), so every kill lands mid-run whatever the speed
    marks = sorted(rng.uniform(0.02, 0.9) for _ in range(KILLS))
    watch = KillWatch(redis_server.url)
    workers = [worker(config, env), worker(config, env)]
    t_start = time.monotonic()
    kills = 0
    try:
        while kills < KILLS:
            done = sum(handled_counts(db).values()) / (n * len(SERVICES))
            if done < marks[kills]:
                time.sleep(0.05)
                if time.monotonic() - t_start > 200:
                    raise AssertionError(f"only {done:.0%} handled after 200 s")
                continue
            victim = rng.randrange(len(workers))
            pid = workers[victim].pid
            workers[victim].send_signal(signal.SIGKILL)
            at = time.monotonic()
            workers[victim].wait(10)
            watch.killed(at, watch.held(pid))
            workers[victim] = worker(config, env)
            kills += 1
        last_kill = time.monotonic()
        wait_until("every order handled by both services",
                   lambda: handled_counts(db) == {s: n for s in SERVICES}, 180)
        all_handled = time.monotonic()
        wait_until("nothing pending", lambda: pending(redis_server.url) == 0, 30)
        wait_until("every kill recovered", lambda: not watch.open, 30)
    finally:
        for w in workers:
            w.send_signal(signal.SIGKILL)
            w.wait(10)
        watch.close()
    check_exactly_once(store_url, ids)
    per_kill = sorted(s for _, s in watch.recoveries)
    held = [h for h, _ in watch.recoveries]
    record_property("recovery_s", round(statistics.median(per_kill), 2))
    record_property("recovery_max_s", round(per_kill[-1], 2))
    record_property("after_last_kill_s", round(all_handled - last_kill, 2))
    print(f"\n{n:,} orders x {len(SERVICES)} services, {kills} SIGKILLs in {last_kill - t_start:.1f} s; "
          f"entries held by the killed worker: median {statistics.median(held):g}, max {max(held)}; "
          f"recovery (kill -> all its entries handled): median {statistics.median(per_kill):.2f} s, "
          f"max {per_kill[-1]:.2f} s; all handled {all_handled - last_kill:.1f} s after the last kill; "
          f"run {all_handled - t_start:.1f} s")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("redis_server", [1], indirect=True)
def test_redis_restarted_without_persistence_mid_run(
    config: Path, tmp_path: Path, redis_server: PrivateRedis, record_property: Any
) -> None:
    n = 400
    db = tmp_path / "events.db"
    store_url = f"sqlite:///{db}?synchronous=normal"
    env = process_env(redis_server.url, store_url)
    proc = worker(config, env)
    try:
        cfg = TSK.from_file(config, env=env)
        with Runtime([cfg]) as rt:
            ids = publish_orders(rt, n // 2, "before")
            wait_until("part of the work done", lambda: min(handled_counts(db).values() or [0]) > 0, 30)
            fault = time.monotonic()
            redis_server.restart()  # streams, groups, dedup records, the epoch: all gone
            ids += publish_orders(rt, n // 2, "after")  # bus down for the first ones: outbox
            rt.relay.flush()
        wait_until("every order handled by both services",
                   lambda: handled_counts(db) == {s: n for s in SERVICES}, 60)
        all_handled = time.monotonic()
        wait_until("nothing pending", lambda: pending(redis_server.url) == 0, 30)
        wait_until("the outbox empty", lambda: outbox_rows(db) == 0, 30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    check_exactly_once(store_url, ids)
    record_property("recovery_s", round(all_handled - fault, 2))
    print(f"\nall handled {all_handled - fault:.1f} s after the Redis restart")


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (the fujsen pool of a worker)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):  # a child belongs to the thread that started it
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


@pytest.mark.timeout(180)
@pytest.mark.parametrize("redis_server", [4], indirect=True)
def test_process_isolation_workers_and_their_fujsen_processes_sigkilled(
    tmp_path: Path, redis_server: PrivateRedis, record_property: Any
) -> None:
    """``isolation: "process"``: handlers run in pool processes, their SQL and publishes in the
    worker's transaction. Killed alternately: a worker (and with it its pool) or one pool
    process mid-call (the worker sees the call fail, rolls back, retries)."""
    n = 1500
    path = tmp_path / "isolated.tsk"
    path.write_text(config_text(app='isolation: "process"', first=COUNT_RUNS))
    db = tmp_path / "events.db"
    store_url = f"sqlite:///{db}?synchronous=normal"
    env = process_env(redis_server.url, store_url)
    with Runtime([TSK.from_file(path, env=env)]) as rt:
        ids = publish_orders(rt, n, "order")
        rt.relay.flush()
    rng = random.Random(4)
    marks = sorted(rng.uniform(0.05, 0.85) for _ in range(10))
    workers = [worker(path, env), worker(path, env)]
    t_start = time.monotonic()
    kills = {"worker": 0, "pool process": 0}
    try:
        while sum(kills.values()) < len(marks):
            done = sum(handled_counts(db).values()) / (n * len(SERVICES))
            if done < marks[sum(kills.values())]:
                time.sleep(0.05)
                if time.monotonic() - t_start > 120:
                    raise AssertionError(f"only {done:.0%} handled after 120 s")
                continue
            victim = rng.randrange(len(workers))
            pool = children(workers[victim].pid)
            if sum(kills.values()) % 2 and pool:
                os.kill(rng.choice(pool), signal.SIGKILL)
                kills["pool process"] += 1
            else:
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].wait(10)
                workers[victim] = worker(path, env)
                kills["worker"] += 1
        last_kill = time.monotonic()
        wait_until("every order handled by both services",
                   lambda: handled_counts(db) == {s: n for s in SERVICES}, 120)
        all_handled = time.monotonic()
        wait_until("nothing pending", lambda: pending(redis_server.url) == 0, 30)
        wait_until("the outbox empty", lambda: outbox_rows(db) == 0, 30)
    finally:
        for w in workers:
            pool = children(w.pid)
            w.send_signal(signal.SIGKILL)
            w.wait(10)
            for child in pool:  # orphaned pool processes notice the closed pipe; do not wait on it
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    assert kills["worker"] >= 1 and kills["pool process"] >= 1, kills
    check_exactly_once(store_url, ids)
    import redis

    with redis.Redis.from_url(redis_server.url) as r:
        reruns = sum(1 for svc in SERVICES for v in r.hvals(f"runs:{svc}") if int(v) > 1)
    record_property("after_last_kill_s", round(all_handled - last_kill, 2))
    print(f"\n{n:,} orders, isolation process, kills {kills}; handlers run again after a kill "
          f"{reruns} (their effects once); all handled {all_handled - last_kill:.1f} s after the last kill")


COUNT_RUNS = 'redis.from_url(event_bus).hincrby("runs:SERVICE", event["id"], 1)'
SLOW_FIRST = COUNT_RUNS + '\n    time.sleep(event["payload"].get("slow", 0))'


@pytest.mark.timeout(120)
@pytest.mark.parametrize("redis_server", [3], indirect=True)
def test_a_handler_slower_than_the_visibility_timeout_whose_worker_stalls(
    tmp_path: Path, redis_server: PrivateRedis, record_property: Any
) -> None:
    """Handlers of 2 s, a visibility timeout of 0.5 s: while a worker is alive its heartbeat keeps
    its events; stalled (SIGSTOP) mid-handler, the other worker claims them and runs them too.
    Resumed, the first finishes its runs: the tracking row lets one of each pair commit."""
    import redis

    path = tmp_path / "slow.tsk"
    path.write_text(config_text(first=SLOW_FIRST, visibility_timeout=0.5, service="timeout: 30"))
    db = tmp_path / "events.db"
    store_url = f"sqlite:///{db}?synchronous=normal"
    env = process_env(redis_server.url, store_url)
    r = redis.Redis.from_url(redis_server.url)
    first = worker(path, env)
    second = None
    try:
        with Runtime([TSK.from_file(path, env=env)]) as rt:
            ids = [rt.publish("order", {"slow": 2.0}, id=f"slow-{i}").id for i in range(6)]
            ids += [rt.publish("order", {}, id=f"fast-{i}").id for i in range(20)]
            rt.relay.flush()
        wait_until("the first worker in its handlers",
                   lambda: r.hlen("runs:billing") and r.hlen("runs:shipping"), 60)
        second = worker(path, env)
        wait_until("the second worker in the groups", lambda: all(
            len(r.xinfo_consumers("tusk:stream:order", svc)) == 2 for svc in SERVICES), 60)

        def in_a_handler() -> bool:  # started, not committed (the second worker holds nothing yet)
            done = handled_counts(db)
            return any(r.hlen(f"runs:{svc}") > done.get(svc, 0) for svc in SERVICES)

        wait_until("the first worker in a handler", in_a_handler, 30)
        first.send_signal(signal.SIGSTOP)  # a stall: no heartbeat, the handler does not return
        fault = time.monotonic()
        wait_until("the second worker to run a stalled event", lambda: any(
            int(v) > 1 for svc in SERVICES for v in r.hvals(f"runs:{svc}")), 30)
        first.send_signal(signal.SIGCONT)  # it finishes the runs it was in
        n = len(ids)
        wait_until("every order handled by both services",
                   lambda: handled_counts(db) == {s: n for s in SERVICES}, 90)
        all_handled = time.monotonic()
        wait_until("nothing pending", lambda: pending(redis_server.url) == 0, 30)
        runs = {svc: {k.decode(): int(v) for k, v in r.hgetall(f"runs:{svc}").items()} for svc in SERVICES}
    finally:
        for w in (first, second):
            if w is not None:
                w.send_signal(signal.SIGCONT)
                w.send_signal(signal.SIGKILL)
                w.wait(10)
        r.close()
    twice = sum(1 for svc in SERVICES for v in runs[svc].values() if v > 1)
    assert twice >= 1, "no event ran on both workers: the stall did not reach a handler"
    check_exactly_once(store_url, ids)
    record_property("recovery_s", round(all_handled - fault, 2))
    print(f"\nhandlers run twice: {twice}; all handled {all_handled - fault:.1f} s after the stall began")


def publish_while(rt: Runtime, n: int, prefix: str, ids: list[str]) -> None:
    """Host code publishing; a failed store write is retried with the same id (a no-op if stored)."""
    for i in range(n):
        ids.append(rt.publish("order", {"i": i}, id=f"{prefix}-{i}").id)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("persistence", ["aof-everysec", "rdb"])
def test_redis_with_persistence_crashes_and_restarts_mid_run(
    config: Path, tmp_path: Path, persistence: str, record_property: Any
) -> None:
    """Redis with AOF (appendfsync everysec) or RDB snapshots, SIGKILLed mid-run and restarted.

    With RDB it comes back to its last snapshot: the events sent since, their acks, the dedup
    records and the groups' positions are gone, but the bus epoch is still there.
    """
    options = {"aof-everysec": AOF_EVERYSEC, "rdb": RDB_ONLY}[persistence]
    server = PrivateRedis(7415 + ("aof-everysec", "rdb").index(persistence), tmp_path, options)
    server.start()
    db = tmp_path / "events.db"
    store_url = f"sqlite:///{db}?synchronous=normal"
    env = process_env(server.url, store_url)
    proc = worker(config, env)
    ids: list[str] = []
    try:
        with Runtime([TSK.from_file(config, env=env)]) as rt:
            publish_while(rt, 150, "a", ids)
            wait_until("part of the work done", lambda: min(handled_counts(db).values() or [0]) > 0, 30)
            server.snapshot()
            publish_while(rt, 150, "b", ids)  # on the bus; with RDB, not in the snapshot
            rt.relay.flush()  # their outbox rows are confirmed: only the bus had them
            server.kill()
            fault = time.monotonic()
            publish_while(rt, 10, "c", ids)  # the bus is down: stored, left in the outbox
            server.start()
            restarted = time.monotonic()
            publish_while(rt, 150, "d", ids)
            rt.relay.flush()
        n = len(ids)
        wait_until("every order handled by both services",
                   lambda: handled_counts(db) == {s: n for s in SERVICES}, 60)
        all_handled = time.monotonic()
        wait_until("nothing pending", lambda: pending(server.url) == 0, 30)
        wait_until("the outbox empty", lambda: outbox_rows(db) == 0, 30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        server.kill()
    check_exactly_once(store_url, ids)
    record_property("recovery_s", round(all_handled - fault, 2))
    record_property("after_restart_s", round(all_handled - restarted, 2))
    print(f"\n{persistence}: all handled {all_handled - fault:.1f} s after the crash "
          f"({all_handled - restarted:.1f} s after the restart)")


@pytest.mark.timeout(120)
def test_postgres_restarted_mid_run(config: Path, tmp_path: Path, record_property: Any) -> None:
    pg = PrivatePostgres(7420, tmp_path)
    pg.start()
    try:
        store_url = pg.url
        env = {"EVENT_BUS": "memory://pg-restart", "EVENT_STORE": store_url}
        with Runtime([TSK.from_file(config, env=env)]) as rt:
            stop = threading.Event()
            runner = threading.Thread(target=rt.run, args=(stop,), kwargs={"startup": False})
            runner.start()
            ids = []
            try:
                for i in range(300):
                    if i == 150:
                        fault = time.monotonic()
                        pg.restart()
                    for _ in range(100):  # host code retries with the same id: a no-op if stored
                        try:
                            ids.append(rt.publish("order", {"i": i}, id=f"order-{i}").id)
                            break
                        except StoreError:
                            time.sleep(0.1)
                    else:
                        raise AssertionError("the store did not come back")

                def all_tracked() -> bool:
                    try:
                        return all(rt.store.tracked(s, i) == "handled" for s in SERVICES for i in ids[-5:]) and \
                            all(len(rt.store.untracked(s, ["order"], 0, 0, 10)) == 0 for s in SERVICES)
                    except StoreError:
                        return False

                wait_until("every order handled", all_tracked, 60)
                all_handled = time.monotonic()
                wait_until("nothing pending", lambda: all(
                    g.pending == 0 for g in rt.bus.stream_info(["order"])["order"].groups.values()), 30)
            finally:
                stop.set()
                runner.join(30)
            assert rt.summary.dead_lettered == 0
        check_exactly_once(store_url, ids)
        record_property("recovery_s", round(all_handled - fault, 2))
        print(f"\nall handled {all_handled - fault:.1f} s after the PostgreSQL restart")
    finally:
        pg.remove()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("redis_server", [2], indirect=True)
def test_bus_down_while_host_code_publishes(
    config: Path, tmp_path: Path, redis_server: PrivateRedis, record_property: Any
) -> None:
    """Step by step (one relay pass, forced past its grace); with a worker running, the
    persistence scenarios above publish while the bus is down too."""
    store_url = f"sqlite:///{tmp_path / 'events.db'}?synchronous=normal"
    env = {"EVENT_BUS": redis_server.url, "EVENT_STORE": store_url}
    with Runtime([TSK.from_file(config, env=env)]) as rt:
        rt.relay.tick()  # remembers the bus epoch
        redis_server.kill()
        ids = publish_orders(rt, 5, "down")  # stored; the bus write fails
        assert rt.store.outbox_count() == 5
        assert rt.relay.report.send_failures == 5
        redis_server.start()
        back = time.monotonic()
        assert rt.relay.tick(now=time.time() + 60)
        assert rt.store.outbox_count() == 0
        assert rt.relay.report.sent_from_outbox == 5
        summary = rt.run_until_idle(startup=False)
        assert summary.handled == 10  # 5 orders x 2 services, once each
        record_property("after_bus_back_s", round(time.monotonic() - back, 2))
    check_exactly_once(store_url, ids)
    with Runtime([TSK.from_file(config, env=env)]) as rt:
        assert [e.id for e in rt.store.replay(type="order")] == ids  # the caller's ids
