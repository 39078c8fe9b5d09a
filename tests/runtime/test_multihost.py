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
from typing import Any

import pytest

from tests.runtime.hosts import GATEWAY, Hosts, descendants, netns_unavailable
from tests.runtime.private_servers import PrivatePostgres, PrivateRedis
from tusk_events.defaults import POSTGRES_DEAD_PEER_S

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("billing", "shipping")
HOSTS = 3
ORDERS = 2000
LATER = 100
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


class Progress:
    """Handled counts over time (seconds from creation), and when host 1 held nothing any more."""

    def __init__(self, pg_url: str, redis_url: str, host_pids: set[int]) -> None:
        self.pg_url, self.redis_url, self.host_pids = pg_url, redis_url, host_pids
        self.t0 = time.monotonic()
        self.times: list[float] = []
        self.counts: list[int] = []
        self.taken_over: float | None = None
        self.stall_end = 0.0

    def sample(self) -> int:
        n = sum(handled(self.pg_url).values())
        self.times.append(time.monotonic() - self.t0)
        self.counts.append(n)
        return n

    def until_all_handled(self, total: int, timeout: float) -> None:
        while self.sample() < total or self.taken_over is None:
            if self.taken_over is None and not any(
                int(c["pending"]) for c in of_host(consumers(self.redis_url), self.host_pids)
            ):
                self.taken_over = self.times[-1]
            if self.times[-1] > timeout:
                raise AssertionError(
                    f"{self.counts[-1]}/{total} handled {timeout} s after the cut-off"
                    + ("" if self.taken_over is not None else "; host 1 still holds entries"))
            time.sleep(0.1)

    def longest_stall(self) -> float:
        """The longest time without a newly handled event (where it ended: ``stall_end``)."""
        best, since = 0.0, 0.0
        for i in range(1, len(self.times)):
            if self.counts[i] > self.counts[i - 1]:
                if self.times[i] - since > best:
                    best, self.stall_end = self.times[i] - since, self.times[i]
                since = self.times[i]
        return best

    def rate(self, start: float = 0.0) -> float:
        """Handlings per second from ``start`` to the last sample."""
        i = next(k for k, t in enumerate(self.times) if t >= start)
        span = self.times[-1] - self.times[i]
        return (self.counts[-1] - self.counts[i]) / span if span > 0 else 0.0


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


def all_handled(pg_url: str, n: int) -> Callable[[], bool]:
    """A check: every service has handled ``n`` orders."""
    return lambda: handled(pg_url) == {svc: n for svc in SERVICES}


def effects_by_host(pg_url: str, orders: set[str]) -> Counter[int]:
    from tusk_events.store import open_store

    with open_store(pg_url) as store:
        return Counter(
            e.payload["host"] for svc in SERVICES for e in store.replay(type=f"{svc}_effect")
            if e.payload["order"] in orders
        )


def consumers(redis_url: str) -> list[dict[str, Any]]:
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


def reading_from(redis_url: str, address: str) -> bool:
    """Whether a client at ``address`` is waiting on XREADGROUP now (it is connected and reading)."""
    import redis

    r = redis.Redis.from_url(redis_url)
    try:
        return any(c["addr"].startswith(f"{address}:") and c["cmd"] == "xreadgroup" and int(c["idle"]) <= 2
                   for c in r.client_list())
    finally:
        r.close()


def of_host(cons: list[dict[str, Any]], pids: set[int]) -> list[dict[str, Any]]:
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

    pg = PrivatePostgres(PG_PORT, tmp_path, host=GATEWAY, clients="10.231.77.0/24")
    redis_server: PrivateRedis | None = None
    try:
        redis_server = PrivateRedis(REDIS_PORT, tmp_path, host=GATEWAY)
        pg.start()
        redis_server.start()
        env = dict(os.environ, EVENT_BUS=redis_server.url, EVENT_STORE=pg.url,
                   PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
        configs = []
        for i in range(1, HOSTS + 1):
            path = tmp_path / f"host{i}.tsk"
            path.write_text(config_text(i))
            configs.append(path)
        with Runtime([TSK.from_file(configs[0], env=env)]) as rt:  # creates the store's tables
            rt.relay.tick()
        # every order first, then the hosts: on a loaded machine publishing can be slower than handling
        with Runtime([TSK.from_file(configs[0], env=env)]) as rt:
            t0 = time.monotonic()
            ids = [rt.publish("order", {"i": n}, id=f"order-{n}").id for n in range(ORDERS)]
            rt.relay.flush()
        publish_s = time.monotonic() - t0
        total = ORDERS * len(SERVICES)
        logs = [open(tmp_path / f"host{i}.log", "wb") for i in range(1, HOSTS + 1)]
        sups = [
            hosts.spawn(i, [sys.executable, "-m", "tusk_events", "run", str(configs[i - 1]),
                            "--processes", "2", "--no-startup", "-q"],
                        env=env, cwd=ROOT, out=logs[i - 1])
            for i in range(1, HOSTS + 1)
        ]
        try:
            wait_until("a third of the orders handled",
                       lambda: sum(handled(pg.url).values()) >= total // 3, 60)
            host1 = set(descendants(sups[0].pid))
            before = Progress(pg.url, redis_server.url, host1)
            before.sample()
            time.sleep(2.0)
            before.sample()
            held = 0
            for _ in range(100):  # cut while it holds entries (read, not yet acknowledged)
                held = sum(int(c["pending"]) for c in of_host(consumers(redis_server.url), host1))
                if held:
                    break
                time.sleep(0.02)
            hosts.cut(1)
            after = Progress(pg.url, redis_server.url, host1)
            try:
                after.until_all_handled(ORDERS * len(SERVICES), timeout=90)
            except AssertionError as e:
                raise AssertionError(f"{e}\n{diagnose(redis_server.url, pg.url)}") from None
            wait_until("nothing pending", lambda: pending(redis_server.url) == 0, 30)
            assert held > 0 and after.counts[0] < total, "host 1 was not cut off mid-stream"
            print(f"\n{HOSTS} hosts x 2 processes, {ORDERS} orders x {len(SERVICES)} services "
                  f"(published in {publish_s:.1f} s); visibility timeout {VISIBILITY_S:g} s, "
                  f"PostgreSQL dead-peer bound {POSTGRES_DEAD_PEER_S} s")
            print(f"host 1 cut off at {after.counts[0]}/{total} handled, holding {held} unacknowledged entries "
                  f"(rate before: {before.rate():.0f} handlings/s on {HOSTS} hosts)")
            print(f"no handling committed for {after.longest_stall():.1f} s; host 1's entries taken over "
                  f"{after.taken_over:.1f} s after the cut-off; all handled {after.times[-1]:.1f} s after it "
                  f"(rate after the stall: {after.rate(after.stall_end):.0f} handlings/s on {HOSTS - 1} hosts)")

            hosts.restore(1)
            back = time.monotonic()
            for sup in sups:
                assert sup.poll() is None, "a supervisor exited while its host was cut off"
            rejoined = wait_until("host 1 reading the bus again",
                                  lambda: reading_from(redis_server.url, hosts.address(1)), 60)
            later: list[str] = []
            with Runtime([TSK.from_file(configs[0], env=env)]) as rt:
                while True:  # rounds of orders until host 1 has handled some: it is back at work
                    later += [rt.publish("order", {"i": n}, id=f"later-{n}").id
                              for n in range(len(later), len(later) + LATER)]
                    rt.relay.flush()
                    wait_until("the later orders handled", all_handled(pg.url, ORDERS + len(later)), 60)
                    by_host = effects_by_host(pg.url, set(later))
                    if by_host[1] or time.monotonic() - back > 60:
                        break
            working = time.monotonic() - back
            wait_until("nothing pending", lambda: pending(redis_server.url) == 0, 30)
            print(f"host 1 reading the bus again {rejoined:.1f} s after its link came back; by {working:.1f} s "
                  f"it had handled {by_host[1]} of {len(later) * len(SERVICES)} new handlings")
            assert by_host[1] > 0, f"host 1 handled no new order in 60 s after rejoining: {dict(by_host)}"
            assert sum(by_host.values()) == len(later) * len(SERVICES)
            check_exactly_once(pg.url, ids + later)
            with Runtime([TSK.from_file(configs[0], env=env)]) as rt:
                assert [rt.dlq.count(svc) for svc in SERVICES] == [0, 0], "dead-lettered orders"
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
        if redis_server is not None:
            redis_server.kill()
        pg.remove()
