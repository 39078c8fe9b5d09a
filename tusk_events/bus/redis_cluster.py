"""Redis Cluster plumbing for the Redis bus: seed URLs, detecting a cluster behind a node URL,
and redis-py's ``RedisCluster`` client.

The bus itself (``redis_bus.RedisBus``) runs unchanged on a cluster because every key it
touches carries one hash tag (``BUS_CLUSTER_TAG``): streams, handled-event records and attempt
counters live in one slot, on one master, so its multi-key round trips and MULTI never cross
slots; it sends them to that master's pool and re-reads the topology after a lost connection
or a MOVED reply (failover, resharding). The price: one master carries the bus's traffic;
the other masters serve the rest of the keyspace (the DLQ streams, the fujsen's own keys).
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tusk_events.bus.base import redact_url
from tusk_events.defaults import BUS_CLUSTER_PROBE_TIMEOUT_S, BUS_CLUSTER_TAG
from tusk_events.errors import BusError


def cluster_seeds(url: str) -> tuple[str, list[tuple[str, int]]] | None:
    """``(plain URL of the first seed, [(host, port)...])`` for ``redis+cluster://a:1,b:2``, else None."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in ("redis+cluster", "rediss+cluster"):
        return None
    auth, _, hosts = rest.rpartition("@")
    hosts, _, tail = hosts.partition("/")
    seeds: list[tuple[str, int]] = []
    for part in hosts.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit():
            raise BusError(
                f"invalid Redis Cluster URL {redact_url(url)!r}: expected "
                "redis+cluster://host:port[,host:port...]"
            )
        seeds.append((host.strip("[]"), int(port)))
    plain = scheme.lower().replace("+cluster", "") + "://" + (auth + "@" if auth else "") + hosts.split(",")[0]
    return plain + ("/" + tail if tail else ""), seeds


def is_cluster_node(url: str) -> bool:
    """Whether the ``redis://`` server at ``url`` is a Redis Cluster node (``INFO cluster``).

    Any failure (down, slow, refused, no INFO command) means "no": the bus then behaves as on
    one server and reports the server's problem on first use, as before."""
    if not url.lower().startswith(("redis://", "rediss://")):
        return False
    try:
        probe = redis.Redis.from_url(
            url, socket_timeout=BUS_CLUSTER_PROBE_TIMEOUT_S,
            socket_connect_timeout=BUS_CLUSTER_PROBE_TIMEOUT_S, retry=Retry(NoBackoff(), 0),
        )
    except ValueError:
        return False
    try:
        return bool(probe.info("cluster").get("cluster_enabled"))
    except Exception:  # noqa: BLE001 - see the docstring
        return False
    finally:
        probe.close()


def key_tag(client: Any) -> str:
    """The hash tag the bus puts before its keys on ``client``'s server: ``BUS_CLUSTER_TAG`` on a
    Redis Cluster, nothing on one server. For code that reads the bus's keys with a plain client
    (``trace``, the relay's epoch): on a cluster an untagged name is another key, in another slot."""
    from redis.cluster import RedisCluster

    return BUS_CLUSTER_TAG if isinstance(client, RedisCluster) else ""


def serving_node(client: Any, key: str | bytes) -> Any:
    """The master node that serves ``key`` on a Redis Cluster (None on one server).

    It changes when a replica takes over: what the old master had acknowledged but not yet
    replicated may be gone although the keys survived, which the relay must know."""
    from redis.cluster import RedisCluster

    if not isinstance(client, RedisCluster):
        return None
    return client.get_node_from_key(key)


def cluster_client(url: str, seeds: list[tuple[str, int]] | None, **options: Any) -> Any:
    """A redis-py ``RedisCluster`` (it follows MOVED/ASK and failovers) seeded with ``seeds``."""
    from redis.cluster import ClusterNode, RedisCluster

    options.pop("max_connections", None)  # per node in RedisCluster; its default is fine
    options.pop("retry", None)
    try:
        if seeds is None:
            return RedisCluster.from_url(url, **options)
        plain = url.partition("?")[0]
        nodes = [ClusterNode(h, p) for h, p in seeds]
        kwargs = redis.connection.parse_url(plain)
        for k in ("host", "port", "db", "connection_class", "path"):
            kwargs.pop(k, None)
        if plain.lower().startswith("rediss"):
            kwargs["ssl"] = True
        return RedisCluster(startup_nodes=nodes, **kwargs, **options)
    except ValueError as exc:
        raise BusError(f"invalid Redis Cluster URL {redact_url(url)!r}: {exc}") from exc
    except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.RedisClusterException) as exc:
        raise BusError(f"cannot reach the Redis Cluster at {redact_url(url)}: {exc}") from exc


__all__ = ["cluster_client", "cluster_seeds", "is_cluster_node", "key_tag", "serving_node"]
