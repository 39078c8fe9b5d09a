"""Fixtures for the bus tests: one bus URL per backend, and a private redis-server to kill."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_support import amqp_namespace_url, kafka_prefix_url, nats_stream_url
from bus_support import RedisServer
from cluster_support import PrivateCluster

from tusk_events.bus import Bus, connect, memory

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")



REDIS_PROTOCOL_ONLY = {
    # these write or read the Redis keys and channels themselves (the docs' fujsen speak Redis)
    "test_docs_envelope_without_id_is_accepted",
    "test_docs_fujsen_interoperate_with_the_bus",
    "test_undecodable_entry_is_reported_and_dropped",
    "test_group_is_recreated_when_its_stream_disappears",
}
"""Contract tests that use a Redis client beside the bus; the broker backends have their own
versions of them (foreign messages, lost streams) in test_bus_nats.py."""


QUEUES_ARE_NOT_LOGS = {
    # a RabbitMQ queue is not a log: a group created later does not see history that another
    # group already took, "length" is what waits for groups to come, and AMQP 0-9-1 reports
    # neither lag nor other processes' unacknowledged counts (see bus/amqp.py)
    "test_stream_info_reports_length_pending_and_lag",
    "test_types_none_durable_follows_new_types",
}
"""Contract tests whose promise RabbitMQ cannot keep; test_bus_amqp.py checks what it does instead."""


KAFKA_DIFFERS = {
    "test_maxlen_trims_streams": "Kafka keeps records by time or size, not count",
    "test_broadcast_run_until_idle_returns_when_quiet":
        "a first publish (topic creation, producer metadata) takes longer than the test's 100 ms quiet time",
    "test_stream_info_reports_length_pending_and_lag": "Kafka does not tell delivered from undelivered records",
    "test_run_until_idle_gives_up_at_its_timeout":
        "a new member's first record waits for its group join (half the session timeout on tansu), "
        "past this test's 0.3 s; test_bus_kafka.py checks the redelivery after a join",
    "test_durable_consumers_of_one_group_share_without_duplicates":
        "records of one type share one partition by default (key = type), which one member owns; "
        "test_bus_kafka.py shares a group's partitions with ?key=id",
}
"""Contract tests whose promise Kafka (or tansu) keeps differently; test_bus_kafka.py checks what it does."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = getattr(item, "originalname", item.name)
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("url") if callspec is not None else None
        if backend in ("nats", "amqp", "kafka") and name in REDIS_PROTOCOL_ONLY:
            item.add_marker(pytest.mark.skip(reason="speaks the Redis protocol beside the bus"))
        if backend == "amqp" and name in QUEUES_ARE_NOT_LOGS:
            item.add_marker(pytest.mark.skip(reason="RabbitMQ queues are not logs"))
        if backend == "kafka" and name in KAFKA_DIFFERS:
            item.add_marker(pytest.mark.skip(reason=KAFKA_DIFFERS[name]))


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("nats", marks=pytest.mark.nats),
        pytest.param("amqp", marks=pytest.mark.amqp),
        pytest.param("cluster", marks=pytest.mark.cluster),
        pytest.param("kafka", marks=pytest.mark.kafka),
    ]
)
def url(request: pytest.FixtureRequest, memory_url: str) -> Iterator[str]:
    """The URL of an empty bus on each backend: embedded, real Redis, NATS JetStream, RabbitMQ."""
    if request.param == "memory":
        yield memory_url
        memory.forget(memory_url)
    elif request.param == "nats":
        yield from nats_stream_url()
    elif request.param == "amqp":
        yield from amqp_namespace_url()
    elif request.param == "cluster":
        yield request.getfixturevalue("cluster_url")
    elif request.param == "kafka":
        yield from kafka_prefix_url(request.getfixturevalue("kafka_broker"))
    else:
        yield request.getfixturevalue("redis_url")


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[PrivateCluster]:
    """The private Redis Cluster: started when not up, and then stopped (only what was started)."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        if IN_CI:
            pytest.fail("redis-server/redis-cli are not on PATH; under CI=true integration tests must run")
        pytest.skip("redis-server/redis-cli are not on PATH")
    cluster = PrivateCluster()
    try:
        cluster.ensure()
    except Exception as exc:  # noqa: BLE001 - ports taken, or the cluster would not form
        if IN_CI:
            pytest.fail(f"could not start the private Redis Cluster: {exc}")
        pytest.skip(f"could not start the private Redis Cluster: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: PrivateCluster) -> Iterator[str]:
    """A ``redis+cluster://`` URL of the private cluster, emptied before and after."""
    import redis
    from redis.cluster import RedisCluster

    def flush() -> None:  # a new client each time: a test may have failed a master over
        client = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
        try:
            client.flushall(target_nodes=RedisCluster.PRIMARIES)
        finally:
            client.close()

    flush()
    try:
        yield redis_cluster.url
    finally:
        flush()


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

