"""Signs of life for an operator: the start line of ``run``, its progress line, progress bars.

``run`` says once, on stderr, what it is about to do (bus and store with secrets masked, where
each came from, every service with its delivery mode and group, the isolation level), then
every few seconds how it is doing (events/s, handled, retried, dead-lettered, pending). On a
terminal that is one line rewritten in place (rich when installed); in a log file it is a
plain line each time. The line is built from the runtime's summary counters by a thread that
sleeps between ticks, so handling pays nothing per event for it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tusk_events.defaults import (
    BUS_ENV_VAR,
    EXIT_DEAD_LETTERED,
    PROGRESS_BAR_WIDTH,
    PROGRESS_INTERVAL_S,
    PROGRESS_PLAIN_INTERVAL_S,
    STORE_ENV_VAR,
)

if TYPE_CHECKING:
    from tusk_events.runtime.core import Runtime

_SECRET_PARAMS = frozenset({"password", "sslpassword", "passwd", "token", "secret"})


def redact(url: str) -> str:
    """``url`` with the password of its user part and secret query parameters masked."""
    from tusk_events.bus.base import redact_url

    shown = redact_url(url)
    try:
        parts = urlsplit(shown)
    except ValueError:
        return shown
    if not parts.query:
        return shown
    query = [(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*/:")))


def _origin(runtime: Runtime, key: str, var: str) -> str:
    """Where the bus or store URL came from: the config, the environment, or the built-in default."""
    for cfg in runtime.configs:
        for sect in cfg.sections().values():
            if isinstance(sect.get(key), str) and sect.get(key):
                return f"{key} in {cfg.path or 'the config'}"
    env: Mapping[str, str] = runtime.configs[0].env
    return f"${var}" if env.get(var) else f"default; ${var} unset"


def start_line(runtime: Runtime) -> str:
    """One line: bus, store, isolation, services (delivery mode and group)."""
    services = []
    for svc in runtime.services:
        spec = svc.spec
        how = spec.delivery if spec.delivery != "durable" else f"durable, group {spec.group}"
        if spec.concurrency > 1:
            how += f", x{spec.concurrency}"
        services.append(f"{spec.name} ({how})")
    isolation = runtime.configs[0].isolation
    return (f"tusk-events: bus {redact(runtime.bus_url)} ({_origin(runtime, 'event_bus', BUS_ENV_VAR)}), "
            f"store {redact(runtime.store_url)} ({_origin(runtime, 'event_store', STORE_ENV_VAR)}), "
            f"isolation {isolation}; {len(services)} service{'s' * (len(services) != 1)}: "
            + (", ".join(services) or "none"))


def _pending(runtime: Runtime) -> int | None:
    """Events of the durable services' groups not yet handled (undelivered + unacknowledged)."""
    groups: dict[str, set[str]] = {}
    for svc in runtime.services:
        if svc.spec.delivery == "durable":
            for t in svc.spec.types:
                groups.setdefault(t, set()).add(svc.spec.group)
    if not groups:
        return 0
    try:
        info = runtime.bus.stream_info(sorted(groups))
    except Exception:  # noqa: BLE001 - a progress line never stops a run; "?" says it could not look
        return None
    total = 0
    for t, stream in info.items():
        for name, g in stream.groups.items():
            if name in groups.get(t, ()):
                total += g.pending + (g.lag or 0)
    return total


class Progress:
    """The start line now, then a progress line every ``interval`` seconds until closed."""

    def __init__(self, runtime: Runtime, *, interval: float | None = None, stream: IO[str] | None = None,
                 tty: bool | None = None) -> None:
        self.runtime = runtime
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval if interval is not None else (
            PROGRESS_INTERVAL_S if self.tty else PROGRESS_PLAIN_INTERVAL_S)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Any = None
        self._last = (time.monotonic(), 0)
        self.lines = 0

    def line(self) -> str:
        """The progress line (and advances the events/s window)."""
        s = self.runtime.summary
        now = time.monotonic()
        t0, handled0 = self._last
        handled = s.handled
        rate = (handled - handled0) / (now - t0) if now > t0 else 0.0
        self._last = (now, handled)
        pending = _pending(self.runtime)
        return (f"{time.strftime('%H:%M:%S')}  {rate:,.0f} events/s  handled {handled:,}  "
                f"retried {s.retried:,}  dead-lettered {s.dead_lettered:,}  "
                f"pending {'?' if pending is None else f'{pending:,}'}")

    def _show(self, text: str) -> None:
        if self._live is not None:
            from rich.text import Text

            self._live.update(Text(text), refresh=True)
        elif self.tty:
            self.stream.write(f"\r{text}\x1b[K")
            self.stream.flush()
        else:
            self.stream.write(text + "\n")
            self.stream.flush()
        self.lines += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._show(self.line())
            except Exception:  # noqa: BLE001 - e.g. stderr closed: stop showing, keep running
                return

    def __enter__(self) -> Progress:
        self.stream.write(start_line(self.runtime) + "\n")
        self.stream.flush()
        if self.tty:
            self._live = _rich_live(self.stream)
        self._thread = threading.Thread(target=self._loop, name="tusk-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 5)
        if self._live is not None:
            self._live.stop()
        elif self.tty and self.lines:
            self.stream.write("\r\x1b[K")  # the summary replaces the live line
            self.stream.flush()


def _rich_live(stream: IO[str]) -> Any:
    """A transient rich Live line on ``stream``, or None without rich."""
    try:
        from rich.console import Console
        from rich.live import Live
    except ImportError:
        return None
    live = Live(console=Console(file=stream, force_terminal=True), auto_refresh=False, transient=True)
    live.start()
    return live


class Bar:
    """A progress bar for a counted job on a terminal's stderr; nothing when not a terminal.

    ``done()`` clears it, so the line printed next starts clean.
    """

    def __init__(self, total: int, label: str, *, stream: IO[str] | None = None, tty: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = total
        self.label = label
        self.shown = (self.stream.isatty() if tty is None else tty) and total > 0
        self.step = max(1, total // 200)
        self.count = 0

    def advance(self, n: int = 1) -> None:
        self.count += n
        if self.shown and (self.count % self.step == 0 or self.count >= self.total):
            width = PROGRESS_BAR_WIDTH
            filled = min(width, int(width * self.count / self.total))
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                              f"{self.count:,}/{self.total:,}\x1b[K")
            self.stream.flush()

    def done(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


# --- several worker processes: one total -------------------------------------------------------

_COUNTS = ("published", "handled", "duplicates_skipped", "failed_attempts", "retried", "dead_lettered")


def total_summary(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The summary of a run split over workers: counts summed, latency the worst worker's."""
    parts = list(parts)
    total: dict[str, Any] = {k: sum(int(p.get(k) or 0) for p in parts) for k in _COUNTS}
    for key in ("latency_ms_p50", "latency_ms_p99"):
        values = [p[key] for p in parts if p.get(key) is not None]
        total[key] = max(values) if values else None
    total["workers"] = len(parts)
    return total


def render_total(total: Mapping[str, Any]) -> str:
    """``total_summary`` as the text summary ``run`` prints."""
    lines = [
        f"published {total['published']}, handled {total['handled']}, retried {total['retried']}, "
        f"dead-lettered {total['dead_lettered']}"
        + (f", duplicates skipped {total['duplicates_skipped']}" if total["duplicates_skipped"] else "")
        + f" (total of {total['workers']} worker processes)",
    ]
    if total["latency_ms_p50"] is not None:
        lines.append(f"handling latency p50 {total['latency_ms_p50']:.2f} ms, p99 {total['latency_ms_p99']:.2f} ms "
                     "(the slowest worker's)")
    else:
        lines.append("handling latency: no events handled")
    return "\n".join(lines)


def parse_worker_output(text: str) -> dict[str, Any] | None:
    """The JSON summary a ``run --json`` worker printed last, or None."""
    import json

    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def exit_code(codes: Sequence[int]) -> int:
    """Workers' exit codes as one: the first failure, else 3 when any dead-lettered, else 0."""
    failures = [c for c in codes if c not in (0, EXIT_DEAD_LETTERED)]
    if failures:
        return failures[0]
    return EXIT_DEAD_LETTERED if EXIT_DEAD_LETTERED in codes else 0


__all__ = ["Bar", "Progress", "exit_code", "parse_worker_output", "redact", "render_total", "start_line",
           "total_summary"]
