"""Runtime behaviour written with the testing kit (tusk_events.testing), as users write theirs.

Retries with their backoffs (on the kit's virtual clock, so a 10 s backoff costs nothing),
dead letters and redrive, idempotency: the same behaviour tests/runtime/test_runtime.py
checks through the Runtime directly.
"""

from __future__ import annotations

import pytest

SERVICE = """
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///unused.db")

[counter]
subscribe: ["thing_happened"]
delivery: "{delivery}"
retries: 2
backoff: 10
handle_fujsen = '''
def handle(event):
    r = redis.from_url(event_bus)
    n = r.incr("calls:" + event["id"])
    if event["payload"].get("fail_times", 0) >= n:
        raise RuntimeError("attempt " + str(n) + " fails")
    publish("thing_counted", {{"of": event["id"]}})
'''
"""


@pytest.fixture
def counter(tusk_app, tmp_path):
    def make(delivery):
        path = tmp_path / f"counter-{delivery}.tsk"
        path.write_text(SERVICE.format(delivery=delivery))
        return tusk_app(path, startup=False)

    return make


@pytest.mark.timeout(30)
@pytest.mark.parametrize("delivery", ["durable", "sync"])
def test_a_handler_that_fails_twice_succeeds_on_its_third_attempt(counter, delivery):
    app = counter(delivery)
    thing = app.publish("thing_happened", {"fail_times": 2})
    app.run_until_idle()
    counted = app.assert_published("thing_counted", payload={"of": thing.id}, count=1)
    assert counted.caused_by is thing and counted.service == "counter"
    assert app.summary.retried == 2 and app.summary.failed == 2
    assert len(app.clock.sleeps) == 2 and all(0 <= s <= 20 for s in app.clock.sleeps)
    app.assert_no_dead_letters()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("delivery", ["durable", "sync"])
def test_exhausted_retries_dead_letter_and_a_redrive_handles_again(counter, delivery):
    app = counter(delivery)
    thing = app.publish("thing_happened", {"fail_times": 3})
    app.run_until_idle()
    letter = app.assert_dead_lettered("counter", reason_contains="RuntimeError: attempt 3 fails")
    assert letter.event.id == thing.id and letter.attempts == 3
    app.assert_not_published("thing_counted")

    assert app.runtime.redrive("counter") == 1  # the 4th call succeeds
    app.run_until_idle()
    app.assert_published("thing_counted", payload={"of": thing.id}, count=1)
    app.assert_no_dead_letters()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("delivery", ["durable", "sync"])
def test_a_redelivered_event_is_handled_once(counter, delivery):
    app = counter(delivery)
    thing = app.publish("thing_happened", {})
    app.run_until_idle()
    app.redeliver(thing)
    app.redeliver(thing)
    app.run_until_idle()
    app.assert_handled("counter", count=1)
    app.assert_published("thing_counted", count=1)
    assert app.store.count(type="thing_happened") == 1
