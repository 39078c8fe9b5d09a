"""The virtual clock: retry backoffs, time in fujsen and visibility timeouts take no real time.

Every test here would run for minutes on the real clock; the timeout marks are the proof
that they did not (a test that slept for real fails on its timeout, it does not pass slowly).
"""

from __future__ import annotations

import pytest

from tusk_events.testing import VirtualClock

HEADER = """
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///unused.db")
"""

SLOW_RETRIES = HEADER + """
[mailer]
subscribe: "signed_up"
retries: 5
backoff: 30
backoff_max: 600
handle_fujsen = '''
def handle(event):
    raise RuntimeError("the mail server is down")
'''
"""


def write(tmp_path, text, name="app.tsk"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.timeout(20)
def test_retries_with_a_30_second_backoff_take_virtual_time_only(tusk_app, tmp_path):
    app = tusk_app(write(tmp_path, SLOW_RETRIES), startup=False)
    app.publish("signed_up", {"user_id": 1})
    app.run_until_idle()

    letter = app.assert_dead_lettered("mailer", reason_contains="the mail server is down")
    assert letter.attempts == 6
    # five backoffs, each within its full-jitter ceiling 30 * 2**n (capped at 600)
    assert len(app.clock.sleeps) == 5
    for n, slept in enumerate(app.clock.sleeps):
        assert 0 <= slept <= min(600, 30 * 2**n)
    assert app.clock.elapsed == pytest.approx(sum(app.clock.sleeps))


SLEEPER = HEADER + """
[sleeper]
subscribe: "nap"
delivery: "sync"
timeout: 2
handle_fujsen = '''
def handle(event):
    t0 = time.time()
    m0 = time.monotonic()
    time.sleep(event["payload"]["seconds"])
    publish("woke", {"slept": time.time() - t0, "mono": time.monotonic() - m0,
                     "day": time.strftime("%Y", time.gmtime(t0))})
'''
"""


@pytest.mark.timeout(20)
def test_time_sleep_and_time_time_in_a_fujsen_follow_the_virtual_clock(tusk_app, tmp_path):
    app = tusk_app(write(tmp_path, SLEEPER), startup=False, clock=VirtualClock(start=1_700_000_000.0))
    app.publish("nap", {"seconds": 1.5})
    woke = app.assert_published("woke")
    assert woke.payload["slept"] == pytest.approx(1.5)
    assert woke.payload["mono"] == pytest.approx(1.5)
    assert woke.payload["day"] == "2023"
    assert app.clock.time() == pytest.approx(1_700_000_001.5)


@pytest.mark.timeout(20)
def test_a_virtual_sleep_past_the_budget_still_times_the_handler_out(tusk_app, tmp_path):
    app = tusk_app(write(tmp_path, SLEEPER.replace("delivery: \"sync\"", "delivery: \"sync\"\nretries: 0")),
                   startup=False)
    app.publish("nap", {"seconds": 3600})
    letter = app.assert_dead_lettered("sleeper", reason_contains="budget")
    assert letter.attempts == 1
    app.assert_not_published("woke")


DURABLE = HEADER + """
[worker]
subscribe: "job"
visibility_timeout: 120
handle_fujsen = '''
def handle(event):
    publish("job_done", {"job": event["payload"]["job"]})
'''
"""


def crash_a_consumer(app, type):
    """Read the newest entries of ``type`` as a consumer that dies without acknowledging them."""
    key = app.runtime.bus.key(type)
    return app.redis.xreadgroup("worker", "crashed-consumer", {key: ">"})


@pytest.mark.timeout(20)
def test_an_entry_left_by_a_dead_consumer_is_claimed_after_a_virtual_visibility_timeout(tusk_app, tmp_path):
    app = tusk_app(write(tmp_path, DURABLE), startup=False)
    app.run_until_idle()  # the worker's consumer group exists from here on
    app.publish("job", {"job": 1})
    assert crash_a_consumer(app, "job")  # delivered, never acknowledged

    app.run_until_idle()  # waits out the 120 s visibility timeout on the virtual clock

    app.assert_published("job_done", payload={"job": 1}, count=1)
    assert app.clock.elapsed >= 120
    assert app.redis.xpending(app.runtime.bus.key("job"), "worker")["pending"] == 0


@pytest.mark.timeout(20)
def test_clock_advance_ages_unacknowledged_entries(tusk_app, tmp_path):
    app = tusk_app(write(tmp_path, DURABLE), startup=False)
    app.run_until_idle()
    app.publish("job", {"job": 2})
    crash_a_consumer(app, "job")
    key = app.runtime.bus.key("job")

    app.clock.advance(90)
    (row,) = app.redis.xpending_range(key, "worker", "-", "+", 10)
    assert row["time_since_delivered"] >= 90_000
    assert row["times_delivered"] == 1  # aged, not redelivered
    assert row["consumer"] == b"crashed-consumer"


def test_the_clock_cannot_go_back():
    clock = VirtualClock(start=10.0)
    clock.sleep(-5)  # like time.sleep(0)
    assert clock.time() == 10.0
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-1)
