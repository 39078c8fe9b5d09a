"""Fixtures for the observability tests: a private bus and store, also in os.environ for the CLI."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """EVENT_BUS on a private memory:// server, EVENT_STORE in tmp_path; set in os.environ too."""
    values = {
        "EVENT_BUS": "memory://" + uuid.uuid4().hex[:10],
        "EVENT_STORE": f"sqlite:///{tmp_path / 'events.db'}",
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values
