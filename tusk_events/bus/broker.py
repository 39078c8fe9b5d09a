"""What the message-broker buses (``amqp://``, ``nats://``) share: a loop thread and the subscription loops.

A broker backend is an asyncio client on a private event-loop thread of the bus. It
provides three small things, all coroutines run on that loop:

* ``_send(items)``: publish ``(event, envelope bytes)`` pairs, durably and/or on the
  broadcast channel, returning once the broker confirmed them;
* ``_durable_reader(sub)``: a :class:`Reader` for one durable subscription (fetch up to
  ``n`` messages waiting at most ``wait_s``; acknowledge; count what is still pending);
* ``_broadcast_listener(sub, push)``: start pushing raw broadcast messages to ``push``
  and return a coroutine function that stops it.

Everything else — decoding envelopes, dedup records, dispatch, acking only after the
handler, undecodable messages, ``run_until_idle``, stop and reconnect — lives here, once,
so a new broker (Kafka) is one new module implementing those three hooks.

Dedup records (``dedup_ttl_s``) and the runtime's side state (dead-letter queues, the
fujsen ``redis`` helper) are kept in the bus's *state* client: an embedded fakeredis
named after the broker URL, or a real Redis named by the URL's ``state`` query
parameter (``nats://host:4222/TUSK?state=redis://127.0.0.1:6379/0``) so several
processes share them.

This module is longer than most: the bus base, the loop thread and the two subscription
loops are one piece (each loop leans on the bus's retry and reconnect rules), and splitting
them would spread one protocol over several files.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
import weakref
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tusk_events.bus.base import (
    ACK_ONLY,
    Bus,
    Delivery,
    ErrorHandler,
    EventSpec,
    Handler,
    Mode,
    PoisonHandler,
    PublishTo,
    Subscription,
    redact_url,
    to_event,
)
from tusk_events.defaults import (
    BUS_BATCH,
    BUS_BLOCK_MS,
    BUS_BROADCAST_POLL_S,
    BUS_BROKER_CALL_TIMEOUT_S,
    BUS_CHANNEL,
    BUS_DEFAULT_GROUP,
    BUS_PUBLISH_CHUNK,
    BUS_PUBLISH_RETRIES,
    BUS_RETRY_BACKOFF_MAX_S,
    BUS_RETRY_BACKOFF_S,
    BUS_VISIBILITY_TIMEOUT_MS,
    DEDUP_PREFIX,
)
from tusk_events.errors import BusError
from tusk_events.events import Event, new_event

log = logging.getLogger(__name__)

T = TypeVar("T")

_encode = json.JSONEncoder(separators=(",", ":")).encode


def envelope(event: Event) -> bytes:
    """The JSON envelope of ``event``, the same bytes the Redis bus writes."""
    try:
        return _encode(event.to_dict()).encode()
    except (TypeError, ValueError) as exc:
        raise BusError(
            f"event {event.type!r} cannot be published: {exc} "
            "(payload and metadata must be JSON-serialisable)"
        ) from exc


def decode(raw: bytes, fallback_id: str | None = None) -> Event:
    """One envelope (ValueError/TypeError when it is not one)."""
    return Event.from_dict(json.loads(raw.decode()), fallback_id=fallback_id)


def split_state(url: str) -> tuple[str, str | None]:
    """``url`` without its ``state=`` query parameter, and that parameter (a Redis URL) if given."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    state = next((v for k, v in query if k == "state"), None)
    rest = urlencode([(k, v) for k, v in query if k != "state"])
    return urlunsplit(parts._replace(query=rest)), state


def open_state_client(url: str) -> Any:
    """The side-state client of a broker bus: the ``state=`` Redis, or an embedded fakeredis per URL."""
    _, state = split_state(url)
    if state:
        from tusk_events.bus import redis_bus

        return redis_bus.open_client(state)
    from tusk_events.bus import memory

    return memory.open_client("memory://" + "broker-" + uuid.uuid5(uuid.NAMESPACE_URL, url).hex)


class LoopThread:
    """An asyncio event loop in a daemon thread: where a bus's asyncio client lives."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = BUS_BROKER_CALL_TIMEOUT_S) -> T:
        """Run ``coro`` on the loop and wait for its result (from any thread but the loop's)."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        """Cancel what still runs on the loop (client reader tasks), then end the thread."""
        if self.loop.is_closed():
            return
        try:
            self.run(_cancel_tasks(), timeout=5)
        except Exception as exc:  # noqa: BLE001 - stopping anyway
            log.debug("cancelling the loop's tasks: %s", exc)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


async def _cancel_tasks() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(slots=True)
class Message:
    """One durable delivery from a broker."""

    body: bytes
    count: int
    """How many times the broker delivered it (1 on the first delivery)."""
    message_id: str
    type: str
    handle: Any
    """What the backend needs to acknowledge it."""


class Reader:
    """The broker side of one durable subscription; every method runs on the bus's loop."""

    async def setup(self) -> None:
        """Declare what the subscription needs (consumers, queues); called again after a reconnect."""

    @abstractmethod
    async def fetch(self, n: int, wait_s: float) -> list[Message]:
        """Up to ``n`` messages; waits at most ``wait_s`` for the first when none is at hand."""

    @abstractmethod
    async def ack(self, handles: list[Any]) -> None:
        """Acknowledge; returns once the broker has them."""

    @abstractmethod
    async def pending(self) -> int:
        """Messages of this group and these types not acknowledged yet (or still to deliver)."""

    def wake(self) -> None:
        """Called on the loop by ``stop()``: end a waiting ``fetch`` now."""

    async def close(self) -> None:
        """Give back what was fetched but not handled (so it is redelivered at once); release."""


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class BrokerBus(Bus):
    """The parts of a broker bus that do not depend on the broker."""

    scheme_name = "broker"
    transient: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, OSError)
    """Client errors after which the same call may succeed once the client has reconnected."""

    def __init__(
        self,
        url: str,
        *,
        channel: str = BUS_CHANNEL,
        publish_to: PublishTo = "both",
        retries: int = BUS_PUBLISH_RETRIES,
        retry_backoff_s: float = BUS_RETRY_BACKOFF_S,
        retry_backoff_max_s: float = BUS_RETRY_BACKOFF_MAX_S,
    ) -> None:
        if publish_to not in ("both", "durable", "broadcast"):
            raise BusError(f"publish_to must be 'both', 'durable' or 'broadcast', not {publish_to!r}")
        self.url = url
        self.shown_url = redact_url(url)
        self.channel = channel
        self.publish_to = publish_to
        self.to_durable = publish_to in ("both", "durable")
        self.to_broadcast = publish_to in ("both", "broadcast")
        self.retries = max(0, int(retries))
        self.retry_backoff_s = retry_backoff_s
        self.retry_backoff_max_s = retry_backoff_max_s
        self._loop_thread: LoopThread | None = None
        self._loop_lock = threading.Lock()
        self._subs: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._closed = False
        self._state: Any = None

    # --- plumbing -------------------------------------------------------------------

    @property
    def loop(self) -> LoopThread:
        lt = self._loop_thread
        if lt is None:
            with self._loop_lock:
                lt = self._loop_thread
                if lt is None:
                    lt = self._loop_thread = LoopThread(f"tusk-{self.scheme_name}-loop")
        return lt

    @property
    def state(self) -> Any:
        """The redis-py compatible client holding dedup records (see the module docstring)."""
        if self._state is None:
            from tusk_events.bus import redis_client

            self._state = redis_client(self.url)
        return self._state

    def backoff(self, attempt: int) -> float:
        return min(self.retry_backoff_s * (2**attempt), self.retry_backoff_max_s)

    def call(self, make: Callable[[], Awaitable[T]], what: str, *, retry: bool = True) -> T:
        """Run ``make()`` on the loop; retried with backoff on transient errors; BusError at the end."""
        if self._closed:
            raise BusError(f"cannot {what} on {self.shown_url}: the bus is closed")
        attempt = 0
        while True:
            try:
                return self.loop.run(_await(make()))
            except BusError:
                raise
            except self.transient as exc:
                if not retry or attempt >= self.retries:
                    raise BusError(
                        f"cannot {what} on {self.shown_url}: {exc or type(exc).__name__} "
                        f"(after {attempt + 1} attempts); check that the broker is running and "
                        "reachable at that URL"
                    ) from exc
                time.sleep(self.backoff(attempt))
                attempt += 1

    # --- publishing -----------------------------------------------------------------

    def publish(
        self, type: str, payload: Any = None, *, metadata: Mapping[str, Any] | None = None
    ) -> Event:
        event = new_event(type, payload, metadata)
        self.check_type(type)
        data = envelope(event)
        self.call(lambda: self._send([(event, data)]), "publish")
        return event

    def publish_event(self, event: Event) -> Event:
        if not isinstance(event, Event):
            raise TypeError(f"publish_event() takes an Event, got {event!r}")
        self.check_type(event.type)
        data = envelope(event)
        self.call(lambda: self._send([(event, data)]), "publish")
        return event

    def publish_many(self, events: Iterable[EventSpec]) -> list[Event]:
        out: list[Event] = []
        chunk: list[tuple[Event, bytes]] = []
        for spec in events:
            event = to_event(spec)
            self.check_type(event.type)
            out.append(event)
            chunk.append((event, envelope(event)))
            if len(chunk) >= BUS_PUBLISH_CHUNK:
                items = chunk
                self.call(lambda items=items: self._send(items), "publish")  # type: ignore[misc]
                chunk = []
        if chunk:
            self.call(lambda: self._send(chunk), "publish")
        return out

    def check_type(self, type: str) -> None:
        if not isinstance(type, str) or not type:
            raise BusError(f"an event type must be a non-empty string, not {type!r}")

    # --- subscribing ----------------------------------------------------------------

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
        **_options: Any,
    ) -> Subscription:
        if self._closed:
            raise BusError(f"cannot subscribe on {self.shown_url}: the bus is closed")
        wanted = (types,) if isinstance(types, str) else (tuple(types) if types is not None else None)
        for t in wanted or ():
            self.check_type(t)
        sub: Subscription
        if mode == "durable":
            if start not in ("earliest", "latest"):
                raise BusError(f"start must be 'earliest' or 'latest', not {start!r}")
            sub = BrokerDurable(
                self, handler, wanted, group=group or BUS_DEFAULT_GROUP, consumer=consumer,
                batch=batch or BUS_BATCH, block_ms=block_ms or BUS_BLOCK_MS,
                visibility_timeout_ms=visibility_timeout_ms or BUS_VISIBILITY_TIMEOUT_MS,
                on_error=on_error, start=start, dedup_ttl_s=dedup_ttl_s, on_poison=on_poison,
            )
        elif mode == "broadcast":
            sub = BrokerBroadcast(self, handler, wanted, block_ms=block_ms or BUS_BLOCK_MS, on_error=on_error,
                                  on_poison=on_poison)
        else:
            raise BusError(f"unknown delivery mode {mode!r}: use 'durable' or 'broadcast'")
        self._subs.add(sub)
        return sub

    # --- backend hooks --------------------------------------------------------------

    @abstractmethod
    async def _send(self, items: list[tuple[Event, bytes]]) -> None:
        """Publish, as ``publish_to`` says; return once the broker confirmed."""

    @abstractmethod
    def _durable_reader(self, sub: BrokerDurable) -> Reader:
        """The reader behind one durable subscription."""

    @abstractmethod
    async def _broadcast_listener(
        self, sub: BrokerBroadcast, push: Callable[[bytes], None]
    ) -> Callable[[], Awaitable[None]]:
        """Start delivering broadcast messages to ``push`` (on the loop); return the stopper.

        A stopper with an ``alive()`` attribute is polled while idle: False means the listener
        was lost (its connection closed) and must be started again."""

    async def _disconnect(self) -> None:
        """Close the broker connection(s)."""

    def declare(self, sub: BrokerDurable) -> None:
        """Called by ``subscribe()`` for a durable subscription: create what must exist now."""

    # --- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subs):
            if sub.running:
                sub.stop()
        if self._loop_thread is not None:
            try:
                self._loop_thread.run(self._disconnect(), timeout=5)
            except Exception as exc:  # noqa: BLE001 - closing a broken connection
                log.debug("closing %s: %s", self.shown_url, exc)
            self._loop_thread.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.shown_url} channel={self.channel!r}>"


async def _await(aw: Awaitable[T]) -> T:
    return await aw


class BrokerDurable(Subscription):
    """A durable subscription on a broker bus: fetch a batch, dispatch, acknowledge, repeat."""

    mode: Mode = "durable"

    def __init__(
        self,
        bus: BrokerBus,
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
        dedup_ttl_s: float | None,
        on_poison: PoisonHandler | None = None,
    ) -> None:
        super().__init__(handler, types=types, group=group, consumer=consumer or default_consumer(),
                         on_error=on_error, on_poison=on_poison)
        self._bus = bus
        self.batch = max(1, int(batch))
        self.block_ms = max(1, int(block_ms))
        self.visibility_timeout_ms = max(1, int(visibility_timeout_ms))
        self.start_at = start
        self._dedup_ttl = None if dedup_ttl_s is None else max(1, int(dedup_ttl_s))
        self._dedup_prefix = f"{DEDUP_PREFIX}{group}:"
        self.reader = bus._durable_reader(self)
        self._attempt = 0
        self._last: BaseException | None = None
        self._acks: list[Any] = []
        self._transient: tuple[type[BaseException], ...] = (TimeoutError, *bus.transient)
        bus.declare(self)

    def _where(self) -> str:
        return f"consumer {self.consumer} of group {self.group} on {self._bus.shown_url}"

    def _last_error(self) -> BaseException | None:
        return self._last

    def _interrupt(self) -> None:
        lt = self._bus._loop_thread
        if lt is not None:
            lt.call_soon(self.reader.wake)

    def _run_on_loop(self, make: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        return self._bus.loop.run(_await(make()), timeout=timeout or BUS_BROKER_CALL_TIMEOUT_S)

    def _handle(self, msgs: list[Message]) -> int:
        """Decode, skip duplicates, dispatch; queue what to ack in ``_acks`` as it goes (a crash
        mid-batch still acks what was handled). Returns how many were handled."""
        acks = self._acks
        parsed: list[tuple[Message, Event]] = []
        group, consumer = self.group, self.consumer
        for m in msgs:
            try:
                parsed.append((m, decode(m.body, m.message_id)))
            except Exception as exc:  # noqa: BLE001 - any shape of bad entry, RecursionError included
                bad = Delivery(m.count, "durable", m.message_id, m.type, group, consumer)
                try:
                    self._poisoned(bytes(m.body or b""), exc, bad)
                except Exception as hook_exc:  # noqa: BLE001 - the DLQ write failed: keep it for later
                    log.error("could not dead-letter unusable entry %s (left for redelivery): %s",
                              m.message_id, hook_exc)
                    continue
                acks.append(m.handle)  # can never succeed: do not redeliver it forever
        done: set[str] = set()
        state = self._bus.state if self._dedup_ttl is not None else None
        if state is not None and parsed:
            found = state.mget([self._dedup_prefix + e.id for _, e in parsed])
            done = {e.id for (_, e), hit in zip(parsed, found) if hit is not None}
        handled = 0
        new_ids: list[str] = []
        try:
            for m, event in parsed:
                if event.id in done:
                    acks.append(m.handle)
                    self.duplicates += 1
                    continue

                def delivery(m: Message = m) -> Delivery:
                    return Delivery(m.count, "durable", m.message_id, m.type, group, consumer)

                outcome = self._dispatch(event, delivery)
                if outcome:
                    acks.append(m.handle)
                    handled += 1
                    if state is not None and outcome is not ACK_ONLY:
                        done.add(event.id)
                        new_ids.append(event.id)
        finally:
            if state is not None and new_ids:
                pipe = state.pipeline(transaction=False)
                for i in new_ids:
                    pipe.set(self._dedup_prefix + i, b"1", ex=self._dedup_ttl)
                pipe.execute()
        return handled

    def _flush_acks(self) -> None:
        acks, self._acks = self._acks, []
        try:
            self._run_on_loop(lambda: self.reader.ack(acks))
        except BaseException:
            self._acks = acks + self._acks
            raise

    def _loop(self, *, until_idle: bool, deadline: float | None, stop_event: threading.Event | None) -> None:
        reader = self.reader
        block_s = self.block_ms / 1000
        poll_s = min(block_s, max(0.01, self.visibility_timeout_ms / 4000))
        setup_needed = True
        try:
            while not self._should_stop(stop_event):
                if deadline is not None and time.monotonic() >= deadline:
                    log.warning("%s: not idle when run_until_idle timed out (%s entries still pending)",
                                self._where(), self._pending_quiet())
                    return
                try:
                    if setup_needed:
                        self._run_on_loop(reader.setup)
                        setup_needed = False
                        if self._attempt:
                            log.info("%s reconnected after %d attempts", self._where(), self._attempt)
                        self._attempt, self._last = 0, None
                        self._ready.set()
                    if self._acks:
                        self._flush_acks()
                    wait = 0.0 if until_idle else block_s
                    msgs = self._run_on_loop(functools.partial(reader.fetch, self.batch, wait), timeout=wait + 30)
                    if msgs:
                        self._handle(msgs)
                        continue
                    if until_idle:
                        if self._run_on_loop(reader.pending) == 0:
                            self.idle = True
                            return
                        msgs = self._run_on_loop(functools.partial(reader.fetch, self.batch, poll_s), timeout=poll_s + 30)
                        if msgs:
                            self._handle(msgs)
                except BusError:
                    raise
                except self._transient as exc:
                    setup_needed = True
                    self._failed(exc)
                except Exception as exc:  # the broker refused something: say where, as a BusError
                    raise BusError(f"{self._where()}: {type(exc).__name__}: {exc}") from exc
        finally:
            self._finish()

    def _failed(self, exc: BaseException) -> None:
        if self._attempt == 0:
            log.warning("%s lost its connection (%s); reconnecting", self._where(), exc or type(exc).__name__)
        self._last = exc
        delay = self._bus.backoff(self._attempt)
        self._attempt += 1
        self._stopping.wait(delay)

    def _pending_quiet(self) -> str:
        try:
            return str(self._run_on_loop(self.reader.pending))
        except Exception:  # noqa: BLE001 - only for the message
            return "some"

    def _finish(self) -> None:
        for attempt in range(self._bus.retries + 1):
            try:
                if self._acks:
                    self._flush_acks()
                break
            except Exception as exc:  # noqa: BLE001 - unacked entries are redelivered
                if attempt >= self._bus.retries:
                    log.warning("%s: could not ack %d handled entries (%s); they will be redelivered",
                                self._where(), len(self._acks), exc)
                    self._acks = []
                    break
                time.sleep(self._bus.backoff(attempt))
        try:
            self._run_on_loop(self.reader.close, timeout=5)
        except Exception as exc:  # noqa: BLE001 - the broker redelivers what was not acked
            log.debug("%s: closing the reader: %s", self._where(), exc)


class BrokerBroadcast(Subscription):
    """A broadcast listener on a broker bus: raw messages arrive from the loop on a queue."""

    mode: Mode = "broadcast"

    def __init__(
        self,
        bus: BrokerBus,
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
        self._inbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._transient: tuple[type[BaseException], ...] = (TimeoutError, *bus.transient)

    def _where(self) -> str:
        return f"broadcast listener on {self._bus.channel} at {self._bus.shown_url}"

    def _interrupt(self) -> None:
        self._inbox.put(None)

    def _loop(self, *, until_idle: bool, deadline: float | None, stop_event: threading.Event | None) -> None:
        quiet_s = self.block_ms / 1000
        poll_s = min(quiet_s, BUS_BROADCAST_POLL_S)
        stopper: Callable[[], Awaitable[None]] | None = None
        attempt = 0
        last = time.monotonic()
        try:
            while not self._should_stop(stop_event):
                if stopper is None:
                    try:
                        stopper = self._bus.loop.run(_await(self._bus._broadcast_listener(self, self._inbox.put)))
                    except self._transient as exc:
                        if attempt == 0:
                            log.warning("%s cannot subscribe (%s); retrying", self._where(), exc)
                        self._stopping.wait(self._bus.backoff(attempt))
                        attempt += 1
                        continue
                    except BusError:
                        raise
                    except Exception as exc:
                        raise BusError(f"{self._where()}: {type(exc).__name__}: {exc}") from exc
                    attempt = 0
                    self._ready.set()
                    last = time.monotonic()
                try:
                    raw = self._inbox.get(timeout=poll_s)
                except queue.Empty:
                    raw = None
                now = time.monotonic()
                if raw is None:
                    alive = getattr(stopper, "alive", None)
                    if alive is not None and not alive():  # the broker connection went: listen again
                        stopper = None
                        continue
                    if deadline is not None and now >= deadline:
                        log.warning("%s: still receiving when run_until_idle timed out", self._where())
                        return
                    if until_idle and now - last >= quiet_s:
                        self.idle = True
                        return
                    continue
                last = now
                self._on_message(raw)
        finally:
            if stopper is not None:
                try:
                    self._bus.loop.run(_await(stopper()), timeout=5)
                except Exception as exc:  # noqa: BLE001 - closing a broken subscription
                    log.debug("stopping %s: %s", self._where(), exc)

    def _on_message(self, data: bytes) -> None:
        try:
            event = decode(data)
        except Exception as exc:  # noqa: BLE001 - any shape of bad entry, RecursionError included
            try:
                self._poisoned(bytes(data), exc, Delivery(1, "broadcast"))
            except Exception as hook_exc:  # noqa: BLE001 - the listener goes on
                log.error("poison hook failed: %s", hook_exc, exc_info=hook_exc)
            return
        if self._wanted is not None and event.type not in self._wanted:
            return
        self._dispatch(event, lambda: Delivery(1, "broadcast", None, event.type))


__all__ = [
    "BrokerBroadcast",
    "BrokerBus",
    "BrokerDurable",
    "LoopThread",
    "Message",
    "Reader",
    "decode",
    "envelope",
    "open_state_client",
    "split_state",
]
