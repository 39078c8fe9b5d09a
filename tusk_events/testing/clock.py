"""A virtual clock for tests: backoffs, ``time.sleep`` in fujsen and visibility timeouts are instant.

Virtual time stands still unless something moves it: a sleep (the runtime's retry backoff,
``time.sleep`` in a fujsen) moves it by the time slept, :meth:`VirtualClock.advance` moves
it and tells its listeners (a test app ages the bus's unacknowledged entries, so their
visibility timeout elapses). Reads are therefore deterministic: two ``time.time()`` calls in
one fujsen return the same value unless it slept in between.
"""

from __future__ import annotations

import threading
import time as _time
from collections.abc import Callable
from typing import Any

from tusk_events.fujsen import budget
from tusk_events.fujsen.guards import violate
from tusk_events.fujsen.helpers import Facade

Listener = Callable[[float], None]


class VirtualClock:
    """Time that moves only when slept or advanced; starts at the real time of its creation.

        >>> clock = VirtualClock(start=1000.0)
        >>> clock.sleep(30)
        >>> clock.time()
        1030.0
    """

    def __init__(self, start: float | None = None) -> None:
        self._start = _time.time() if start is None else float(start)
        self._offset = 0.0
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self.sleeps: list[float] = []
        """Every sleep asked for, in order (retry backoffs and fujsen sleeps): for assertions."""

    def time(self) -> float:
        """Virtual seconds since the epoch."""
        return self._start + self._offset

    def monotonic(self) -> float:
        """Virtual seconds since the clock was made (what ``time.monotonic`` compares)."""
        return self._offset

    @property
    def elapsed(self) -> float:
        """Virtual seconds that passed since the clock was made."""
        return self._offset

    def sleep(self, seconds: float) -> None:
        """Return at once, the clock moved on by ``seconds``."""
        seconds = max(float(seconds), 0.0)
        with self._lock:
            self.sleeps.append(seconds)
            self._offset += seconds

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``: timers and visibility timeouts due by then elapse."""
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        with self._lock:
            self._offset += float(seconds)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(float(seconds))

    def on_advance(self, listener: Listener) -> None:
        """Call ``listener(seconds)`` after every :meth:`advance`."""
        self._listeners.append(listener)

    def __repr__(self) -> str:
        return f"<VirtualClock +{self._offset:g}s>"


class VirtualTimeHelper(Facade):
    """The ``time`` helper of fujsen, reading and sleeping on a :class:`VirtualClock`."""

    __slots__ = ("_clock",)
    helper_name = "time"

    def __init__(self, clock: VirtualClock) -> None:
        object.__setattr__(self, "_clock", clock)

    def time(self) -> float:
        return self._clock.time()

    def time_ns(self) -> int:
        return int(self._clock.time() * 1_000_000_000)

    def monotonic(self) -> float:
        return self._clock.monotonic()

    def perf_counter(self) -> float:
        return self._clock.monotonic()

    def sleep(self, seconds: float) -> None:
        """Instant; a sleep longer than what is left of the call's budget still times it out."""
        if seconds > budget.remaining():
            budget.state().timed_out = True
            raise budget.Interrupt()
        self._clock.sleep(seconds)

    def strftime(self, fmt: str, t: Any = None) -> str:
        if len(fmt) > 1000:
            violate("time.strftime format longer than 1000 characters")
        return _time.strftime(fmt, _time.localtime(self._clock.time()) if t is None else t)

    def gmtime(self, secs: float | None = None) -> Any:
        return _time.gmtime(self._clock.time() if secs is None else secs)

    def localtime(self, secs: float | None = None) -> Any:
        return _time.localtime(self._clock.time() if secs is None else secs)


__all__ = ["VirtualClock", "VirtualTimeHelper"]
