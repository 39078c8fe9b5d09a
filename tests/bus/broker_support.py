"""Helpers for the broker bus tests (NATS JetStream, RabbitMQ): a stream or namespace per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tusk_events.bus import connect

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NATS_URL = os.environ.get("TUSK_TEST_NATS_URL", "nats://127.0.0.1:4222")
AMQP_URL = os.environ.get("TUSK_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def nats_stream_url() -> Iterator[str]:
    """A JetStream stream of its own on the shared NATS server, deleted afterwards."""
    try:
        import nats  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("nats-py is not installed; under CI=true integration tests must run")
        pytest.skip("nats-py is not installed (pip install 'tusk_events[nats]')")
    url = f"{NATS_URL}/T{uuid.uuid4().hex[:12]}"
    probe = connect(url, retries=3)
    try:
        probe.ping()
    except Exception as exc:
        probe.close()
        if IN_CI:
            pytest.fail(f"no NATS server at {NATS_URL}: {exc}")
        pytest.skip(f"no NATS server at {NATS_URL}")
    try:
        yield url
    finally:
        probe.delete_stream()  # type: ignore[attr-defined]
        probe.close()


def amqp_namespace_url() -> Iterator[str]:
    """A namespace of its own on the shared RabbitMQ; its queues and exchanges are deleted afterwards."""
    try:
        import aio_pika  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("aio-pika is not installed; under CI=true integration tests must run")
        pytest.skip("aio-pika is not installed (pip install 'tusk_events[amqp]')")
    url = f"{AMQP_URL}?namespace=t{uuid.uuid4().hex[:12]}"
    probe = connect(url, retries=3)
    try:
        probe.ping()
    except Exception as exc:
        probe.close()
        if IN_CI:
            pytest.fail(f"no RabbitMQ at {AMQP_URL}: {exc}")
        pytest.skip("no RabbitMQ server at " + AMQP_URL)
    try:
        yield url
    finally:
        probe.delete_queues()  # type: ignore[attr-defined]
        probe.close()


KAFKA_SESSION_TIMEOUT_MS = 2000
"""tansu holds a group's JoinGroup for half the session timeout (plus ~0.5 s): 2 s sessions make a join
about 1.5 s; a member still heartbeats five times per session, which a loaded machine keeps up."""


def kafka_prefix_url(broker: str) -> Iterator[str]:
    """A topic prefix of its own on the private tansu broker; its topics are deleted afterwards."""
    url = f"kafka://{broker}/t{uuid.uuid4().hex[:12]}?session_timeout_ms={KAFKA_SESSION_TIMEOUT_MS}"
    probe = connect(url, retries=3)
    try:
        yield url
    finally:
        probe.delete_topics()  # type: ignore[attr-defined]
        probe.close()
