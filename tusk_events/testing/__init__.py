"""A testing kit for config authors: run a ``.tsk`` app in pytest, fast and deterministic.

``tusk_app`` (a pytest fixture, registered by the package's ``pytest11`` entry point) makes
a :class:`TuskApp`: the config's services on a private ``memory://`` bus and a temporary
store (or a real Redis/PostgreSQL when asked), a :class:`VirtualClock` under retry backoffs,
``time`` in fujsen and visibility timeouts, stubs for helpers and fujsen, and assertions
whose failure shows what was published.

May import everything below it (runtime, config, fujsen, bus, store); only the CLI is above.
The names below load on first use: pytest imports the plugin in every run of an
environment where tusk_events is installed, and that must stay cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tusk_events.testing.app import TuskApp
    from tusk_events.testing.clock import VirtualClock
    from tusk_events.testing.records import Letter, Published

_EXPORTS = {
    "TuskApp": "tusk_events.testing.app",
    "VirtualClock": "tusk_events.testing.clock",
    "Letter": "tusk_events.testing.records",
    "Published": "tusk_events.testing.records",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tusk_events.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["Letter", "Published", "TuskApp", "VirtualClock"]
