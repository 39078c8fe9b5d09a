"""Fixtures of the contract tests: a private embedded bus and a throwaway event store per test."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {
        "EVENT_BUS": "memory://" + uuid.uuid4().hex[:10],
        "EVENT_STORE": f"sqlite:///{tmp_path / 'events.db'}",
    }
