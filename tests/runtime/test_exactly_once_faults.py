"""Fault injection on private servers: every effect exactly once, nothing lost, nothing pending.

Handlers ``execute`` an INSERT and ``publish`` an event. Scenarios: worker processes
SIGKILLed mid-run; Redis (no persistence) killed and restarted mid-run, losing every stream,
group and dedup record; PostgreSQL restarted mid-run; the bus down while host code publishes.
Sizes are modest to keep each test well under a minute; ``benchmarks/runtime.py --kill-n``
runs the large version.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.private_servers import PrivatePostgres, PrivateRedis
from tusk_events import TSK
from tusk_events.errors import StoreError
from tusk_events.runtime.core import Runtime

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("billing", "shipping")

CONFIG = """
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
    for svc in SERVICES
)


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
    import os

    return dict(os.environ, EVENT_BUS=redis_url, EVENT_STORE=store_url, PYTHONPATH=str(ROOT))


@pytest.mark.timeout(120)
def test_workers_sigkilled_mid_run(config: Path, tmp_path: Path, redis_server: PrivateRedis) -> None:
    n = 600
    db = tmp_path / "events.db"
    store_url = f"sqlite:///{db}?synchronous=normal"
    env = process_env(redis_server.url, store_url)
    cfg = TSK.from_file(config, env=env)
    with Runtime([cfg]) as rt:
        ids = publish_orders(rt, n, "order")
        rt.relay.flush()
    workers = [worker(config, env), worker(config, env)]
    rng = random.Random(17)
    kills = 0
    try:
        while kills < 6 and min(handled_counts(db).values() or [0]) < n * 0.9:
            time.sleep(rng.uniform(0.3, 0.9))
            victim = rng.randrange(len(workers))
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait(10)
            workers[victim] = worker(config, env)
            kills += 1
        wait_until("every order handled by both services",
                   lambda: handled_counts(db) == {s: n for s in SERVICES}, 90)
        wait_until("nothing pending", lambda: pending(redis_server.url) == 0, 30)
    finally:
        for w in workers:
            w.send_signal(signal.SIGKILL)
            w.wait(10)
    assert kills >= 1
    check_exactly_once(store_url, ids)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("redis_server", [1], indirect=True)
def test_redis_restarted_without_persistence_mid_run(
    config: Path, tmp_path: Path, redis_server: PrivateRedis
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
            redis_server.restart()  # streams, groups, dedup records, the epoch: all gone
            t0 = time.monotonic()
            ids += publish_orders(rt, n // 2, "after")  # bus down for the first ones: outbox
            rt.relay.flush()
        recovery = wait_until("every order handled by both services",
                              lambda: handled_counts(db) == {s: n for s in SERVICES}, 60)
        wait_until("nothing pending", lambda: pending(redis_server.url) == 0, 30)
        print(f"recovered {time.monotonic() - t0:.1f} s after the Redis restart "
              f"(waited {recovery:.1f} s after the last publish)")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    check_exactly_once(store_url, ids)


@pytest.mark.timeout(120)
def test_postgres_restarted_mid_run(config: Path, tmp_path: Path) -> None:
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

                recovery = wait_until("every order handled", all_tracked, 60)
                print(f"all handled {recovery:.1f} s after the last publish")
                wait_until("nothing pending", lambda: all(
                    g.pending == 0 for g in rt.bus.stream_info(["order"])["order"].groups.values()), 30)
            finally:
                stop.set()
                runner.join(30)
            assert rt.summary.dead_lettered == 0
        check_exactly_once(store_url, ids)
    finally:
        pg.remove()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("redis_server", [2], indirect=True)
def test_bus_down_while_host_code_publishes(config: Path, tmp_path: Path, redis_server: PrivateRedis) -> None:
    store_url = f"sqlite:///{tmp_path / 'events.db'}?synchronous=normal"
    env = {"EVENT_BUS": redis_server.url, "EVENT_STORE": store_url}
    with Runtime([TSK.from_file(config, env=env)]) as rt:
        rt.relay.tick()  # remembers the bus epoch
        redis_server.kill()
        ids = publish_orders(rt, 5, "down")  # stored; the bus write fails
        assert rt.store.outbox_count() == 5
        assert rt.relay.report.send_failures == 5
        redis_server.start()
        assert rt.relay.tick(now=time.time() + 60)
        assert rt.store.outbox_count() == 0
        assert rt.relay.report.sent_from_outbox == 5
        summary = rt.run_until_idle(startup=False)
        assert summary.handled == 10  # 5 orders x 2 services, once each
    check_exactly_once(store_url, ids)
    with Runtime([TSK.from_file(config, env=env)]) as rt:
        assert [e.id for e in rt.store.replay(type="order")] == ids  # the caller's ids
