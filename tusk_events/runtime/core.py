"""The runtime: a config's services, subscribed and handling events, with retries, dedup and DLQ.

(About 700 lines: handling one event touches retries, dedup, tracking, dead letters and
sync delivery, which read best together; running, stopping and supervising are elsewhere.)

For every service section (see :mod:`tusk_events.runtime.services`) the runtime subscribes its
handler fujsen to the service's event types and, for each event:

1. skips it when the service already handled this event id (idempotency, below);
2. calls the handler with the event as a dict, inside the event's causal context;
3. on a :class:`FujsenError` retries up to ``retries`` times, waiting ``backoff * 2**n``
   (full jitter, capped by ``backoff_max``);
4. when every attempt failed, writes the event to the service's dead-letter queue with the
   reason, the traceback (its ``.tsk`` line) and the attempt count, and announces it on the
   ``dlq_channel``. Nothing that fails is dropped.

Every event published through the runtime (``publish(...)`` in a fujsen, :meth:`Runtime.publish`
in host code) is appended to the event store, then published on the bus, and handled
inline by the ``sync`` services subscribed to its type.

Idempotency, exactly: after a handler returns, ``tusk:dedup:<group>:<event id>`` is
recorded on the bus's Redis — in durable mode by the bus, in one MULTI with the stream
acknowledgement, sent in the round trip that starts the next handler (or with the next read); in sync and broadcast mode right after the
handler. An event whose record exists is acknowledged without running the handler. A worker that dies *after* the handler's effects and *before* that MULTI leaves
the event pending: it is handled again. Effects made through ``publish`` stay exactly-once
even then: events published while handling event E in service S get ids derived from
(E, S, n), so the second run publishes the same ids, which the store and every consumer
deduplicate. Effects made through ``execute`` or ``redis`` in that window are at least once
without tracking; with it (the default, :mod:`tusk_events.runtime.tracking`), ``execute`` and
``publish`` effects commit with a tracking row in one store transaction: exactly once.
"""

from __future__ import annotations

import contextvars
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tusk_events.bus import ACK_ONLY, Bus, Delivery, connect, redis_client
from tusk_events.bus.base import strict_json
from tusk_events.config import TSK
from tusk_events.contracts.model import Contracts
from tusk_events.defaults import (
    DEDUP_PREFIX,
    DEDUP_TTL_S,
    DLQ_CHANNEL,
    RUN_GRACE_S,
    RUNTIME_CONSUMER_RESTARTS,
    RUNTIME_RESTART_WINDOW_S,
)
from tusk_events.errors import BusError, ConfigError, FujsenError, StoreError
from tusk_events.events import Event, handling, new_event
from tusk_events.fujsen.helpers import shared_store
from tusk_events.runtime import signals
from tusk_events.runtime.clock import SYSTEM_CLOCK, Clock
from tusk_events.runtime.dlq import DeadLetterQueue
from tusk_events.runtime.relay import Relay, Target
from tusk_events.runtime.services import ServiceSpec, services
from tusk_events.runtime.tracking import Tracker

log = logging.getLogger(__name__)

_ID_NAMESPACE = uuid.UUID("6f1c2a4e-8b0d-4c55-9a3e-1d2b7e0f9c31")


@dataclass(slots=True)
class _PublishContext:
    """The event a handler is working on, so what it publishes gets derived ids."""

    service: str
    event: Event
    published: int = 0

    def next_id(self) -> str:
        self.published += 1
        return str(uuid.uuid5(_ID_NAMESPACE, f"{self.event.id}/{self.service}/{self.published}"))


_context: contextvars.ContextVar[_PublishContext | None] = contextvars.ContextVar(
    "tusk_publish_context", default=None
)


@dataclass
class Service:
    """A running service: its spec, its config and its bound handler."""

    spec: ServiceSpec
    tsk: TSK
    handler: Callable[..., Any]


@dataclass
class Summary:
    """What a run did, from the runtime's signals."""

    published: int = 0
    handled: int = 0
    duplicates: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    latencies: list[float] = field(default_factory=list)
    dead_letters: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q * len(data)))]

    def to_dict(self) -> dict[str, Any]:
        p50, p99 = self.percentile(0.50), self.percentile(0.99)
        return {
            "published": self.published,
            "handled": self.handled,
            "duplicates_skipped": self.duplicates,
            "failed_attempts": self.failed,
            "retried": self.retried,
            "dead_lettered": self.dead_lettered,
            "latency_ms_p50": None if p50 is None else round(p50 * 1000, 3),
            "latency_ms_p99": None if p99 is None else round(p99 * 1000, 3),
        }

    def render(self) -> str:
        d = self.to_dict()
        lat = (
            f"handling latency p50 {d['latency_ms_p50']:.2f} ms, p99 {d['latency_ms_p99']:.2f} ms"
            if d["latency_ms_p50"] is not None
            else "handling latency: no events handled"
        )
        lines = [
            f"published {d['published']}, handled {d['handled']}, retried {d['retried']}, "
            f"dead-lettered {d['dead_lettered']}"
            + (f", duplicates skipped {d['duplicates_skipped']}" if d["duplicates_skipped"] else ""),
            lat,
        ]
        for service, event_type, reason in self.dead_letters:
            lines.append(f"  DLQ {service}: {event_type}: {reason}")
        return "\n".join(lines)


class Runtime:
    """Runs the services of one or more configs on one bus and one event store.

        >>> rt = Runtime([TSK.from_file("configs/app.tsk", env={})])
        >>> summary = rt.run_until_idle()
    """

    def __init__(
        self,
        configs: Sequence[TSK],
        *,
        bus_url: str | None = None,
        store_url: str | None = None,
        consumer: str | None = None,
        grace: float = RUN_GRACE_S,
        tracking: bool | None = None,
        clock: Clock | None = None,
        trust: str | None = None,
    ) -> None:
        if not configs:
            raise ConfigError("the runtime needs at least one config")
        self.configs = list(configs)
        self.clock: Clock = clock or SYSTEM_CLOCK
        """Backoff sleeps and failure times; a test injects a virtual one (tusk_events.testing)."""
        if trust == "untrusted":  # every config must have been loaded untrusted (isolated, capped)
            loose = [cfg.path or "<string>" for cfg in self.configs if cfg.trust != "untrusted"]
            if loose:
                raise ConfigError(f"trust='untrusted' but these configs were loaded trusted: {', '.join(loose)}")
        _check_duplicate_sections(self.configs)
        self.contracts = Contracts.merge(cfg.contracts for cfg in self.configs)
        first = self.configs[0]
        self.bus_url = bus_url or first.bus_url
        self.store_url = store_url or first.store_url
        channel = _setting(self.configs, "event_channel")
        self.bus: Bus = connect(self.bus_url, **({"channel": channel} if isinstance(channel, str) else {}))
        self.client = redis_client(self.bus_url)
        self.store = shared_store(self.store_url)
        dlq_channel = _setting(self.configs, "dlq_channel")
        self.dlq = DeadLetterQueue(
            self.client, channel=dlq_channel if isinstance(dlq_channel, str) else DLQ_CHANNEL
        )
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.summary = Summary()
        self._receivers = _summary_receivers(self, self.summary)
        for sig, receiver in self._receivers:
            sig.connect(receiver)
        for cfg in self.configs:
            cfg.bind_helpers(publish=self._publish_helper)
        self.services: list[Service] = []
        for cfg in self.configs:
            for spec in services(cfg):
                self.services.append(Service(spec, cfg, cfg.fujsen(spec.name, spec.handler)))
        self._sync: dict[str, list[Service]] = {}
        for svc in self.services:
            if svc.spec.delivery == "sync":
                for t in svc.spec.types:
                    self._sync.setdefault(t, []).append(svc)
        self._subscriptions: list[Any] = []
        self._closed = False
        self._stop = threading.Event()
        self._abandoned = False
        self.abandoned = 0
        """Consumers that were still in a handler when the grace period of a stop ran out."""
        self.grace = grace
        self._init_tracking(tracking)

    def _init_tracking(self, tracking: bool | None) -> None:
        """Exactly-once handling (tracking rows) and the relay; see runtime.tracking/.relay."""
        from tusk_events.runtime.relay import redeliver_since

        if tracking is None:
            setting = _setting(self.configs, "tracking")
            tracking = setting if isinstance(setting, bool) else True
        self.tracking = Tracker(self.store, enabled=tracking, on_commit=self._committed)
        self.relay = Relay(
            self.store, self.bus, self.client, bus_url=self.bus_url,
            owner=f"{self.consumer}/{uuid.uuid4().hex[:8]}",
            targets=[Target(s.spec.name, list(s.spec.types), s.spec.delivery == "sync")
                     for s in self.services if s.spec.delivery != "broadcast"],
            handle_sync=lambda name, event: self.process(self._service(name), event),
            redeliver_since_s=redeliver_since(_setting(self.configs, "redeliver_since")),
        )
        self.relay.before_pass = self.tracking.flush

    def _committed(self, events: list[Event]) -> None:
        """A tracked handling committed: send what it published, then run sync services."""
        self.relay.send(events)
        for event in events:
            for svc in self._sync.get(event.type, ()):
                self.process(svc, event)

    @classmethod
    def from_files(
        cls,
        paths: Iterable[str],
        *,
        env: Mapping[str, str] | None = None,
        isolation: str | None = None,
        trust: str | None = None,
        env_allow: Iterable[str] = (),
        **options: Any,
    ) -> Runtime:
        """A runtime for config files; ``trust="untrusted"`` loads them under the operator's policy."""
        configs = [TSK.from_file(p, env=env, isolation=isolation, trust=trust, env_allow=env_allow) for p in paths]
        return cls(configs, trust=trust, **options)

    # -- publishing ----------------------------------------------------------------------

    def publish(
        self, type: str, payload: Any = None, *, metadata: Mapping[str, Any] | None = None,
        id: str | None = None,
    ) -> Event:
        """Store, publish and (for sync services) handle a new event.

        With ``id`` (host code), publishing the same id again is a no-op: a safe retry.
        """
        ctx = _context.get()
        event = new_event(type, payload, metadata)
        if id is not None:
            event.id = id
        if ctx is not None:
            event.id = ctx.next_id()
            event.metadata.setdefault("service", ctx.service)  # who published it: the trace's edge label
        return self.publish_event(event, publisher=ctx.service if ctx else None)

    def publish_event(self, event: Event, *, publisher: str | None = None) -> Event:
        self.contracts.check_outgoing(event)  # ContractError: nothing stored or sent
        strict_json(event.to_dict(), event.type)  # PayloadError (NaN, Infinity...): nothing stored or sent
        if self.tracking.enabled:
            if self.tracking.defer(event):  # a handler's publish: stored at its commit
                signals.published.send(runtime=self, event=event, service=publisher)
                return event
            if not self.relay.store_event(event):  # stored before: a retry, nothing to do
                return event
            self.relay.send([event])  # the bus down: the relay sends it later
        else:
            self.store.append(event)
            try:
                self.bus.publish_event(event)
            except BusError as exc:
                raise BusError(
                    f"event {event.type} {event.id} is in the event store but was not published to the bus: {exc}"
                ) from exc
        signals.published.send(runtime=self, event=event, service=publisher)
        for svc in self._sync.get(event.type, ()):
            self.process(svc, event)
        return event

    def _publish_helper(self, type: str, payload: Any = None, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``publish(type, payload, metadata=None)`` as fujsen see it: returns the event as a dict."""
        from tusk_events.fujsen import budget
        from tusk_events.fujsen.guards import violate

        if not isinstance(type, str) or not type:
            violate("publish(): the event type must be a non-empty string")
        return budget.blocking(lambda: self.publish(type, payload, metadata=metadata).to_dict())

    # -- handling -------------------------------------------------------------------------

    def process(self, svc: Service, event: Event, delivery: Delivery | None = None) -> str:
        """Handle one event for one service; returns "handled", "duplicate" or "dead-lettered".

        With a durable ``delivery`` the bus has checked and will record the event id (with
        its ack); otherwise this does.
        """
        spec = svc.spec
        durable = delivery is not None and delivery.mode == "durable"
        tracked = delivery is None or durable  # broadcast: every instance handles it
        # with a durable delivery the bus keeps the record, in the round trip of its ack
        dedup_key = "" if durable else f"{getattr(self.bus, 'dedup_prefix', DEDUP_PREFIX)}{spec.group}:{event.id}"
        # a first durable delivery was never handled here, or the bus's record would have
        # stopped it; a repeat (count > 1) may follow a crash between commit and ack
        recheck = delivery is None or delivery.count > 1
        if self.tracking.done(spec.name, event, tracked and recheck) or (
            not durable and self.client.exists(dedup_key)
        ):
            with self.summary.lock:
                self.summary.duplicates += 1
            return "duplicate"
        if delivery is not None and delivery.count > spec.retries + 1:
            # durable: ``count`` is the number of times a handler was *started* on it (the bus
            # counts attempts): started again and again, never finished: the worker dies on it
            self._dead_letter(
                svc, event, f"started {delivery.count - 1} times without finishing (the worker died while handling it?)",
                "", delivery.count - 1, None,
            )
            return "dead-lettered"
        reason = self.contracts.check_incoming(event)
        if reason is not None:  # no retry can make it valid: straight to the DLQ, handler not called
            self._dead_letter(svc, event, reason, "", 0, None)
            return "dead-lettered"
        first_failed: float | None = None
        error: FujsenError | None = None
        attempts = spec.retries + 1
        for attempt in range(1, attempts + 1):
            ctx = _context.set(_PublishContext(spec.name, event))
            t0 = time.perf_counter()
            try:
                with handling(event), self.tracking.attempt(spec.name, event, tracked) as done:
                    svc.handler(event.to_dict())
            except FujsenError as err:
                if self._abandoned:  # the run gave up waiting: neither retried nor dead-lettered
                    raise Abandoned() from err
                seconds = time.perf_counter() - t0
                error = err
                first_failed = first_failed or self.clock.time()
                signals.failed.send(runtime=self, service=spec.name, event=event, error=err, attempt=attempt, seconds=seconds)
                if attempt < attempts:
                    delay = _backoff(spec, attempt)
                    signals.retried.send(runtime=self, service=spec.name, event=event, attempt=attempt + 1, delay=delay)
                    self.clock.sleep(delay)
                continue
            finally:
                _context.reset(ctx)
            if done.duplicate:  # another delivery committed this event first: nothing applied
                with self.summary.lock:
                    self.summary.duplicates += 1
                return "duplicate"
            seconds = time.perf_counter() - t0
            if not durable:
                self.client.set(dedup_key, 1, ex=DEDUP_TTL_S)
            signals.handled.send(runtime=self, service=spec.name, event=event, seconds=seconds, attempt=attempt)
            return "handled"
        assert error is not None
        self._dead_letter(svc, event, str(error).split("\n")[0], _traceback(error), attempts, first_failed)
        return "dead-lettered"

    def _dead_letter(
        self, svc: Service, event: Event, reason: str, tb: str, attempts: int, first_failed: float | None
    ) -> None:
        self.dlq.add(svc.spec.name, event, reason=reason, traceback=tb, attempts=attempts,
                     first_failed_at=first_failed)
        self.tracking.dead_lettered(svc.spec.name, event)
        log.warning("dead-lettered %s %s in %s after %d attempts: %s",
                    event.type, event.id, svc.spec.name, attempts, reason,
                    extra={"event_id": event.id, "trace_id": event.trace_id, "service": svc.spec.name})
        signals.dead_lettered.send(runtime=self, service=svc.spec.name, event=event, reason=reason, attempts=attempts)

    def redrive(self, service: str, ids: Iterable[str] | None = None) -> int:
        """Handle dead-lettered events of ``service`` again, here, by that service only; returns how many.

        Each letter is taken off the queue first (XDEL: of two redrives at once only one gets
        it) and then handled by this service's handler in this process, with its retries and
        dead-lettering; no other service sees it again (nothing is published). Letters that
        were not usable events (``raw``) stay: there is no event to handle.
        """
        svc = self._service(service)
        letters = self.dlq.list(service)
        if ids is not None:
            wanted = set(ids)
            letters = [d for d in letters if d.id in wanted]
        done = 0
        self.tracking.forget(service, [d.event.id for d in letters if d.raw is None])
        for letter in letters:
            if letter.raw is not None:
                log.warning("dead letter %s of %s is not an event (%s): not redriven; inspect or purge it",
                            letter.id, service, letter.reason)
                continue
            if not self.dlq.remove(service, [letter.id]):
                continue  # another redrive took it
            self.process(svc, letter.event)
            done += 1
        return done

    def _service(self, name: str) -> Service:
        for svc in self.services:
            if svc.spec.name == name:
                return svc
        known = ", ".join(s.spec.name for s in self.services) or "none"
        raise ConfigError(f"no service [{name}] in the config (services: {known})")

    # -- running -----------------------------------------------------------------------

    def _subscribe_all(self) -> None:
        for svc in self.services:
            if svc.spec.delivery == "sync":
                continue
            handler = self._bus_handler(svc)
            poison = self._poison_handler(svc)
            if svc.spec.delivery == "broadcast":
                sub = self.bus.subscribe(handler, list(svc.spec.types), mode="broadcast", on_poison=poison)
                sub.start()
                self._subscriptions.append(sub)
                continue
            for i in range(svc.spec.concurrency):
                sub = self.bus.subscribe(
                    handler, list(svc.spec.types), group=svc.spec.group,
                    consumer=f"{self.consumer}-{svc.spec.name}-{i}", mode="durable",
                    dedup_ttl_s=DEDUP_TTL_S,
                    visibility_timeout_ms=int(svc.spec.visibility_timeout_s * 1000),
                    batch=svc.spec.batch,
                    on_poison=poison,
                    track_attempts=True,
                    # a phantom first attempt cannot decide a dead letter unless retries is 0
                    assume_first_started=svc.spec.retries >= 1,
                )
                self._subscriptions.append(sub)

    def _bus_handler(self, svc: Service) -> Callable[[Event, Delivery], Any]:
        def handle(event: Event, delivery: Delivery) -> Any:
            # a dead-lettered event is acknowledged but not recorded as handled: a redrive
            # must reach the handler again
            return ACK_ONLY if self.process(svc, event, delivery) == "dead-lettered" else None

        return handle

    def _poison_handler(self, svc: Service) -> Callable[[bytes, str, Delivery], None]:
        def poison(raw: bytes, reason: str, delivery: Delivery) -> None:
            type_name = delivery.type or "?"
            self.dlq.add_raw(svc.spec.name, type_name, raw, reason=reason, message_id=delivery.message_id)
            log.error("dead-lettered an unusable %s entry %s in %s (%d bytes): %s", type_name,
                      delivery.message_id, svc.spec.name, len(raw), reason, extra={"service": svc.spec.name})
            event = Event(type=type_name, payload=None, id=delivery.message_id or "?")
            signals.dead_lettered.send(runtime=self, service=svc.spec.name, event=event, reason=reason, attempts=1)

        return poison

    def run_startup(self) -> int:
        """Run every ``startup`` fujsen of the configs, in order; returns how many ran."""
        ran = 0
        for cfg in self.configs:
            for section in cfg.sections():
                if "startup" in cfg.fujsen_names(section):
                    cfg.execute_fujsen(section, "startup")
                    ran += 1
        return ran

    def run_until_idle(self, *, startup: bool = True, timeout: float | None = None) -> Summary:
        """Start the services, run the startup fujsen, handle until every queue is drained.

        Ends early, after the events in hand, when :meth:`request_stop` is called (from a
        signal handler or another thread). BusError when the bus cannot be reached.
        """
        self.bus.ping()  # BusError at once, rather than reconnecting forever
        self._stop.clear()  # a runtime can run again after a stop
        self._relay_pass()
        self._subscribe_all()
        if startup:
            self.run_startup()
        deadline = None if timeout is None else time.monotonic() + timeout
        durable = [s for s in self._subscriptions if s.mode == "durable"]
        broadcast = [s for s in self._subscriptions if s.mode == "broadcast"]
        restarts = _Restarts()
        quiet_passes = 0
        while quiet_passes < 2 and not self._stop.is_set():
            moved = 0
            for sub in durable:
                if self._stop.is_set():
                    break
                left = None if deadline is None else max(0.1, deadline - time.monotonic())
                try:
                    moved += sub.run_until_idle(timeout=left, stop_event=self._stop)
                except BusError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a consumer loop that broke: run it again
                    restarts.record(f"consumer {sub.consumer}", exc)
                    moved += 1
            seen = sum(s.handled + s.failed for s in broadcast)
            if broadcast:
                self._stop.wait(0.05)
                moved += sum(s.handled + s.failed for s in broadcast) - seen
            quiet_passes = quiet_passes + 1 if moved == 0 else 0
            if deadline is not None and time.monotonic() > deadline:
                break
        self.stop()
        return self.summary

    def run(self, stop_event: threading.Event, *, startup: bool = True) -> Summary:
        """Handle events until ``stop_event`` is set; then finish in-flight events and stop.

        A consumer thread that died (anything but a stop) is restarted and logged; when they
        keep dying (``RUNTIME_CONSUMER_RESTARTS`` in ``RUNTIME_RESTART_WINDOW_S``) this raises
        BusError, so the worker exits non-zero instead of running without them.
        """
        self._stop.clear()
        self._relay_pass()
        if self.tracking.enabled:
            self.relay.start()
        self._subscribe_all()
        for sub in self._subscriptions:
            if sub.mode == "durable":
                sub.start()
        if startup:
            self.run_startup()
        restarts = _Restarts()
        try:
            while not stop_event.wait(RUNTIME_WATCH_S) and not self._stop.is_set():
                for sub in self._subscriptions:
                    if not sub.alive and not self._stop.is_set() and not stop_event.is_set():
                        restarts.record(f"{sub.mode} consumer {sub.consumer or ''}".rstrip(), sub.error)
                        sub.start(wait=False)
        finally:
            self.stop(self.grace)
        return self.summary

    def request_stop(self) -> None:
        """Stop reading new events, without waiting: in-flight handlers go on (see :meth:`stop`)."""
        self._stop.set()
        for sub in self._subscriptions:
            sub.request_stop()

    def stop(self, grace: float | None = None) -> bool:
        """Stop reading; wait up to ``grace`` s for in-flight handlers, which are then acknowledged.

        Returns False when handlers were still running at the end of the grace period: they
        are *abandoned*, unacknowledged (redelivered after their visibility timeout), never
        failed, retried or dead-lettered.
        """
        self.request_stop()
        end = time.monotonic() + (self.grace if grace is None else grace)
        running = [s for s in self._subscriptions if s.running]
        for sub in running:
            sub.wait_stopped(max(0.0, end - time.monotonic()))
        still = [s for s in running if s.running]
        if still:
            self._abandoned = True
            for sub in still:
                sub.abandon()
            log.warning("stopping: %d consumer(s) still handling an event after the %gs grace period; "
                        "it is abandoned unacknowledged and will be delivered again",
                        len(still), self.grace if grace is None else grace)
            self.abandoned = len(still)
            self.relay.stop()
            return False
        self._subscriptions.clear()
        self.relay.stop()
        return True

    def _relay_pass(self) -> None:
        """Before handling: send what the outbox holds, re-deliver what the bus lost."""
        if self.tracking.enabled:
            try:
                self.relay.tick()
            except (BusError, StoreError) as e:  # the background pass retries
                log.warning("relay pass failed: %s", e)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._abandoned:
            self.stop()
        for sig, receiver in self._receivers:
            sig.disconnect(receiver)
        self.bus.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


RUNTIME_WATCH_S = 0.2
"""How often ``run`` checks that its consumer threads are alive."""


class Abandoned(BaseException):
    """Raised in a handler's thread when the run stopped waiting for it: not a failure to retry."""


class _Restarts:
    """Counts consumer restarts in a sliding window; raises BusError when there are too many."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def record(self, what: str, error: BaseException | None) -> None:
        now = time.monotonic()
        self.times = [t for t in self.times if now - t < RUNTIME_RESTART_WINDOW_S] + [now]
        if len(self.times) > RUNTIME_CONSUMER_RESTARTS:
            raise BusError(f"{what} keeps dying ({len(self.times)} times in {RUNTIME_RESTART_WINDOW_S:g}s), "
                           f"last: {error!r}; giving up")
        log.error("%s died (%r); restarting it (%d in the last %gs)", what, error, len(self.times),
                  RUNTIME_RESTART_WINDOW_S)


def _backoff(spec: ServiceSpec, attempt: int) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    ceiling = min(spec.backoff_max_s, spec.backoff_s * (2 ** (attempt - 1)))
    return random.uniform(0, ceiling)


def _traceback(error: BaseException) -> str:
    import traceback

    cause = error.__cause__
    text = "".join(traceback.format_exception(cause)) if cause is not None else ""
    return text + str(error)


def _setting(configs: Sequence[TSK], key: str) -> Any:
    for cfg in configs:
        value = cfg.get_value_anywhere(key)
        if value is not None:
            return value
    return None


def _check_duplicate_sections(configs: Sequence[TSK]) -> None:
    seen: dict[str, str] = {}
    for cfg in configs:
        for name in cfg.data:
            if not isinstance(cfg.data[name], dict) or Contracts.owns(name):  # contracts merge
                continue
            if name in seen:
                raise ConfigError(
                    f"section [{name}] is defined in both {seen[name]} and {cfg.path or '<string>'}"
                )
            seen[name] = cfg.path or "<string>"


def _summary_receivers(
    runtime: Runtime, summary: Summary
) -> list[tuple[signals.Signal, Callable[..., None]]]:
    def published(runtime: Runtime, **_: Any) -> None:
        if runtime is me:
            with summary.lock:
                summary.published += 1

    def handled(runtime: Runtime, seconds: float, **_: Any) -> None:
        if runtime is me:
            with summary.lock:
                summary.handled += 1
                summary.latencies.append(seconds)

    def failed(runtime: Runtime, **_: Any) -> None:
        if runtime is me:
            with summary.lock:
                summary.failed += 1

    def retried(runtime: Runtime, **_: Any) -> None:
        if runtime is me:
            with summary.lock:
                summary.retried += 1

    def dead_lettered(runtime: Runtime, service: str, event: Event, reason: str, **_: Any) -> None:
        if runtime is me:
            with summary.lock:
                summary.dead_lettered += 1
                summary.dead_letters.append((service, event.type, reason))

    me = runtime

    return [
        (signals.published, published),
        (signals.handled, handled),
        (signals.failed, failed),
        (signals.retried, retried),
        (signals.dead_lettered, dead_lettered),
    ]


__all__ = ["Runtime", "Service", "Summary"]
