"""Fixtures for the bus tests: one bus URL per backend, and a private redis-server to kill."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from bus_support import RedisServer

from tusk_events.bus import Bus, connect, memory

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def url(request: pytest.FixtureRequest, memory_url: str) -> Iterator[str]:
    """The URL of an empty bus on each backend: the embedded one and the real Redis."""
    if request.param == "memory":
        yield memory_url
        memory.forget(memory_url)
    else:
        yield request.getfixturevalue("redis_url")


@pytest.fixture
def bus(url: str) -> Iterator[Bus]:
    # pub/sub channels are server-wide (not per database): a channel of its own keeps a
    # test deaf to anything else publishing on the same server
    b = connect(url, retries=1, retry_backoff_s=0.01, channel=f"tusk_events.{uuid.uuid4().hex[:8]}")
    yield b
    b.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server, killed afterwards."""
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is not on PATH; under CI=true integration tests must run")
        pytest.skip("redis-server is not on PATH")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()
