"""The event bus: ``connect(url)`` for a :class:`Bus`, ``redis_client(url)`` for fujsen.

Backends, by URL scheme (imported on first use):

``memory://[name]``
    Embedded and in-process: zero setup; all users of one name in a process share it.
``redis://host:port/db``, ``rediss://`` (TLS), ``unix:///path/redis.sock``
    A Redis server (5.0+; 7+ recommended): a connection pool with socket timeouts and
    health checks, the hiredis parser when installed (``tusk_events[hiredis]``).
``redis+cluster://a:7101,b:7102``, ``rediss+cluster://``
    A Redis Cluster, from one or more seed nodes; a ``redis://`` URL naming any node of a
    cluster is detected (``INFO cluster``) and works the same.

Both run the same implementation (:mod:`tusk_events.bus.redis_bus`), whose docstring has
the key layout and the delivery guarantees.

``amqp://user:pass@host:5672/vhost``, ``amqps://``
    RabbitMQ (:mod:`tusk_events.bus.amqp`, ``tusk_events[amqp]``): quorum queues per
    (type, group), a fanout exchange for broadcast.
``nats://host:4222/<stream>``
    NATS with JetStream (:mod:`tusk_events.bus.nats`, ``tusk_events[nats]``): a stream
    with a durable pull consumer per (group, type), core subjects for broadcast.
``kafka://host:9092[,host2:9092]/<prefix>``
    Kafka (:mod:`tusk_events.bus.kafka`, ``tusk_events[kafka]``): a topic per event type,
    a consumer group per service committing offsets after the handler, a topic for broadcast.

The broker buses share :mod:`tusk_events.bus.broker` (a loop thread for the asyncio
client, the subscription loops); a new broker is one module implementing its hooks.
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tusk_events.bus.base import (
    ACK_ONLY,
    Bus,
    Delivery,
    GroupInfo,
    StreamInfo,
    Subscription,
    redact_url,
)
from tusk_events.defaults import DEFAULT_BUS_URL
from tusk_events.errors import BusError

if TYPE_CHECKING:
    import redis

BACKENDS: dict[str, str] = {
    "memory": "tusk_events.bus.memory",
    "redis": "tusk_events.bus.redis_bus",
    "rediss": "tusk_events.bus.redis_bus",
    "redis+cluster": "tusk_events.bus.redis_bus",
    "rediss+cluster": "tusk_events.bus.redis_bus",
    "unix": "tusk_events.bus.redis_bus",
    "amqp": "tusk_events.bus.amqp",
    "amqps": "tusk_events.bus.amqp",
    "nats": "tusk_events.bus.nats",
    "kafka": "tusk_events.bus.kafka",
}
"""URL scheme -> module providing ``open_bus(url, **options)`` and ``open_client(url)``."""

_DRIVERS = {
    "redis": "tusk_events",
    "fakeredis": "tusk_events",
    "hiredis": "tusk_events[hiredis]",
    "aio_pika": "tusk_events[amqp]",
    "aiormq": "tusk_events[amqp]",
    "pamqp": "tusk_events[amqp]",
    "nats": "tusk_events[nats]",
    "confluent_kafka": "tusk_events[kafka]",
}

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def _backend(url: str) -> ModuleType:
    if not isinstance(url, str) or "://" not in url:
        raise BusError(
            f"invalid event bus URL {url!r}: expected memory://[name], redis://host:port/db, "
            "rediss://host:port/db, unix:///path/to/redis.sock, amqp://host:5672/, nats://host:4222 or kafka://host:9092"
        )
    scheme = url.split("://", 1)[0].lower()
    module = BACKENDS.get(scheme)
    if module is None:
        raise BusError(
            f"unsupported event bus URL {redact_url(url)!r}: scheme {scheme!r} is not one of "
            f"{', '.join(s + '://' for s in BACKENDS)}; set EVENT_BUS (or event_bus in the config) "
            "to one of those"
        )
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = exc.name or "a driver"
        fix = _DRIVERS.get(missing.split(".")[0], missing)
        raise BusError(
            f"the {scheme}:// event bus needs the {missing!r} package, which is not installed: "
            f"pip install '{fix}'"
        ) from exc


def connect(url: str | None = None, **options: Any) -> Bus:
    """A :class:`Bus` for ``url`` (default ``memory://``); options go to the backend.

    Common options: ``channel``, ``stream_prefix``, ``maxlen``, ``approximate``,
    ``publish_to`` ("both" | "durable" | "broadcast"), ``retries``, ``retry_backoff_s``;
    for a real server also ``socket_timeout``, ``socket_connect_timeout``,
    ``health_check_interval``, ``max_connections``, ``parser`` ("auto" | "hiredis" | "python").
    Connecting is lazy: the first command reaches the server.
    """
    url = url or DEFAULT_BUS_URL
    bus: Bus = _backend(url).open_bus(url, **options)
    return bus


def redis_client(url: str | None = None) -> redis.Redis:
    """A redis-py client for ``url``, one per URL per process (connections are pooled).

    Replies are bytes (``decode_responses=False``): ``json.loads`` takes them as they are.
    For ``memory://`` URLs it is a fakeredis client on the same server the bus uses.
    """
    url = url or DEFAULT_BUS_URL
    client = _clients.get(url)
    if client is None:
        with _clients_lock:
            client = _clients.get(url)
            if client is None:
                client = _clients[url] = _backend(url).open_client(url)
    return client


def new_redis_client(url: str, *, parser_class: Any) -> redis.Redis:
    """A client of its own (not cached, not shared) on the Redis server at ``url``, whose
    replies go through ``parser_class``; ``url`` must name a Redis server."""
    backend = _backend(url)
    if backend.__name__ != BACKENDS["redis"]:
        raise BusError(f"{redact_url(url)} is not a Redis server (redis://, rediss://, unix:// or a cluster)")
    client: redis.Redis = backend.open_client(url, parser_class=parser_class)
    return client


__all__ = [
    "ACK_ONLY",
    "BACKENDS",
    "Bus",
    "Delivery",
    "GroupInfo",
    "StreamInfo",
    "Subscription",
    "connect",
    "new_redis_client",
    "redis_client",
]
