"""The RabbitMQ bus, ``amqp://user:pass@host:5672/vhost`` (``amqps://`` for TLS): AMQP 0-9-1 via aio-pika.

Mapping (``<ns>`` is the namespace: ``?namespace=`` in the URL, default ``tusk``)::

    <ns>.events              topic exchange; the routing key is the event type (``%``, ``*``
                             and ``#`` %-escaped); its alternate exchange is <ns>.unrouted
    <ns>.q.<group>.<type>    a quorum queue per (group, type) bound to the type: the group's
                             durable queue; manual acks, prefetch = ``batch``, the delivery
                             count from the queue's ``x-delivery-count``
    <ns>.q.<group>.*         ``types=None``: one queue bound to ``#`` (every type, new ones too)
    <ns>.unrouted            direct exchange receiving events no group queue was bound for
    <ns>.held.<type>         classic durable queue per type on it (declared by the publisher, at most
                             ``maxlen`` messages, oldest dropped): events published before any
                             group listened; groups subscribed with ``start="earliest"`` read
                             it beside their own queue (so the first to come takes them)
    <ns>.bc.<channel>        fanout exchange for broadcast; each listener has an exclusive queue

Group queues are declared by ``subscribe()`` itself, so a service subscribed before anything
is published (as the runtime does) misses nothing. What RabbitMQ does not do, and this bus
therefore does not promise on it: replay history to a *second* group created later (a
queue is not a log; use NATS or Redis for that), and report unacknowledged counts over AMQP
(``stream_info`` gives per group the messages waiting plus those this process holds
unacknowledged as ``pending``; ``lag`` is None). A message whose handler raised is
returned to its queue once ``visibility_timeout_ms`` has passed (a consumer that dies
returns everything it held at once: RabbitMQ requeues a closed channel's deliveries).

Needs ``aio-pika`` (``pip install 'tusk_events[amqp]'``).

Longer than most modules because RabbitMQ needs more around it than a log-based broker:
held queues, returning failed deliveries after the visibility timeout, reconnecting.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractIncomingMessage

from tusk_events.bus.base import GroupInfo, StreamInfo, redact_url
from tusk_events.bus.broker import (
    BrokerBroadcast,
    BrokerBus,
    BrokerDurable,
    Message,
    Reader,
    open_state_client,
    split_state,
)
from tusk_events.defaults import (
    BUS_AMQP_NAMESPACE,
    BUS_AMQP_QUEUE_TYPE,
    BUS_CONNECT_TIMEOUT_S,
    BUS_MAXLEN,
)
from tusk_events.errors import BusError
from tusk_events.events import Event

log = logging.getLogger(__name__)

TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncio.TimeoutError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.AMQPConnectionError,
    RuntimeError,  # aiormq's "<Connection ...> closed"
)
"""Errors after which the same call succeeds once a new connection is open."""


_RETURN_GRACE_S = 1.0
"""How long a message put back after its visibility timeout counts as pending before it is seen again."""

_declared: dict[tuple[str, str], set[tuple[str, str]]] = {}
"""(server URL, namespace of the URL) -> ("q" | "x", name) of the queues and exchanges declared by
this process under it (``stream_prefix`` ones included): what ``delete_queues`` removes."""


def open_client(url: str) -> Any:
    """The side-state client (dedup records, DLQ): see :mod:`tusk_events.bus.broker`."""
    return open_state_client(url)


def open_bus(url: str, **options: Any) -> AmqpBus:
    for k in ("socket_timeout", "socket_connect_timeout", "health_check_interval", "max_connections", "parser"):
        options.pop(k, None)
    return AmqpBus(url, **options)


def routing_key(type: str) -> str:
    """An event type as a routing key that a topic binding matches literally."""
    return type.replace("%", "%25").replace("*", "%2A").replace("#", "%23")


def _queue_name(*parts: str) -> str:
    name = ".".join(parts)
    if len(name.encode()) <= 200:
        return name
    return name.encode()[:180].decode(errors="ignore") + "~" + hashlib.sha1(name.encode()).hexdigest()[:16]


def parse_url(url: str) -> tuple[str, str]:
    """(the URL for aio-pika, the namespace); ``state=`` and ``namespace=`` are ours, not aio-pika's."""
    plain, _ = split_state(url)
    parts = urlsplit(plain)
    if parts.scheme not in ("amqp", "amqps"):
        raise BusError(f"not an AMQP URL: {redact_url(plain)!r} (expected amqp://user:pass@host:5672/vhost)")
    if not parts.hostname:
        raise BusError(f"invalid AMQP URL {redact_url(plain)!r}: no host")
    try:
        parts.port  # noqa: B018 - validates it
    except ValueError as exc:
        raise BusError(f"invalid AMQP URL {redact_url(plain)!r}: {exc}") from exc
    query = parse_qsl(parts.query, keep_blank_values=True)
    ns = next((v for k, v in query if k == "namespace"), BUS_AMQP_NAMESPACE) or BUS_AMQP_NAMESPACE
    rest = urlencode([(k, v) for k, v in query if k != "namespace"])
    return urlunsplit(parts._replace(query=rest)), ns


def _dead(conn: Any) -> bool:
    """Whether an aio-pika connection is unusable (closed by us, or by the server: aio-pika's own
    flag does not always follow the latter)."""
    if conn is None or conn.is_closed:
        return True
    under = getattr(getattr(conn, "transport", None), "connection", None)
    return under is None or bool(under.is_closed)


class AmqpBus(BrokerBus):
    """A bus on a RabbitMQ server (3.8+, for quorum queues)."""

    scheme_name = "amqp"
    transient = TRANSIENT

    def __init__(
        self,
        url: str,
        *,
        stream_prefix: str | None = None,
        maxlen: int | None = BUS_MAXLEN,
        approximate: bool = True,
        discover_interval_s: float | None = None,
        connect_timeout_s: float = BUS_CONNECT_TIMEOUT_S,
        **options: Any,
    ) -> None:
        super().__init__(url, **options)
        if maxlen is not None and maxlen < 1:
            raise BusError(f"maxlen must be a positive number of entries or None, not {maxlen!r}")
        self.client_url, ns = parse_url(url)
        self.declared = _declared.setdefault((self.client_url, ns), set())
        if stream_prefix:
            ns = f"{ns}.{stream_prefix.strip(':.')}"
        self.ns = ns
        self.maxlen = maxlen
        self.connect_timeout_s = connect_timeout_s
        self.exchange_name = f"{ns}.events"
        self.unrouted_name = f"{ns}.unrouted"
        self.broadcast_name = f"{ns}.bc.{self.channel}"
        self._conn: Any = None
        self._pub: Any = None
        self._info: Any = None
        self._exchanges: dict[str, Any] = {}
        self._held: set[str] = set()
        self._connecting: asyncio.Lock | None = None
        self.readers: list[_AmqpReader] = []

    # --- connection -----------------------------------------------------------------

    async def connection(self) -> Any:
        if not _dead(self._conn):
            return self._conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if _dead(self._conn):
                self._conn = await aio_pika.connect(
                    self.client_url, timeout=self.connect_timeout_s,
                    client_properties={"connection_name": f"tusk_events {self.ns}"},
                )
                self._pub = None
                self._exchanges = {}
                self._held = set()
        return self._conn

    async def publisher(self) -> Any:
        """The publishing channel (publisher confirms on), with the exchanges declared."""
        conn = await self.connection()
        if self._pub is None or self._pub.is_closed:
            ch = await conn.channel(publisher_confirms=True)
            unrouted = await ch.declare_exchange(self.unrouted_name, aio_pika.ExchangeType.DIRECT, durable=True)
            events = await ch.declare_exchange(
                self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True,
                arguments={"alternate-exchange": self.unrouted_name},
            )
            bc = await ch.declare_exchange(self.broadcast_name, aio_pika.ExchangeType.FANOUT, durable=False)
            self._exchanges = {"events": events, "unrouted": unrouted, "bc": bc}
            self.declared.update(("x", n) for n in (self.exchange_name, self.unrouted_name, self.broadcast_name))
            self._held = set()
            self._pub = ch
        return self._pub

    def held_queue(self, type: str) -> str:
        return _queue_name(self.ns, "held", type)

    def group_queue(self, group: str, type: str | None) -> str:
        return _queue_name(self.ns, "q", group, type if type is not None else "*")

    def queue_arguments(self, *, held: bool = False) -> dict[str, Any]:
        if not held:
            return {"x-queue-type": BUS_AMQP_QUEUE_TYPE}
        # a safety net on the publish path: a classic queue, quick to declare
        args: dict[str, Any] = {"x-queue-type": "classic"}
        if self.maxlen is not None:
            args["x-max-length"] = self.maxlen
            args["x-overflow"] = "drop-head"
        return args

    async def _ensure_held(self, ch: Any, type: str) -> None:
        if type in self._held:
            return
        q = await ch.declare_queue(self.held_queue(type), durable=True, arguments=self.queue_arguments(held=True))
        self.declared.add(("q", q.name))
        await q.bind(self._exchanges["unrouted"], routing_key=routing_key(type))
        self._held.add(type)

    async def _disconnect(self) -> None:
        if not _dead(self._conn):
            await self._conn.close()

    # --- publishing -----------------------------------------------------------------

    async def _send(self, items: list[tuple[Event, bytes]]) -> None:
        ch = await self.publisher()
        sends: list[Awaitable[Any]] = []
        if self.to_durable:
            events = self._exchanges["events"]
            for event, data in items:
                await self._ensure_held(ch, event.type)
                msg = aio_pika.Message(
                    data, message_id=event.id, type=event.type, content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )
                sends.append(events.publish(msg, routing_key=routing_key(event.type), mandatory=False))
        if self.to_broadcast:
            bc = self._exchanges["bc"]
            for _, data in items:
                sends.append(bc.publish(aio_pika.Message(data), routing_key="", mandatory=False))
        results = await asyncio.gather(*sends, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                if isinstance(r, TRANSIENT):
                    raise r
                raise BusError(f"RabbitMQ refused a publish on {self.shown_url}: {r}") from r

    # --- subscribing ----------------------------------------------------------------

    def _durable_reader(self, sub: BrokerDurable) -> Reader:
        reader = _AmqpReader(self, sub)
        self.readers.append(reader)
        return reader

    def declare(self, sub: BrokerDurable) -> None:
        """Declare and bind the group's queues now, so what is published from here on is kept for it."""
        reader = sub.reader
        assert isinstance(reader, _AmqpReader)
        self.call(reader.declare, "declare the group's queues")

    async def _broadcast_listener(
        self, sub: BrokerBroadcast, push: Callable[[bytes], None]
    ) -> Callable[[], Awaitable[None]]:
        conn = await self.connection()
        await self.publisher()
        ch = await conn.channel()
        ex = await ch.declare_exchange(self.broadcast_name, aio_pika.ExchangeType.FANOUT, durable=False)
        q = await ch.declare_queue("", exclusive=True, auto_delete=True)
        await q.bind(ex)

        async def on_msg(msg: AbstractIncomingMessage) -> None:
            push(msg.body)

        await q.consume(on_msg, no_ack=True)

        async def stop() -> None:
            if not ch.is_closed:
                await ch.close()

        stop.alive = lambda: not ch.is_closed  # type: ignore[attr-defined]  # lost with its connection
        return stop

    # --- introspection --------------------------------------------------------------

    def ping(self) -> float:
        async def go() -> float:
            ch = await self.publisher()
            t0 = time.perf_counter()
            await ch.declare_exchange(self.exchange_name, passive=True)
            return time.perf_counter() - t0

        return self.call(go, "ping")

    async def _count(self, name: str) -> tuple[int, int] | None:
        """(ready messages, consumers) of a queue, None when it does not exist."""
        conn = await self.connection()
        if self._info is None or self._info.is_closed:
            self._info = await conn.channel()  # a missing queue closes it: reopened on the next call
        try:
            q = await self._info.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        r = q.declaration_result
        return int(r.message_count or 0), int(r.consumer_count or 0)

    def stream_info(self, types: Sequence[str] | None = None) -> dict[str, StreamInfo]:
        """Per type: messages held for groups to come; per group of this process: waiting + held unacked."""
        return self.call(lambda: self._stream_info(types), "read queue info")

    async def _stream_info(self, types: Sequence[str] | None) -> dict[str, StreamInfo]:
        known: dict[str, set[str]] = {}
        for reader in self.readers:
            for t in reader.types or ():
                known.setdefault(t, set()).add(reader.sub.group or "")
        wanted = list(types) if types is not None else sorted(set(known) | self._held)
        out: dict[str, StreamInfo] = {}
        for t in wanted:
            held = await self._count(self.held_queue(t))
            groups: dict[str, GroupInfo] = {}
            for g in sorted(known.get(t, ())):
                c = await self._count(self.group_queue(g, t))
                if c is None:
                    continue
                mine = [r for r in self.readers if r.sub.group == g]
                unacked = sum(r.unacked_for(t) for r in mine)
                reads_held = held is not None and any(self.held_queue(t) in r.held for r in mine)
                waiting = c[0] + (held[0] if held is not None and reads_held else 0)
                groups[g] = GroupInfo(name=g, consumers=c[1], pending=waiting + unacked, lag=None,
                                      last_delivered_id="")
            out[t] = StreamInfo(type=t, key=self.held_queue(t), length=held[0] if held else 0, last_id=None,
                                groups=groups)
        return out

    def delete_queues(self) -> None:
        """Delete every queue and exchange this bus declared or knows of: for tests and teardown."""

        async def go() -> None:
            conn = await self.connection()
            for kind, name in sorted(self.declared):
                ch = await conn.channel()
                try:
                    if kind == "q":
                        await ch.queue_delete(name)
                    else:
                        await ch.exchange_delete(name)
                except aiormq.exceptions.ChannelClosed:
                    pass
                finally:
                    if not ch.is_closed:
                        await ch.close()
            self.declared.clear()

        self.call(go, "delete the queues")


class _AmqpReader(Reader):
    """One channel consuming the subscription's queues into a local buffer."""

    def __init__(self, bus: AmqpBus, sub: BrokerDurable) -> None:
        self.bus = bus
        self.sub = sub
        group = sub.group or ""
        self.types = sub.types
        self.queues: list[tuple[str, str, str | None]]
        if sub.types is None:
            self.queues = [(bus.group_queue(group, None), "#", None)]
        else:
            self.queues = [(bus.group_queue(group, t), routing_key(t), t) for t in sub.types]
        self.queue_names = [q for q, _, _ in self.queues]
        self.held = (
            [bus.held_queue(t) for t in sub.types] if sub.types is not None and sub.start_at == "earliest" else []
        )
        self.q: deque[AbstractIncomingMessage] = deque()
        self.ch: Any = None
        self._changed: asyncio.Event | None = None
        self._woken = False
        self._unacked: dict[int, tuple[AbstractIncomingMessage, float]] = {}
        """Delivered and not yet acked, by delivery tag: (message, when delivered)."""
        self._declared = False
        self._returned: deque[float] = deque()
        self._tag_types: dict[str, str | None] = {}
        """Consumer tag -> the event type its queue carries (for messages that do not say)."""
        """When each message put back by ``_return_expired`` was returned, until it comes again."""

    def unacked_for(self, type: str) -> int:
        return sum(1 for m, _ in self._unacked.values() if m.type == type)

    async def declare(self) -> None:
        ch = await self.bus.publisher()
        events = self.bus._exchanges["events"]
        for name, key, type in self.queues:
            q = await ch.declare_queue(name, durable=True, arguments=self.bus.queue_arguments())
            self.bus.declared.add(("q", name))
            await q.bind(events, routing_key=key)
        self._declared = True

    async def setup(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        if not self._declared:
            await self.declare()
        conn = await self.bus.connection()
        if self.ch is not None and not self.ch.is_closed:
            await self.ch.close()
        self.q.clear()
        self._unacked.clear()
        self.ch = await conn.channel()
        await self.ch.set_qos(prefetch_count=self.sub.batch)
        self._tag_types.clear()
        for name, _, type in self.queues:
            q = await self.ch.declare_queue(name, passive=True)
            self._tag_types[await q.consume(self._on_msg, no_ack=False)] = type
        # what was published while no group listened: the group created with "earliest" reads it too
        for name, type in zip(self.held, self.sub.types or ()):
            if await self.bus._count(name) is not None:
                q = await self.ch.declare_queue(name, passive=True)
                self._tag_types[await q.consume(self._on_msg, no_ack=False)] = type

    async def _on_msg(self, msg: AbstractIncomingMessage) -> None:
        if msg.redelivered and self._returned:
            self._returned.popleft()
        self.q.append(msg)
        self._unacked[int(msg.delivery_tag or 0)] = (msg, time.monotonic())
        assert self._changed is not None
        self._changed.set()

    async def _return_expired(self) -> None:
        """Put back what failed longer than the visibility timeout ago, so it is delivered again."""
        if not self._unacked:
            return
        limit = time.monotonic() - self.sub.visibility_timeout_ms / 1000
        waiting = {id(m) for m in self.q}
        for tag, (msg, since) in list(self._unacked.items()):
            if since <= limit and id(msg) not in waiting:
                self._unacked.pop(tag, None)
                self._returned.append(time.monotonic())
                await msg.nack(requeue=True)

    async def fetch(self, n: int, wait_s: float) -> list[Message]:
        self._woken = False
        if self.ch is None or self.ch.is_closed:
            raise ConnectionError("the consuming channel is closed")
        await self._return_expired()
        assert self._changed is not None
        if not self.q and wait_s > 0:
            end = time.monotonic() + wait_s
            while not self.q and not self._woken:
                left = end - time.monotonic()
                if self._unacked:
                    left = min(left, self.sub.visibility_timeout_ms / 1000)
                if left <= 0:
                    break
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except TimeoutError:
                    await self._return_expired()
                    if time.monotonic() >= end:
                        break
                if self.ch.is_closed:
                    raise ConnectionError("the consuming channel is closed")
        out: list[Message] = []
        while self.q and len(out) < n:
            msg = self.q.popleft()
            headers: dict[str, Any] = dict(msg.headers or {})
            try:
                count = int(headers.get("x-delivery-count", 0) or 0) + 1
            except (TypeError, ValueError):
                count = 2 if msg.redelivered else 1
            if count == 1 and msg.redelivered:
                count = 2
            key = msg.routing_key or ""
            type = msg.type or self._tag_types.get(msg.consumer_tag or "") or unquote(key)
            out.append(Message(msg.body, count, str(msg.delivery_tag), type, msg))
        return out

    async def ack(self, handles: list[Any]) -> None:
        if not handles:
            return
        done = {int(m.delivery_tag or 0): m for m in handles}
        # one ``multiple`` ack covers the oldest deliveries when all of them were handled
        prefix: AbstractIncomingMessage | None = None
        for tag in sorted(self._unacked):
            if tag not in done:
                break
            prefix = done.pop(tag)
            self._unacked.pop(tag, None)
        if prefix is not None:
            await prefix.ack(multiple=True)
        if done:
            for tag in done:
                self._unacked.pop(tag, None)
            await asyncio.gather(*(m.ack() for m in done.values()))
        if self.ch is not None and not self.ch.is_closed:
            await self.ch.set_qos(prefetch_count=self.sub.batch)  # a round trip: the acks were read

    async def pending(self) -> int:
        # returned messages on their way back count until they arrive (or another consumer took them)
        horizon = time.monotonic() - _RETURN_GRACE_S
        while self._returned and self._returned[0] < horizon:
            self._returned.popleft()
        waiting = 0
        for name in [*self.queue_names, *self.held]:
            c = await self.bus._count(name)
            waiting += c[0] if c else 0
        if not waiting and self.ch is not None and not self.ch.is_closed:
            # what the queues handed to this channel and is still on its way counts neither as
            # waiting nor as ours yet: one round trip on the channel lets it arrive first
            await self.ch.set_qos(prefetch_count=self.sub.batch)
        return waiting + len(self._unacked) + len(self._returned)

    def wake(self) -> None:
        self._woken = True
        if self._changed is not None:
            self._changed.set()

    async def close(self) -> None:
        ch, self.ch = self.ch, None
        self.q.clear()
        self._unacked.clear()
        self._returned.clear()
        if ch is not None and not ch.is_closed:
            await ch.close()  # RabbitMQ requeues what the channel held unacknowledged
