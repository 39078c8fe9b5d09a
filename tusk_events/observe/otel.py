"""OpenTelemetry spans for the runtime's publish and handle steps.

**Spans** (``instrument(runtime)``, extra ``tusk_events[otel]``, imported only then): a
``publish <type>`` span (PRODUCER) around the store append and bus publish, and a
``handle <type>`` span (CONSUMER) per service and event, all attempts included (failed ones
as span events; ERROR when dead-lettered). The handle span is built when the runtime's
``handled`` / ``dead_lettered`` signal arrives, after the handler ran, so its id cannot be
random: span ids are derived from event ids (``handle`` from event id and service, ``publish``
from event id), and a span published from a handler names its parent without any state
shared between processes. The OTel trace id *is* the envelope's ``trace_id``, so log lines,
``tusk-events trace`` and the tracing backend use one id. The producer's context travels in
``metadata["traceparent"]`` (W3C), so consumers in other processes, or outside tusk_events,
join the trace. A flow started by host code inside one of its own spans (an HTTP request, say)
continues that span's trace.

``instrument`` wraps the instance's ``publish_event`` (the last moment an event can change
before it is stored: the ``traceparent`` goes in there) and connects signal receivers; the
runtime itself knows nothing of tracing, and ``close()`` undoes both. Sampling follows W3C: the
provider's sampler decides for a root, every later span inherits the decision its
``traceparent`` carries, and an unsampled event costs about a microsecond per service.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tusk_events.errors import ConfigError
from tusk_events.events import Event, current_event
from tusk_events.runtime import signals

if TYPE_CHECKING:

    from tusk_events.runtime.core import Runtime

# --- OpenTelemetry ---------------------------------------------------------------------------

TRACER_NAME = "tusk_events"
_fixed_trace: ContextVar[int] = ContextVar("tusk_otel_trace", default=0)
_fixed_span: ContextVar[int] = ContextVar("tusk_otel_span", default=0)


def _otel() -> Any:
    try:
        from opentelemetry import trace
    except ImportError as err:
        raise ConfigError(
            "OpenTelemetry tracing needs the opentelemetry packages: pip install 'tusk_events[otel]'"
        ) from err
    return trace


def derived_span_id(*parts: str) -> int:
    """A 64-bit span id that every process computes alike from the same parts (never 0)."""
    digest = hashlib.blake2b("/".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1


def publish_span_id(event_id: str) -> int:
    return derived_span_id("publish", event_id)


def handle_span_id(event_id: str, service: str) -> int:
    return derived_span_id("handle", event_id, service)


def otel_trace_id(event: Event) -> int:
    """The envelope's ``trace_id`` (32 hex digits) as an OTel trace id; derived when it is not one."""
    tid = event.trace_id
    if isinstance(tid, str) and len(tid) == 32:
        try:
            value = int(tid, 16)
        except ValueError:
            value = 0
        if value:
            return value
    seed = str(tid or event.correlation_id or event.id)
    return int.from_bytes(hashlib.blake2b(seed.encode(), digest_size=16).digest(), "big") or 1


_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def parse_traceparent(value: Any) -> tuple[int, int, int] | None:
    """(trace id, parent span id, flags) of a W3C ``traceparent``, or None when it is not one."""
    if value is None or value.__class__ is not str:
        return None
    m = _TRACEPARENT.fullmatch(value)
    if m is None:
        return None
    trace_id, span_id = int(m.group(1), 16), int(m.group(2), 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, int(m.group(3), 16)


def format_traceparent(trace_id: int, span_id: int, sampled: bool = True) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


class _DerivedIds:
    """An OTel IdGenerator giving the ids set in the context vars, else the wrapped generator's."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback

    def generate_span_id(self) -> int:
        return _fixed_span.get() or self.fallback.generate_span_id()

    def generate_trace_id(self) -> int:
        return _fixed_trace.get() or self.fallback.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        if _fixed_trace.get():
            return False
        check = getattr(self.fallback, "is_trace_id_random", None)
        return bool(check()) if check is not None else False


@dataclass
class _Attempts:
    started_ns: int
    failures: list[tuple[int, int, str]] = field(default_factory=list)
    """(attempt, time_ns, message) of each failed attempt."""


def _unsampled(event: Event) -> bool:
    """Whether ``event``'s traceparent says "not sampled": the per-event test, kept cheap."""
    tp = event.metadata.get("traceparent")
    return tp.__class__ is str and len(tp) == 55 and tp.endswith("-00") and tp.startswith("00-")


def _sampled(event: Event | None) -> bool | None:
    """The sampling decision ``event``'s traceparent carries (None: it carries none)."""
    if event is None:
        return None
    given = parse_traceparent(event.metadata.get("traceparent"))
    return None if given is None else bool(given[2] & 1)


class Tracing:
    """OpenTelemetry spans for one runtime; see the module docstring. ``close()`` undoes it.

    Sampling: a root (an event published outside any handler, or handled without a
    ``traceparent``) is the tracer provider's sampler's decision; every later span follows the
    decision its ``traceparent`` carries (W3C), and an unsampled one costs no span at all.
    """

    def __init__(self, runtime: Runtime, tracer_provider: Any = None) -> None:
        trace = _otel()
        from opentelemetry import context as otel_context

        from tusk_events import __version__ as version

        self._trace = trace
        self._context = otel_context
        self._producer, self._consumer = trace.SpanKind.PRODUCER, trace.SpanKind.CONSUMER
        self._sampled_flags = trace.TraceFlags(trace.TraceFlags.SAMPLED)
        self.runtime = runtime
        provider = tracer_provider or trace.get_tracer_provider()
        self.tracer = provider.get_tracer(TRACER_NAME, version)
        current = getattr(self.tracer, "id_generator", None)
        if current is not None and not isinstance(current, _DerivedIds):
            self.tracer.id_generator = _DerivedIds(current)
        self._sampler = getattr(self.tracer, "sampler", None)
        self._groups = {svc.spec.name: svc.spec.group for svc in runtime.services}
        self._open: dict[str, Any] = {}
        self._attempts: dict[tuple[str, str], _Attempts] = {}
        self._lock = threading.Lock()
        self._original_publish_event = runtime.publish_event
        self._receivers = (
            (signals.published, self._on_published),
            (signals.failed, self._on_failed),
            (signals.handled, self._on_handled),
            (signals.dead_lettered, self._on_dead_lettered),
        )

    # -- wiring --

    def start(self) -> Tracing:
        self.runtime.publish_event = self._publish_event  # type: ignore[method-assign]
        for sig, receiver in self._receivers:
            sig.connect(receiver)
        return self

    def close(self) -> None:
        for sig, receiver in self._receivers:
            sig.disconnect(receiver)
        if self.runtime.__dict__.get("publish_event") == self._publish_event:
            del self.runtime.publish_event

    # -- spans with derived ids --

    def _span(self, name: str, kind: Any, trace_id: int, span_id: int | tuple[str, ...],
              parent: int | tuple[str, ...] | None, start_ns: int, decided: bool | None) -> Any:
        """A span with the given ids (as int, or as parts of :func:`derived_span_id`: derived
        only if the span is sampled), or a non-recording one when it is not sampled.

        ``decided``: the sampling decision made upstream (a traceparent's flag); None when there
        is none, and the sampler decides as for a root, on the trace id, so that every span of
        the trace derived without a traceparent gets the same answer.
        """
        trace = self._trace
        if decided is False:
            return trace.INVALID_SPAN
        if decided is None and self._sampler is not None and not self._sampler.should_sample(
                self._context.Context(), trace_id, name, kind).decision.is_sampled():
            return trace.INVALID_SPAN  # unsampled: no span object at all
        if parent:
            pid = derived_span_id(*parent) if isinstance(parent, tuple) else parent
            ctx = trace.set_span_in_context(trace.NonRecordingSpan(trace.SpanContext(
                trace_id, pid, is_remote=True, trace_flags=self._sampled_flags)))
        else:
            ctx = self._context.Context()  # a root: not a child of whatever span is current here
        sid = derived_span_id(*span_id) if isinstance(span_id, tuple) else span_id
        t_token, s_token = _fixed_trace.set(trace_id), _fixed_span.set(sid)
        try:
            return self.tracer.start_span(name, context=ctx, kind=kind, start_time=start_ns)
        finally:
            _fixed_trace.reset(t_token)
            _fixed_span.reset(s_token)

    def _publish_parent(
        self, event: Event, publisher: str | None
    ) -> tuple[int, int | tuple[str, ...] | None, bool | None]:
        """(trace id, parent span id, upstream sampling decision) of the publish span of ``event``."""
        md = event.metadata
        given = parse_traceparent(md.get("traceparent"))
        if given is not None:  # the caller put its own context there
            if event.causation_id is None:
                md["trace_id"] = f"{given[0]:032x}"
            return given[0], given[1], bool(given[2] & 1)
        if publisher and event.causation_id:
            cause = current_event()
            decision = _sampled(cause) if cause is not None and cause.id == event.causation_id else None
            return otel_trace_id(event), ("handle", event.causation_id, publisher), decision
        current = self._trace.get_current_span().get_span_context()
        if current.is_valid:
            if event.causation_id is None:  # a new flow started inside the host's span: one trace id
                md["trace_id"] = f"{current.trace_id:032x}"
            return current.trace_id, current.span_id, current.trace_flags.sampled
        return otel_trace_id(event), None, None

    def _publish_event(self, event: Event, *, publisher: str | None = None) -> Event:
        trace_id, parent, decision = self._publish_parent(event, publisher)
        span_id = publish_span_id(event.id)
        span = self._span(f"publish {event.type}", self._producer, trace_id, span_id, parent, time.time_ns(),
                          decision)
        recording = span.is_recording()
        # the decision travels with the event: consumers of an unsampled one record nothing either
        event.metadata["traceparent"] = format_traceparent(trace_id, span_id, sampled=recording)
        if not recording:
            return self._original_publish_event(event, publisher=publisher)
        span.set_attributes({
            "messaging.system": "tusk_events",
            "messaging.operation.type": "publish",
            "messaging.destination.name": event.type,
            "messaging.message.id": event.id,
        })
        if publisher:
            span.set_attribute("tusk.service", publisher)
        self._open[event.id] = span
        try:
            return self._original_publish_event(event, publisher=publisher)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(exc)))
            raise
        finally:
            span = self._open.pop(event.id, None)
            if span is not None:
                span.end()

    def _on_published(self, runtime: Runtime, event: Event, **_: Any) -> None:
        # the event is stored and on the bus; sync handlers run next, outside the publish span
        if self._open and runtime is self.runtime:
            span = self._open.pop(event.id, None)
            if span is not None:
                span.end()

    # -- handle spans, built when the outcome is known --

    def _on_failed(self, runtime: Runtime, service: str, event: Event, error: BaseException,
                   attempt: int, seconds: float = 0.0, **_: Any) -> None:
        if runtime is not self.runtime or _unsampled(event):
            return
        now = time.time_ns()
        with self._lock:
            rec = self._attempts.setdefault((event.id, service), _Attempts(now - int(seconds * 1e9)))
            rec.failures.append((attempt, now, str(error).split("\n")[0]))

    def _on_handled(self, runtime: Runtime, service: str, event: Event, seconds: float, attempt: int = 1,
                    **_: Any) -> None:
        if runtime is self.runtime and not _unsampled(event):
            self._handle_span(service, event, time.time_ns() - int(seconds * 1e9), attempt, None)

    def _on_dead_lettered(self, runtime: Runtime, service: str, event: Event, reason: str, attempts: int,
                          **_: Any) -> None:
        if runtime is self.runtime:
            self._handle_span(service, event, None, attempts, reason)

    def _handle_span(self, service: str, event: Event, started_ns: int | None, attempts: int,
                     dead: str | None) -> None:
        now = time.time_ns()
        rec = None
        if self._attempts:
            with self._lock:
                rec = self._attempts.pop((event.id, service), None)
        given = parse_traceparent(event.metadata.get("traceparent"))
        parent: int | tuple[str, ...] | None
        decided: bool | None = None
        if given is not None:
            if not given[2] & 1:
                return  # not sampled upstream
            trace_id, parent, decided = given[0], given[1], True
        else:
            publisher = event.metadata.get("service")
            trace_id = otel_trace_id(event)
            # published by a process that did not trace: under the cause's handle span, if known
            parent = ("handle", event.causation_id, str(publisher)) if publisher and event.causation_id else None
        start = rec.started_ns if rec is not None else (started_ns or now)
        span = self._span(f"handle {event.type}", self._consumer, trace_id, ("handle", event.id, service),
                          parent, start, decided)
        if not span.is_recording():
            return
        span.set_attributes({
            "messaging.system": "tusk_events",
            "messaging.operation.type": "process",
            "messaging.destination.name": event.type,
            "messaging.message.id": event.id,
            "messaging.consumer.group.name": self._groups.get(service, service),
            "tusk.service": service,
            "tusk.attempts": attempts,
        })
        if event.causation_id:
            span.set_attribute("tusk.causation_id", event.causation_id)
        for attempt, at, message in rec.failures if rec is not None else ():
            span.add_event("attempt failed", {"tusk.attempt": attempt, "exception.message": message}, timestamp=at)
        if dead is not None:
            span.set_attribute("tusk.dead_lettered", True)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, dead))
        span.end(end_time=now)


def instrument(runtime: Runtime, tracer_provider: Any = None) -> Tracing:
    """Trace ``runtime``'s publishes and handler calls with OpenTelemetry; ``.close()`` to stop.

    ``tracer_provider``: an SDK ``TracerProvider`` (default: the global one, which must be set
    before this call for span ids to be derived as documented).
    """
    return Tracing(runtime, tracer_provider).start()


__all__ = [
    "Tracing",
    "format_traceparent",
    "handle_span_id",
    "instrument",
    "parse_traceparent",
    "publish_span_id",
]
