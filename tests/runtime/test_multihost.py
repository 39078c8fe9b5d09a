"""Workers on several hosts share one bus; one host is cut off mid-stream, then comes back.

Three network namespaces stand for three machines, each running ``tusk-events run
--processes 2`` against one Redis (the bus) and one PostgreSQL (the store), both listening
on the bridge address. Handlers ``execute`` an INSERT (tagged with their host) and
``publish`` an event. While the orders are being handled, host 1's link is set down: its
workers hold unacknowledged entries and open store transactions that nobody can finish. The
other hosts must claim those entries after the visibility timeout and handle them; every
effect is stored exactly once. Then the link comes back and host 1 handles new orders again.
Run with ``-s`` to see the figures (recovery time: cut-off to everything handled).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.runtime.hosts import GATEWAY, Hosts, descendants, netns_unavailable
from tests.runtime.private_servers import PrivatePostgres, PrivateRedis

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("billing", "shipping")
HOSTS = 3
ORDERS = 2000
LATER = 300
VISIBILITY_S = 2.0
REDIS_PORT, PG_PORT = 7540, 7541


def config_text(host: int) -> str:
    return """
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///unused.db")
redeliver_since: "1h"
""" + "".join(
        f"""
[{svc}]
subscribe: "order"
visibility_timeout: {VISIBILITY_S}
retries: 10
backoff: 0.01
handle_fujsen = '''
def handle(event):
    execute("INSERT INTO event_store (event_type, payload) VALUES (?, ?)",
            "{svc}_effect", json.dumps({{"order": event["id"], "host": {host}}}))
    publish("{svc}_done", {{"order": event["id"]}})
'''
"""
        for svc in SERVICES
    )


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with Hosts(HOSTS) as made:
        yield made


def wait_until(what: str, ok: Callable[[], bool], timeout: float) -> float:
    t0 = time.monotonic()
    while not ok():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - t0


def handled(pg_url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT service, count(*) FROM tusk_tracking WHERE outcome = 'handled' GROUP BY service"
        ).fetchall()
    return {svc: int(n) for svc, n in rows}


def effects_by_host(pg_url: str, orders: set[str]) -> Counter[int]:
    from tusk_events.store import open_store

    with open_store(pg_url) as store:
        return Counter(
            e.payload["host"] for svc in SERVICES for e in store.replay(type=f"{svc}_effect")
            if e.payload["order"] in orders
        )


def consumers(redis_url: str) -> list[dict[str, object]]:
    """Every consumer of every group on the order stream (name, pending, idle)."""
    import redis

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        key = next(iter(r.scan_iter(match="*stream*order")))
        return [c for g in r.xinfo_groups(key) for c in r.xinfo_consumers(key, g["name"])]
    finally:
        r.close()


def pending(redis_url: str) -> int:
    import redis

    r = redis.Redis.from_url(redis_url)
    try:
        return sum(int(g["pending"]) for k in r.scan_iter(match="*stream*") for g in r.xinfo_groups(k))
    finally:
        r.close()


def of_host(cons: list[dict[str, object]], pids: set[int]) -> list[dict[str, object]]:
    """The consumers whose name carries one of ``pids`` (``<hostname>-<pid>-<service>-<n>``)."""
    return [c for c in cons if any(f"-{pid}-" in str(c["name"]) for pid in pids)]


def diagnose(redis_url: str, pg_url: str) -> str:
    """What the bus and the store are waiting on, for a failure message."""
    import psycopg

    lines = [f"consumer {c['name']}: pending {c['pending']}, idle {c['idle']} ms" for c in consumers(redis_url)]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for row in conn.execute(
            "SELECT client_addr, state, wait_event_type, wait_event, now() - xact_start, left(query, 60) "
            "FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
            "ORDER BY client_addr"
        ):
            lines.append("pg: " + " | ".join(str(v) for v in row))
    return "\n".join(lines)


def check_exactly_once(pg_url: str, order_ids: list[str]) -> None:
    from tusk_events.store import open_store

    with open_store(pg_url) as store:
        for svc in SERVICES:
            effects = Counter(e.payload["order"] for e in store.replay(type=f"{svc}_effect"))
            done = Counter(e.payload["order"] for e in store.replay(type=f"{svc}_done"))
            assert sorted(effects) == sorted(done) == sorted(order_ids), f"{svc}: lost events"
            assert max(effects.values()) == 1, f"{svc}: duplicate execute effects"
            assert max(done.values()) == 1, f"{svc}: duplicate publish effects"


@pytest.mark.timeout(180)
def test_host_cut_off_mid_stream_and_back(hosts: Hosts, tmp_path: Path) -> None:
    from tusk_events import TSK
    from tusk_events.runtime.core import Runtime

    redis_server = PrivateRedis(REDIS_PORT, tmp_path, host=GATEWAY)
    redis_server.start()
    pg = PrivatePostgres(PG_PORT, tmp_path, host=GATEWAY, clients="10.231.77.0/24")
    try:
        pg.start()
        env = dict(os.environ, EVENT_BUS=redis_server.url, EVENT_STORE=pg.url,
                   PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
        configs = []
        for i in range(1, HOSTS + 1):
            path = tmp_path / f"host{i}.tsk"
            path.write_text(config_text(i))
            configs.append(path)
        with Runtime([TSK.from_file(configs[0], env=env)]) as rt:  # creates the store's tables
            rt.relay.tick()
        logs = [open(tmp_path / f"host{i}.log", "wb") for i in range(1, HOSTS + 1)]
        sups = [
            hosts.spawn(i, [sys.executable, "-m", "tusk_events", "run", str(configs[i - 1]),
                            "--processes", "2", "--no-startup", "-q"],
                        env=env, cwd=ROOT, stdout=logs[i - 1], stderr=logs[i - 1])
            for i in range(1, HOSTS + 1)
        ]
        try:
            with Runtime([TSK.from_file(configs[0], env=env)]) as rt:
                t0 = time.monotonic()
                ids = [rt.publish("order", {"i": n}, id=f"order-{n}").id for n in range(ORDERS)]
                rt.relay.flush()
            publish_s = time.monotonic() - t0
            total = ORDERS * len(SERVICES)
            wait_until("a third of the orders handled",
                       lambda: sum(handled(pg.url).values()) >= total // 3, 60)
            host1 = set(descendants(sups[0].pid))
            held = sum(int(c["pending"]) for c in of_host(consumers(redis_server.url), host1))
            done_at_cut = sum(handled(pg.url).values())
            hosts.cut(1)
            cut = time.monotonic()
            try:
                taken_over = wait_until(
                    "host 1's pending entries claimed by the other hosts",
                    lambda: sum(int(c["pending"]) for c in of_host(consumers(redis_server.url), host1)) == 0, 60)
                recovery = wait_until(
                    "every order handled by both services",
                    lambda: handled(pg.url) == {s: ORDERS for s in SERVICES}, 90) + taken_over
            except AssertionError as e:
                raise AssertionError(f"{e}\n{diagnose(redis_server.url, pg.url)}") from None
            wait_until("nothing pending", lambda: pending(redis_server.url) == 0, 30)
            print(f"\n{HOSTS} hosts x 2 processes, {ORDERS} orders x {len(SERVICES)} services "
                  f"(published in {publish_s:.1f} s); host 1 cut off at {done_at_cut}/{total} handled, "
                  f"holding {held} unacknowledged entries; visibility timeout {VISIBILITY_S:g} s")
            print(f"its entries taken over {taken_over:.1f} s after the cut-off; "
                  f"everything handled {recovery:.1f} s after it")

            hosts.restore(1)
            back = time.monotonic()
            for sup in sups:
                assert sup.poll() is None, "a supervisor exited while its host was cut off"
            host1 = set(descendants(sups[0].pid))

            def host1_reading() -> bool:
                mine = of_host(consumers(redis_server.url), host1)
                return len(mine) > 0 and min(int(c.get("inactive", c["idle"])) for c in mine) < 1000

            rejoined = wait_until("host 1 reading the bus again", host1_reading, 60)
            with Runtime([TSK.from_file(configs[0], env=env)]) as rt:
                later = [rt.publish("order", {"i": n}, id=f"later-{n}").id for n in range(LATER)]
                rt.relay.flush()
            wait_until("the later orders handled",
                       lambda: handled(pg.url) == {s: ORDERS + LATER for s in SERVICES}, 60)
            wait_until("nothing pending", lambda: pending(redis_server.url) == 0, 30)
            by_host = effects_by_host(pg.url, set(later))
            print(f"host 1 reading again {rejoined:.1f} s after its link came back; "
                  f"it handled {by_host[1]} of the {LATER * len(SERVICES)} later handlings "
                  f"({time.monotonic() - back:.1f} s after the link came back all were done)")
            assert by_host[1] > 0, f"host 1 did not handle any new order after rejoining: {dict(by_host)}"
            assert sum(by_host.values()) == LATER * len(SERVICES)
            check_exactly_once(pg.url, ids + later)
            for sup in sups:
                assert sup.poll() is None, "a supervisor gave up"
        finally:
            codes = [hosts.stop(sup) for sup in sups]
            for f in logs:
                f.close()
        for i, code in enumerate(codes, 1):
            text = (tmp_path / f"host{i}.log").read_text(errors="replace")
            assert code in (0, 143), f"host {i} exited {code}:\n{text[-3000:]}"
    finally:
        redis_server.kill()
        pg.remove()
