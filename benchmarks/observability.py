"""The runtime's throughput with observability off and on, side by side in one run.

    python benchmarks/observability.py --redis-url redis://127.0.0.1:6379/15 [--events 20000] [--rounds 5]
                                       [--no-redis] [--sample 1 0.01]

A one-service config handles N events that were put on the bus beforehand (``publish_many``,
not timed); the timed part is ``Runtime.run_until_idle`` (its idle tail is ~3 ms). Modes:

* ``off``: no receiver but the runtime's own summary;
* ``metrics``: :class:`tusk_events.observe.metrics.Metrics` connected, the bus gauges registered (not
  scraped: a scrape costs nothing between scrapes);
* ``all@R``: the above, plus OpenTelemetry spans (``tracing.instrument``: SDK
  ``TracerProvider``, ``BatchSpanProcessor`` into an exporter that drops the spans, flushed
  inside the timed part; sampler ``ParentBased(TraceIdRatioBased(R))``, one mode per ``--sample``
  ratio), plus the logging setup of the CLI (JSON lines, the event context filter).

Handler shapes: ``consume`` (the fujsen reads the payload: the cheapest real handler, so the
worst case for the ratio; the events carry no ``traceparent``, so every one is a new trace
root the consumer's sampler decides on), ``consume, traced`` (the same, with the events
stamped as a traced producer stamps them, the decision made upstream) and ``consume+publish``
(it also publishes one follow-up event: a store append and a bus publish per event, as in the
main example's services; --events / 5 of them; the SQLite store runs with
``synchronous=normal``, so the disk's fsync does not drown the figures). Backends: memory://
(fakeredis) and, unless ``--no-redis``, the real Redis at ``--redis-url`` (that database index
is flushed before each run and at the end). The modes run interleaved, in a rotating order;
throughputs are medians over ``--rounds`` rounds, ratios the median of each round's
``mode / off`` (paired within the round, which cancels the drift of a shared machine).
Target: ``on / off >= 0.90``.
"""

from __future__ import annotations

import argparse
import gc
import io
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tusk_events import TSK
from tusk_events.events import Event, new_event
from tusk_events.runtime.core import Runtime

CONFIG = """
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///unused.db")

[worker]
subscribe: "job"
handle_fujsen = '''
def handle(event):
    n = event["payload"]["n"]
    {extra}
    return n * 2
'''
"""
SHAPES = {
    "consume": "pass",
    "consume, traced": "pass",
    "consume+publish": 'publish("job_done", {"n": n})',
}
"""Handler shapes. ``consume, traced``: the same handler, but the events carry the
``traceparent`` a traced producer gives them (the sampling decision made upstream), as events
published through an instrumented runtime do; in ``consume`` they carry none, so the consumer
asks its sampler for every event."""
PUBLISH_SHARE = 5
"""``consume+publish`` handles --events / 5 events: each costs a store append."""
BASE_MODES = ("off", "metrics")


def _tracer_provider(events: int, sample: float) -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(sample)))
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=3 * events + 1024))
    return provider


def _events(n: int, mode: str | None) -> Iterator[Event]:
    """Jobs; with ``mode``, stamped as a producer traced in that mode stamps them (same bytes in
    every mode, only the sampled flag follows the ratio, as ``TraceIdRatioBased`` decides it)."""
    from tusk_events.observe.otel import format_traceparent, publish_span_id

    ratio = float(mode[4:]) if mode is not None and mode.startswith("all@") else 1.0
    bound = round(ratio * (1 << 64))
    for i in range(n):
        event = new_event("job", {"n": i})
        if mode is not None:
            trace_id = int(event.metadata["trace_id"], 16)
            sampled = (trace_id & ((1 << 64) - 1)) < bound
            event.metadata["traceparent"] = format_traceparent(trace_id, publish_span_id(event.id), sampled)
        yield event


def run_once(bus_url: str, workdir: Path, shape: str, mode: str, events: int) -> float:
    """Seconds to handle ``events`` events in ``mode``."""
    from tusk_events.observe.logs import disconnect_flow_logging, setup_logging

    fresh_memory = bus_url.startswith("memory://")
    if fresh_memory:  # a new embedded server per run: none inherits the previous run's keys
        bus_url = f"memory://bench-{uuid.uuid4().hex[:12]}"
    env = {"EVENT_BUS": bus_url,
           "EVENT_STORE": f"sqlite:///{workdir / (uuid.uuid4().hex + '.db')}?synchronous=normal"}
    if bus_url.startswith("redis"):
        import redis

        redis.Redis.from_url(bus_url).flushdb()
    cfg = TSK.from_string(CONFIG.format(extra=SHAPES[shape]), env=env)
    undo: list[Callable[[], None]] = []
    with Runtime([cfg]) as rt:
        rt.bus.publish_many(_events(events, mode if shape == "consume, traced" else None))
        provider = None
        if mode != "off":
            from tusk_events.observe.metrics import BusCollector, Metrics

            metrics = Metrics(runtime=rt).connect()
            metrics.registry.register(BusCollector(rt.bus, rt.dlq))
            undo.append(metrics.disconnect)
        if mode.startswith("all@"):
            from tusk_events.observe.otel import instrument

            provider = _tracer_provider(events, float(mode[4:]))
            undo.append(instrument(rt, provider).close)
            setup_logging("WARNING", "json", stream=io.StringIO())
            undo.append(disconnect_flow_logging)
        gc.collect()
        t0 = time.perf_counter()
        summary = rt.run_until_idle(startup=False)
        if provider is not None:
            provider.force_flush()
        seconds = time.perf_counter() - t0
        for fn in reversed(undo):
            fn()
        if provider is not None:
            provider.shutdown()
    if fresh_memory:
        from tusk_events import bus
        from tusk_events.bus import memory

        memory.forget(bus_url)
        bus._clients.pop(bus_url, None)
    if summary.handled != events:
        raise SystemExit(f"{mode}: handled {summary.handled} of {events}")
    return seconds


def bench(bus_url: str, shape: str, events: int, rounds: int, modes: list[str],
          workdir: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Per mode: the median throughput, and the median over rounds of (this mode / off) in
    that round (paired, so a machine slowing down for a while weighs on both sides)."""
    times: dict[str, list[float]] = {m: [] for m in modes}
    run_once(bus_url, workdir, shape, "off", min(events, 2000))  # warm up (imports, compile)
    for r in range(rounds):
        order = modes[r % len(modes):] + modes[: r % len(modes)]
        for mode in order:
            times[mode].append(run_once(bus_url, workdir, shape, mode, events))
    rates = {m: events / statistics.median(ts) for m, ts in times.items()}
    ratios = {m: statistics.median(off / t for off, t in zip(times["off"], ts)) for m, ts in times.items()}
    return rates, ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis-url", metavar="URL",
                        help="a real Redis, e.g. redis://127.0.0.1:6379/15; its DB index is FLUSHED "
                             "(required unless --no-redis)")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--sample", type=float, nargs="+", default=[1.0, 0.01],
                        help="trace sampling ratios, one mode each (default: 1 0.01)")
    args = parser.parse_args(argv)
    if not args.no_redis and not args.redis_url:
        parser.error("--redis-url URL is required (its DB index is flushed), or --no-redis")

    modes = [*BASE_MODES, *(f"all@{r:g}" for r in args.sample)]
    backends = [("memory", "memory://")]
    if not args.no_redis:
        backends.append(("redis", args.redis_url))
    workdir = Path(tempfile.mkdtemp(prefix="tusk-bench-obs-"))
    print(f"{args.events} events per run ({args.events // PUBLISH_SHARE} with a publish), {args.rounds} rounds: "
          "median events handled per second; median over rounds of (mode / off) throughput")
    print(f"{'backend':8} {'handler':16} " + " ".join(f"{m:>9}" for m in modes) + "   "
          + " ".join(f"{m + '/off':>13}" for m in modes[1:]))
    try:
        for name, url in backends:
            for shape in SHAPES:
                n = args.events // PUBLISH_SHARE if shape == "consume+publish" else args.events
                rates, ratios = bench(url, shape, n, args.rounds, modes, workdir)
                print(f"{name:8} {shape:16} " + " ".join(f"{rates[m]:>9,.0f}" for m in modes) + "   "
                      + " ".join(f"{ratios[m]:>13.3f}" for m in modes[1:]), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if not args.no_redis:
            import redis

            redis.Redis.from_url(args.redis_url).flushdb()
    return 0


if __name__ == "__main__":
    sys.exit(main())
