"""Cost of running code as a fujsen, against the same work in plain Python / raw redis-py.

    python benchmarks/fujsen.py [--redis redis://127.0.0.1:6379/15] [--rounds 7]

Prints medians over interleaved rounds (the machine is shared: compare the ratios, which
are measured side by side in one process, not the absolute numbers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tusk_events import TSK  # noqa: E402

HEAVY_SRC = """
def heavy(n):
    total = 0
    counts = {}
    words = []
    for i in range(n):
        total += i * i
        key = "k" + str(i % 10)
        counts[key] = counts.get(key, 0) + 1
        if i % 100 == 0:
            words.append(key.upper())
    return total, sorted(counts.items())[:2], "-".join(words)[:30]
"""

CONFIG = f"""
[bench]
add_fujsen = '''
def add(a, b):
    return a + b
'''
heavy_fujsen = '''{HEAVY_SRC}'''
"""


def add(a: int, b: int) -> int:
    return a + b


namespace: dict[str, object] = {}
exec(HEAVY_SRC, namespace)
heavy = namespace["heavy"]


def per_call_us(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def median_rounds(cases: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, run in cases.items():  # interleaved: drift hits every case alike
            samples[name].append(run())
    return {k: statistics.median(v) for k, v in samples.items()}


def bench_overhead(rounds: int) -> None:
    cfg = TSK.from_string(CONFIG, env={})
    f = cfg.fujsen("bench", "add")
    n = 50_000
    m = median_rounds(
        {
            "plain": lambda: per_call_us(lambda: add(1, 2), n),
            "fujsen": lambda: per_call_us(lambda: f(1, 2), n),
            "execute_fujsen": lambda: per_call_us(lambda: cfg.execute_fujsen("bench", "add", 1, 2), n),
        },
        rounds,
    )
    print("per-call cost of a trivial function (median µs per call)")
    print(f"  plain Python call           {m['plain']:8.3f}")
    print(f"  TSK.fujsen(...)()           {m['fujsen']:8.3f}   overhead {m['fujsen'] - m['plain']:.3f} µs")
    print(f"  execute_fujsen(...)         {m['execute_fujsen']:8.3f}   overhead {m['execute_fujsen'] - m['plain']:.3f} µs")

    h = cfg.fujsen("bench", "heavy")
    assert h(5000) == heavy(5000)
    m = median_rounds(
        {
            "plain": lambda: per_call_us(lambda: heavy(20_000), 5) / 1000,
            "fujsen": lambda: per_call_us(lambda: h(20_000), 5) / 1000,
        },
        rounds,
    )
    print("compute-heavy function, 20,000 iterations of int/dict/str work (median ms per call)")
    print(f"  plain Python                {m['plain']:8.3f}")
    print(f"  fujsen                      {m['fujsen']:8.3f}   speed {m['plain'] / m['fujsen']:.2f}x plain")


def bench_publish(url: str, rounds: int) -> None:
    import redis

    raw = redis.Redis.from_url(url)
    try:
        raw.ping()
    except redis.RedisError as err:
        print(f"publish benchmark skipped: {url} unreachable ({err})")
        return
    cfg = TSK.from_file(ROOT / "configs" / "event_system.tsk", env={"EVENT_BUS": url})
    publish = cfg.fujsen("event_system", "publish_event")
    n = 5_000

    def raw_loop() -> float:
        t0 = time.perf_counter()
        for i in range(n):
            event = {"type": "user_registered", "payload": {"user_id": i}, "metadata": {}, "timestamp": time.time()}
            raw.publish("tusk_events", json.dumps(event))
        return n / (time.perf_counter() - t0)

    def fujsen_loop() -> float:
        t0 = time.perf_counter()
        for i in range(n):
            publish("user_registered", {"user_id": i})
        return n / (time.perf_counter() - t0)

    m = median_rounds({"raw": raw_loop, "fujsen": fujsen_loop}, rounds)
    print(f"the docs' publish_event on {url} (median events/s, {n} per round)")
    print(f"  raw redis-py PUBLISH loop   {m['raw']:10,.0f}")
    print(f"  publish_event fujsen        {m['fujsen']:10,.0f}   ratio {m['fujsen'] / m['raw']:.2f}x raw")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    bench_overhead(args.rounds)
    bench_publish(args.redis, args.rounds)


if __name__ == "__main__":
    main()
