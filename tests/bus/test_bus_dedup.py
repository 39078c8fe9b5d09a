"""Idempotent durable consumption (``dedup_ttl_s``), on every backend."""

from __future__ import annotations

from tusk_events.bus import ACK_ONLY, Bus
from tusk_events.events import new_event


def test_an_event_published_twice_reaches_the_group_once(bus: Bus) -> None:
    seen: list[str] = []
    sub = bus.subscribe(lambda e: seen.append(e.id), ["t"], group="g", dedup_ttl_s=60)
    e = new_event("t", 1)
    bus.publish_event(e)
    bus.publish_event(e)  # same id twice in one batch
    sub.run_until_idle(timeout=5)
    bus.publish_event(e)  # and again in a later batch
    sub.run_until_idle(timeout=5)
    assert seen == [e.id]
    assert sub.duplicates == 2
    assert bus.stream_info(["t"])["t"].groups["g"].pending == 0  # duplicates are acked


def test_dedup_records_are_per_group(bus: Bus) -> None:
    seen: dict[str, list[str]] = {"a": [], "b": []}
    subs = [bus.subscribe(lambda e, g=g: seen[g].append(e.id), ["t"], group=g, dedup_ttl_s=60) for g in seen]
    e = new_event("t", 1)
    bus.publish_event(e)
    bus.publish_event(e)
    for s in subs:
        s.run_until_idle(timeout=5)
    assert seen == {"a": [e.id], "b": [e.id]}


def test_a_failed_or_ack_only_event_is_not_recorded(bus: Bus) -> None:
    calls: list[str] = []
    outcomes = iter([ACK_ONLY, None])

    def handler(e):  # type: ignore[no-untyped-def]
        calls.append(e.id)
        return next(outcomes)

    sub = bus.subscribe(handler, ["t"], group="g", dedup_ttl_s=60)
    e = new_event("t", 1)
    bus.publish_event(e)
    sub.run_until_idle(timeout=5)
    bus.publish_event(e)  # acked-only the first time: handled again
    sub.run_until_idle(timeout=5)
    bus.publish_event(e)  # recorded the second time: skipped
    sub.run_until_idle(timeout=5)
    assert calls == [e.id, e.id]
    assert sub.duplicates == 1


def test_without_dedup_every_copy_is_delivered(bus: Bus) -> None:
    seen: list[str] = []
    sub = bus.subscribe(lambda e: seen.append(e.id), ["t"], group="g")
    e = new_event("t", 1)
    bus.publish_event(e)
    bus.publish_event(e)
    sub.run_until_idle(timeout=5)
    assert seen == [e.id, e.id]
