"""The web console: a browser view of a running system over the same bus and store.

``api`` gathers what each page shows (services and their backlog, latest events, dead letters,
traces, contracts) from a :class:`~tusk_events.runtime.Runtime`; ``server`` serves it with the
standard library's HTTP server and plain HTML/JS from ``static/`` (no build step).
May import everything up to ``observe``; only the CLI and user code import it.
"""

from __future__ import annotations

from tusk_events.console.api import ConsoleData
from tusk_events.console.server import Console, serve

__all__ = ["Console", "ConsoleData", "serve"]
