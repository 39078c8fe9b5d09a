"""The NATS bus, ``nats://host:4222[,host2:4222]/<stream>``: JetStream for ``durable``, core NATS for ``broadcast``.

Mapping (``<stream>`` defaults to ``TUSK``; one stream per config or deployment)::

    stream <stream>                 subjects ``<stream>.>``, file storage, at most ``maxlen``
                                    messages per subject (exact), so per event type
    <stream>.<prefix>.<type>        the subject of an event type (``prefix`` defaults to ``ev``;
                                    characters NATS gives a meaning to are %-escaped)
    durable consumer per            explicit acks, ``ack_wait`` = visibility timeout, no
    (group, type)                   ``max_deliver`` (the runtime counts attempts and dead-letters);
                                    the delivery count is JetStream's ``num_delivered``
    <channel>                       a core NATS subject for broadcast (nothing stored)

Durable reads are pull requests of ``batch`` messages to every consumer of the
subscription, answered on one inbox; a batch is acknowledged after its handlers returned
(the last ack of a batch waits for the server's reply, so ``stream_info`` after ``stop()``
sees it). An unacknowledged message is redelivered by the server once ``ack_wait`` has
passed; ``types=None`` is one consumer per group on ``<stream>.<prefix>.>``, which
follows new types by itself. Pull requests still open when a subscription stops may
deliver to nobody: those messages come back after ``ack_wait``, like a crashed worker's.

Needs ``nats-py`` (``pip install 'tusk_events[nats]'``) and a server with JetStream
(``nats-server -js``), 2.9 or later.

Longer than most modules because the pull-request bookkeeping (one inbox, per-consumer
request order, status replies) is what makes batched reads fast, and it belongs with the bus.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.js import api

from tusk_events.bus.base import GroupInfo, StreamInfo
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
    BUS_CONNECT_TIMEOUT_S,
    BUS_MAXLEN,
    BUS_NATS_PUBLISH_WINDOW,
    BUS_NATS_STREAM,
)
from tusk_events.errors import BusError
from tusk_events.events import Event

log = logging.getLogger(__name__)

TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)
"""Errors after which the same call succeeds once the client has (re)connected to a server."""

_ACK_TIMEOUT_S = 5.0


def open_client(url: str) -> Any:
    """The side-state client (dedup records, DLQ): see :mod:`tusk_events.bus.broker`."""
    return open_state_client(url)


def open_bus(url: str, **options: Any) -> NatsBus:
    for k in ("socket_timeout", "socket_connect_timeout", "health_check_interval", "max_connections", "parser"):
        options.pop(k, None)
    return NatsBus(url, **options)


def subject_token(text: str) -> str:
    """``text`` as NATS subject tokens: wildcards, spaces and ``%`` escaped; dots kept unless they make empty tokens."""
    token = quote(text, safe="-_.:~!$&'()+,;=@")
    if not token or any(not t for t in token.split(".")):
        token = token.replace(".", "%2E")
    return token


def _name(text: str) -> str:
    """A consumer or stream name from free text: unambiguous and within NATS's character set."""
    clean = "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:48]
    return f"{clean}_{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def server_urls(url: str) -> tuple[list[str], str]:
    """``nats://h1:4222,h2:4222/S`` -> (["nats://h1:4222", "nats://h2:4222"], "S")."""
    plain, _ = split_state(url)
    parts = urlsplit(plain)
    if parts.scheme not in ("nats", "tls"):
        raise BusError(f"not a NATS URL: {plain!r} (expected nats://host:4222/<stream>)")
    auth, _, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise BusError(f"invalid NATS URL {plain!r}: no host")
    prefix = f"{parts.scheme}://" + (f"{auth}@" if auth else "")
    stream = parts.path.strip("/") or BUS_NATS_STREAM
    if any(c in stream for c in " .*>/\\"):
        raise BusError(f"invalid JetStream stream name {stream!r} in {plain!r}: no spaces, dots, *, > or slashes")
    return [prefix + h for h in hosts.split(",")], stream


class NatsBus(BrokerBus):
    """A bus on a NATS server with JetStream."""

    scheme_name = "nats"
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
        self.servers, self.stream = server_urls(url)
        self.prefix = subject_token((stream_prefix or "ev").strip(":."))
        self.root = f"{self.stream}.{self.prefix}"
        self.maxlen = maxlen
        self.connect_timeout_s = connect_timeout_s
        self._broadcast_subject = subject_token(self.channel)
        self._subjects: dict[str, str] = {}
        self._nc: Any = None
        self._js: Any = None
        self._connecting: asyncio.Lock | None = None
        self._stream_ready = False

    # --- connection -----------------------------------------------------------------

    async def client(self) -> Any:
        """The connected nats-py client (connected on first use; it reconnects by itself)."""
        if self._nc is not None and not self._nc.is_closed:
            return self._nc
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._nc is None or self._nc.is_closed:

                async def on_error(exc: Exception) -> None:
                    log.debug("nats client on %s: %s", self.shown_url, exc)

                nc = await nats.connect(
                    servers=self.servers,
                    connect_timeout=self.connect_timeout_s,
                    allow_reconnect=True,
                    max_reconnect_attempts=1,  # the first connect fails fast (0 means for ever): the bus retries it
                    reconnect_time_wait=0.2,
                    error_cb=on_error,
                )
                nc.options["max_reconnect_attempts"] = -1  # once connected, reconnect for ever
                self._nc = nc
                self._js = self._nc.jetstream(timeout=_ACK_TIMEOUT_S, publish_async_max_pending=BUS_NATS_PUBLISH_WINDOW)
                self._stream_ready = False
        return self._nc

    async def ensure_stream(self) -> Any:
        """The JetStream context, after making sure the stream exists with our limits."""
        await self.client()
        js = self._js
        if self._stream_ready:
            return js
        limit = self.maxlen if self.maxlen is not None else -1
        config = api.StreamConfig(
            name=self.stream, subjects=[f"{self.stream}.>"], storage=api.StorageType.FILE,
            max_msgs_per_subject=limit, discard=api.DiscardPolicy.OLD,
        )
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError as exc:  # created meanwhile by another process
                log.debug("add_stream %s: %s", self.stream, exc)
        else:
            if (info.config.max_msgs_per_subject or -1) != limit:
                info.config.max_msgs_per_subject = limit
                await js.update_stream(info.config)
        self._stream_ready = True
        return js

    def subject(self, type: str) -> str:
        s = self._subjects.get(type)
        if s is None:
            s = self._subjects[type] = f"{self.root}.{subject_token(type)}"
        return s

    def type_of(self, subject: str) -> str:
        return unquote(subject[len(self.root) + 1 :])

    async def _disconnect(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.drain()

    # --- publishing -----------------------------------------------------------------

    async def _send(self, items: list[tuple[Event, bytes]]) -> None:
        nc = await self.client()
        if not nc.is_connected:  # reconnecting: fail now, the bus retries with its backoff
            raise nats.errors.ConnectionReconnectingError()
        if self.to_durable:
            js = await self.ensure_stream()
            futures = []
            for event, data in items:
                futures.append(await js.publish_async(self.subject(event.type), data))
            if self.to_broadcast:
                for _, data in items:
                    await nc.publish(self._broadcast_subject, data)
            for fut in futures:
                try:
                    await asyncio.wait_for(fut, _ACK_TIMEOUT_S)
                except nats.js.errors.NoStreamResponseError:
                    self._stream_ready = False  # the stream is gone: the retry creates it again
                    raise
                except nats.js.errors.APIError as exc:
                    if exc.err_code == 10060 or "no stream" in str(exc).lower():  # stream deleted meanwhile
                        self._stream_ready = False
                    raise BusError(f"JetStream refused a publish on {self.shown_url}: {exc}") from exc
        else:
            for _, data in items:
                await nc.publish(self._broadcast_subject, data)
            await nc.flush()

    # --- subscribing ----------------------------------------------------------------

    def _durable_reader(self, sub: BrokerDurable) -> Reader:
        return _NatsReader(self, sub)

    async def _broadcast_listener(
        self, sub: BrokerBroadcast, push: Callable[[bytes], None]
    ) -> Callable[[], Awaitable[None]]:
        nc = await self.client()

        async def on_msg(msg: Any) -> None:
            push(msg.data)

        s = await nc.subscribe(self._broadcast_subject, cb=on_msg)
        await nc.flush()
        return s.unsubscribe  # type: ignore[no-any-return]

    # --- introspection --------------------------------------------------------------

    def ping(self) -> float:
        async def go() -> float:
            nc = await self.client()
            t0 = time.perf_counter()
            await nc.flush(timeout=2)
            return time.perf_counter() - t0

        return self.call(go, "ping")

    def stream_info(self, types: Sequence[str] | None = None) -> dict[str, StreamInfo]:
        return self.call(lambda: self._stream_info(types), "read stream info")

    async def _stream_info(self, types: Sequence[str] | None) -> dict[str, StreamInfo]:
        await self.client()
        js = self._js
        try:
            info = await js.stream_info(self.stream, subjects_filter=f"{self.root}.>")
            consumers = await js.consumers_info(self.stream)
        except nats.js.errors.NotFoundError:
            return {t: StreamInfo(t, self.subject(t), 0, None, {}) for t in types or ()}
        counts: dict[str, int] = dict(info.state.subjects or {})
        wanted = list(types) if types is not None else sorted(self.type_of(s) for s in counts)
        out: dict[str, StreamInfo] = {}
        for t in wanted:
            subject = self.subject(t)
            n = counts.get(subject, 0)
            last_id = None
            if n:
                try:
                    last = await js.get_last_msg(self.stream, subject)
                    last_id = str(last.seq)
                except nats.js.errors.NotFoundError:
                    pass
            groups: dict[str, GroupInfo] = {}
            for c in consumers:
                try:
                    meta = json.loads(c.config.description or "")
                except ValueError:
                    continue
                if not isinstance(meta, dict) or meta.get("tusk") != 1:
                    continue
                if meta.get("type") not in (t, None):
                    continue
                groups[str(meta["group"])] = GroupInfo(
                    name=str(meta["group"]),
                    consumers=1,
                    pending=int(c.num_ack_pending or 0),
                    lag=int(c.num_pending or 0),
                    last_delivered_id=str(c.delivered.stream_seq if c.delivered else 0),
                )
            out[t] = StreamInfo(type=t, key=subject, length=n, last_id=last_id, groups=groups)
        return out

    def delete_stream(self) -> None:
        """Delete the whole JetStream stream (its messages and consumers): for tests and teardown."""

        async def go() -> None:
            await self.client()
            try:
                await self._js.delete_stream(self.stream)
            except nats.js.errors.NotFoundError:
                pass
            self._stream_ready = False

        self.call(go, "delete the stream")


class _Consumer:
    def __init__(self, name: str, subject: str, type: str | None) -> None:
        self.name = name
        self.subject = subject
        self.type = type


class _NatsReader(Reader):
    """Pull requests to the subscription's consumers, answered on one inbox (see the module docstring)."""

    def __init__(self, bus: NatsBus, sub: BrokerDurable) -> None:
        self.bus = bus
        self.sub = sub
        group = sub.group or ""
        if sub.types is None:
            self.consumers = [_Consumer(_name(f"{group}\0*"), f"{bus.root}.>", None)]
        else:
            self.consumers = [_Consumer(_name(f"{group}\0{t}"), bus.subject(t), t) for t in sub.types]
        self.q: deque[Any] = deque()
        self._inbox: str | None = None
        self._inbox_sub: Any = None
        self._nc: Any = None
        self._seq = 0
        self._open: dict[str, int] = {}
        """Open pull requests: token -> batch asked for."""
        self._fifo: dict[str, list[list[Any]]] = {}
        """Per consumer name, its open requests in order: [token, messages still to come]."""
        self._long_until: dict[str, float] = {}
        """Open long pulls (token -> when they expire), so a new one is sent only when they ended."""
        self._changed: asyncio.Event | None = None
        self._woken = False
        self._lost = False
        self._created_once = False

    async def setup(self) -> None:
        nc = await self.bus.client()
        js = await self.bus.ensure_stream()
        if self._changed is None:
            self._changed = asyncio.Event()
        if self._inbox_sub is None or self._nc is not nc:
            self._inbox = nc.new_inbox()
            self._inbox_sub = await nc.subscribe(f"{self._inbox}.*", cb=self._on_msg)
            self._nc = nc
        sub = self.sub
        policy = (
            api.DeliverPolicy.NEW if sub.start_at == "latest" and not self._created_once else api.DeliverPolicy.ALL
        )
        for c in self.consumers:
            config = api.ConsumerConfig(
                durable_name=c.name,
                description=json.dumps({"tusk": 1, "group": sub.group, "type": c.type}),
                deliver_policy=policy,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=sub.visibility_timeout_ms / 1000,
                max_deliver=-1,
                filter_subject=c.subject,
                max_ack_pending=max(1000, sub.batch * 4),
            )
            try:
                info = await js.consumer_info(self.bus.stream, c.name)
            except nats.js.errors.NotFoundError:
                await js.add_consumer(self.bus.stream, config)
                continue
            if abs((info.config.ack_wait or 0) - (config.ack_wait or 0)) > 1e-3:
                info.config.ack_wait = config.ack_wait
                try:
                    await js.add_consumer(self.bus.stream, info.config)
                except nats.js.errors.APIError as exc:
                    log.warning("cannot change ack_wait of consumer %s: %s", c.name, exc)
        self._created_once = True
        self._lost = False
        self._open.clear()
        self._long_until.clear()
        self._fifo.clear()

    async def _on_msg(self, msg: Any) -> None:
        headers = msg.headers
        status = headers.get("Status") if headers else None
        if status:
            token = msg.subject.rsplit(".", 1)[-1]
            self._open.pop(token, None)
            self._long_until.pop(token, None)
            for open_reqs in self._fifo.values():
                open_reqs[:] = [r for r in open_reqs if r[0] != token]
            desc = headers.get("Description") or ""
            if status == "503" or (status == "409" and "Deleted" in desc):
                self._lost = True
        else:
            self.q.append(msg)
            fifo: list[list[Any]] | None = None
            try:
                fifo = self._fifo.get(msg.metadata.consumer)
            except Exception:  # noqa: BLE001 - not a JetStream delivery
                pass
            if fifo:  # the server answers a consumer's pull requests in order
                head = fifo[0]
                head[1] -= 1
                if head[1] <= 0:
                    fifo.pop(0)
                    self._open.pop(head[0], None)
                    self._long_until.pop(head[0], None)
        assert self._changed is not None
        self._changed.set()

    async def _pull(self, c: _Consumer, n: int, *, expires_s: float | None) -> str:
        self._seq += 1
        token = str(self._seq)
        req: dict[str, Any] = {"batch": n}
        if expires_s is None:
            req["no_wait"] = True
        else:
            req["expires"] = int(expires_s * 1e9)
            self._long_until[token] = time.monotonic() + expires_s + 1.0
        self._open[token] = n
        self._fifo.setdefault(c.name, []).append([token, n])
        await self._nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{self.bus.stream}.{c.name}",
            json.dumps(req).encode(),
            reply=f"{self._inbox}.{token}",
        )
        return token

    async def _wait(self, until: float, done: Callable[[], bool]) -> None:
        assert self._changed is not None
        while not done() and not self._woken and not self._lost:
            left = until - time.monotonic()
            if left <= 0:
                return
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return

    async def fetch(self, n: int, wait_s: float) -> list[Message]:
        self._woken = False
        if self._lost:
            raise ConnectionError("the JetStream consumer or stream was deleted")
        if not self.q:
            tokens = [await self._pull(c, n, expires_s=None) for c in self.consumers]
            await self._wait(time.monotonic() + _ACK_TIMEOUT_S, lambda: not any(t in self._open for t in tokens))
            if any(t in self._open for t in tokens) and not self._woken and not self._lost:
                self._open.clear()
                self._long_until.clear()
                self._fifo.clear()
                raise ConnectionError("no reply to a JetStream pull request")
        if not self.q and wait_s > 0 and not self._woken:
            now = time.monotonic()
            for t, end in list(self._long_until.items()):
                if end <= now:
                    self._long_until.pop(t, None)
                    self._open.pop(t, None)
                    for fifo in self._fifo.values():
                        fifo[:] = [r for r in fifo if r[0] != t]
            if not self._long_until:
                for c in self.consumers:
                    await self._pull(c, n, expires_s=max(0.05, wait_s))
            await self._wait(now + wait_s, lambda: bool(self.q))
        if self._lost:
            raise ConnectionError("the JetStream consumer or stream was deleted")
        out: list[Message] = []
        while self.q and len(out) < n:
            msg = self.q.popleft()
            try:
                meta = msg.metadata
                count, seq = int(meta.num_delivered), str(meta.sequence.stream)
            except Exception:  # noqa: BLE001 - not a JetStream delivery: let the decoder report it
                count, seq = 1, ""
            out.append(Message(msg.data, count, seq, self.bus.type_of(msg.subject), msg.reply))
        return out

    async def ack(self, handles: list[Any]) -> None:
        nc = self._nc
        if not handles or nc is None:
            return
        for reply in handles[:-1]:
            await nc.publish(reply, b"+ACK")
        await nc.request(handles[-1], b"+ACK", timeout=_ACK_TIMEOUT_S)

    async def pending(self) -> int:
        js = await self.bus.ensure_stream()
        total = len(self.q)
        for c in self.consumers:
            try:
                info = await js.consumer_info(self.bus.stream, c.name)
            except nats.js.errors.NotFoundError:
                self._lost = True
                return 1
            total += int(info.num_ack_pending or 0) + int(info.num_pending or 0)
        return total

    def wake(self) -> None:
        self._woken = True
        if self._changed is not None:
            self._changed.set()

    async def close(self) -> None:
        nc = self._nc
        if nc is not None and not nc.is_closed:
            while self.q:
                msg = self.q.popleft()
                if msg.reply:
                    await nc.publish(msg.reply, b"-NAK")
            if self._inbox_sub is not None:
                try:
                    await self._inbox_sub.unsubscribe()
                except Exception as exc:  # noqa: BLE001 - the connection is going anyway
                    log.debug("unsubscribe: %s", exc)
            await nc.flush(timeout=2)
        self._inbox_sub = None
        self._nc = None
        self._open.clear()
        self._long_until.clear()
        self._fifo.clear()

