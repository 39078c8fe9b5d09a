"""Prometheus metrics of a runtime, and ``tusk-events stats``.

(About 670 lines: the metric definitions, the scrape-time bus collector, the multi-process
mode and the ``stats`` command share one vocabulary of names and labels.)

Counters and histograms are receivers of :mod:`tusk_events.runtime.signals`; they exist only once
:meth:`Metrics.connect` (or :func:`serve_metrics`) connected them, so a run without metrics
pays nothing. Gauges describing the bus are read when Prometheus scrapes, not kept up to date.

    tusk_events_published_total{type,service}      events published (service "": host code)
    tusk_events_handled_total{type,service}        handler calls that returned
    tusk_events_failed_total{type,service}         handler attempts that raised
    tusk_events_retried_total{type,service}        retries scheduled
    tusk_events_dead_lettered_total{type,service}  events written to the service's DLQ
    tusk_handling_seconds{type,service,outcome}    one handler attempt (outcome: handled|failed)
    tusk_end_to_end_seconds{type,service}          event timestamp -> handled (queueing and retries included)
    tusk_stream_length{type}                       entries the event type's stream retains
    tusk_consumer_group_consumers{type,group}      consumers of the group
    tusk_consumer_group_pending{type,group}        delivered to the group, not yet acknowledged
    tusk_consumer_group_lag{type,group}            not yet delivered to the group (absent when unknown)
    tusk_dlq_size{service}                         dead letters waiting
    tusk_bus_up                                    1 when the scrape could read the bus
    tusk_config_metric{name}                       the last value a config's @metrics(name, value) read

Several processes (``run --processes N --metrics-port P``) use prometheus_client's
multiprocess mode: the supervisor creates a private ``PROMETHEUS_MULTIPROC_DIR`` that its
workers inherit; each worker writes its counters and histograms there (mmap files, no port
of its own) and the supervisor alone serves ``P``: the sums over the workers, plus the bus
gauges once, since they describe the shared bus rather than a worker. One scrape target
however many workers, and no port juggling. A ``PROMETHEUS_MULTIPROC_DIR`` set by the caller
is used as is (and not removed).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tusk_events.defaults import (
    METRICS_ADDR,
    METRICS_END_TO_END_BUCKETS,
    METRICS_HANDLING_BUCKETS,
    METRICS_SUPERVISOR_ENV_VAR,
)
from tusk_events.errors import ConfigError
from tusk_events.lang.operators import register_gauge_sink
from tusk_events.runtime import signals

if TYPE_CHECKING:
    import argparse

    from tusk_events.bus import Bus
    from tusk_events.events import Event
    from tusk_events.runtime.core import Runtime
    from tusk_events.runtime.dlq import DeadLetterQueue

log = logging.getLogger(__name__)

MULTIPROC_ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's own switch to multiprocess mode (its name, not ours)."""


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as err:
        raise ConfigError(
            "metrics need the prometheus-client package: pip install 'tusk_events[metrics]'"
        ) from err
    return prometheus_client


# --- counters and histograms, from the signals -----------------------------------------------

_HELP = {
    "published": "Events published (service: the publishing service, empty for host code)",
    "handled": "Handler calls that returned",
    "failed": "Handler attempts that raised",
    "retried": "Retries scheduled after a failed attempt",
    "dead_lettered": "Events written to the service's dead-letter queue",
    "handling": "Time of one handler attempt",
    "end_to_end": "From the event's timestamp to its handler returning",
}


class _Histogram:
    """Bucket counts (``le`` semantics, the last one +Inf) and the sum of one labelled histogram."""

    __slots__ = ("counts", "sum")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * (buckets + 1)
        self.sum = 0.0

    def family_samples(self, bounds: Sequence[float]) -> tuple[list[tuple[str, int]], float]:
        from prometheus_client.utils import floatToGoString

        cumulative, total = [], 0
        for bound, n in zip([*(floatToGoString(b) for b in bounds), "+Inf"], self.counts):
            total += n
            cumulative.append((bound, total))
        return cumulative, self.sum


class _Series:
    """Everything counted for one (event type, service)."""

    __slots__ = ("bad", "dead_lettered", "e2e", "failed", "handled", "ok", "published", "retried")

    def __init__(self) -> None:
        self.published = self.handled = self.failed = self.retried = self.dead_lettered = 0
        self.ok = _Histogram(len(METRICS_HANDLING_BUCKETS))
        self.bad = _Histogram(len(METRICS_HANDLING_BUCKETS))
        self.e2e = _Histogram(len(METRICS_END_TO_END_BUCKETS))


class _LocalCollector:
    """Renders :class:`Metrics`' plain counters for a scrape (in-process mode)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Any]:
        return iter(self._families({}))

    def collect(self) -> Iterator[Any]:
        with self.metrics._lock:
            series = {k: _copy(v) for k, v in self.metrics._series.items()}
        return iter(self._families(series))

    @staticmethod
    def _families(series: dict[tuple[str, str], _Series]) -> list[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        by = ["type", "service"]
        out = []
        for name in ("published", "handled", "failed", "retried", "dead_lettered"):
            fam = CounterMetricFamily(f"tusk_events_{name}", _HELP[name], labels=by)
            for (t, svc), s in series.items():
                n = getattr(s, name)
                if n:
                    fam.add_metric([t, svc], n)
            out.append(fam)
        handling = HistogramMetricFamily("tusk_handling_seconds", _HELP["handling"], labels=[*by, "outcome"])
        e2e = HistogramMetricFamily("tusk_end_to_end_seconds", _HELP["end_to_end"], labels=by)
        for (t, svc), s in series.items():
            for outcome, h in (("handled", s.ok), ("failed", s.bad)):
                if any(h.counts):
                    handling.add_metric([t, svc, outcome], *h.family_samples(METRICS_HANDLING_BUCKETS))
            if any(s.e2e.counts):
                e2e.add_metric([t, svc], *s.e2e.family_samples(METRICS_END_TO_END_BUCKETS))
        return [*out, handling, e2e]


def _copy(s: _Series) -> _Series:
    c = _Series()
    for name in ("published", "handled", "failed", "retried", "dead_lettered"):
        setattr(c, name, getattr(s, name))
    for name in ("ok", "bad", "e2e"):
        h, ch = getattr(s, name), getattr(c, name)
        ch.counts, ch.sum = list(h.counts), h.sum
    return c


class Metrics:
    """The runtime's counters and histograms, fed by signal receivers, exposed through ``registry``.

    ``runtime``: count only that runtime's signals (None: every runtime of the process).

    In one process the receivers add to plain numbers under one lock (about a microsecond per
    handled event) and a collector turns them into Prometheus samples when scraped. In
    multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set) they update prometheus_client metrics,
    which write to the shared mmap files the serving process sums.
    """

    def __init__(self, registry: Any = None, *, runtime: Runtime | None = None) -> None:
        pc = _prometheus()
        self.registry = pc.CollectorRegistry() if registry is None else registry
        self.runtime = runtime
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], _Series] = {}
        self.multiprocess = _multiprocess_dir() is not None
        sink: Any = self
        if self.multiprocess:
            sink = _PromMetrics(pc, self.registry, runtime)
        else:
            self.registry.register(_LocalCollector(self))
        self._receivers = (
            (signals.published, sink._on_published),
            (signals.handled, sink._on_handled),
            (signals.failed, sink._on_failed),
            (signals.retried, sink._on_retried),
            (signals.dead_lettered, sink._on_dead_lettered),
        )

    def connect(self) -> Metrics:
        for sig, receiver in self._receivers:
            sig.connect(receiver)
        return self

    def disconnect(self) -> None:
        for sig, receiver in self._receivers:
            sig.disconnect(receiver)

    def _get(self, key: tuple[str, str]) -> _Series:
        s = self._series.get(key)
        if s is None:
            with self._lock:
                s = self._series.setdefault(key, _Series())
        return s

    # the receivers: one dict hit, one lock, a few additions

    def _on_published(self, runtime: Runtime, event: Event, service: str | None = None, **_: Any) -> None:
        if self.runtime is None or runtime is self.runtime:
            s = self._get((event.type, service or ""))
            with self._lock:
                s.published += 1

    def _on_handled(self, runtime: Runtime, service: str, event: Event, seconds: float, **_: Any) -> None:
        if self.runtime is None or runtime is self.runtime:
            s = self._get((event.type, service))
            e2e = time.time() - event.timestamp
            with self._lock:
                s.handled += 1
                s.ok.counts[bisect_left(METRICS_HANDLING_BUCKETS, seconds)] += 1
                s.ok.sum += seconds
                if e2e >= 0:
                    s.e2e.counts[bisect_left(METRICS_END_TO_END_BUCKETS, e2e)] += 1
                    s.e2e.sum += e2e

    def _on_failed(self, runtime: Runtime, service: str, event: Event, seconds: float = 0.0, **_: Any) -> None:
        if self.runtime is None or runtime is self.runtime:
            s = self._get((event.type, service))
            with self._lock:
                s.failed += 1
                s.bad.counts[bisect_left(METRICS_HANDLING_BUCKETS, seconds)] += 1
                s.bad.sum += seconds

    def _on_retried(self, runtime: Runtime, service: str, event: Event, **_: Any) -> None:
        if self.runtime is None or runtime is self.runtime:
            s = self._get((event.type, service))
            with self._lock:
                s.retried += 1

    def _on_dead_lettered(self, runtime: Runtime, service: str, event: Event, **_: Any) -> None:
        if self.runtime is None or runtime is self.runtime:
            s = self._get((event.type, service))
            with self._lock:
                s.dead_lettered += 1


class _PromMetrics:
    """The same metrics as prometheus_client objects: what multiprocess mode can aggregate."""

    def __init__(self, pc: Any, registry: Any, runtime: Runtime | None) -> None:
        by = ("type", "service")
        self.c = {
            name: pc.Counter(f"tusk_events_{name}", _HELP[name], by, registry=registry)
            for name in ("published", "handled", "failed", "retried", "dead_lettered")
        }
        self.handling = pc.Histogram("tusk_handling_seconds", _HELP["handling"], (*by, "outcome"),
                                     buckets=METRICS_HANDLING_BUCKETS, registry=registry)
        self.e2e = pc.Histogram("tusk_end_to_end_seconds", _HELP["end_to_end"], by,
                                buckets=METRICS_END_TO_END_BUCKETS, registry=registry)
        self.runtime = runtime
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _on_published(self, runtime: Runtime, event: Event, service: str | None = None, **_: Any) -> None:
        if self.runtime is None or runtime is self.runtime:
            self._child(self.c["published"], event.type, service or "").inc()

    def _on_handled(self, runtime: Runtime, service: str, event: Event, seconds: float, **_: Any) -> None:
        if self.runtime is None or runtime is self.runtime:
            self._child(self.c["handled"], event.type, service).inc()
            self._child(self.handling, event.type, service, "handled").observe(seconds)
            e2e = time.time() - event.timestamp
            if e2e >= 0:
                self._child(self.e2e, event.type, service).observe(e2e)

    def _on_failed(self, runtime: Runtime, service: str, event: Event, seconds: float = 0.0, **_: Any) -> None:
        if self.runtime is None or runtime is self.runtime:
            self._child(self.c["failed"], event.type, service).inc()
            self._child(self.handling, event.type, service, "failed").observe(seconds)

    def _on_retried(self, runtime: Runtime, service: str, event: Event, **_: Any) -> None:
        if self.runtime is None or runtime is self.runtime:
            self._child(self.c["retried"], event.type, service).inc()

    def _on_dead_lettered(self, runtime: Runtime, service: str, event: Event, **_: Any) -> None:
        if self.runtime is None or runtime is self.runtime:
            self._child(self.c["dead_lettered"], event.type, service).inc()


# --- gauges, read from the bus at scrape time ------------------------------------------------


@dataclass
class BusStats:
    """What the bus holds right now: per event type its stream and groups, per service its DLQ."""

    streams: dict[str, Any] = field(default_factory=dict)
    dlq: dict[str, int] = field(default_factory=dict)
    taken_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "taken_at": self.taken_at,
            "streams": {
                t: {
                    "length": s.length,
                    "last_id": s.last_id,
                    "groups": {
                        g.name: {"consumers": g.consumers, "pending": g.pending, "lag": g.lag}
                        for g in s.groups.values()
                    },
                }
                for t, s in self.streams.items()
            },
            "dlq": dict(self.dlq),
        }


def read_stats(bus: Bus, dlq: DeadLetterQueue) -> BusStats:
    """Stream lengths, group pending/lag and DLQ sizes, in two kinds of round trips."""
    streams = dict(sorted(bus.stream_info().items()))
    sizes = {service: dlq.count(service) for service in dlq.services()}
    return BusStats(streams=streams, dlq=sizes)


class BusCollector:
    """A Prometheus collector reading :func:`read_stats` on every scrape; never fails a scrape."""

    def __init__(self, bus: Bus, dlq: DeadLetterQueue) -> None:
        self.bus = bus
        self.dlq = dlq

    def _families(self) -> dict[str, Any]:
        from prometheus_client.core import GaugeMetricFamily

        return {
            "up": GaugeMetricFamily("tusk_bus_up", "1 when this scrape could read the event bus"),
            "length": GaugeMetricFamily(
                "tusk_stream_length", "Entries retained in the event type's stream", labels=["type"]),
            "consumers": GaugeMetricFamily(
                "tusk_consumer_group_consumers", "Consumers in the group", labels=["type", "group"]),
            "pending": GaugeMetricFamily(
                "tusk_consumer_group_pending", "Delivered to the group, not yet acknowledged",
                labels=["type", "group"]),
            "lag": GaugeMetricFamily(
                "tusk_consumer_group_lag", "Entries not yet delivered to the group", labels=["type", "group"]),
            "dlq": GaugeMetricFamily("tusk_dlq_size", "Dead letters waiting in the service's queue",
                                     labels=["service"]),
        }

    def describe(self) -> Iterator[Any]:
        yield from self._families().values()

    def collect(self) -> Iterator[Any]:
        f = self._families()
        try:
            stats = read_stats(self.bus, self.dlq)
        except Exception as err:  # noqa: BLE001 - an unreachable bus is a sample, not a failed scrape
            log.warning("metrics: cannot read the bus: %s", err)
            f["up"].add_metric([], 0)
            yield f["up"]
            return
        f["up"].add_metric([], 1)
        for t, s in stats.streams.items():
            f["length"].add_metric([t], s.length)
            for g in s.groups.values():
                f["consumers"].add_metric([t, g.name], g.consumers)
                f["pending"].add_metric([t, g.name], g.pending)
                if g.lag is not None:
                    f["lag"].add_metric([t, g.name], g.lag)
        for service, n in stats.dlq.items():
            f["dlq"].add_metric([service], n)
        yield from f.values()


# --- serving ---------------------------------------------------------------------------------


@dataclass
class MetricsServer:
    """What :func:`serve_metrics` started: close() stops serving and counting."""

    metrics: Metrics
    registry: Any
    port: int | None = None
    server: Any = None

    def close(self) -> None:
        self.metrics.disconnect()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def _multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV_VAR) or None


def _serving_registry(metrics: Metrics, bus: Bus, dlq: DeadLetterQueue) -> Any:
    """This process's metrics, or in multiprocess mode the sums over every process; plus the bus gauges."""
    pc = _prometheus()
    path = _multiprocess_dir()
    if path is None:
        registry = metrics.registry
    else:
        from prometheus_client import multiprocess

        registry = pc.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
    registry.register(BusCollector(bus, dlq))
    registry.register(ConfigGauges())
    return registry


# --- @metrics(name, value) in configs --------------------------------------------------------

_config_gauges: dict[str, float] = {}


def _record_config_gauge(name: str, value: float) -> None:
    _config_gauges[name] = value


register_gauge_sink(_record_config_gauge)


class ConfigGauges:
    """``@metrics(name, value)`` readings of this process's configs, as one labelled gauge."""

    def describe(self) -> Iterator[Any]:
        return iter(())

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("tusk_config_metric",
                                   "Last value read by a config's @metrics(name, value)",
                                   labels=["name"])
        for name, value in sorted(_config_gauges.items()):
            family.add_metric([name], value)
        yield family


def _start_server(port: int, addr: str, registry: Any) -> tuple[Any, int]:
    server, _thread = _prometheus().start_http_server(port, addr=addr, registry=registry)
    return server, int(server.server_port)


def serve_metrics(port: int, runtime: Runtime, *, addr: str = METRICS_ADDR) -> MetricsServer:
    """Count ``runtime``'s signals and serve them with the bus gauges on ``http://addr:port/metrics``.

    ``port`` 0 picks a free one (see ``.port``). In a worker of ``run --processes N`` this
    only counts: the supervisor serves the sums (see the module docstring).
    """
    metrics = Metrics(runtime=runtime).connect()
    if os.environ.get(METRICS_SUPERVISOR_ENV_VAR) and _multiprocess_dir():
        return MetricsServer(metrics, metrics.registry)
    registry = _serving_registry(metrics, runtime.bus, runtime.dlq)
    try:
        server, bound = _start_server(port, addr, registry)
    except OSError as err:
        metrics.disconnect()
        raise ConfigError(f"cannot serve metrics on {addr}:{port}: {err.strerror or err}") from err
    log.info("serving Prometheus metrics on http://%s:%d/metrics", addr, bound)
    return MetricsServer(metrics, registry, bound, server)


def _use_multiprocess_values() -> None:
    """Make metrics created from now on live in the multiprocess dir, even if prometheus_client
    was imported before the directory was set (it picks its value class at import)."""
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()


def supervise_metrics(port: int, files: Sequence[str], *, addr: str = METRICS_ADDR) -> MetricsServer:
    """For ``run --processes N``: a multiprocess dir the workers inherit, and the one endpoint, here.

    Call it before starting the workers (they read the environment this sets) and before the
    supervisor's own startup fujsen, whose events it then counts too.
    """
    from tusk_events.bus import connect, redis_client
    from tusk_events.config import TSK
    from tusk_events.runtime.dlq import DeadLetterQueue

    if _multiprocess_dir() is None:
        path = tempfile.mkdtemp(prefix="tusk-metrics-")
        os.environ[MULTIPROC_ENV_VAR] = path
        atexit.register(shutil.rmtree, path, True)
    os.environ[METRICS_SUPERVISOR_ENV_VAR] = str(os.getpid())
    _prometheus()
    _use_multiprocess_values()
    cfg = TSK.from_file(files[0])
    bus = connect(cfg.bus_url)
    dlq = DeadLetterQueue(redis_client(cfg.bus_url))
    metrics = Metrics().connect()
    registry = _serving_registry(metrics, bus, dlq)
    try:
        server, bound = _start_server(port, addr, registry)
    except OSError as err:
        metrics.disconnect()
        raise ConfigError(f"cannot serve metrics on {addr}:{port}: {err.strerror or err}") from err
    log.info("serving Prometheus metrics of all workers on http://%s:%d/metrics", addr, bound)
    return MetricsServer(metrics, registry, bound, server)


# --- tusk-events stats -----------------------------------------------------------------------


def render_stats(stats: BusStats, *, title: str = "") -> str:
    """A plain-text table: one line per (stream, group), then the dead-letter queues."""
    rows: list[tuple[str, ...]] = [("STREAM", "LENGTH", "GROUP", "CONSUMERS", "PENDING", "LAG")]
    for t, s in stats.streams.items():
        groups = list(s.groups.values())
        if not groups:
            rows.append((t, str(s.length), "-", "", "", ""))
        for i, g in enumerate(groups):
            rows.append((t if i == 0 else "", str(s.length) if i == 0 else "", g.name,
                         str(g.consumers), str(g.pending), "?" if g.lag is None else str(g.lag)))
    lines = [title] if title else []
    if len(rows) == 1:
        lines.append("no event streams on the bus")
    else:
        lines.extend(_table(rows, right={1, 3, 4, 5}))
    lines.append("")
    if stats.dlq:
        lines.extend(_table([("DLQ", "SIZE"), *((s, str(n)) for s, n in stats.dlq.items())], right={1}))
    else:
        lines.append("no dead-letter queues")
    return "\n".join(lines)


def _table(rows: Sequence[tuple[str, ...]], *, right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append("  ".join(cells).rstrip())
    return out


def _rich_table(stats: BusStats, title: str) -> Any:
    from rich.console import Group
    from rich.table import Table

    streams = Table(title=title, title_justify="left")
    for name, justify in (("stream", "left"), ("length", "right"), ("group", "left"),
                          ("consumers", "right"), ("pending", "right"), ("lag", "right")):
        streams.add_column(name, justify=justify)  # type: ignore[arg-type]
    for t, s in stats.streams.items():
        groups = list(s.groups.values()) or [None]
        for i, g in enumerate(groups):
            streams.add_row(
                t if i == 0 else "", str(s.length) if i == 0 else "",
                "-" if g is None else g.name, "" if g is None else str(g.consumers),
                "" if g is None else _hot(g.pending), "" if g is None else ("?" if g.lag is None else _hot(g.lag)),
            )
    dlq = Table()
    dlq.add_column("dead-letter queue")
    dlq.add_column("size", justify="right")
    for service, n in stats.dlq.items():
        dlq.add_row(service, f"[red]{n}[/red]" if n else "0")
    return Group(streams, dlq)


def _hot(n: int) -> str:
    return f"[yellow]{n}[/yellow]" if n else "0"


def cmd_stats(args: argparse.Namespace) -> int:
    """``tusk-events stats FILE [--watch S] [--count N] [--json]``: the bus of a config, now or refreshing."""
    from tusk_events.bus import connect, redis_client
    from tusk_events.bus.base import redact_url
    from tusk_events.config import TSK
    from tusk_events.runtime.dlq import DeadLetterQueue

    cfg = TSK.from_file(args.file)
    if cfg.bus_url.startswith("memory://"):
        print(f"note: {cfg.bus_url} lives inside one process; another process sees an empty bus "
              "(use a redis:// bus to watch a running system)", file=sys.stderr)
    bus = connect(cfg.bus_url)
    dlq = DeadLetterQueue(redis_client(cfg.bus_url))
    title = redact_url(cfg.bus_url)
    try:
        if args.watch is None:
            stats = read_stats(bus, dlq)
            print(json.dumps(stats.to_dict()) if args.json else render_stats(stats, title=title))
            return 0
        return _watch(bus, dlq, args, title)
    except KeyboardInterrupt:
        return 0
    finally:
        bus.close()


def _rich_live() -> Any:
    """A started rich ``Live`` display, or None without rich (plain text then)."""
    try:
        from rich.live import Live
    except ImportError:
        return None
    live = Live(auto_refresh=False)
    live.start()
    return live


def _watch(bus: Bus, dlq: DeadLetterQueue, args: argparse.Namespace, title: str) -> int:
    """Refresh every ``--watch`` seconds: rich on a terminal when installed, else plain text."""
    interval = float(args.watch)
    if interval <= 0:
        raise ConfigError(f"--watch needs a positive number of seconds, not {args.watch}")
    count = args.count
    tty = sys.stdout.isatty() and not args.json
    live = _rich_live() if tty else None
    n = 0
    try:
        while True:
            stats = read_stats(bus, dlq)
            stamp = time.strftime("%H:%M:%S", time.localtime(stats.taken_at))
            heading = f"{title}  {stamp}  (every {interval:g}s, Ctrl-C to stop)"
            if args.json:
                print(json.dumps(stats.to_dict()), flush=True)
            elif live is not None:
                live.update(_rich_table(stats, heading), refresh=True)
            elif tty:
                print("\x1b[H\x1b[2J" + render_stats(stats, title=heading), flush=True)
            else:
                print(render_stats(stats, title=heading) + "\n", flush=True)
            n += 1
            if count is not None and n >= count:
                return 0
            time.sleep(interval)
    finally:
        if live is not None:
            live.stop()


__all__ = [
    "BusCollector",
    "BusStats",
    "Metrics",
    "MetricsServer",
    "cmd_stats",
    "read_stats",
    "render_stats",
    "serve_metrics",
    "supervise_metrics",
]
