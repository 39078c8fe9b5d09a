"""The runtime's clock: where retry backoffs sleep and failure times are read.

Production uses :data:`SYSTEM_CLOCK` (the ``time`` module). A test passes another object
with the same two methods (``tusk_events.testing.VirtualClock``) so that a service with
``retries: 5, backoff: 30`` is tested in milliseconds instead of minutes.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """What the runtime asks of a clock."""

    def time(self) -> float:
        """Seconds since the epoch, like :func:`time.time`."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, like :func:`time.sleep`."""
        ...


class SystemClock:
    """The real time: :func:`time.time` and :func:`time.sleep`."""

    __slots__ = ()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]
