"""The event bus contract: what every backend promises, and the subscription machinery they share.

A :class:`Bus` moves :class:`~tusk_events.events.Event` envelopes between services in two
delivery modes, chosen per subscription:

``broadcast``
    Fire-and-forget fan-out: every subscriber that is connected when an event is published
    gets it; nothing is stored, so a subscriber that is down misses it.

``durable``
    Stored, acknowledged delivery: each *group* (one service) gets every event of the types it
    subscribes to; the consumers of one group share the work (each event goes to one of them);
    an event is acknowledged only after its handler returns, and one left unacknowledged
    (handler raised, consumer died) is delivered again after the visibility timeout.
    Delivery is at least once: handlers should tolerate seeing an event id twice.

Handlers are called inside :func:`tusk_events.events.handling`, so events they publish are
linked to the one being handled (same trace, ``causation_id`` = its id). A handler with a
second *required* positional parameter (or ``*args``), ``def handle(event, delivery)``, is
also given a :class:`Delivery`, whose ``count`` says how many times this message has been
delivered: the hook for retry limits and dead-lettering. Parameters with defaults are left
alone, so ``lambda e, seen=seen: ...`` gets the event only.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from tusk_events.defaults import BUS_READY_TIMEOUT_S, BUS_STOP_TIMEOUT_S
from tusk_events.errors import BusError, PayloadError
from tusk_events.events import Event, call_handling, new_event

log = logging.getLogger(__name__)

Mode: TypeAlias = Literal["durable", "broadcast"]
PublishTo: TypeAlias = Literal["both", "durable", "broadcast"]
Handler: TypeAlias = Callable[..., Any]
"""``handler(event)`` or ``handler(event, delivery)``; the return value is ignored."""
ErrorHandler: TypeAlias = Callable[[BaseException, "Event | None", "Delivery"], Any]
"""``on_error(exc, event, delivery)``; ``event`` is None when the message could not be decoded."""
PoisonHandler: TypeAlias = Callable[[bytes, str, "Delivery"], Any]
"""``on_poison(raw, reason, delivery)``: an entry that is not a usable event (undecodable, too
deep, not an envelope); ``raw`` is its bytes as stored. Durable: once it returns, the entry is
acknowledged; if it raises, the entry stays pending and is tried again later."""
EventSpec: TypeAlias = "Event | tuple[str, Any] | tuple[str, Any, Mapping[str, Any] | None]"


class _AckOnly:
    def __repr__(self) -> str:
        return "ACK_ONLY"


ACK_ONLY: Any = _AckOnly()
"""Returned by a durable handler: acknowledge the event but do not record its id as handled
(``dedup_ttl_s``): e.g. it was dead-lettered, and a redrive must be handled again."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """How an event reached its handler; ``count`` is 1 on the first delivery, 2 on the first retry..."""

    count: int = 1
    mode: Mode = "durable"
    message_id: str | None = None
    """The stream entry id (durable only): the handle for acking or dead-lettering by hand."""
    type: str | None = None
    group: str | None = None
    consumer: str | None = None


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """One consumer group of one stream: what is in flight and what is still to read."""

    name: str
    consumers: int
    pending: int
    """Delivered but not yet acknowledged."""
    lag: int | None
    """Entries not yet delivered to the group; None when the server cannot tell (after trims)."""
    last_delivered_id: str


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """One event type's stream."""

    type: str
    key: str
    length: int
    last_id: str | None
    groups: dict[str, GroupInfo] = field(default_factory=dict)


def accepts_delivery(handler: Callable[..., Any]) -> bool:
    """True when ``handler`` takes a second required positional argument (or ``*args``)."""
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: call with the event only
        return False
    positional = 0
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            return True
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty:
            positional += 1
    return positional >= 2


def redact_url(url: str) -> str:
    """``url`` with any password masked, fit for error messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


_strict = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def strict_json(data: Any, type: str = "?") -> str:
    """``data`` as strict JSON (RFC 8259: no NaN or Infinity, which other readers reject).

    Raises PayloadError naming the event type, so a bad payload is refused where it is
    published instead of being stored as JSON nothing else can read.
    """
    try:
        return _strict(data)
    except (TypeError, ValueError) as exc:
        raise PayloadError(
            f"event {type!r} cannot be published: {exc} (payload and metadata must be strict JSON: "
            "no NaN or Infinity; only objects, arrays, strings, finite numbers, booleans and null)"
        ) from exc


def _short(exc: BaseException) -> str:
    """A one-line, bounded text of ``exc`` (a RecursionError's or a huge value's str can be long)."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the entry
        text = ""
    text = text.splitlines()[0] if text else ""
    return text[:200]


def to_event(spec: EventSpec) -> Event:
    """An :class:`Event` from an Event or a ``(type, payload[, metadata])`` tuple."""
    if isinstance(spec, Event):
        return spec
    if isinstance(spec, tuple) and 2 <= len(spec) <= 3 and isinstance(spec[0], str):
        return new_event(spec[0], spec[1], spec[2] if len(spec) == 3 else None)
    raise TypeError(f"expected an Event or a (type, payload[, metadata]) tuple, got {spec!r}")


class Bus(ABC):
    """A connection to an event bus. Thread-safe: share one per process and URL.

    Backends implement the abstract methods; see the module docstring for the semantics.
    """

    url: str
    channel: str

    @abstractmethod
    def publish(
        self, type: str, payload: Any = None, *, metadata: Mapping[str, Any] | None = None
    ) -> Event:
        """Create an event (linked to the one being handled, if any), publish it, return it."""

    @abstractmethod
    def publish_event(self, event: Event) -> Event:
        """Publish an already built event as is."""

    @abstractmethod
    def publish_many(self, events: Iterable[EventSpec]) -> list[Event]:
        """Publish many events in as few round trips as possible, in order."""

    @abstractmethod
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
        """A subscription of ``handler`` to ``types``; call ``run()``, ``run_until_idle()`` or ``start()`` on it.

        ``types``: event types (a str for one); None means all: every type on the bus,
        including types first published later. ``mode``: "durable" or "broadcast" (see the
        module docstring). Durable only: ``group`` (default "default"; one group per service),
        ``consumer`` (unique per process; generated when None, and removed from the group
        on a clean stop if it holds nothing), ``batch`` (entries read and acked per round
        trip), ``visibility_timeout_ms`` (how long an unacknowledged entry waits before
        another consumer may claim it), ``start`` (where a group created now begins:
        "earliest" retained entry or "latest"). ``block_ms``: how long one read waits on
        the server. ``on_error(exc, event, delivery)`` is called after a handler raised.
        ``dedup_ttl_s``: how long a group remembers the ids it handled (durable only).
        ``on_poison(raw, reason, delivery)``: gets entries that are not events (default: log
        them). ``track_attempts`` (durable): ``Delivery.count`` counts the times a handler was
        *started* on the event (a counter written before each start, deleted with the ack)
        instead of the times Redis delivered it, so entries read but never started (a stop, a
        crash earlier in the batch) do not look like failed attempts; one round trip per event.
        ``assume_first_started`` (with ``track_attempts``): first deliveries are not counted
        (no round trip: acks go out every ``BUS_ACK_FLUSH_S``), and a redelivery counts the first
        delivery as started. Cheap and exact from the second delivery on; it can take an
        entry read but never started for one attempt, so use it when one attempt more or
        less does not decide anything (a retry limit of 2 or more).
        """

    @abstractmethod
    def ping(self) -> float:
        """Round-trip time in seconds; raises BusError when the bus is unreachable."""

    @abstractmethod
    def stream_info(self, types: Sequence[str] | None = None) -> dict[str, StreamInfo]:
        """Per event type: stream length and, per group, pending and lag (durable mode)."""

    @abstractmethod
    def close(self) -> None:
        """Stop the subscriptions started from this bus and release its connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Subscription(ABC):
    """A handler bound to a delivery mode; run it in this thread or start it in its own.

    ``run()`` processes until :meth:`stop` is called (or ``stop_event`` is set);
    ``run_until_idle()`` until nothing is left to process; ``start()`` runs in a daemon
    thread. ``stop()`` stops reading, lets the batch in hand finish (so none of it waits
    for a visibility timeout), acknowledges it and returns. A stopped subscription can be
    run again. Counters ``handled`` and ``failed`` are for metrics and tests.
    """

    mode: Mode

    def __init__(
        self,
        handler: Handler,
        *,
        types: tuple[str, ...] | None,
        group: str | None,
        consumer: str | None,
        on_error: ErrorHandler | None,
        on_poison: PoisonHandler | None = None,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        self.handler = handler
        self.types = types
        self.group = group
        self.consumer = consumer
        self.on_error = on_error
        self.on_poison = on_poison
        self.poisoned = 0
        """Entries that were not usable events (passed to ``on_poison`` or logged)."""
        self.handled = 0
        """Events whose handler returned."""
        self.failed = 0
        """Handler calls that raised (and undecodable messages)."""
        self.duplicates = 0
        """Events skipped because the group had handled their id already (``dedup_ttl_s``)."""
        self.error: BaseException | None = None
        """What ended a background run, if it ended on an error."""
        self.idle = False
        """Whether the last ``run_until_idle`` ended drained (False: timed out or stopped)."""
        self._pass_delivery = accepts_delivery(handler)
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._runner: int | None = None
        self._run_lock = threading.Lock()

    # --- running ------------------------------------------------------------------

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Process events in the calling thread until :meth:`stop` or ``stop_event.set()``."""
        self._run(until_idle=False, deadline=None, stop_event=stop_event)

    def run_until_idle(self, timeout: float | None = None, stop_event: threading.Event | None = None) -> int:
        """Process until nothing is pending or new, then return how many events were handled.

        Durable: returns once the group has no new entry and no unacknowledged one for these
        types (a failed message is retried after the visibility timeout, so this waits for it).
        Broadcast: returns after ``block_ms`` without a message. With ``timeout`` (seconds) it
        also returns when time is up, with ``idle`` False and a warning logged, and when
        ``stop_event`` is set (after the event in hand).
        """
        before = self.handled
        deadline = None if timeout is None else time.monotonic() + timeout
        self.idle = False
        self._run(until_idle=True, deadline=deadline, stop_event=stop_event)
        return self.handled - before

    def start(self, *, wait: bool = True, timeout: float = BUS_READY_TIMEOUT_S) -> Self:
        """Run in a daemon thread; with ``wait``, return once subscribed (groups exist / SUBSCRIBE acked)."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("subscription already started")
        self._stopping.clear()
        self._ready.clear()
        self.error = None
        self._thread = threading.Thread(
            target=self._thread_main, name=f"tusk-bus-{self.mode}-{self.group or 'sub'}", daemon=True
        )
        self._thread.start()
        if wait and not self.wait_ready(timeout):
            self.stop()
            err = self.error or self._last_error()
            raise BusError(
                f"subscription to {self._where()} not ready after {timeout:g}s"
                + (f": {err}" if err else "")
                + "; check that the bus server is running and reachable"
            ) from err
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until subscribed; False on timeout or when the run ended first."""
        end = None if timeout is None else time.monotonic() + timeout
        while not self._ready.wait(0.01):
            if self._thread is not None and not self._thread.is_alive():
                return False
            if end is not None and time.monotonic() >= end:
                return False
        return True

    def stop(self, timeout: float | None = BUS_STOP_TIMEOUT_S) -> bool:
        """Stop reading, let in-flight handlers finish and ack them; True once the run has ended."""
        self._stopping.set()
        if self._runner == threading.get_ident():  # called from a handler: the loop ends after it
            return False
        end = None if timeout is None else time.monotonic() + timeout
        while not self._idle.wait(0.005):
            self._interrupt()
            if end is not None and time.monotonic() >= end:
                log.warning("subscription to %s still running %ss after stop()", self._where(), timeout)
                return False
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(None if end is None else max(0.0, end - time.monotonic()))
        return True

    def request_stop(self) -> None:
        """Ask the run to end after the event in hand, without waiting (see :meth:`stop`)."""
        self._stopping.set()
        self._interrupt()

    def abandon(self) -> int:
        """Give up on the event in hand without acknowledging it (the process is about to exit).

        Durable: its attempt is not counted and it is made claimable at once. Returns how many
        entries were given up.
        """
        return 0

    def wait_stopped(self, timeout: float | None) -> bool:
        """Wait until the run has ended; False when ``timeout`` passed first."""
        return self._idle.wait(timeout)

    @property
    def alive(self) -> bool:
        """Whether the background thread of :meth:`start` is still running."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def running(self) -> bool:
        return not self._idle.is_set()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _thread_main(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # kept for start() and callers to inspect
            self.error = exc
            log.error("subscription to %s ended: %s", self._where(), exc, exc_info=exc)

    def _run(self, *, until_idle: bool, deadline: float | None, stop_event: threading.Event | None) -> None:
        if not self._run_lock.acquire(blocking=False):
            raise RuntimeError("this subscription is already running")
        self._idle.clear()
        self._runner = threading.get_ident()
        try:
            if self._thread is None or self._thread is not threading.current_thread():
                self._stopping.clear()
            self._loop(until_idle=until_idle, deadline=deadline, stop_event=stop_event)
        finally:
            self._runner = None
            self._idle.set()
            self._run_lock.release()

    def _should_stop(self, stop_event: threading.Event | None) -> bool:
        return self._stopping.is_set() or (stop_event is not None and stop_event.is_set())

    # --- dispatch -----------------------------------------------------------------

    def _dispatch(self, event: Event, delivery: Delivery | Callable[[], Delivery]) -> Any:
        """Call the handler with ``event`` as the one being handled (:func:`call_handling`); truthy when it returned (ACK_ONLY if it said so)."""
        try:
            if self._pass_delivery:
                d = delivery if isinstance(delivery, Delivery) else delivery()
                result = call_handling(event, self.handler, event, d)
            else:
                result = call_handling(event, self.handler, event)
        except Exception as exc:  # noqa: BLE001 - a failing handler must not stop the loop
            d = delivery if isinstance(delivery, Delivery) else delivery()
            self._report(exc, event, d)
            return False
        self.handled += 1
        return ACK_ONLY if result is ACK_ONLY else True

    def _poisoned(self, raw: bytes, exc: BaseException, delivery: Delivery) -> None:
        """An entry that is not a usable event: to ``on_poison``, else logged. Raises if the hook did."""
        self.poisoned += 1
        reason = f"not a usable event: {type(exc).__name__}: {_short(exc)}"
        if self.on_poison is None:  # reported like a failed handler, with no event
            log.error("%s: %s (%d bytes: %r); acknowledged", self._where(), reason, len(raw), raw[:120])
            self._report(exc, None, delivery)
            return
        self.on_poison(raw, reason, delivery)

    def _report(self, exc: BaseException, event: Event | None, delivery: Delivery) -> None:
        self.failed += 1
        what = f"event {event.type} {event.id}" if event is not None else "an undecodable message"
        log.error(
            "handler %s failed on %s (delivery %d, %s): %s",
            getattr(self.handler, "__qualname__", self.handler),
            what,
            delivery.count,
            self._where(),
            exc,
            exc_info=exc,
        )
        if self.on_error is not None:
            try:
                self.on_error(exc, event, delivery)
            except Exception as hook_exc:  # a broken hook must not stop the loop
                log.error("on_error hook failed: %s", hook_exc, exc_info=hook_exc)

    # --- backend hooks ------------------------------------------------------------

    @abstractmethod
    def _loop(self, *, until_idle: bool, deadline: float | None, stop_event: threading.Event | None) -> None:
        """Read and dispatch until stopped (or idle); set ``_ready`` once subscribed."""

    def _interrupt(self) -> None:
        """Wake a reader blocked on the server so it notices ``stop()`` promptly."""

    def _last_error(self) -> BaseException | None:
        return None

    def _where(self) -> str:
        return "the bus"
