"""Helpers shared by the store tests (importable by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tusk_events.store import EventStore

ROOT = Path(__file__).resolve().parents[2]


def docs_fujsen(store: EventStore) -> dict[str, Callable[..., Any]]:
    """The fujsen of configs/event_sourcing.tsk, unchanged, with query/execute on ``store``."""
    text = (ROOT / "configs" / "event_sourcing.tsk").read_text()
    env: dict[str, Any] = {
        "json": json,
        "query": lambda sql, *params: store.query(sql, params),
        "execute": lambda sql, *params: store.execute(sql, params),
    }
    for source in re.findall(r"_fujsen = '''\n(.*?)'''", text, re.DOTALL):
        exec(compile(source, "event_sourcing.tsk", "exec"), env)  # noqa: S102 - trusted test file
    return {name: env[name] for name in ("store_event", "replay_events")}
