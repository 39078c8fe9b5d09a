"""Cost of process isolation: the same fujsen and the same runtime, inline and in the worker pool.

    python benchmarks/isolation.py [--rounds 31] [--events 2000] [--quick]

* per-call overhead: a trivial fujsen (``add(a, b)``) through ``TSK.fujsen(...)``, inline vs
  ``isolation="process"``; the overhead is the median of the per-round differences;
* a proxied helper call: a fujsen doing one ``redis.from_url(event_bus).get(...)`` on
  ``memory://`` (in the pool the command travels to the parent and back);
* runtime throughput: ``Runtime`` on ``memory://`` and a temporary SQLite store, one durable
  service whose handler builds a small dict; N events published on the bus, then
  ``run_until_idle()`` timed; events/s inline vs process.
* the same trivial call and runtime with ``trust="untrusted"``: hardened workers (Landlock,
  seccomp, nobody), the strict decoder and the operator's policy.

* ``--placement``: the same calls and runtime with the worker held on another CPU than the
  caller (what the scheduler may choose when that CPU is idle) vs following the caller's CPU
  (the pool's way), alternated in one process; Linux with two CPUs or more.

Every figure is a median over interleaved rounds in one process (the machine is shared:
compare the ratios, measured side by side, rather than absolute numbers).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tusk_events import TSK  # noqa: E402
from tusk_events.runtime.core import Runtime  # noqa: E402

CALLS = """
[bench]
event_bus: "memory://isolation-bench"
add_fujsen = '''
def add(a, b):
    return a + b
'''
get_fujsen = '''
def get(key):
    return redis.from_url(event_bus).get(key)
'''
"""

SERVICE = """
[orders]
subscribe: "order_placed"
handle_fujsen = '''
def handle(event):
    order = event["payload"]
    total = 0
    for line in order["lines"]:
        total += line["qty"] * line["price"]
    return {"order": order["id"], "total": total, "lines": len(order["lines"])}
'''
"""


def per_call_us(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def bench_calls(rounds: int, n: int) -> dict[str, float]:
    inline = TSK.from_string(CALLS, env={}, isolation="inline")
    isolated = TSK.from_string(CALLS, env={}, isolation="process")
    fi, fp = inline.fujsen("bench", "add"), isolated.fujsen("bench", "add")
    gi, gp = inline.fujsen("bench", "get"), isolated.fujsen("bench", "get")
    untrusted = TSK.from_string(CALLS, env={}, trust="untrusted")
    fu = untrusted.fujsen("bench", "add")
    fp.pool.start()
    fu.pool.start()
    for _ in range(200):
        fu(1, 2)
    for f in (fi, fp, gi, gp):  # warm: definitions reach the workers, clients open
        for _ in range(200):
            f(1, 2) if f in (fi, fp) else f("k")
    keys = ("inline", "process", "overhead", "get_inline", "get_process", "untrusted", "overhead_untrusted")
    samples: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(rounds):
        a = per_call_us(lambda: fi(1, 2), n)
        b = per_call_us(lambda: fp(1, 2), n)
        samples["inline"].append(a)
        samples["process"].append(b)
        samples["overhead"].append(b - a)
        c = per_call_us(lambda: fu(1, 2), n)
        samples["untrusted"].append(c)
        samples["overhead_untrusted"].append(c - a)
        samples["get_inline"].append(per_call_us(lambda: gi("k"), n // 4))
        samples["get_process"].append(per_call_us(lambda: gp("k"), n // 4))
    return {k: statistics.median(v) for k, v in samples.items()}


def run_runtime(isolation: str, events: int, store_dir: str) -> float:
    """``isolation`` is inline, process, or untrusted (process with the untrusted policy)."""
    """Events handled per second by one durable service (publishing not timed)."""
    env = {
        "EVENT_BUS": f"memory://bench-{uuid.uuid4().hex[:8]}",
        "EVENT_STORE": f"sqlite:///{store_dir}/{uuid.uuid4().hex[:8]}.db",
    }
    if isolation == "untrusted":
        cfg = TSK.from_string(SERVICE, env=env, trust="untrusted")
    else:
        cfg = TSK.from_string(SERVICE, env=env, isolation=isolation)
    with Runtime([cfg]) as rt:
        for i in range(events):
            lines = [{"qty": q, "price": 9.5} for q in range(1, 4)]
            rt.bus.publish("order_placed", {"id": i, "lines": lines})
        t0 = time.perf_counter()
        summary = rt.run_until_idle(startup=False)
        seconds = time.perf_counter() - t0
    assert summary.handled == events, summary.to_dict()
    return events / seconds


def bench_runtime(rounds: int, events: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {"inline": [], "process": [], "untrusted": []}
    with tempfile.TemporaryDirectory() as store_dir:
        run_runtime("process", 50, store_dir)  # start the pools once
        run_runtime("untrusted", 50, store_dir)
        for _ in range(rounds):
            for mode in samples:
                samples[mode].append(run_runtime(mode, events, store_dir))
    out = {k: statistics.median(v) for k, v in samples.items()}
    out["ratio"] = statistics.median([p / i for i, p in zip(samples["inline"], samples["process"])])
    out["ratio_untrusted"] = statistics.median([u / i for i, u in zip(samples["inline"], samples["untrusted"])])
    return out


def bench_placement(rounds: int, n: int, events: int) -> dict[str, float]:
    """Worker held on another CPU than the caller vs following it (the pool's way), side by side."""
    import os

    from tusk_events.fujsen import pool as pool_module

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if pool_module._current_cpu is None or len(cpus) < 2:
        raise SystemExit("--placement needs Linux and two CPUs")
    inline = TSK.from_string(CALLS, env={}, isolation="inline").fujsen("bench", "add")
    fp = TSK.from_string(CALLS, env={}, isolation="process").fujsen("bench", "add")
    fu = TSK.from_string(CALLS, env={}, trust="untrusted").fujsen("bench", "add")
    fp.pool.start()
    fu.pool.start()

    def place(follow: bool) -> None:
        os.sched_setaffinity(0, {cpus[0]})  # this thread only
        for p in pool_module._pools.values():
            for w in p._workers:
                w.cpus = set(cpus)
                w.cpu = -1 if follow else -2
                if not follow:
                    os.sched_setaffinity(w.pid, {cpus[-1]})

    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as store_dir:
        run_runtime("process", 50, store_dir)
        run_runtime("untrusted", 50, store_dir)
        for _ in range(rounds):
            base_call = per_call_us(lambda: inline(1, 2), n)
            base_rt = run_runtime("inline", events, store_dir)
            for follow in (True, False):
                place(follow)
                tag = "follow" if follow else "other_cpu"
                for mode, f in (("process", fp), ("untrusted", fu)):
                    samples.setdefault(f"overhead_{mode}_{tag}", []).append(per_call_us(functools.partial(f, 1, 2), n) - base_call)
                    samples.setdefault(f"ratio_{mode}_{tag}", []).append(run_runtime(mode, events, store_dir) / base_rt)
    os.sched_setaffinity(0, set(cpus))
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--calls", type=int, default=2000, help="calls per round and case")
    parser.add_argument("--events", type=int, default=2000, help="events per runtime round")
    parser.add_argument("--runtime-rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke run")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--placement", action="store_true", help="worker on another CPU vs following the caller")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.calls, args.events, args.runtime_rounds = 5, 500, 300, 2

    if args.placement:
        rounds = args.runtime_rounds
        placed = bench_placement(rounds, args.calls, args.events)
        if args.json:
            print(json.dumps(placed, indent=2))
            return
        print(f"worker placement (median of {rounds} alternated rounds; ratios vs the round's inline runtime)")
        for mode in ("process", "untrusted"):
            print(f"  {mode:9s} overhead: other CPU {placed[f'overhead_{mode}_other_cpu']:6.2f} us,"
                  f" following {placed[f'overhead_{mode}_follow']:6.2f} us;"
                  f" runtime ratio: other CPU {placed[f'ratio_{mode}_other_cpu']:.2f},"
                  f" following {placed[f'ratio_{mode}_follow']:.2f}")
        return

    calls = bench_calls(args.rounds, args.calls)
    runtime = bench_runtime(args.runtime_rounds, args.events)
    if args.json:
        print(json.dumps({"calls_us": calls, "runtime_events_per_s": runtime}, indent=2))
        return
    print(f"per call (median of {args.rounds} interleaved rounds x {args.calls} calls)")
    print(f"  trivial fujsen   inline {calls['inline']:7.2f} us   process {calls['process']:7.2f} us"
          f"   overhead {calls['overhead']:6.2f} us  (target <= 20)")
    print(f"  untrusted        inline {calls['inline']:7.2f} us   process {calls['untrusted']:7.2f} us"
          f"   overhead {calls['overhead_untrusted']:6.2f} us  (target <= 20)")
    print(f"  redis get        inline {calls['get_inline']:7.2f} us   process {calls['get_process']:7.2f} us"
          f"   overhead {calls['get_process'] - calls['get_inline']:6.2f} us")
    print(f"runtime, one durable service on memory:// (median of {args.runtime_rounds} rounds x {args.events} events)")
    print(f"  inline {runtime['inline']:8.0f} events/s   process {runtime['process']:8.0f} events/s"
          f"   ratio {runtime['ratio']:.2f}  (target >= 0.6)")
    print(f"  untrusted {runtime['untrusted']:8.0f} events/s   ratio {runtime['ratio_untrusted']:.2f}  (target >= 0.6)")


if __name__ == "__main__":
    main()
