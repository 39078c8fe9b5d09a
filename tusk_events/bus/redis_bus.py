"""The Redis bus: pub/sub for ``broadcast``, Streams with consumer groups for ``durable``.

(Over 1,000 lines on purpose, for now: the publish path, the durable consumer loop and the
broadcast listener share one set of wire helpers — ``_roundtrip``, the error-reply
classification, the key layout — and were kept together so that parallel changes to this
file merge cleanly. What runs beside the consumer loop, claim renewal, release and attempt
counting, is in ``redis_delivery.py``; the consumer classes are the next thing to move out.)

Key layout (``stream_prefix`` defaults to ``tusk:stream:``, ``channel`` to ``tusk_events``)::

    tusk:stream:<type>    one stream per event type; each entry has one field, ``event``,
                          holding the JSON envelope (the same bytes as on the channel)
    tusk_events           the pub/sub channel: every event as its JSON envelope, as the
                          docs' ``publish_event``/``subscribe_events`` fujsen expect

On a Redis Cluster every key above (and the dedup and attempt records) is prefixed with
``BUS_CLUSTER_TAG`` (``{tusk}:``), so they share one slot: see ``redis_cluster.py``.

Choices:

* ``publish`` writes, by default (``publish_to="both"``), to the type's stream *and* to the
  channel in one pipelined round trip: durable groups that are down lose nothing, live
  broadcast listeners (the docs' fujsen included) see it at once. ``"durable"`` writes the
  stream only, ``"broadcast"`` the channel only.
* Streams are trimmed at each XADD to about ``maxlen`` entries (``MAXLEN ~``; exact with
  ``approximate=False``; never with ``maxlen=None``). An entry trimmed while still pending
  is lost to its group; that is logged when the group next claims.
* A group created for the first time starts at the oldest retained entry (``start=
  "earliest"``) or at the end (``"latest"``). A group recreated after the server lost its
  data (restart without persistence) starts at the beginning of the new stream, so events
  published since the restart are not skipped.
* ``types=None`` in durable mode means every stream under the prefix, found with SCAN at
  start and every ``discover_interval_s``; groups on newly found streams start at their
  first entry. Name the types on a large shared server: SCAN walks the whole keyspace.
  In broadcast mode ``types`` filters on the subscriber side (one channel carries all).
* Entries are read in batches (``XREADGROUP COUNT n``; n is ``batch`` for fast handlers and
  shrinks towards 1 when handlers are slow, see ``BUS_READ_AHEAD_S``) and acknowledged as
  they finish: in the round trip that counts the next handler's attempt (``track_attempts``),
  else before the next handler once ``BUS_ACK_FLUSH_S`` has passed, else with the next read. While entries are read and not yet
  acknowledged, a heartbeat renews their claim (``XCLAIM ... JUSTID``, every third of the
  visibility timeout), so healthy work is never reclaimed, by this consumer or another, however
  long the batch takes. An entry whose handler raised stays pending, is no longer renewed, and
  is claimed (XAUTOCLAIM), by any consumer of the group, once idle for
  ``visibility_timeout_ms``. A stop lets the entries already read finish (a read holds about
  ``BUS_READ_AHEAD_S`` of work); what a caller gives up on (``abandon()``, or a run that ended
  on an error) is released at once (idle time set past the timeout) for any consumer to claim.
* Entries that are not usable events (not JSON, not an envelope, nested too deep to decode,
  anything the decoder raises) can never succeed: they go to ``on_poison`` with their bytes
  (the runtime writes them to the service's dead-letter queue) and are acknowledged; the
  loop goes on.
* Clients use ``decode_responses=False``: payloads stay bytes, which ``json.loads``
  accepts, so the docs' fujsen work unchanged and nothing is decoded twice.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    MovedError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.retry import Retry

from tusk_events.bus.base import (
    ACK_ONLY,
    Bus,
    Delivery,
    ErrorHandler,
    EventSpec,
    GroupInfo,
    Handler,
    Mode,
    PoisonHandler,
    PublishTo,
    StreamInfo,
    Subscription,
    redact_url,
    strict_json,
    to_event,
)
from tusk_events.bus.redis_cluster import cluster_client, cluster_seeds, is_cluster_node
from tusk_events.bus.redis_delivery import DeliveryTracking
from tusk_events.defaults import (
    BUS_ACK_FLUSH_S,
    BUS_BATCH,
    BUS_BLOCK_MS,
    BUS_BROADCAST_POLL_S,
    BUS_CHANNEL,
    BUS_CLAIM_INTERVAL_MAX_S,
    BUS_CLUSTER_TAG,
    BUS_CONNECT_TIMEOUT_S,
    BUS_DEFAULT_GROUP,
    BUS_DISCOVER_INTERVAL_S,
    BUS_HEALTH_CHECK_INTERVAL_S,
    BUS_MAX_CONNECTIONS,
    BUS_MAXLEN,
    BUS_PUBLISH_CHUNK,
    BUS_PUBLISH_RETRIES,
    BUS_RETRY_BACKOFF_MAX_S,
    BUS_RETRY_BACKOFF_S,
    BUS_SOCKET_TIMEOUT_S,
    BUS_STREAM_FIELD,
    BUS_STREAM_PREFIX,
    BUS_UNREACHABLE_GIVE_UP_S,
    BUS_VISIBILITY_TIMEOUT_MS,
    DEDUP_PREFIX,
    DEDUP_TTL_S,
)
from tusk_events.errors import BusError
from tusk_events.events import Event, new_event

log = logging.getLogger(__name__)

TRANSIENT = (redis.ConnectionError, redis.TimeoutError)
"""Errors after which the same command may succeed once the connection is re-established."""

CONNECTION_OPTIONS = frozenset(
    {"socket_timeout", "socket_connect_timeout", "health_check_interval", "max_connections", "parser"}
)
"""Options of :func:`open_bus` that configure the connection rather than the bus."""

_FIELD = BUS_STREAM_FIELD
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
"""``Event.to_json`` without building an encoder per call: same bytes, on the publish hot path."""
_decode = json.JSONDecoder().decode
"""``json.loads`` minus its per-call encoding sniffing; envelopes are UTF-8 by construction."""


def _event(raw: bytes, fallback_id: str | None = None) -> Event:
    """Decode one envelope (ValueError/TypeError when it is not one)."""
    return Event.from_dict(_decode(raw.decode()), fallback_id=fallback_id)
_NO_RETRY = Retry(NoBackoff(), 0)


def _client_options(
    *,
    socket_timeout: float | None = BUS_SOCKET_TIMEOUT_S,
    socket_connect_timeout: float | None = BUS_CONNECT_TIMEOUT_S,
    health_check_interval: float = BUS_HEALTH_CHECK_INTERVAL_S,
    max_connections: int | None = BUS_MAX_CONNECTIONS,
    parser: Literal["auto", "hiredis", "python"] = "auto",
) -> dict[str, Any]:
    """redis-py keyword arguments; the URL's query string (``?socket_timeout=...``) overrides them."""
    opts: dict[str, Any] = {
        "decode_responses": False,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "socket_keepalive": True,
        "health_check_interval": health_check_interval,
        "max_connections": max_connections,
    }
    from redis._parsers import _HiredisParser, _RESP2Parser
    from redis.utils import HIREDIS_AVAILABLE

    if parser == "hiredis":
        if not HIREDIS_AVAILABLE:
            raise BusError(
                "the hiredis parser was asked for but hiredis is not installed: "
                "pip install 'tusk_events[hiredis]' (or use parser='auto')"
            )
        opts["parser_class"] = _HiredisParser
    elif parser == "python":
        opts["parser_class"] = _RESP2Parser
    elif parser != "auto":
        raise BusError(f"unknown parser {parser!r}: use 'auto', 'hiredis' or 'python'")
    return opts


def open_client(url: str, *, parser_class: Any = None) -> Any:
    """A pooled redis-py client for ``url`` with the bus's timeouts and redis-py's own retries
    (a ``RedisCluster`` when ``url`` is a cluster: ``redis+cluster://`` or a cluster node).

    ``parser_class`` replaces redis-py's reply parser (e.g. one that caps reply sizes).
    """
    options = _client_options()
    if parser_class is not None:
        options["parser_class"] = parser_class
    seeded = cluster_seeds(url)
    if seeded is not None or is_cluster_node(url):
        return cluster_client(
            seeded[0] if seeded else url, seeded[1] if seeded else None, **options
        )
    try:
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise BusError(f"invalid Redis URL {redact_url(url)!r}: {exc}") from exc


def open_bus(url: str, **options: Any) -> RedisBus:
    """A :class:`RedisBus` on the server at ``url`` (redis://, rediss:// or unix://), or on a
    Redis Cluster (``redis+cluster://a:7101,b:7102``, or ``redis://`` naming any of its nodes)."""
    conn_opts = {k: options.pop(k) for k in list(options) if k in CONNECTION_OPTIONS}
    seeded = cluster_seeds(url)
    if seeded is not None or is_cluster_node(url):
        client = cluster_client(
            seeded[0] if seeded else url, seeded[1] if seeded else None, **_client_options(**conn_opts)
        )
        return RedisBus(url, client, **options)
    try:
        # Retries are the bus's (``retries=``), so redis-py's own are off.
        client = redis.Redis.from_url(url, retry=_NO_RETRY, **_client_options(**conn_opts))
    except ValueError as exc:
        raise BusError(f"invalid Redis URL {redact_url(url)!r}: {exc}") from exc
    return RedisBus(url, client, **options)


_GONE = ("NOGROUP", "UNBLOCKED the", "The XGROUP subcommand requires the key to exist")
"""Error replies meaning "the stream or the group is gone": NOGROUP, the reply a blocked
reader gets when its stream or group is deleted, and fakeredis's wording of the former."""

_RETRYABLE = ("READONLY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "MOVED", "ASK ")
"""Error replies of a server in failover or start-up, or of a cluster node that no longer
serves the bus's slot: the same command succeeds later (on the node the topology names)."""

_RETRYABLE_CLASSES = (ReadOnlyError, ClusterDownError, TryAgainError, AskError, BusyLoadingError)
"""The same replies as redis-py's parser hands them over: it maps these codes to their own
classes (MOVED and MASTERDOWN are subclasses) and strips the code from the message."""


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, _RETRYABLE_CLASSES) or (
        isinstance(exc, ResponseError) and str(exc).startswith(_RETRYABLE)
    )


def _is_nogroup(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and str(exc).startswith(_GONE)


class _Retryable(Exception):
    """A server reply that says "try again later"; handled like a lost connection."""


def _check(exc: ResponseError, what: str) -> None:
    """Raise ``exc`` as _Retryable or as a BusError; never returns."""
    if _retryable(exc):
        raise _Retryable(f"{getattr(exc, 'status_code', None) or type(exc).__name__}: {exc}") from exc
    raise BusError(f"{what}: {exc}") from exc


def _glob_escape(raw: bytes) -> bytes:
    out = bytearray()
    for b in raw:
        if b in b"*?[]\\":
            out.append(0x5C)
        out.append(b)
    return bytes(out)


def _pairs(flat: Any) -> dict[bytes, Any]:
    """A RESP2 flat ``[k1, v1, k2, v2...]`` reply (or a RESP3 map) as a dict."""
    if isinstance(flat, dict):
        return flat
    return {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
_HiredisPacker: Any
try:
    from hiredis import pack_command as _hiredis_pack
    from redis.connection import HiredisRespSerializer as _HiredisPacker
except ImportError:  # pragma: no cover - redis-py packs without it
    _hiredis_pack = _HiredisPacker = None


def _pack(conn: Any, commands: Sequence[tuple[Any, ...]]) -> list[bytes]:
    """The wire bytes of ``commands``: straight through hiredis when the connection packs with it.

    The same bytes as ``conn.pack_commands`` for the bytes, str, int and float arguments the bus
    sends, without redis-py's per-argument Python pass, which was a fifth of a consumer's time.
    """
    if (
        _hiredis_pack is not None
        and type(getattr(conn, "_command_packer", None)) is _HiredisPacker
        and conn.encoder.encoding in ("utf-8", "utf8")  # as hiredis encodes str
    ):
        try:
            return [b"".join([_hiredis_pack(c) for c in commands])]
        except TypeError:  # an argument hiredis does not take: redis-py says which, below
            pass
    packed: list[bytes] = conn.pack_commands(commands)
    return packed


def _roundtrip(conn: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` in one write and read their raw replies; error replies come back as values."""
    try:
        conn.send_packed_command(_pack(conn, commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return replies
    except BaseException:
        conn.disconnect()  # replies may be half read: never reuse this socket
        raise


class RedisBus(Bus):
    """A bus on one Redis server (or an embedded fakeredis one: see ``memory``)."""

    def __init__(
        self,
        url: str,
        client: redis.Redis,
        *,
        channel: str = BUS_CHANNEL,
        stream_prefix: str = BUS_STREAM_PREFIX,
        maxlen: int | None = BUS_MAXLEN,
        approximate: bool = True,
        publish_to: PublishTo = "both",
        retries: int = BUS_PUBLISH_RETRIES,
        retry_backoff_s: float = BUS_RETRY_BACKOFF_S,
        retry_backoff_max_s: float = BUS_RETRY_BACKOFF_MAX_S,
        discover_interval_s: float = BUS_DISCOVER_INTERVAL_S,
    ) -> None:
        if publish_to not in ("both", "durable", "broadcast"):
            raise BusError(f"publish_to must be 'both', 'durable' or 'broadcast', not {publish_to!r}")
        if maxlen is not None and maxlen < 1:
            raise BusError(f"maxlen must be a positive number of entries or None, not {maxlen!r}")
        self.url = url
        self.shown_url = redact_url(url)
        self.channel = channel
        self.stream_prefix = stream_prefix
        self.publish_to = publish_to
        self.retries = max(0, int(retries))
        self.retry_backoff_s = retry_backoff_s
        self.retry_backoff_max_s = retry_backoff_max_s
        self.discover_interval_s = discover_interval_s
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        """On a Redis Cluster every key carries one hash tag (``BUS_CLUSTER_TAG``): one slot, so
        multi-key round trips and MULTI never cross slots; all the bus's traffic goes to the
        master of that slot, through the pool redis-py's cluster client keeps for it."""
        self.key_tag = BUS_CLUSTER_TAG if self.cluster and "{" not in stream_prefix else ""
        self.dedup_prefix = self.key_tag + DEDUP_PREFIX
        """Where handled-event records go: ``<dedup_prefix><group>:<event id>``."""
        if self.cluster:
            self.stream_prefix = stream_prefix = self.key_tag + stream_prefix
        self._pool: Any = None if self.cluster else client.connection_pool
        self._channel_b = channel.encode()
        self._prefix_b = stream_prefix.encode()
        self._trim: tuple[bytes, ...] = (
            () if maxlen is None else (b"MAXLEN", b"~" if approximate else b"=", str(maxlen).encode())
        )
        self._to_stream = publish_to in ("both", "durable")
        self._to_channel = publish_to in ("both", "broadcast")
        self._keys: dict[str, bytes] = {}
        self._xadd: dict[str, tuple[bytes, ...]] = {}
        self._subs: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._closed = False

    # --- keys ---------------------------------------------------------------------

    def key(self, type: str) -> bytes:
        """The stream key of an event type."""
        k = self._keys.get(type)
        if k is None:
            if not isinstance(type, str) or not type:
                raise BusError(f"an event type must be a non-empty string, not {type!r}")
            k = self._keys[type] = self._prefix_b + type.encode()
        return k

    def type_of(self, key: bytes) -> str:
        return key[len(self._prefix_b) :].decode()

    # --- publishing ---------------------------------------------------------------

    def publish(
        self, type: str, payload: Any = None, *, metadata: Mapping[str, Any] | None = None
    ) -> Event:
        event = new_event(type, payload, metadata)
        self._execute(self._commands(event), "publish")
        return event

    def publish_event(self, event: Event) -> Event:
        if not isinstance(event, Event):
            raise TypeError(f"publish_event() takes an Event, got {event!r}")
        self._execute(self._commands(event), "publish")
        return event

    def publish_many(self, events: Iterable[EventSpec]) -> list[Event]:
        out: list[Event] = []
        commands: list[tuple[Any, ...]] = []
        per_chunk = BUS_PUBLISH_CHUNK * (self._to_stream + self._to_channel)
        for spec in events:
            event = to_event(spec)
            out.append(event)
            commands.extend(self._commands(event))
            if len(commands) >= per_chunk:
                self._execute(commands, "publish")
                commands = []
        if commands:
            self._execute(commands, "publish")
        return out

    def _commands(self, event: Event) -> list[tuple[Any, ...]]:
        try:
            data = _encode(event.to_dict()).encode()
        except (TypeError, ValueError):
            strict_json(event.to_dict(), event.type)  # raises PayloadError with the reason
            raise
        if self._to_stream:
            head = self._xadd.get(event.type)
            if head is None:
                head = self._xadd[event.type] = (b"XADD", self.key(event.type), *self._trim, b"*", _FIELD)
            if self._to_channel:
                return [(*head, data), (b"PUBLISH", self._channel_b, data)]
            return [(*head, data)]
        return [(b"PUBLISH", self._channel_b, data)]

    # --- plumbing -----------------------------------------------------------------

    def pool(self) -> Any:
        """The connection pool of the server (on a cluster: of the master holding the bus's slot)."""
        if not self.cluster:
            return self._pool
        cluster: Any = self.client
        node = cluster.get_node_from_key(self._prefix_b)
        if node.redis_connection is None:
            cluster.nodes_manager.initialize()
            node = cluster.get_node_from_key(self._prefix_b)
        return node.redis_connection.connection_pool

    def refresh_topology(self) -> None:
        """After a lost node or a MOVED reply: ask the cluster again which node serves what."""
        if not self.cluster:
            return
        cluster: Any = self.client
        try:
            cluster.nodes_manager.initialize()
        except Exception as exc:  # noqa: BLE001 - the next attempt tries again
            log.debug("refreshing the cluster topology of %s failed: %s", self.shown_url, exc)

    def _once(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        pool = self.pool()
        conn = pool.get_connection()
        try:
            return _roundtrip(conn, commands)
        finally:
            pool.release(conn)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        return min(self.retry_backoff_s * (2**attempt), self.retry_backoff_max_s)

    def _retrying(self, commands: Sequence[tuple[Any, ...]], what: str) -> list[Any]:
        """One round trip, retried with backoff on transient failures; error replies come back as values."""
        if self._closed:
            raise BusError(f"cannot {what} on {self.shown_url}: the bus is closed")
        attempt = 0
        todo: list[int] | None = None  # on a cluster: the commands still to send (None: all)
        out: list[Any] = []
        while True:
            try:
                if not self.cluster:
                    return self._once(commands)
                batch = commands if todo is None else [commands[i] for i in todo]
                replies = self._follow_ask(batch, self._once(batch))
                if todo is None:
                    out, todo = replies, list(range(len(commands)))
                else:
                    for i, r in zip(todo, replies):
                        out[i] = r
                # a cluster in failover or resharding refused some: send those again, and only
                # those (an XADD sent twice is two entries)
                todo = [i for i in todo if _retryable(out[i])]
                if not todo or attempt >= self.retries:
                    return out
                raise redis.ConnectionError(str(out[todo[0]]))
            except TRANSIENT as exc:
                self.refresh_topology()
                if attempt >= self.retries:
                    raise BusError(
                        f"cannot {what} on {self.shown_url}: {exc} (after {attempt + 1} attempts); "
                        "check that the Redis server is running and reachable at that URL, "
                        "or set EVENT_BUS to memory:// for an embedded bus"
                    ) from exc
                time.sleep(self.backoff(attempt))
                attempt += 1

    def _follow_ask(self, commands: Sequence[tuple[Any, ...]], replies: list[Any]) -> list[Any]:
        """Send the commands answered ASK again, each behind ``ASKING``, to the node named.

        While the bus's slot migrates, the keys already moved answer ASK on the old master until
        the move ends (which can take seconds with many keys): the command is for the new one."""
        asked: dict[tuple[str, int], list[int]] = {}
        for i, r in enumerate(replies):
            if isinstance(r, AskError) and not isinstance(r, MovedError):
                asked.setdefault((r.host, int(r.port)), []).append(i)
        if not asked:
            return replies
        out = list(replies)
        cluster: Any = self.client
        for (host, port), idx in asked.items():
            node = cluster.get_node(host=host, port=port)
            if node is None or node.redis_connection is None:
                continue  # a node the client does not know yet: retried after a refresh
            pool = node.redis_connection.connection_pool
            conn = pool.get_connection()
            try:
                again = _roundtrip(conn, [c for i in idx for c in ((b"ASKING",), commands[i])])
            finally:
                pool.release(conn)
            for n, i in enumerate(idx):
                out[i] = again[2 * n + 1]
        return out

    def _execute(self, commands: Sequence[tuple[Any, ...]], what: str) -> list[Any]:
        """Like ``_retrying``, but an error reply is a BusError naming the command."""
        replies = self._retrying(commands, what)
        for cmd, reply in zip(commands, replies):
            if isinstance(reply, ResponseError):
                raise BusError(
                    f"cannot {what} on {self.shown_url}: {cmd[0].decode()} "
                    f"{_text(cmd[1]) if len(cmd) > 1 else ''} failed: {reply}"
                ) from reply
        return replies

    def dedicated_connection(self, extra_timeout_s: float = 0.0) -> Any:
        """A connection outside the pool, for one subscriber's blocking reads (raw RESP2 replies)."""
        pool = self.pool()
        kwargs = dict(pool.connection_kwargs)
        timeout = kwargs.get("socket_timeout")
        if timeout is not None:
            kwargs["socket_timeout"] = timeout + extra_timeout_s
        kwargs["protocol"] = 2
        # redis-py 7+ maintenance notifications need RESP3 (or hiredis): not for this connection
        kwargs.pop("maint_notifications_config", None)
        kwargs.pop("maint_notifications_pool_handler", None)
        return pool.connection_class(**kwargs)

    def unblock(self, client_id: int) -> None:
        """Wake the blocked reader with ``client_id`` (CLIENT UNBLOCK); best effort."""
        try:
            self._once([(b"CLIENT", b"UNBLOCK", client_id, b"TIMEOUT")])
        except Exception as exc:  # noqa: BLE001 - the read then ends at its block timeout
            log.debug("CLIENT UNBLOCK on %s failed: %s", self.shown_url, exc)

    def scan_streams(self, call: Callable[[Sequence[tuple[Any, ...]]], list[Any]] | None = None) -> list[bytes]:
        """The stream keys under the prefix (SCAN ... TYPE stream)."""
        call = call or self._once
        pattern = _glob_escape(self._prefix_b) + b"*"
        keys: set[bytes] = set()
        cursor: Any = b"0"
        while True:
            reply = call([(b"SCAN", cursor, b"MATCH", pattern, b"COUNT", 1000, b"TYPE", b"stream")])[0]
            if isinstance(reply, ResponseError):
                raise reply
            cursor, found = reply[0], reply[1]
            keys.update(found)
            if int(cursor) == 0:
                return sorted(keys)

    # --- subscribing --------------------------------------------------------------

    def subscribe(
        self,
        handler: Handler,
        types: Sequence[str] | str | None = None,
        *,
        group: str | None = None,
        consumer: str | None = None,
        mode: Mode = "durable",
        batch: int | None = None,
        block_ms: int | None = None,
        visibility_timeout_ms: int | None = None,
        on_error: ErrorHandler | None = None,
        start: Literal["earliest", "latest"] = "earliest",
        dedup_ttl_s: float | None = None,
        on_poison: PoisonHandler | None = None,
        track_attempts: bool = False,
        assume_first_started: bool = False,
    ) -> Subscription:
        if self._closed:
            raise BusError(f"cannot subscribe on {self.shown_url}: the bus is closed")
        wanted = (types,) if isinstance(types, str) else (tuple(types) if types is not None else None)
        if wanted is not None:
            for t in wanted:
                self.key(t)  # validates
        sub: Subscription
        if mode == "durable":
            if start not in ("earliest", "latest"):
                raise BusError(f"start must be 'earliest' or 'latest', not {start!r}")
            sub = DurableSubscription(
                self,
                handler,
                wanted,
                group=group or BUS_DEFAULT_GROUP,
                consumer=consumer,
                batch=batch or BUS_BATCH,
                block_ms=block_ms or BUS_BLOCK_MS,
                visibility_timeout_ms=visibility_timeout_ms or BUS_VISIBILITY_TIMEOUT_MS,
                on_error=on_error,
                start=start,
                dedup_ttl_s=dedup_ttl_s,
                on_poison=on_poison,
                track_attempts=track_attempts,
                assume_first_started=assume_first_started,
            )
        elif mode == "broadcast":
            sub = BroadcastSubscription(
                self, handler, wanted, block_ms=block_ms or BUS_BLOCK_MS, on_error=on_error,
                on_poison=on_poison,
            )
        else:
            raise BusError(f"unknown delivery mode {mode!r}: use 'durable' or 'broadcast'")
        self._subs.add(sub)
        return sub

    # --- introspection and lifecycle ----------------------------------------------

    def ping(self) -> float:
        t0 = time.perf_counter()
        self._execute([(b"PING",)], "ping")
        return time.perf_counter() - t0

    def stream_info(self, types: Sequence[str] | None = None) -> dict[str, StreamInfo]:
        if types is None:
            keys = self.scan_streams(lambda cmds: self._execute(cmds, "list streams"))
        else:
            keys = [self.key(t) for t in types]
        if not keys:
            return {}
        commands: list[tuple[Any, ...]] = []
        for k in keys:
            commands.append((b"XINFO", b"STREAM", k))
            commands.append((b"XINFO", b"GROUPS", k))
        replies = []
        for i in range(0, len(commands), 2 * BUS_PUBLISH_CHUNK):
            replies.extend(self._retrying(commands[i : i + 2 * BUS_PUBLISH_CHUNK], "read stream info"))
        out: dict[str, StreamInfo] = {}
        for n, k in enumerate(keys):
            type_name = self.type_of(k)
            stream, groups = replies[2 * n], replies[2 * n + 1]
            if isinstance(stream, ResponseError):
                if "no such key" not in str(stream).lower():
                    raise BusError(f"cannot read stream {k.decode()} on {self.shown_url}: {stream}") from stream
                out[type_name] = StreamInfo(type_name, k.decode(), 0, None, {})  # never written
                continue
            s = _pairs(stream)
            ginfo: dict[str, GroupInfo] = {}
            if not isinstance(groups, ResponseError):
                for g in groups:
                    gd = _pairs(g)
                    name = _text(gd[b"name"])
                    lag = gd.get(b"lag")
                    ginfo[name] = GroupInfo(
                        name=name,
                        consumers=int(gd.get(b"consumers", 0)),
                        pending=int(gd.get(b"pending", 0)),
                        lag=None if lag is None else int(lag),
                        last_delivered_id=_text(gd.get(b"last-delivered-id", b"0-0")),
                    )
            last = s.get(b"last-generated-id")
            out[type_name] = StreamInfo(
                type=type_name,
                key=k.decode(),
                length=int(s.get(b"length", 0)),
                last_id=None if last is None else _text(last),
                groups=ginfo,
            )
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subs):
            if sub.running:
                sub.stop()
        if self.cluster:
            self.client.close()
        else:
            self._pool.disconnect()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.shown_url} channel={self.channel!r} prefix={self.stream_prefix!r}>"


def _raw_fields(fields: Any) -> bytes:
    """An entry's fields as ``name=value`` lines: the bytes kept for one without an ``event`` field."""
    try:
        return b"\n".join(bytes(fields[i]) + b"=" + bytes(fields[i + 1]) for i in range(0, len(fields) - 1, 2))
    except Exception:  # noqa: BLE001 - a reply shape we do not know: keep its repr
        return repr(fields).encode()


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class _Reconnecting:
    """Backoff bookkeeping for a subscriber's reconnect loop."""

    def __init__(self, bus: RedisBus, where: str) -> None:
        self.bus = bus
        self.where = where
        self.attempt = 0
        self.last: BaseException | None = None
        self.since: float | None = None

    def down_for(self) -> float:
        """Seconds since the first of the failures in a row (0 when connected)."""
        return 0.0 if self.since is None else time.monotonic() - self.since

    def failed(self, exc: BaseException, stopping: threading.Event) -> None:
        if self.since is None:
            self.since = time.monotonic()
        if self.attempt == 0:
            if isinstance(exc, _Retryable):  # failover, restart or resharding in progress
                log.warning("%s: the server says try again (%s); reconnecting", self.where, exc)
            else:
                log.warning("%s lost its connection (%s); reconnecting", self.where, exc)
        else:
            log.debug("%s: reconnect attempt %d failed: %s", self.where, self.attempt, exc)
        self.last = exc
        delay = self.bus.backoff(self.attempt)
        self.attempt += 1
        stopping.wait(delay)

    def ok(self) -> None:
        if self.attempt:
            log.info("%s reconnected after %d attempts", self.where, self.attempt)
        self.attempt = 0
        self.last = None
        self.since = None


class DurableSubscription(DeliveryTracking, Subscription):
    """Consumer ``consumer`` of group ``group`` on the streams of ``types``."""

    mode: Mode = "durable"

    def __init__(
        self,
        bus: RedisBus,
        handler: Handler,
        types: tuple[str, ...] | None,
        *,
        group: str,
        consumer: str | None,
        batch: int,
        block_ms: int,
        visibility_timeout_ms: int,
        on_error: ErrorHandler | None,
        start: Literal["earliest", "latest"],
        dedup_ttl_s: float | None = None,
        on_poison: PoisonHandler | None = None,
        track_attempts: bool = False,
        assume_first_started: bool = False,
    ) -> None:
        self._auto_consumer = consumer is None
        super().__init__(
            handler, types=types, group=group, consumer=consumer or _default_consumer(), on_error=on_error,
            on_poison=on_poison,
        )
        assert self.group is not None and self.consumer is not None
        self._bus = bus
        self._group_b = self.group.encode()
        self._consumer_b = self.consumer.encode()
        self.batch = max(1, int(batch))
        self.block_ms = max(1, int(block_ms))
        self.visibility_timeout_ms = max(1, int(visibility_timeout_ms))
        self._claim_every = min(max(self.visibility_timeout_ms / 4000, 0.01), BUS_CLAIM_INTERVAL_MAX_S)
        self._start_id = b"0" if start == "earliest" else b"$"
        self._discover = types is None
        self._keys: list[bytes] = [] if types is None else list(dict.fromkeys(bus.key(t) for t in types))
        self._type_of: dict[bytes, str] = {k: bus.type_of(k) for k in self._keys}
        self._conn: Any = None
        self._client_id: int | None = None
        self._blocked = False
        self._setup_needed = True
        self._created_once = False
        self._unacked: dict[bytes, list[bytes]] = {}
        # Idempotent consumption: ids of events handled since the last ack, recorded under
        # DEDUP_PREFIX<group>:<id> in one MULTI with their XACK.
        self._dedup_ttl = None if dedup_ttl_s is None else max(1, int(dedup_ttl_s))
        self._dedup_prefix = f"{bus.dedup_prefix}{self.group}:".encode()
        self._done_ids: list[bytes] = []
        self._claim_cursor: dict[bytes, bytes] = {}
        self._read_head = (b"XREADGROUP", b"GROUP", self._group_b, self._consumer_b, b"COUNT")
        self._read_tail: tuple[bytes, ...] = ()
        self._reconnect = _Reconnecting(bus, self._where())
        self._init_tracking(group=self.group, track_attempts=track_attempts, ttl_s=self._dedup_ttl or DEDUP_TTL_S)
        self._done_attempts: list[bytes] = []
        self._current: bytes | None = None
        self._given_up = False
        self._assume_first = int(bool(assume_first_started))
        self._last_flush = 0.0
        self.groups_lost = 0
        """Groups found missing at a reconnect and recreated (the server lost its data)."""

    def _where(self) -> str:
        return f"consumer {self.consumer} of group {self.group} on {self._bus.shown_url}"

    def _last_error(self) -> BaseException | None:
        return self._reconnect.last

    # --- connection ---------------------------------------------------------------

    def _call(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        return _roundtrip(self._conn, commands)

    def _set_keys(self, keys: Iterable[bytes]) -> list[bytes]:
        """Add stream keys; returns the new ones."""
        new = [k for k in keys if k not in self._type_of]
        for k in new:
            self._keys.append(k)
            self._type_of[k] = self._bus.type_of(k)
        tail = (b"STREAMS", *self._keys, *([b">"] * len(self._keys)))
        self._read_tail = tail
        return new

    def _create_groups(self, keys: Sequence[bytes], start_id: bytes) -> list[bytes]:
        """Create the group on ``keys`` where missing; returns the keys where it was missing."""
        if not keys:
            return []
        replies = self._call([(b"XGROUP", b"CREATE", k, self._group_b, start_id, b"MKSTREAM") for k in keys])
        created = []
        for k, r in zip(keys, replies):
            if isinstance(r, ResponseError):
                if not str(r).startswith("BUSYGROUP"):
                    _check(r, f"cannot create group {self.group} on {k.decode()} at {self._bus.shown_url}")
            else:
                created.append(k)
        return created

    def _setup(self) -> None:
        """(Re)connect, learn our client id (for stop) and make sure every group exists."""
        if self._bus.cluster:  # the slot's master may have changed (failover, resharding)
            if self._conn is not None:
                self._conn.disconnect()
                self._bus.refresh_topology()
            self._conn = self._bus.dedicated_connection(self.block_ms / 1000)
        elif self._conn is None:
            self._conn = self._bus.dedicated_connection(self.block_ms / 1000)
        self._conn.disconnect()
        self._conn.connect()
        reply = self._call([(b"CLIENT", b"ID")])[0]
        self._client_id = None if isinstance(reply, ResponseError) else int(reply)
        known = set(self._keys) if self._created_once else set()
        if self._discover:
            self._set_keys(self._bus.scan_streams(self._call))
        else:
            self._set_keys(())
        # First creation honours ``start``; a recreation (data lost) reads the new stream from its start.
        created = self._create_groups(self._keys, self._start_id if not self._created_once else b"0")
        lost = [k for k in created if k in known]
        if lost:
            self.groups_lost += len(lost)
            log.error(
                "%s: the group was missing on %s and has been recreated: the Redis server lost its data "
                "(restarted without persistence, flushed, or the stream was deleted); events on the bus "
                "before the loss are gone from it (the event store still has them: tusk-events replay --to-bus)",
                self._where(),
                ", ".join(k.decode() for k in lost),
            )
        self._created_once = True
        self._setup_needed = False
        self._reconnect.ok()
        self._ready.set()

    def _rediscover(self) -> None:
        new = self._set_keys(self._bus.scan_streams(self._call))
        if new:
            log.info("%s: found %d new event type(s)", self._where(), len(new))
            self._create_groups(new, b"0")

    def _interrupt(self) -> None:
        if self._blocked and self._client_id is not None:
            self._bus.unblock(self._client_id)

    # --- reading ------------------------------------------------------------------

    def _ack_commands(self) -> list[tuple[Any, ...]]:
        acks = [(b"XACK", k, self._group_b, *ids) for k, ids in self._unacked.items() if ids]
        if not self._done_ids and not self._done_attempts:
            return acks
        marks: list[tuple[Any, ...]] = [
            (b"SET", self._dedup_prefix + i, b"1", b"EX", self._dedup_ttl) for i in self._done_ids
        ]
        if self._done_attempts:
            marks.append((b"DEL", *self._done_attempts))
        return [(b"MULTI",), *marks, *acks, (b"EXEC",)]

    def _acks_sent(self) -> None:
        for k, ids in self._unacked.items():
            self._unhold(k, ids)
        self._unacked = {}
        self._done_ids = []
        self._done_attempts = []
        self._last_flush = time.monotonic()

    def _ack(self, key: bytes, mid: bytes) -> None:
        self._unacked.setdefault(key, []).append(mid)

    def _flush_and(self, extra: list[tuple[Any, ...]]) -> list[Any]:
        """Send the acks due so far and ``extra`` in one round trip; returns the replies to ``extra``."""
        acks = self._ack_commands()
        replies = self._call(acks + extra)
        self._acks_sent()
        return replies[len(acks) :]

    def _read(self, block_ms: int | None) -> int:
        """Ack what is done and read the next batch in one round trip; dispatch it."""
        cmds = self._ack_commands()
        if block_ms is None:
            cmds.append((*self._read_head, self.read_count, *self._read_tail))
        else:
            cmds.append((*self._read_head, self.read_count, b"BLOCK", block_ms, *self._read_tail))
        self._blocked = block_ms is not None
        try:
            replies = self._call(cmds)
        finally:
            self._blocked = False
        self._acks_sent()
        reply = replies[-1]
        if isinstance(reply, ResponseError):
            if _is_nogroup(reply):
                self._setup_needed = True
                return 0
            _check(reply, f"{self._where()}: XREADGROUP failed")
        if not reply:
            return 0
        n = 0
        for key, entries in reply:
            self._handle(key, entries, None)
            n += len(entries)
        return n  # entries read, handled or not: the caller's "anything moved?"

    def _handle(self, key: bytes, entries: list[Any], counts: dict[bytes, int] | None) -> int:
        """Dispatch a batch of one stream's entries, acking as they finish. Returns entries handled."""
        type_name = self._type_of.get(key) or self._bus.type_of(key)
        group, consumer = self.group, self.consumer
        self._hold(key, [mid for mid, _ in entries])
        parsed: list[tuple[bytes, int, Event]] = []
        for mid, fields in entries:
            count = 1 if counts is None else counts.get(mid, 2)
            if not fields:  # deleted while pending: nothing to deliver
                self._ack(key, mid)
                continue
            try:
                raw = fields[1] if fields[0] == _FIELD else _pairs(fields)[_FIELD]
                event = _event(raw, mid.decode())
            except Exception as exc:  # noqa: BLE001 - any decode failure (RecursionError, MemoryError...)
                self._poison(key, mid, fields, exc, Delivery(count, "durable", mid.decode(), type_name, group, consumer))
                continue
            parsed.append((mid, count, event))
        done: set[str] = set()
        if self._dedup_ttl is not None and parsed:
            found = self._call([(b"MGET", *(self._dedup_prefix + e.id.encode() for _, _, e in parsed))])[0]
            if isinstance(found, ResponseError):
                _check(found, f"{self._where()}: reading handled event ids failed")
            done = {e.id for (_, _, e), hit in zip(parsed, found) if hit is not None}
        dispatch = self._dispatch
        handled = 0
        for mid, count, event in parsed:
            if self._given_up:  # abandon() released the rest: another consumer may have it now
                break
            if event.id in done:  # this group handled the event already (redelivered or republished)
                self._ack(key, mid)
                self.duplicates += 1
                continue
            attempt_key = b""
            if self._track and (count > 1 or not self._assume_first):
                attempt_key, cmds = self._attempt_commands(event.id)
                started = self._flush_and(cmds)[0]
                if isinstance(started, ResponseError):
                    _check(started, f"{self._where()}: counting the attempt failed")
                count = int(started) + self._assume_first
            elif self._unacked and time.monotonic() - self._last_flush >= BUS_ACK_FLUSH_S:
                self._flush_and([])

            def delivery(mid: bytes = mid, count: int = count) -> Delivery:
                return Delivery(count, "durable", mid.decode(), type_name, group, consumer)

            t0 = time.perf_counter()
            self._current = attempt_key
            try:
                outcome = dispatch(event, delivery)
            finally:
                self._current = None
            self._timed(time.perf_counter() - t0)
            if outcome:
                self._ack(key, mid)
                handled += 1
                if attempt_key:
                    self._done_attempts.append(attempt_key)
                if self._dedup_ttl is not None and outcome is not ACK_ONLY:
                    done.add(event.id)
                    self._done_ids.append(event.id.encode())
            else:
                self._unhold(key, [mid])  # failed: retried once the visibility timeout has passed
        return handled

    def _poison(self, key: bytes, mid: bytes, fields: Any, exc: BaseException, delivery: Delivery) -> None:
        """An entry that is not an event: hand it over with its bytes, then ack it (unless that failed)."""
        try:
            raw = fields[1] if fields[0] == _FIELD and isinstance(fields[1], bytes) else _raw_fields(fields)
            self._poisoned(raw, exc, delivery)
        except Exception as hook_exc:  # noqa: BLE001 - keep it pending; it is tried again later
            self._unhold(key, [mid])
            log.error("%s: could not set aside unusable entry %s of %s: %s", self._where(), mid.decode(), key.decode(), hook_exc)
            return
        self._ack(key, mid)

    def abandon(self) -> int:
        """From another thread, while a handler runs: uncount its attempt, release what is held."""
        self._given_up = True
        held = self._held_now()
        self._drop_held()  # the heartbeat must not renew them any more
        current = self._current
        cmds = self._release_commands(held)
        if current:
            cmds.insert(0, (b"DECR", current))
        if not cmds:
            return 0
        try:
            self._bus._once(cmds)
        except Exception as exc:  # noqa: BLE001 - then they wait out the visibility timeout
            log.warning("%s: could not release abandoned entries (%s); they are redelivered after the "
                        "visibility timeout", self._where(), exc)
        return sum(len(v) for v in held.values())

    def _claim(self) -> tuple[int, bool]:
        """XAUTOCLAIM what other (or this) consumers left pending too long; returns (handled, more)."""
        keys = self._keys
        vt = self.visibility_timeout_ms
        replies = self._call(
            [
                (b"XAUTOCLAIM", k, self._group_b, self._consumer_b, vt, self._claim_cursor.get(k, b"0-0"), b"COUNT", self.read_count)
                for k in keys
            ]
        )
        more = False
        claimed: list[tuple[bytes, list[Any]]] = []
        for k, r in zip(keys, replies):
            if isinstance(r, ResponseError):
                if _is_nogroup(r):
                    self._setup_needed = True
                    return 0, False
                _check(r, f"{self._where()}: XAUTOCLAIM on {k.decode()} failed")
            cursor, entries = r[0], r[1]
            self._claim_cursor[k] = cursor
            if cursor != b"0-0":
                more = True
            if len(r) > 2 and r[2]:
                log.warning(
                    "%s: %d pending entries of %s were trimmed before being handled",
                    self._where(),
                    len(r[2]),
                    k.decode(),
                )
            entries = [e for e in entries if e is not None]
            if entries:
                claimed.append((k, entries))
        if not claimed:
            return 0, more
        # Claiming bumped the delivery counts; read them back for the handlers.
        pend = self._call(
            [
                (b"XPENDING", k, self._group_b, es[0][0], es[-1][0], len(es) + self.batch, self._consumer_b)
                for k, es in claimed
            ]
        )
        n = 0
        for (k, es), p in zip(claimed, pend):
            counts = {} if isinstance(p, ResponseError) else {row[0]: int(row[3]) for row in p}
            self._handle(k, es, counts)
            n += len(es)
        return n, more

    def _pending(self) -> int:
        """Unacknowledged entries of the group on our streams (after flushing our own acks)."""
        acks = self._ack_commands()
        replies = self._call(acks + [(b"XPENDING", k, self._group_b) for k in self._keys])
        self._acks_sent()
        total = 0
        for r in replies[len(acks) :]:
            if isinstance(r, ResponseError):
                if _is_nogroup(r):
                    self._setup_needed = True
                    return 1
                _check(r, f"{self._where()}: XPENDING failed")
            total += int(r[0])
        return total

    # --- the loop -----------------------------------------------------------------

    def _loop(self, *, until_idle: bool, deadline: float | None, stop_event: threading.Event | None) -> None:
        next_claim = 0.0
        next_discover = 0.0
        poll_ms = max(1, min(self.block_ms, int(self._claim_every * 1000)))
        self._setup_needed = True  # every run (re)connects: the last one disconnected
        self._given_up = False
        heartbeat = self._start_heartbeat()
        try:
            while not self._should_stop(stop_event):
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    log.warning(
                        "%s: not idle when run_until_idle timed out (%s entries still pending)",
                        self._where(),
                        self._pending_quiet(),
                    )
                    return
                try:
                    if self._setup_needed:
                        self._setup()
                        next_discover = now + self._bus.discover_interval_s
                    elif self._discover and now >= next_discover:
                        self._rediscover()
                        next_discover = now + self._bus.discover_interval_s
                    if not self._keys:
                        if until_idle:
                            self.idle = True
                            return
                        self._stopping.wait(min(self._bus.discover_interval_s, self.block_ms / 1000))
                        continue
                    claimed, more = 0, False
                    if until_idle or now >= next_claim:
                        claimed, more = self._claim()
                        next_claim = now + (0.0 if more else self._claim_every)
                    if until_idle:
                        if self._read(None) or claimed or more or self._setup_needed:
                            continue
                        if self._pending() == 0 and not self._setup_needed:
                            self.idle = True
                            return
                        self._read(poll_ms)  # wait for new entries or for pending ones to age
                    else:
                        wait_ms = int((next_claim - time.monotonic()) * 1000)
                        self._read(max(1, min(self.block_ms, wait_ms)))
                except (*TRANSIENT, _Retryable) as exc:
                    if self._conn is not None:
                        self._conn.disconnect()
                    self._setup_needed = True
                    self._drop_held()
                    if until_idle and self._reconnect.down_for() > BUS_UNREACHABLE_GIVE_UP_S:
                        raise BusError(
                            f"{self._where()}: the bus has been unreachable for {BUS_UNREACHABLE_GIVE_UP_S:g}s "
                            f"({exc}); check that the Redis server is running and reachable at that URL"
                        ) from exc
                    self._reconnect.failed(exc, self._stopping)
        finally:
            heartbeat.set()
            self._finish()

    def _pending_quiet(self) -> str:
        try:
            return str(self._pending())
        except Exception:  # noqa: BLE001 - only for the message
            return "some"

    def _finish(self) -> None:
        """Ack what was handled; drop an auto-named consumer that holds nothing; disconnect."""
        conn = self._conn
        if conn is None:
            return
        for attempt in range(self._bus.retries + 1):
            try:
                if self._setup_needed:
                    conn.disconnect()
                    conn.connect()
                acks = self._ack_commands()
                if acks:
                    self._call(acks)
                self._acks_sent()
                left = self._held_now()
                if left:  # read, never started (a deadline or an error ended the run): claimable now
                    self._drop_held()
                    self._call(self._release_commands(left))
                    self.released += sum(len(v) for v in left.values())
                if self._auto_consumer and self._keys:
                    pend = self._call(
                        [(b"XPENDING", k, self._group_b, b"-", b"+", 1, self._consumer_b) for k in self._keys]
                    )
                    if not any(p for p in pend if not isinstance(p, ResponseError)):
                        self._call([(b"XGROUP", b"DELCONSUMER", k, self._group_b, self._consumer_b) for k in self._keys])
                break
            except TRANSIENT as exc:
                if attempt >= self._bus.retries:
                    n = sum(len(v) for v in self._unacked.values())
                    if n:
                        log.warning("%s: could not ack %d handled entries (%s); they will be redelivered", self._where(), n, exc)
                    break
                time.sleep(self._bus.backoff(attempt))
        conn.disconnect()


class BroadcastSubscription(Subscription):
    """A pub/sub listener on the bus channel; ``types`` filters here, not on the server."""

    mode: Mode = "broadcast"

    def __init__(
        self,
        bus: RedisBus,
        handler: Handler,
        types: tuple[str, ...] | None,
        *,
        block_ms: int,
        on_error: ErrorHandler | None,
        on_poison: PoisonHandler | None = None,
    ) -> None:
        super().__init__(handler, types=types, group=None, consumer=None, on_error=on_error, on_poison=on_poison)
        self._bus = bus
        self.block_ms = max(1, int(block_ms))
        self._wanted = frozenset(types) if types is not None else None
        self._reconnect = _Reconnecting(bus, self._where())

    def _where(self) -> str:
        return f"broadcast listener on {self._bus.channel} at {self._bus.shown_url}"

    def _last_error(self) -> BaseException | None:
        return self._reconnect.last

    def _loop(self, *, until_idle: bool, deadline: float | None, stop_event: threading.Event | None) -> None:
        quiet_s = self.block_ms / 1000
        poll_s = min(quiet_s, BUS_BROADCAST_POLL_S)
        pubsub = self._bus.client.pubsub()
        subscribed = False
        last = time.monotonic()
        try:
            while not self._should_stop(stop_event):
                try:
                    if not subscribed:
                        pubsub.subscribe(self._bus.channel)
                        subscribed = True
                    msg = pubsub.get_message(timeout=poll_s)
                except TRANSIENT as exc:
                    self._reconnect.failed(exc, self._stopping)
                    continue
                now = time.monotonic()
                if msg is None:
                    if deadline is not None and now >= deadline:
                        log.warning("%s: still receiving when run_until_idle timed out", self._where())
                        return
                    if until_idle and self._ready.is_set() and now - last >= quiet_s:
                        self.idle = True
                        return
                    continue
                last = now
                kind = msg["type"]
                if kind == "message":
                    self._on_message(msg["data"])
                elif kind == "subscribe":
                    self._reconnect.ok()
                    self._ready.set()
        finally:
            try:
                pubsub.close()
            except Exception as exc:  # noqa: BLE001 - closing a broken connection
                log.debug("closing pubsub on %s: %s", self._bus.shown_url, exc)

    def _on_message(self, data: bytes) -> None:
        try:
            event = _event(data)
        except Exception as exc:  # noqa: BLE001 - any decode failure (RecursionError, MemoryError...)
            try:
                self._poisoned(data if isinstance(data, bytes) else str(data).encode(), exc, Delivery(1, "broadcast"))
            except Exception as hook_exc:  # noqa: BLE001 - nothing to redeliver on pub/sub
                log.error("%s: could not set aside an unusable message: %s", self._where(), hook_exc)
            return
        if self._wanted is not None and event.type not in self._wanted:
            return
        self._dispatch(event, lambda: Delivery(1, "broadcast", None, event.type))
