"""The embedded bus, ``memory://[name]``: the Redis bus on an in-process fakeredis server.

Every ``connect`` and ``redis_client`` of the same name in one process share one
``fakeredis.FakeServer`` (``memory://`` alone is the name ``default``), so a publisher and
its subscribers, or a fujsen calling ``redis.from_url(event_bus)``, meet without any
setup. It is the same :class:`~tusk_events.bus.redis_bus.RedisBus` code that runs on a
real server, so behaviour (streams, groups, pub/sub, blocking reads) matches; nothing
leaves the process and nothing survives it.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

import fakeredis
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tusk_events.bus.redis_bus import CONNECTION_OPTIONS, RedisBus
from tusk_events.defaults import BUS_MEMORY_DEFAULT_NAME, BUS_MEMORY_REDIS_VERSION
from tusk_events.errors import BusError

_servers: dict[str, fakeredis.FakeServer] = {}
_lock = threading.Lock()


def server_name(url: str) -> str:
    """``memory://orders`` -> ``orders``; ``memory://`` -> the default name."""
    parts = urlsplit(url)
    if parts.scheme != "memory":
        raise BusError(f"not a memory bus URL: {url!r} (expected memory://[name])")
    name = parts.netloc or parts.path.strip("/")
    return name or BUS_MEMORY_DEFAULT_NAME


def server(url: str) -> fakeredis.FakeServer:
    """The process-wide fake server behind ``url``, created on first use."""
    name = server_name(url)
    with _lock:
        srv = _servers.get(name)
        if srv is None:
            srv = _servers[name] = fakeredis.FakeServer(version=BUS_MEMORY_REDIS_VERSION)
        return srv


def forget(url: str) -> None:
    """Drop the server behind ``url`` (its data goes with it); the next use starts empty."""
    with _lock:
        _servers.pop(server_name(url), None)


def open_client(url: str) -> redis.Redis:
    """A redis-py compatible client on the shared fake server (bytes replies, like the real one)."""
    return fakeredis.FakeRedis(server=server(url), decode_responses=False)


def open_bus(url: str, **options: Any) -> RedisBus:
    """A bus on the shared fake server; connection options (timeouts, parser) do not apply here."""
    for k in CONNECTION_OPTIONS:
        options.pop(k, None)
    client = fakeredis.FakeRedis(server=server(url), decode_responses=False, retry=Retry(NoBackoff(), 0))
    return RedisBus(url, client, **options)
