"""The runtime: services built from config sections, consuming from the bus with retries,
dedup and a dead-letter queue, emitting signals that observers listen to.

May import: ``config``, ``lang``, ``fujsen``, ``bus``, ``store``, ``contracts`` and the top-level
``errors``/``defaults``/``events``. Never imported by those; ``observe`` and the CLI sit above it.
"""

from __future__ import annotations

from tusk_events.runtime.core import Runtime, Summary
from tusk_events.runtime.dlq import DeadLetter, DeadLetterQueue

__all__ = ["DeadLetter", "DeadLetterQueue", "Runtime", "Summary"]
