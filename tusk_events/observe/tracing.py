"""Following one flow: its causation tree from the event store (spans: :mod:`tusk_events.observe.otel`).

**The tree** (``tusk-events trace FILE TRACE_ID [--format text|mermaid|json]``). Every event
published while another is handled carries the same ``trace_id``, the cause's id as
``causation_id`` and the handling service as ``service`` (see :mod:`tusk_events.events` and
:meth:`Runtime.publish`), so the store alone rebuilds which event caused which, in which
service, and when (event timestamps). The bus, when reachable, adds what the store cannot
know: which subscribed services handled an event (their idempotency records) and where it
failed (the dead-letter queues: reason and attempts).
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tusk_events.defaults import DEDUP_PREFIX
from tusk_events.errors import ConfigError
from tusk_events.events import Event

if TYPE_CHECKING:
    import argparse

    from tusk_events.config import TSK
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
    """Every stored event of ``trace_id``, in store order (through the store's trace index)."""
    events = [stored.to_event() for stored in store.by_trace(trace_id)]
    if since is not None:
        from tusk_events.store.timestamps import canonical, to_epoch

        start = to_epoch(canonical(since))
        events = [e for e in events if e.timestamp >= start]
    return events


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
    """The bus's view: handled records (``tusk:dedup:<group>:<id>``, on a Redis Cluster behind the
    bus's hash tag) and dead letters by (service, id)."""
    from tusk_events.bus.redis_cluster import key_tag

    letters = {}
    for service in services:
        for letter in dlq.list(service):
            letters[(service, letter.event.id)] = letter

    prefix = key_tag(client) + DEDUP_PREFIX

    def handled(group: str, event_id: str) -> bool:
        return bool(client.exists(f"{prefix}{group}:{event_id}"))

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


__all__ = [
    "DEAD_LETTERED",
    "HANDLED",
    "NO_RECORD",
    "UNKNOWN",
    "Node",
    "Step",
    "Trace",
    "build_trace",
    "cmd_trace",
    "find_events",
    "load_trace",
    "render_json",
    "render_mermaid",
    "render_text",
    "trace_to_dict",
]
