"""A testing kit for config authors: run a ``.tsk`` app in pytest, fast and deterministic.

``tusk_app`` (a pytest fixture, registered by the package's ``pytest11`` entry point) makes
a :class:`TuskApp`: the config's services on a private ``memory://`` bus and a temporary
store (or a real Redis/PostgreSQL when asked), a :class:`VirtualClock` under retry backoffs,
``time`` in fujsen and visibility timeouts, stubs for helpers and fujsen, and assertions
whose failure shows what was published.

May import everything below it (runtime, config, fujsen, bus, store); only the CLI is above.
"""

from __future__ import annotations

from tusk_events.testing.app import TuskApp
from tusk_events.testing.clock import VirtualClock
from tusk_events.testing.records import Letter, Published

__all__ = ["Letter", "Published", "TuskApp", "VirtualClock"]
