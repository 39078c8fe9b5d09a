"""The runtime on one Redis against a Redis Cluster, with 1, 2 and 4 worker processes.

    python benchmarks/scale.py --redis redis://127.0.0.1:6379/13 \
        --cluster redis+cluster://127.0.0.1:7101,127.0.0.1:7102 [--n 4000] [--rounds 3]

Both are emptied first: ``--redis``'s database index is flushed, and every master of
``--cluster`` (name only a cluster you can lose; the tests' private one on 7101-7106 is fine).

For each (bus, processes): publish ``--n`` events, then time ``tusk-events run --until-idle
--processes P`` draining them, start-up and the idle check included (the same on both buses:
compare the ratio; a larger ``--n`` makes it a smaller share). The run's summary must report
every event handled. Medians of ``--rounds``. Events/s per worker process and per core are printed (``os.cpu_count()``: with
more processes than cores the per-core figure is the meaningful one), and the cluster's
figure as a ratio of the single server's in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tusk_events.bus import connect  # noqa: E402

CONFIG = """
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///bench.db")

[worker]
subscribe: "tick"
retries: 3
handle_fujsen = '''
def handle(event):
    return {"double": event["payload"]["n"] * 2}
'''
"""


def _empty(url: str) -> None:
    bus = connect(url)
    try:
        if bus.cluster:  # type: ignore[attr-defined]
            from redis.cluster import RedisCluster

            bus.client.flushall(target_nodes=RedisCluster.PRIMARIES)  # type: ignore[attr-defined]
        else:
            bus.client.flushdb()  # type: ignore[attr-defined]
    finally:
        bus.close()


def _drain(url: str, processes: int, cfg: Path, tmp: Path, n: int) -> float:
    env = dict(os.environ, EVENT_BUS=url, EVENT_STORE=f"sqlite:///{tmp / 'bench.db'}",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "tusk_events", "run", str(cfg), "--until-idle",
                          "--processes", str(processes)], env=env, capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - t0
    if out.returncode != 0 or f"handled {n}," not in out.stdout:
        raise SystemExit(f"run failed on {url}: {out.stdout[-500:]} {out.stderr[-1500:]}")
    (tmp / "bench.db").unlink(missing_ok=True)
    return took


def measure(url: str, processes: int, n: int, rounds: int, cfg: Path, tmp: Path) -> float:
    rates = []
    for _ in range(rounds):
        _empty(url)
        bus = connect(url)
        bus.publish_many(("tick", {"n": i}) for i in range(n))
        bus.close()
        rates.append(n / _drain(url, processes, cfg, tmp, n))
    _empty(url)
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis", required=True, help="a single Redis database you can lose (flushed)")
    ap.add_argument("--cluster", required=True, help="a Redis Cluster you can lose (every master flushed)")
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--processes", default="1,2,4")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cfg = tmp / "scale.tsk"
        cfg.write_text(CONFIG)
        print(f"{args.n} events, median of {args.rounds} rounds, {cores} cores on this machine")
        print(f"{'processes':>9}  {'one Redis ev/s':>14}  {'cluster ev/s':>12}  {'per worker 1/C':>15}  "
              f"{'per core 1/C':>13}  {'cluster/one':>11}")
        for p in (int(x) for x in args.processes.split(",")):
            one = measure(args.redis, p, args.n, args.rounds, cfg, tmp)
            clu = measure(args.cluster, p, args.n, args.rounds, cfg, tmp)
            used = min(p, cores)
            print(f"{p:>9}  {one:>14.0f}  {clu:>12.0f}  {one / p:>7.0f}/{clu / p:<7.0f}  "
                  f"{one / used:>6.0f}/{clu / used:<6.0f}  {clu / one:>11.2f}")


if __name__ == "__main__":
    main()
