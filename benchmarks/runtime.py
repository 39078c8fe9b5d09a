"""The runtime on the real Redis: throughput, per-event cost, latency, and a kill test at scale.

    python benchmarks/runtime.py --redis redis://127.0.0.1:6379/13 [--n 20000] [--kill-n 100000]
    python benchmarks/runtime.py --redis redis://127.0.0.1:6379/13 --only progress

The database index of ``--redis`` is flushed before each section (there is no default: name
one you can lose). ``--redis`` may name a Redis Cluster (``redis+cluster://a:7101,b:7102``, or
a node's ``redis://`` URL): every master is flushed then; the kill test on the tests' private
cluster:

    python benchmarks/runtime.py --redis redis+cluster://127.0.0.1:7101 --only kill --kill-n 20000

1. Throughput of one worker (one thread) with a sandboxed handler, retries, dedup and DLQ
   enabled, against a raw redis-py consumer doing batched XREADGROUP/XACK with no handler,
   side by side; and the per-event cost breakdown (sandbox call, dedup, ack).
2. Handling latency (publish -> handled) at a steady 2,000 events/s.
3. ``--only progress``: the cost of ``run``'s progress line, side by side: the runtime with
   no progress, with the plain progress line and with the rich live line (an interval of
   0.1 s, twenty times the terminal default, to make a cost visible if there is one).
4. 100,000 events through a two-service config with 2 worker processes, one killed with
   SIGKILL midway and restarted (``--kills 20``: twenty kills at random points, each worker
   restarted): every event handled by each service, none lost, none left pending, what the
   handlers ``execute``d and ``publish``ed stored exactly once, and the time from the last
   kill until all was handled:

       python benchmarks/runtime.py --redis redis://127.0.0.1:6379/13 --only kill \
           --kill-n 20000 --kills 20
5. Exactly-once tracking on against off (today's path), side by side on SQLite and on
   PostgreSQL in one run, for a handler without SQL and one that ``execute``s an INSERT and
   ``publish``es; each round runs on and off next to each other, and the ratio reported is
   the median of the rounds' ratios:

       python benchmarks/runtime.py --redis redis://127.0.0.1:6379/13 --only tracking \
           --postgres postgresql://postgres@127.0.0.1:5432/test

6. ``--only versions --other TREE``: this tree's runtime against another checkout's (e.g.
   ``git worktree add /tmp/old b6675a8``), fresh processes alternating, events/s and CPU:

       python benchmarks/runtime.py --redis redis://127.0.0.1:6379/13 --only versions \
           --other /tmp/old --rounds 10

Medians of several rounds; the machine is shared, so compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tusk_events import TSK  # noqa: E402
from tusk_events.runtime import signals  # noqa: E402
from tusk_events.runtime.core import Runtime  # noqa: E402

ONE_SERVICE = """
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///bench.db")

[worker]
subscribe: "tick"
retries: 3
handle_fujsen = '''
def handle(event):
    n = event["payload"]["n"]
    if n < 0:
        raise ValueError("negative")
    return {"double": n * 2, "type": event["type"]}
'''
"""

TWO_SERVICES = """
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///bench.db")

[billing]
subscribe: "order"
visibility_timeout: 10.0
handle_fujsen = '''
def handle(event):
    redis.from_url(event_bus).hincrby("runs:billing", event["id"], 1)
    execute("INSERT INTO event_store (event_type, payload) VALUES (?, ?)", "billing_row",
            json.dumps({"order": event["id"]}))
    publish("billed", {"order": event["id"]})
'''

[shipping]
subscribe: "order"
visibility_timeout: 10.0
handle_fujsen = '''
def handle(event):
    redis.from_url(event_bus).hincrby("runs:shipping", event["id"], 1)
    execute("INSERT INTO event_store (event_type, payload) VALUES (?, ?)", "shipping_row",
            json.dumps({"order": event["id"]}))
    publish("shipped", {"order": event["id"]})
'''
"""


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def _client(url: str) -> Any:
    """redis-py's client for ``url``: a ``RedisCluster`` when it names a cluster."""
    from tusk_events.bus import redis_client

    return redis_client(url)


def _flush(url: str) -> None:
    """Empty the benchmark's Redis: its database, or every master of a cluster."""
    from redis.cluster import RedisCluster

    client = _client(url)
    if isinstance(client, RedisCluster):
        client.flushall(target_nodes=RedisCluster.PRIMARIES)
    else:
        client.flushdb()


def raw_consumer(url: str, n: int) -> float:
    """Batched XREADGROUP (100) + one XACK per batch, no handler: the floor."""
    r = _client(url)
    r.delete("raw:stream")
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd("raw:stream", {"event": b'{"type":"tick","payload":{"n":%d}}' % i})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    r.xgroup_create("raw:stream", "g", id="0")
    t0 = time.perf_counter()
    done = 0
    while done < n:
        reply = r.xreadgroup("g", "c", {"raw:stream": ">"}, count=100)
        if not reply:
            break
        ids = [mid for mid, _ in reply[0][1]]
        r.xack("raw:stream", "g", *ids)
        done += len(ids)
    return n / (time.perf_counter() - t0)


def runtime_consumer(url: str, n: int, store_url: str) -> tuple[float, float]:
    """Events/s of Runtime.run_until_idle on n pre-published events; and handler-call µs."""
    _flush(url)
    cfg = TSK.from_string(ONE_SERVICE, env={"EVENT_BUS": url, "EVENT_STORE": store_url})
    with Runtime([cfg]) as rt:
        rt.bus.publish_many(("tick", {"n": i}) for i in range(n))
        t0 = time.perf_counter()
        rt.run_until_idle(startup=False)
        rate = n / (time.perf_counter() - t0)
        assert rt.summary.handled == n, rt.summary.to_dict()
        handler = cfg.fujsen("worker", "handle")
        ev = {"id": "x", "type": "tick", "payload": {"n": 1}, "metadata": {}, "timestamp": 0.0}
        t1 = time.perf_counter()
        for _ in range(20000):
            handler(ev)
        call_us = (time.perf_counter() - t1) / 20000 * 1e6
    return rate, call_us


def bus_consumer(url: str, n: int, *, dedup: bool) -> float:
    """The bus alone with a no-op Python handler, with or without dedup."""
    from tusk_events.bus import connect

    _flush(url)
    bus = connect(url)
    try:
        bus.publish_many(("tick", {"n": i}) for i in range(n))
        sub = bus.subscribe(lambda e: None, ["tick"], group="g", dedup_ttl_s=3600 if dedup else None)
        t0 = time.perf_counter()
        sub.run_until_idle()
        return n / (time.perf_counter() - t0)
    finally:
        bus.close()


def progress_consumer(url: str, n: int, store_url: str, mode: str, interval: float) -> tuple[float, float]:
    """Events/s of Runtime.run_until_idle with ``run``'s progress line in ``mode`` (or none); and
    the share of the run's wall time spent drawing progress lines (measured around each tick)."""
    import contextlib
    import io

    from tusk_events.observe.progress import Progress

    spent = [0.0]

    class Timed(Progress):
        def _show(self, text: str) -> None:
            t = time.perf_counter()
            try:
                super()._show(text)
            finally:
                spent[0] += time.perf_counter() - t

        def line(self) -> str:
            t = time.perf_counter()
            try:
                return super().line()
            finally:
                spent[0] += time.perf_counter() - t

    _flush(url)
    cfg = TSK.from_string(ONE_SERVICE, env={"EVENT_BUS": url, "EVENT_STORE": store_url})
    with Runtime([cfg]) as rt:
        rt.bus.publish_many(("tick", {"n": i}) for i in range(n))
        shown = io.StringIO()
        watcher: Any = (contextlib.nullcontext() if mode == "none"
                        else Timed(rt, interval=interval, stream=shown, tty=mode == "rich"))
        t0 = time.perf_counter()
        with watcher:
            rt.run_until_idle(startup=False)
        elapsed = time.perf_counter() - t0
        assert rt.summary.handled == n, rt.summary.to_dict()
    return n / elapsed, spent[0] / elapsed


def bench_progress(url: str, n: int, rounds: int, store_url: str, interval: float = 0.1) -> None:
    modes = ("none", "plain", "rich")
    rates: dict[str, list[float]] = {m: [] for m in modes}
    shares: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(rounds):
        for m in modes[r % 3:] + modes[: r % 3]:  # rotate the order: no mode always runs first
            rate, share = progress_consumer(url, n, store_url, m, interval)
            rates[m].append(rate)
            shares[m].append(share)
    med = {m: _median(v) for m, v in rates.items()}
    # the ratio within each round (runs next to each other) resists the shared machine's drift
    ratio = {m: _median([a / b for a, b in zip(rates[m], rates["none"])]) for m in modes}
    print(f"progress line cost: one worker, {n:,} events on {url}, a line every {interval:g}s "
          f"({rounds} interleaved rounds)")
    print("  mode     median events/s   median per-round ratio to no progress   time in progress lines")
    for m in modes:
        print(f"  {m:6} {med[m]:12,.0f}        {ratio[m]:.3f}x                              "
              f"{_median(shares[m]) * 100:.2f}%")


def bench_throughput(url: str, n: int, rounds: int, store_url: str) -> None:
    raw, bus_plain, bus_dedup, rt, calls = [], [], [], [], []
    for _ in range(rounds):
        raw.append(raw_consumer(url, n))
        bus_plain.append(bus_consumer(url, n, dedup=False))
        bus_dedup.append(bus_consumer(url, n, dedup=True))
        rate, call_us = runtime_consumer(url, n, store_url)
        rt.append(rate)
        calls.append(call_us)
    m = {k: _median(v) for k, v in
         dict(raw=raw, bus=bus_plain, dedup=bus_dedup, runtime=rt, call=calls).items()}
    print(f"one worker, {n:,} events on {url} (median events/s of {rounds} rounds)")
    print(f"  raw redis-py batched XREADGROUP/XACK, no handler  {m['raw']:10,.0f}")
    print(f"  bus, no-op Python handler                          {m['bus']:10,.0f}   {m['bus'] / m['raw']:.2f}x raw")
    print(f"  bus + dedup (MGET per batch, SET+XACK in MULTI)    {m['dedup']:10,.0f}   {m['dedup'] / m['raw']:.2f}x raw")
    print(f"  runtime: sandboxed handler, retries, dedup, DLQ    {m['runtime']:10,.0f}   {m['runtime'] / m['raw']:.2f}x raw")
    per = {k: 1e6 / m[k] for k in ("raw", "bus", "dedup", "runtime")}
    print("  per-event cost breakdown (µs, from the medians above)")
    print(f"    read + ack (raw floor)                {per['raw']:7.1f}")
    print(f"    envelope decode + dispatch (bus)      {per['bus'] - per['raw']:7.1f}")
    print(f"    dedup                                 {per['dedup'] - per['bus']:7.1f}")
    print(f"    sandbox call (measured alone)         {m['call']:7.1f}")
    print(f"    rest of the runtime (signals, retry)  {per['runtime'] - per['dedup'] - m['call']:7.1f}")


def bench_latency(url: str, rate: int, seconds: float, store_url: str) -> None:
    _flush(url)
    cfg = TSK.from_string(ONE_SERVICE, env={"EVENT_BUS": url, "EVENT_STORE": store_url})
    latencies: list[float] = []

    def on_handled(event, **_):  # type: ignore[no-untyped-def]
        latencies.append(time.time() - event.timestamp)

    signals.handled.connect(on_handled)
    try:
        with Runtime([cfg]) as rt:
            stop = threading.Event()
            worker = threading.Thread(target=rt.run, args=(stop,), kwargs={"startup": False}, daemon=True)
            worker.start()
            time.sleep(0.5)
            total = int(rate * seconds)
            t0 = time.perf_counter()
            for i in range(total):
                due = t0 + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                rt.bus.publish("tick", {"n": i})
            end = time.monotonic() + 10
            while len(latencies) < total and time.monotonic() < end:
                time.sleep(0.01)
            stop.set()
            worker.join(15)
    finally:
        signals.handled.disconnect(on_handled)
    lat = sorted(latencies)
    p50, p99 = lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000
    print(f"latency publish -> handled at a steady {rate:,} events/s for {seconds:g}s ({len(lat):,} events)")
    print(f"  p50 {p50:.3f} ms   p99 {p99:.3f} ms")


def bench_kill(url: str, n: int, tmp: Path, kills: int = 1) -> None:
    import random

    r = _client(url)
    _flush(url)
    cfg_path = tmp / "two.tsk"
    cfg_path.write_text(TWO_SERVICES)
    # synchronous=normal: WAL commits without an fsync each (the default FULL is fsync-bound)
    env = dict(os.environ, EVENT_BUS=url, EVENT_STORE=f"sqlite:///{tmp / 'kill.db'}?synchronous=normal",
               PYTHONPATH=str(ROOT))
    cfg = TSK.from_file(cfg_path, env=env)
    with Runtime([cfg]) as rt:
        rt.bus.publish_many(("order", {"n": i}) for i in range(n))
    from tusk_events.store import open_store

    store = open_store(env["EVENT_STORE"])

    def worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "tusk_events", "run", str(cfg_path), "--no-startup"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def started() -> int:
        return int(r.hlen("runs:billing") + r.hlen("runs:shipping"))

    # kill points: midway for one kill, else random shares of all handlings
    rng = random.Random(17)
    marks = [0.5] if kills == 1 else sorted(rng.uniform(0.02, 0.9) for _ in range(kills))
    t0 = time.perf_counter()
    workers = [worker(), worker()]
    killed_at = []
    for mark in marks:
        while started() < mark * 2 * n:
            time.sleep(0.01)
        victim = rng.randrange(len(workers))
        workers[victim].send_signal(signal.SIGKILL)
        workers[victim].wait()
        killed_at.append(started())
        workers[victim] = worker()  # restarted, as a supervisor would
    last_kill = time.perf_counter()
    while store.count(type="billing_row") < n or store.count(type="shipping_row") < n:
        time.sleep(0.05)
        if time.perf_counter() - t0 > 1200:
            break
    elapsed = time.perf_counter() - t0
    after_last_kill = time.perf_counter() - last_kill
    for w in workers:
        w.send_signal(signal.SIGTERM)
        w.wait(30)
    from tusk_events.bus import connect

    bus = connect(url)
    pending = sum(g.pending for g in bus.stream_info(["order"])["order"].groups.values())
    bus.close()
    where = f"after {killed_at[0]:,} handlings" if kills == 1 else f"at random points ({min(killed_at):,} " \
        f"to {max(killed_at):,} handlings started)"
    print(f"kill test: {n:,} events x 2 services, 2 workers, {kills} SIGKILL(s) {where}, each worker restarted")
    for svc, effect in (("billing", "billed"), ("shipping", "shipped")):
        runs = [int(v) for v in r.hvals(f"runs:{svc}")]
        applied = store.count(type=effect)
        rows = store.count(type=f"{svc}_row")
        print(f"  {svc:9} handled {len(runs):,}/{n:,} (lost {n - len(runs)}); publish effects "
              f"{applied:,} (double-applied {applied - len(runs)}); execute effects {rows:,} "
              f"(double-applied {rows - len(runs)}); redis-helper re-runs (at least once) "
              f"{sum(1 for v in runs if v > 1)}")
    print(f"  pending after the run {pending}; outbox rows left {store.outbox_count()}; all handled "
          f"{after_last_kill:.1f} s after the last kill (with the work left then; visibility_timeout "
          f"10 s); {2 * n / elapsed:,.0f} handlings/s overall "
          "(each handling commits its INSERT, its published event and its tracking row to SQLite, "
          "synchronous=normal)")
    store.close()


EFFECTS_SERVICE = """
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///bench.db")

[worker]
subscribe: "tick"
retries: 3
handle_fujsen = '''
def handle(event):
    execute("INSERT INTO event_store (event_type, payload) VALUES (?, ?)", "effect",
            json.dumps({"n": event["payload"]["n"]}))
    publish("tock", {"n": event["payload"]["n"]})
'''
"""


def _pg_schema(pg_url: str) -> tuple[str, Any]:
    """A fresh schema on PostgreSQL; returns its store URL and a function dropping it."""
    import uuid

    import psycopg

    from tusk_events.store.postgres import fujsen_role_name

    schema = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in pg_url else "?"

    def drop() -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            role = fujsen_role_name(conn.execute("SELECT current_database()").fetchone()[0], schema)
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(f'DROP OWNED BY "{role}"')
                conn.execute(f'DROP ROLE "{role}"')
            conn.execute(f"DROP SCHEMA {schema} CASCADE")

    return f"{pg_url}{sep}options=-csearch_path%3D{schema}", drop


def tracked_run(url: str, n: int, store_url: str, config: str, tracking: bool) -> tuple[float, float]:
    """Events/s of run_until_idle on n pre-published events, tracking on or off; and the
    process's CPU µs per event (every thread: the tracking writer's too)."""
    _flush(url)
    cfg = TSK.from_string(config, env={"EVENT_BUS": url, "EVENT_STORE": store_url})
    with Runtime([cfg], tracking=tracking) as rt:
        rt.bus.publish_many(("tick", {"n": i}) for i in range(n))
        t0, c0 = time.perf_counter(), time.process_time()
        rt.run_until_idle(startup=False)
        rate, cpu = n / (time.perf_counter() - t0), (time.process_time() - c0) / n * 1e6
        assert rt.summary.handled == n, rt.summary.to_dict()
    return rate, cpu


def bench_tracking(url: str, n: int, rounds: int, tmp: Path, pg_url: str | None) -> dict[str, float]:
    """Tracking on against off, side by side; returns the median per-round on/off ratios."""
    from tusk_events.fujsen import helpers

    print(f"exactly-once tracking on vs off (today's path), one worker, {n:,} events on {url} "
          f"({n // 10:,} for execute+publish, whose commits bound it), {rounds} rounds, on and off "
          "next to each other in each round (their order alternates), one process")
    print("  store      handler            median events/s: off      on   on/off    "
          "CPU µs/event: off      on   off/on")
    backends = [("sqlite", None)] + ([("postgresql", pg_url)] if pg_url else [])
    ratios: dict[str, float] = {}
    for backend, base in backends:
        for label, config in (("no SQL", ONE_SERVICE), ("execute+publish", EFFECTS_SERVICE)):
            rates: dict[bool, list[float]] = {False: [], True: []}
            cpus: dict[bool, list[float]] = {False: [], True: []}
            for r in range(rounds):
                for tracking in ((False, True) if r % 2 == 0 else (True, False)):
                    if base is None:
                        store_url, drop = f"sqlite:///{tmp}/track-{r}-{tracking}-{label[:2]}.db", None
                    else:
                        store_url, drop = _pg_schema(base)
                    try:
                        size = n if config is ONE_SERVICE else max(1, n // 10)  # commit-bound
                        rate, cpu = tracked_run(url, size, store_url, config, tracking)
                        rates[tracking].append(rate)
                        cpus[tracking].append(cpu)
                    finally:
                        store = helpers._stores.pop(store_url, None)
                        if store is not None:
                            store.close()
                        if drop is not None:
                            drop()
            # the ratio within each round (runs next to each other) resists the shared machine's drift
            ratio = _median([b / a for a, b in zip(rates[False], rates[True])])
            cpu_ratio = _median([a / b for a, b in zip(cpus[False], cpus[True])])
            ratios[f"{backend} {label}"] = ratio
            print(f"  {backend:10} {label:16} {_median(rates[False]):20,.0f} {_median(rates[True]):8,.0f}   "
                  f"{ratio:.2f}x {_median(cpus[False]):20,.1f} {_median(cpus[True]):7,.1f}   {cpu_ratio:.2f}x")
    return ratios


_ONE_RUN = """
import sys, tempfile, time
import redis
from tusk_events import TSK
try:
    from tusk_events.runtime.core import Runtime
except ImportError:  # an older tree: one runtime module
    from tusk_events.runtime import Runtime
url, n, config = sys.argv[1], int(sys.argv[2]), sys.argv[3]
redis.Redis.from_url(url).flushdb()
store = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
cfg = TSK.from_string(config, env={"EVENT_BUS": url, "EVENT_STORE": store})
with Runtime([cfg]) as rt:
    rt.bus.publish_many(("tick", {"n": i}) for i in range(n))
    t0, c0 = time.perf_counter(), time.process_time()
    rt.run_until_idle(startup=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert rt.summary.handled == n, rt.summary.to_dict()
print(n / wall, cpu / n * 1e6)
"""


def bench_versions(url: str, n: int, rounds: int, other: Path) -> None:
    """This tree's runtime against another checkout's (``git worktree add /tmp/old <commit>``),
    one fresh process each, alternating, with the throughput section's config."""

    def one(tree: Path) -> tuple[float, float]:
        env = dict(os.environ, PYTHONPATH=str(tree))
        out = subprocess.run([sys.executable, "-c", _ONE_RUN, url, str(n), ONE_SERVICE], env=env, cwd=tempfile.gettempdir(),
                             capture_output=True, text=True, check=True).stdout.split()
        return float(out[-2]), float(out[-1])

    here: list[tuple[float, float]] = []
    there: list[tuple[float, float]] = []
    for r in range(rounds):
        for tree in ((ROOT, other) if r % 2 == 0 else (other, ROOT)):
            (here if tree == ROOT else there).append(one(tree))
    rate = _median([a[0] / b[0] for a, b in zip(here, there)])
    cpu = _median([b[1] / a[1] for a, b in zip(here, there)])
    print(f"runtime throughput, this tree vs {other} (one worker, {n:,} events on {url}, {rounds} "
          "alternating pairs of fresh processes)")
    print(f"  median events/s  this {_median([h[0] for h in here]):10,.0f}   other {_median([t[0] for t in there]):10,.0f}"
          f"   median pair ratio {rate:.2f}x")
    print(f"  CPU µs/event     this {_median([h[1] for h in here]):10.1f}   other {_median([t[1] for t in there]):10.1f}"
          f"   median pair ratio (other/this) {cpu:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis", required=True, metavar="URL",
                    help="a real Redis, e.g. redis://127.0.0.1:6379/13; its DB index is FLUSHED")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kill-n", type=int, default=100000)
    ap.add_argument("--kills", type=int, default=1, help="SIGKILLs of workers in the kill test (at random points)")
    sections = ["throughput", "latency", "kill", "progress", "tracking", "versions"]
    ap.add_argument("--skip", action="append", default=[], choices=sections)
    ap.add_argument("--only", choices=sections, help="run one section")
    ap.add_argument("--progress-interval", type=float, default=0.1, metavar="S",
                    help="seconds between progress lines in the progress section")
    ap.add_argument("--postgres", metavar="URL",
                    help="also measure tracking on PostgreSQL (a fresh schema, dropped after)")
    ap.add_argument("--tracking-n", type=int, default=10000,
                    help="events per tracking run (a tenth for execute+publish); short runs measure start-up")
    ap.add_argument("--other", metavar="TREE", type=Path,
                    help="the versions section: another checkout of tusk_events to compare against")
    args = ap.parse_args()
    if args.only:
        args.skip = [s for s in sections if s != args.only]
    elif args.other is None:
        args.skip.append("versions")
    if "versions" not in args.skip and args.other is None:
        ap.error("--only versions needs --other TREE")
    with tempfile.TemporaryDirectory() as tmp:
        store_url = f"sqlite:///{tmp}/bench.db"
        if "progress" not in args.skip:
            bench_progress(args.redis, args.n, max(args.rounds, 5), store_url, args.progress_interval)
            if args.only == "progress" and args.progress_interval != 2.0:
                bench_progress(args.redis, args.n, max(args.rounds, 5), store_url, 2.0)  # the terminal default
        if "throughput" not in args.skip:
            bench_throughput(args.redis, args.n, args.rounds, store_url)
        if "latency" not in args.skip:
            bench_latency(args.redis, 2000, 5, store_url)
        if "kill" not in args.skip:
            bench_kill(args.redis, args.kill_n, Path(tmp), args.kills)
        if "tracking" not in args.skip:
            bench_tracking(args.redis, args.tracking_n, args.rounds, Path(tmp), args.postgres)
        if "versions" not in args.skip:
            bench_versions(args.redis, args.n, max(args.rounds, 6), args.other.resolve())


if __name__ == "__main__":
    main()
