"""Following one flow: its causation tree from the event store, and OpenTelemetry spans.

**The tree** (``tusk-events trace FILE TRACE_ID [--format text|mermaid|json]``). Every event
published while another is handled carries the same ``trace_id``, the cause's id as
``causation_id`` and the handling service as ``service`` (see :mod:`tusk_events.events` and
:meth:`Runtime.publish`), so the store alone rebuilds which event caused which, in which
service, and when (event timestamps). The bus, when reachable, adds what the store cannot
know: which subscribed services handled an event (their idempotency records) and where it
failed (the dead-letter queues: reason and attempts).

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
import json
import re
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tusk_events.defaults import DEDUP_PREFIX
from tusk_events.errors import ConfigError
from tusk_events.events import Event, current_event
from tusk_events.runtime import signals

if TYPE_CHECKING:
    import argparse

    from tusk_events.config import TSK
    from tusk_events.runtime.core import Runtime
    from tusk_events.runtime.dlq import DeadLetter, DeadLetterQueue
    from tusk_events.store import EventStore

# --- the causation tree ----------------------------------------------------------------------

HANDLED = "handled"
DEAD_LETTERED = "dead-lettered"
NO_RECORD = "no record"
"""The bus holds neither a handled record nor a dead letter: still pending, or older than the
idempotency window."""
UNKNOWN = "unknown"
"""The bus was not consulted (unreachable, or a memory:// bus of another process)."""


@dataclass
class Step:
    """One service's part in the flow: how it handled one event, and what it published."""

    service: str
    status: str
    children: list[Node] = field(default_factory=list)
    reason: str | None = None
    attempts: int | None = None
    failed_at: float | None = None


@dataclass
class Node:
    """One event of the flow and the services that took it from there."""

    event: Event
    publisher: str | None
    steps: list[Step] = field(default_factory=list)


@dataclass
class Trace:
    """One flow: its root events (usually one), in time order."""

    trace_id: str
    roots: list[Node]
    events: int
    bus_consulted: bool

    @property
    def start(self) -> float:
        return min(n.event.timestamp for n in self.roots)

    def nodes(self) -> Iterable[Node]:
        todo = list(self.roots)
        while todo:
            node = todo.pop(0)
            yield node
            for step in node.steps:
                todo.extend(step.children)

    @property
    def end(self) -> float:
        ends = []
        for n in self.nodes():
            ends.append(n.event.timestamp)
            ends.extend(s.failed_at for s in n.steps if s.failed_at)
        return max(ends)

    def dead_letters(self) -> list[tuple[Node, Step]]:
        return [(n, s) for n in self.nodes() for s in n.steps if s.status == DEAD_LETTERED]


def find_events(store: EventStore, trace_id: str, *, since: Any = None) -> list[Event]:
    """Every stored event of ``trace_id``, in store order (a scan: the store has no trace index)."""
    out = []
    for stored in store.replay(since=since):
        raw = stored.metadata_json
        if raw and trace_id in raw and stored.metadata.get("trace_id") == trace_id:
            out.append(stored.to_event())
    return out


def resolve_trace_id(store: EventStore, ident: str) -> str:
    """``ident`` itself, or the trace id of the event whose id it is (so a DLQ entry's event id works)."""
    if re.fullmatch(r"[0-9a-f]{32}", ident):
        return ident
    stored = store.get(ident)
    if stored is not None and isinstance(stored.metadata.get("trace_id"), str):
        return str(stored.metadata["trace_id"])
    return ident


def build_trace(
    events: Sequence[Event],
    trace_id: str,
    *,
    subscribers: dict[str, list[tuple[str, str]]] | None = None,
    handled: Callable[[str, str], bool] | None = None,
    dead_letters: dict[tuple[str, str], DeadLetter] | None = None,
) -> Trace:
    """The causation tree of ``events``.

    ``subscribers``: per event type, the (service, group) pairs the configs subscribe to it.
    ``handled(group, event_id)``: whether the bus has the group's handled record (None: not
    consulted). ``dead_letters``: by (service, event id).
    """
    subscribers = subscribers or {}
    dead_letters = dead_letters or {}
    by_id = {e.id: Node(e, e.metadata.get("service")) for e in events}
    children: dict[tuple[str, str], list[Node]] = {}
    roots: list[Node] = []
    for node in by_id.values():
        cause = node.event.causation_id
        if cause in by_id:
            children.setdefault((cause, node.publisher or "?"), []).append(node)
        else:
            roots.append(node)
    for node in by_id.values():
        services = [s for s, _ in subscribers.get(node.event.type, [])]
        groups = dict(subscribers.get(node.event.type, []))
        services += [svc for (cause, svc) in children if cause == node.event.id and svc not in services]
        for svc in services:
            letter = dead_letters.get((svc, node.event.id))
            kids = sorted(children.get((node.event.id, svc), []), key=lambda n: n.event.timestamp)
            if letter is not None:
                step = Step(svc, DEAD_LETTERED, kids, letter.reason, letter.attempts, letter.last_failed_at)
            elif handled is None:
                step = Step(svc, HANDLED if kids else UNKNOWN, kids)
            elif handled(groups.get(svc, svc), node.event.id) or kids:
                step = Step(svc, HANDLED, kids)
            else:
                step = Step(svc, NO_RECORD, kids)
            node.steps.append(step)
    roots.sort(key=lambda n: n.event.timestamp)
    return Trace(trace_id, roots, len(by_id), handled is not None)


def _ms(seconds: float) -> str:
    return f"+{seconds * 1000:.1f} ms"


def render_text(trace: Trace) -> str:
    """An indented tree: event, then each service's status and what it published."""
    t0 = trace.start
    lines = [
        (f"trace {trace.trace_id}: {trace.events} event{'s' * (trace.events != 1)}, "
         f"{len(trace.dead_letters())} dead-lettered, {(trace.end - t0) * 1000:.1f} ms")
    ]

    def event_line(node: Node) -> str:
        who = f"by {node.publisher}" if node.publisher else "by host code"
        return f"{node.event.type}  {node.event.id}  {_ms(node.event.timestamp - t0)}  ({who})"

    def walk(node: Node, prefix: str) -> None:
        for i, step in enumerate(node.steps):
            last = i == len(node.steps) - 1
            status = step.status
            if step.status == DEAD_LETTERED:
                status += f" after {step.attempts} attempts"
                if step.failed_at:
                    status += f" ({_ms(step.failed_at - t0)})"
                status += f": {step.reason}"
            lines.append(f"{prefix}{'└─' if last else '├─'} {step.service}: {status}")
            inner = prefix + ("   " if last else "│  ")
            for j, child in enumerate(step.children):
                clast = j == len(step.children) - 1
                lines.append(f"{inner}{'└─' if clast else '├─'} {event_line(child)}")
                walk(child, inner + ("   " if clast else "│  "))

    for root in trace.roots:
        lines.append(event_line(root))
        walk(root, "")
    if not trace.bus_consulted:
        lines.append("(the bus was not consulted: handled records and dead letters are not shown)")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str, limit: int = 80) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def render_mermaid(trace: Trace) -> str:
    """A mermaid flowchart of the flow: events, the services between them, where it ended."""
    t0 = trace.start
    ids: dict[str, str] = {}
    lines = ["flowchart TD"]
    ends = 0
    edges: list[str] = []
    for node in trace.nodes():
        ids[node.event.id] = nid = f"e{len(ids)}"
        lines.append(f'    {nid}["{_mermaid_text(node.event.type)}<br/>{_ms(node.event.timestamp - t0)}"]:::event')
    for node in trace.nodes():
        src = ids[node.event.id]
        for step in node.steps:
            svc = _mermaid_text(step.service)
            for child in step.children:
                edges.append(f"    {src} -->|{svc}| {ids[child.event.id]}")
            if step.status == DEAD_LETTERED:
                ends += 1
                parts = [f"DLQ {step.service}", f"{step.attempts} attempts",
                         *textwrap.wrap(step.reason or "", 44, max_lines=4, placeholder=" …",
                                       break_on_hyphens=False)]
                label = "<br/>".join(_mermaid_text(p) for p in parts)
                lines.append(f'    x{ends}[("{label}")]:::dead')
                edges.append(f"    {src} -.->|{svc}| x{ends}")
            elif not step.children:
                ends += 1
                css = "done" if step.status == HANDLED else "open"
                lines.append(f'    x{ends}(["{_mermaid_text(step.status)}"]):::{css}')
                edges.append(f"    {src} -->|{svc}| x{ends}")
    lines += edges
    lines += [
        "    classDef event fill:#fef9c3,stroke:#a16207",
        "    classDef done fill:#dcfce7,stroke:#15803d",
        "    classDef open fill:#f3f4f6,stroke:#6b7280",
        "    classDef dead fill:#fee2e2,stroke:#b91c1c",
    ]
    return "\n".join(lines) + "\n"


def trace_to_dict(trace: Trace) -> dict[str, Any]:
    t0 = trace.start

    def node(n: Node) -> dict[str, Any]:
        return {
            "id": n.event.id,
            "type": n.event.type,
            "timestamp": n.event.timestamp,
            "offset_ms": round((n.event.timestamp - t0) * 1000, 3),
            "publisher": n.publisher,
            "payload": n.event.payload,
            "steps": [
                {
                    "service": s.service,
                    "status": s.status,
                    **({"reason": s.reason, "attempts": s.attempts, "failed_at": s.failed_at}
                       if s.status == DEAD_LETTERED else {}),
                    "published": [node(c) for c in s.children],
                }
                for s in n.steps
            ],
        }

    return {
        "trace_id": trace.trace_id,
        "events": trace.events,
        "duration_ms": round((trace.end - t0) * 1000, 3),
        "bus_consulted": trace.bus_consulted,
        "roots": [node(r) for r in trace.roots],
    }


def render_json(trace: Trace) -> str:
    return json.dumps(trace_to_dict(trace), ensure_ascii=False, default=str) + "\n"


TRACE_RENDERERS = {"text": render_text, "mermaid": render_mermaid, "json": render_json}


def subscribers_of(configs: Iterable[TSK]) -> dict[str, list[tuple[str, str]]]:
    """Per event type, the (service, consumer group) pairs subscribed to it, in config order."""
    from tusk_events.runtime.services import services

    out: dict[str, list[tuple[str, str]]] = {}
    for cfg in configs:
        for spec in services(cfg):
            for t in spec.types:
                out.setdefault(t, []).append((spec.name, spec.group))
    return out


def bus_lookups(
    client: Any, dlq: DeadLetterQueue, services: Iterable[str]
) -> tuple[Callable[[str, str], bool], dict[tuple[str, str], DeadLetter]]:
    """The bus's view: handled records (``tusk:dedup:<group>:<id>``) and dead letters by (service, id)."""
    letters = {}
    for service in services:
        for letter in dlq.list(service):
            letters[(service, letter.event.id)] = letter

    def handled(group: str, event_id: str) -> bool:
        return bool(client.exists(f"{DEDUP_PREFIX}{group}:{event_id}"))

    return handled, letters


def load_trace(
    configs: Sequence[TSK], trace_id: str, *, store: EventStore | None = None, client: Any = None,
    dlq: DeadLetterQueue | None = None, since: Any = None,
) -> Trace:
    """The trace ``trace_id`` (or of the event with that id) from the first config's store and bus.

    ``client``/``dlq`` default to the config's bus; pass ``client=False`` to leave the bus out.
    """
    from tusk_events.fujsen.helpers import shared_store

    cfg = configs[0]
    store = store or shared_store(cfg.store_url)
    trace_id = resolve_trace_id(store, trace_id)
    events = find_events(store, trace_id, since=since)
    if not events:
        raise ConfigError(f"no stored event has trace id {trace_id} (store {cfg.store_url})")
    subs = subscribers_of(configs)
    handled = None
    letters: dict[tuple[str, str], DeadLetter] = {}
    if client is not False:
        handled, letters = _consult_bus(cfg, subs, events, client, dlq)
    return build_trace(events, trace_id, subscribers=subs, handled=handled, dead_letters=letters)


def _consult_bus(
    cfg: TSK, subs: dict[str, list[tuple[str, str]]], events: Sequence[Event], client: Any,
    dlq: DeadLetterQueue | None,
) -> tuple[Callable[[str, str], bool] | None, dict[tuple[str, str], DeadLetter]]:
    from redis.exceptions import RedisError

    from tusk_events.bus import redis_client
    from tusk_events.errors import BusError
    from tusk_events.runtime.dlq import DeadLetterQueue

    try:
        client = client if client is not None else redis_client(cfg.bus_url)
        client.ping()
        if cfg.bus_url.startswith("memory://") and not client.dbsize():
            return None, {}  # another process's embedded bus: nothing to learn here
        dlq = dlq or DeadLetterQueue(client)
        services = {s for e in events for s, _ in subs.get(e.type, [])}
        services |= {str(e.metadata["service"]) for e in events if e.metadata.get("service")}
        return bus_lookups(client, dlq, sorted(services))
    except (BusError, RedisError, OSError):
        return None, {}


def cmd_trace(args: argparse.Namespace) -> int:
    """``tusk-events trace FILE TRACE_ID [--format text|mermaid|json]``."""
    from tusk_events.config import TSK

    cfg = TSK.from_file(args.file)
    trace = load_trace([cfg], args.trace_id, since=args.since)
    if not trace.bus_consulted:
        print(f"note: the bus {cfg.bus_url} was not consulted (unreachable, or memory:// of another "
              "process): handled records and dead letters are not shown", file=sys.stderr)
    sys.stdout.write(TRACE_RENDERERS[args.format](trace))
    return 0


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
    "DEAD_LETTERED",
    "HANDLED",
    "NO_RECORD",
    "UNKNOWN",
    "Node",
    "Step",
    "Trace",
    "Tracing",
    "build_trace",
    "cmd_trace",
    "find_events",
    "format_traceparent",
    "handle_span_id",
    "instrument",
    "load_trace",
    "parse_traceparent",
    "publish_span_id",
    "render_json",
    "render_mermaid",
    "render_text",
    "trace_to_dict",
]
