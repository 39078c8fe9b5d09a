"""Bus throughput and latency on a real Redis, each figure next to raw redis-py doing the same work.

    python benchmarks/bus.py [--url redis://127.0.0.1:6379/15] [--rounds 5] [--quick]
    python benchmarks/bus.py --url nats://127.0.0.1:4222 | amqp://guest:guest@127.0.0.1:5672/  (benchmarks/bus_brokers.py)

Only the database index of ``--url`` is flushed (before each round and at the end). Figures are
medians over ``--rounds`` rounds, bus and raw interleaved so both see the same machine state.

* publish, single: ``bus.publish`` vs one pipelined XADD (MAXLEN ~) + PUBLISH of a JSON envelope
  (round-trip bound, so it runs 4x as many, shorter rounds: on a shared machine the
  round-trip time jumps between modes and a few long rounds can land on one side)
* publish, pipelined: ``bus.publish_many`` vs the same commands pipelined 1,000 events at a time
* durable consume: XREADGROUP COUNT 100 -> decode -> handler -> one XACK per batch, on a
  pre-filled stream; bus ``run_until_idle`` vs a raw redis-py loop; and end to end
  (pipelined XADD of every event, then consume) for both
* latency at a steady rate (publisher in another process): broadcast and durable, p50/p99 of
  (handler entered - event timestamp)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from tusk_events.bus import connect
from tusk_events.events import Event

CHANNEL = b"tusk_events"
PREFIX = "tusk:stream:"
MAXLEN = 100_000
BATCH = 100
PAYLOAD = {"user_id": 12345, "email": "ada@example.com", "plan": "pro", "tags": ["a", "b"]}


def envelope(type: str, i: int) -> bytes:
    """What a hand-written publisher sends: the docs' four fields."""
    return json.dumps(
        {"type": type, "payload": {**PAYLOAD, "i": i}, "metadata": {}, "timestamp": time.time()}
    ).encode()


def median_rate(n: int, seconds: list[float]) -> float:
    return n / statistics.median(seconds)


# --- publish -------------------------------------------------------------------------


def bench_publish_single(url: str, r: redis.Redis, n: int, rounds: int) -> tuple[float, float]:
    bus = connect(url)
    key = PREFIX + "bench"

    def raw() -> None:
        for i in range(n):
            data = envelope("bench", i)
            pipe = r.pipeline(transaction=False)
            pipe.xadd(key, {"event": data}, maxlen=MAXLEN, approximate=True)
            pipe.publish(CHANNEL, data)
            pipe.execute()

    def ours() -> None:
        for i in range(n):
            bus.publish("bench", {**PAYLOAD, "i": i})

    b, w = _interleave(r, rounds * 4, ours, raw)
    bus.close()
    return median_rate(n, b), median_rate(n, w)


def bench_publish_pipelined(url: str, r: redis.Redis, n: int, rounds: int) -> tuple[float, float]:
    bus = connect(url)
    key = PREFIX + "bench"
    chunk = 1000

    def raw() -> None:
        for start in range(0, n, chunk):
            pipe = r.pipeline(transaction=False)
            for i in range(start, min(n, start + chunk)):
                data = envelope("bench", i)
                pipe.xadd(key, {"event": data}, maxlen=MAXLEN, approximate=True)
                pipe.publish(CHANNEL, data)
            pipe.execute()

    def ours() -> None:
        for start in range(0, n, chunk):
            bus.publish_many(("bench", {**PAYLOAD, "i": i}) for i in range(start, min(n, start + chunk)))

    b, w = _interleave(r, rounds, ours, raw)
    bus.close()
    return median_rate(n, b), median_rate(n, w)


def _interleave(
    r: redis.Redis, rounds: int, ours: Callable[[], None], raw: Callable[[], None]
) -> tuple[list[float], list[float]]:
    b: list[float] = []
    w: list[float] = []
    for k in range(rounds):
        for fn, out in ((ours, b), (raw, w)) if k % 2 == 0 else ((raw, w), (ours, b)):
            r.flushdb()
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return b, w


# --- durable consume -----------------------------------------------------------------


def _fill(r: redis.Redis, key: str, n: int) -> None:
    for start in range(0, n, 1000):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(n, start + 1000)):
            pipe.xadd(key, {"event": envelope("bench", i)}, maxlen=MAXLEN, approximate=True)
        pipe.execute()


def bench_durable(url: str, r: redis.Redis, n: int, rounds: int) -> dict[str, tuple[float, float]]:
    key = PREFIX + "bench"
    bus = connect(url, publish_to="durable")
    seen = [0]

    def handler(event: Any) -> None:
        seen[0] += 1

    def raw_consume(group: str) -> None:
        r.xgroup_create(key, group, "0", mkstream=True)
        while True:
            reply: Any = r.xreadgroup(group, "c1", {key: ">"}, count=BATCH)
            if not reply:
                break
            _, entries = reply[0]
            for _id, fields in entries:
                handler(json.loads(fields[b"event"]))
            r.xack(key, group, *[e[0] for e in entries])

    def bus_consume(group: str) -> None:
        sub = bus.subscribe(handler, ["bench"], group=group, consumer="c1", batch=BATCH)
        sub.run_until_idle(timeout=120)

    consume: dict[str, list[float]] = {"bus": [], "raw": []}
    e2e: dict[str, list[float]] = {"bus": [], "raw": []}
    for k in range(rounds):
        order = ("bus", "raw") if k % 2 == 0 else ("raw", "bus")
        for who in order:
            # consume only: the stream is filled beforehand
            r.flushdb()
            _fill(r, key, n)
            seen[0] = 0
            t0 = time.perf_counter()
            (bus_consume if who == "bus" else raw_consume)(f"g{k}")
            consume[who].append(time.perf_counter() - t0)
            assert seen[0] == n, (who, seen[0])
            # end to end: publish every event (pipelined XADD), then consume them
            r.flushdb()
            seen[0] = 0
            t0 = time.perf_counter()
            if who == "bus":
                for start in range(0, n, 1000):
                    bus.publish_many(("bench", {**PAYLOAD, "i": i}) for i in range(start, min(n, start + 1000)))
                bus_consume(f"e{k}")
            else:
                _fill(r, key, n)
                raw_consume(f"e{k}")
            e2e[who].append(time.perf_counter() - t0)
            assert seen[0] == n, (who, seen[0])
    bus.close()
    return {
        "consume": (median_rate(n, consume["bus"]), median_rate(n, consume["raw"])),
        "e2e": (median_rate(n, e2e["bus"]), median_rate(n, e2e["raw"])),
    }


# --- latency -------------------------------------------------------------------------


def publisher_main(argv: list[str]) -> None:
    """Child process: publish at a steady rate, starting at the agreed wall-clock time."""
    impl, mode, url, rate, count, start_at = argv[0], argv[1], argv[2], float(argv[3]), int(argv[4]), float(argv[5])
    key = (PREFIX + "lat").encode()
    if impl == "bus":
        bus = connect(url, publish_to="durable" if mode == "durable" else "broadcast")

        def send(i: int) -> None:
            bus.publish("lat", {**PAYLOAD, "i": i})
    else:
        r = redis.Redis.from_url(url)

        def send(i: int) -> None:
            data = envelope("lat", i)
            if mode == "durable":
                r.xadd(key, {"event": data}, maxlen=MAXLEN, approximate=True)
            else:
                r.publish(CHANNEL, data)

    while time.time() < start_at:
        time.sleep(0.001)
    t0 = time.perf_counter()
    for i in range(count):
        left = t0 + i / rate - time.perf_counter()
        if left > 0:
            time.sleep(left)  # sleep, never spin: the consumer and Redis need the CPUs
        send(i)


def _latency_round(url: str, r: redis.Redis, impl: str, mode: str, rate: float, seconds: float) -> list[float]:
    r.flushdb()
    count = int(rate * seconds)
    lat: list[float] = []
    key = PREFIX + "lat"
    start_at = time.time() + 0.5
    child = [sys.executable, os.path.abspath(__file__), "--publisher", impl, mode, url, str(rate), str(count), str(start_at)]
    deadline = time.monotonic() + seconds + 10
    if impl == "bus":
        bus = connect(url)

        done = threading.Event()

        def handler(event: Event) -> None:
            lat.append(time.time() - event.timestamp)
            if len(lat) >= count:
                done.set()

        if mode == "durable":
            sub = bus.subscribe(handler, ["lat"], group="lat", consumer="c1", batch=BATCH, block_ms=200)
        else:
            sub = bus.subscribe(handler, ["lat"], mode="broadcast")
        # Subscribe first (as the raw loop does), then consume in this thread, like the raw loop.
        sub.start()
        sub.stop()
        proc = subprocess.Popen(child)
        threading.Timer(max(0.0, deadline - time.monotonic()), done.set).start()
        sub.run(stop_event=done)
        bus.close()
    else:
        proc = subprocess.Popen(child)
        if mode == "durable":
            r.xgroup_create(key, "lat", "0", mkstream=True)
            while len(lat) < count and time.monotonic() < deadline:
                reply: Any = r.xreadgroup("lat", "c1", {key: ">"}, count=BATCH, block=1000)
                if not reply:
                    continue
                _, entries = reply[0]
                for _id, fields in entries:
                    lat.append(time.time() - json.loads(fields[b"event"])["timestamp"])
                r.xack(key, "lat", *[e[0] for e in entries])
        else:
            ps = r.pubsub(ignore_subscribe_messages=True)
            ps.subscribe(CHANNEL)
            while len(lat) < count and time.monotonic() < deadline:
                msg = ps.get_message(timeout=0.05)
                if msg is not None:
                    lat.append(time.time() - json.loads(msg["data"])["timestamp"])
            ps.close()
    proc.wait(10)
    if len(lat) < count:
        raise SystemExit(f"{impl} {mode}: received {len(lat)} of {count} events")
    return lat[int(rate * 0.1) :]  # drop the first 100 ms (connection warm-up)


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def bench_latency(url: str, r: redis.Redis, rate: float, seconds: float, rounds: int) -> dict[str, dict[str, tuple[float, float]]]:
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for mode in ("broadcast", "durable"):
        p: dict[str, dict[str, list[float]]] = {"bus": {"p50": [], "p99": []}, "raw": {"p50": [], "p99": []}}
        for k in range(rounds):
            for impl in ("bus", "raw") if k % 2 == 0 else ("raw", "bus"):
                lat = _latency_round(url, r, impl, mode, rate, seconds)
                p[impl]["p50"].append(_pct(lat, 50))
                p[impl]["p99"].append(_pct(lat, 99))
        out[mode] = {
            q: (statistics.median(p["bus"][q]), statistics.median(p["raw"][q])) for q in ("p50", "p99")
        }
    return out


# --- report --------------------------------------------------------------------------


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--publisher":
        publisher_main(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, metavar="URL",
                    help="a real Redis, e.g. redis://127.0.0.1:6379/15; its DB index is FLUSHED")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    ap.add_argument("--rate", type=float, default=2000.0, help="events/s for the latency runs")
    ap.add_argument("--only", choices=("publish", "durable", "latency"), help="run one section")
    args = ap.parse_args()
    if args.url.startswith(("nats://", "amqp://", "amqps://")):  # the broker buses: durable consume
        from bus_brokers import run

        return run(args.url, 2 if args.quick else args.rounds, args.quick)
    if not args.url.startswith(("redis://", "rediss://", "unix://")):
        ap.error("--url must name a real Redis (redis://, rediss:// or unix://)")
    r = redis.Redis.from_url(args.url)
    r.ping()
    from redis.utils import HIREDIS_AVAILABLE

    single_n, pipe_n, consume_n = (500, 10_000, 10_000) if args.quick else (1000, 50_000, 50_000)
    lat_rounds, lat_s = (1, 1.0) if args.quick else (3, 2.0)
    rounds = 2 if args.quick else args.rounds
    print(f"redis {r.info('server')['redis_version']} at {args.url}, redis-py {redis.__version__}, "
          f"hiredis {'on' if HIREDIS_AVAILABLE else 'off'}, {rounds} rounds (medians)\n")
    rows: list[tuple[str, float, float, str, bool]] = []
    try:
        if args.only in (None, "publish"):
            b, w = bench_publish_single(args.url, r, single_n, rounds)
            rows.append(("publish single (ev/s)", b, w, ">= 0.8x", b / w >= 0.8))
            b, w = bench_publish_pipelined(args.url, r, pipe_n, rounds)
            rows.append(("publish pipelined (ev/s)", b, w, ">= 0.8x", b / w >= 0.8))
        if args.only in (None, "durable"):
            d = bench_durable(args.url, r, consume_n, rounds)
            b, w = d["consume"]
            rows.append(("durable consume (ev/s)", b, w, ">= 0.5x", b / w >= 0.5))
            b, w = d["e2e"]
            rows.append(("durable end to end (ev/s)", b, w, ">= 0.5x", b / w >= 0.5))
        if args.only in (None, "latency"):
            lat = bench_latency(args.url, r, args.rate, lat_s, lat_rounds)
            for mode in ("broadcast", "durable"):
                for q in ("p50", "p99"):
                    b, w = lat[mode][q]
                    target = "<= 1 ms" if q == "p99" else ""
                    rows.append((f"{mode} {q} @ {args.rate:g}/s (ms)", b * 1000, w * 1000, target,
                                 b <= 0.001 if q == "p99" else True))
    finally:
        r.flushdb()
    print(f"{'':34} {'bus':>11} {'raw':>11} {'bus/raw':>8}  target")
    for name, b, w, target, ok in rows:
        unit_fmt = "{:>11.3f}" if "(ms)" in name else "{:>11,.0f}"
        print(f"{name:34} {unit_fmt.format(b)} {unit_fmt.format(w)} {b / w:>7.2f}x  {target} {'' if not target else ('ok' if ok else 'MISSED')}")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
