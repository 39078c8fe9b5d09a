"""OpenTelemetry spans for publish and handle, checked with the SDK's in-memory exporter."""

from __future__ import annotations

import pytest
from obs_support import APP, require

require("opentelemetry.sdk", "otel")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tusk_events import TSK
from tusk_events.observe.otel import (
    handle_span_id,
    instrument,
    parse_traceparent,
    publish_span_id,
)
from tusk_events.runtime.core import Runtime

PUBLISHER = """
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///unused.db")
"""

CONSUMER = PUBLISHER + """
[shipper]
subscribe: "order_placed"
retries: {retries}
backoff: 0.001
handle_fujsen = '''
def handle(event):
    r = redis.from_url(event_bus)
    if r.incr("calls:" + event["id"]) == 1 and event["payload"].get("flaky"):
        raise ValueError("first try fails")
    publish("order_shipped", {{"order": event["payload"]["order"]}})
'''
"""


def provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp, exporter


@pytest.fixture
def traced_app(env):
    tp, exporter = provider()
    rt = Runtime([TSK.from_file(APP, env=env)])
    tracing = instrument(rt, tp)
    rt.run_until_idle()
    yield rt, exporter.get_finished_spans()
    tracing.close()
    rt.close()


def test_one_span_per_publish_and_per_handled_event(traced_app):
    _, spans = traced_app
    names = sorted(s.name for s in spans)
    assert names.count("publish user_registered") == 4
    assert names.count("publish welcome_email_sent") == 3
    assert names.count("publish profile_created") == 4
    handles = [s for s in spans if s.kind is SpanKind.CONSUMER]
    # 14 handled + 1 dead-lettered, attempts folded into one span each
    assert len(handles) == 15
    assert all(s.kind is SpanKind.PRODUCER for s in spans if s.name.startswith("publish "))


def test_spans_form_the_causation_tree_under_the_envelope_trace_id(traced_app):
    rt, spans = traced_app
    by_id = {s.context.span_id: s for s in spans}
    stored = {e.id: e.to_event() for e in rt.store.replay()}
    for event in stored.values():
        publish = by_id[publish_span_id(event.id)]
        assert f"{publish.context.trace_id:032x}" == event.trace_id
        assert event.metadata["traceparent"] == f"00-{event.trace_id}-{publish_span_id(event.id):016x}-01"
        assert publish.attributes["messaging.message.id"] == event.id
        if event.causation_id is None:
            assert publish.parent is None
        else:
            parent = by_id[publish.parent.span_id]
            assert parent.context.span_id == handle_span_id(event.causation_id, event.metadata["service"])
            assert parent.name == f"handle {stored[event.causation_id].type}"
            assert parent.attributes["tusk.service"] == event.metadata["service"]
    for handle in (s for s in spans if s.kind is SpanKind.CONSUMER):
        event_id = handle.attributes["messaging.message.id"]
        assert handle.parent.span_id == publish_span_id(event_id)
        assert handle.context.span_id == handle_span_id(event_id, handle.attributes["tusk.service"])
        assert handle.start_time <= handle.end_time


def test_the_dead_lettered_event_is_an_error_span_with_its_attempts(traced_app):
    _, spans = traced_app
    (dead,) = [s for s in spans if s.status.status_code is StatusCode.ERROR]
    assert dead.name == "handle user_registered"
    assert dead.attributes["tusk.service"] == "welcome_email"
    assert dead.attributes["tusk.dead_lettered"] is True
    assert dead.attributes["tusk.attempts"] == 3
    assert [e.name for e in dead.events] == ["attempt failed"] * 3
    assert [e.attributes["tusk.attempt"] for e in dead.events] == [1, 2, 3]
    assert "cannot send a welcome email" in dead.status.description
    assert dead.start_time <= dead.events[0].timestamp <= dead.end_time


def test_a_retried_success_keeps_its_failed_attempt_as_an_event(env):
    tp, exporter = provider()
    with Runtime([TSK.from_string(CONSUMER.format(retries=2), env=env)]) as rt:
        tracing = instrument(rt, tp)
        rt.publish("order_placed", {"order": 1, "flaky": True})
        rt.run_until_idle()
        tracing.close()
    (handle,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert handle.status.status_code is StatusCode.UNSET
    assert handle.attributes["tusk.attempts"] == 2
    assert [e.attributes["tusk.attempt"] for e in handle.events] == [1]


@pytest.mark.parametrize("bus", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_spans_join_across_processes_through_the_envelope(env, bus, request):
    """Publisher and consumer with separate tracer providers (as in two processes) build one trace."""
    if bus == "redis":
        env = dict(env, EVENT_BUS=request.getfixturevalue("redis_url"))
    tp_a, spans_a = provider()
    tp_b, spans_b = provider()
    with Runtime([TSK.from_string(PUBLISHER, env=env)]) as a, \
            Runtime([TSK.from_string(CONSUMER.format(retries=0), env=env)]) as b:
        ta, tb = instrument(a, tp_a), instrument(b, tp_b)
        sent = a.publish("order_placed", {"order": 7})
        b.run_until_idle()
        ta.close()
        tb.close()
    (publish,) = spans_a.get_finished_spans()
    handle, shipped = sorted(spans_b.get_finished_spans(), key=lambda s: s.kind is SpanKind.PRODUCER)
    assert handle.name == "handle order_placed" and shipped.name == "publish order_shipped"
    assert handle.parent.span_id == publish.context.span_id
    assert handle.parent.is_remote
    assert shipped.parent.span_id == handle.context.span_id
    assert {publish.context.trace_id, handle.context.trace_id, shipped.context.trace_id} == {int(sent.trace_id, 16)}


def test_a_consumer_tracing_alone_still_nests_under_the_cause(env):
    """Events from an untraced publisher carry no traceparent: the parent is derived from the envelope."""
    tp, exporter = provider()
    with Runtime([TSK.from_string(PUBLISHER, env=env)]) as a, \
            Runtime([TSK.from_string(CONSUMER.format(retries=0), env=env)]) as b:
        sent = a.publish("order_placed", {"order": 7})
        assert "traceparent" not in sent.metadata
        tracing = instrument(b, tp)
        b.run_until_idle()
        tracing.close()
    handle, shipped = sorted(exporter.get_finished_spans(), key=lambda s: s.kind is SpanKind.PRODUCER)
    assert handle.parent is None  # a root: nobody traced the publish
    assert handle.context.trace_id == int(sent.trace_id, 16)
    assert shipped.parent.span_id == handle.context.span_id


def test_a_flow_started_inside_a_host_span_continues_its_trace(env):
    tp, exporter = provider()
    host = tp.get_tracer("host-app")
    with Runtime([TSK.from_string(CONSUMER.format(retries=0), env=env)]) as rt:
        tracing = instrument(rt, tp)
        with host.start_as_current_span("POST /orders") as request_span:
            sent = rt.publish("order_placed", {"order": 9})
        rt.run_until_idle()
        tracing.close()
    ctx = request_span.get_span_context()
    assert sent.trace_id == f"{ctx.trace_id:032x}"
    assert parse_traceparent(sent.metadata["traceparent"])[0] == ctx.trace_id
    publish = next(s for s in exporter.get_finished_spans() if s.name == "publish order_placed")
    assert publish.parent.span_id == ctx.span_id
    stored = rt.store.get(sent.id)
    assert stored is not None and stored.metadata["trace_id"] == sent.trace_id


def test_close_restores_the_runtime(env):
    tp, exporter = provider()
    with Runtime([TSK.from_string(CONSUMER.format(retries=0), env=env)]) as rt:
        tracing = instrument(rt, tp)
        tracing.close()
        assert "publish_event" not in vars(rt)
        sent = rt.publish("order_placed", {"order": 1})
        rt.run_until_idle()
    assert "traceparent" not in sent.metadata
    assert exporter.get_finished_spans() == ()


def test_traceparent_parsing():
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert parse_traceparent(good) == (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 1)
    for bad in (None, 5, "", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", good.upper(), good + "-x"):
        assert parse_traceparent(bad) is None


def test_without_an_sdk_provider_spans_are_no_ops(env):
    with Runtime([TSK.from_string(CONSUMER.format(retries=0), env=env)]) as rt:
        tracing = instrument(rt, trace.NoOpTracerProvider())
        sent = rt.publish("order_placed", {"order": 1})
        rt.run_until_idle()
        tracing.close()
    assert parse_traceparent(sent.metadata["traceparent"]) is not None


def test_sampling_keeps_or_drops_whole_traces(env):
    """A trace's decision is made once (at its root) and travels in the traceparent flags."""
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    exporter = InMemorySpanExporter()
    tp = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.5)))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    with Runtime([TSK.from_file(APP, env=env)]) as rt:
        tracing = instrument(rt, tp)
        for i in range(12):  # more flows, so that both decisions occur
            rt.publish("user_registered", {"user_id": 10 + i, "name": f"U{i}", "email": f"u{i}@example.com"})
        rt.run_until_idle()
        tracing.close()
        events = [e.to_event() for e in rt.store.replay()]
    spans_per_trace: dict[int, int] = {}
    for s in exporter.get_finished_spans():
        spans_per_trace[s.context.trace_id] = spans_per_trace.get(s.context.trace_id, 0) + 1
    flags: dict[str, set[int]] = {}
    for e in events:
        flags.setdefault(e.trace_id, set()).add(parse_traceparent(e.metadata["traceparent"])[2])
    assert all(len(f) == 1 for f in flags.values())  # one decision per trace
    sampled = {t for t, f in flags.items() if f == {1}}
    assert 0 < len(sampled) < len(flags)
    assert {f"{t:032x}" for t in spans_per_trace} == sampled
    # whole flows: 3 publishes and 4 handles, or 2 and 3 for the one that dead-letters
    assert all(n in (7, 5) for n in spans_per_trace.values()), spans_per_trace


def test_an_always_off_sampler_records_nothing_and_says_so_downstream(env):
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    exporter = InMemorySpanExporter()
    tp = TracerProvider(sampler=ALWAYS_OFF)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    with Runtime([TSK.from_file(APP, env=env)]) as rt:
        tracing = instrument(rt, tp)
        rt.run_until_idle()
        tracing.close()
        flags = {parse_traceparent(e.metadata["traceparent"])[2] for e in rt.store.replay()}
    assert exporter.get_finished_spans() == ()
    assert flags == {0}
