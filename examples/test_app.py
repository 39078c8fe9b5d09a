"""Testing a config with plain pytest: the services of configs/app.tsk, fast and deterministic.

The ``tusk_app`` fixture comes with tusk_events (a pytest plugin): each test gets the config's
services on a private bus and a temporary event store, with a virtual clock, so the retries
of the welcome email take no time. Run it with ``pytest examples/test_app.py`` (add
``--tusk-bus redis://127.0.0.1:6379/15`` to run the same tests on a real Redis), or as a
script: ``python examples/test_app.py``.
"""

from __future__ import annotations

import sys

APP = "configs/app.tsk"


def test_a_registration_gets_a_welcome_email_and_a_profile(tusk_app):
    app = tusk_app(APP).run_until_idle()  # runs the startup fujsen: four registrations

    sent = app.assert_published("welcome_email_sent", payload={"user_id": 1, "to": "ada@example.com"})
    assert sent.caused_by.type == "user_registered"
    assert sent.caused_by.payload["name"] == "Ada"
    assert [p.payload["display_name"] for p in app.published("profile_created")] == [
        "Ada", "Grace", "Mallory", "Linus"
    ]
    # every profile points back at the registration it came from
    for profile in app.published("profile_created"):
        assert profile.payload["created_from"] == profile.caused_by.id
    # the activity counters (a sync service) saw every follow-up event
    assert app.redis.hgetall("activity") == {b"welcome_email_sent": b"3", b"profile_created": b"4"}
    assert len(app.store.events()) == 11


def test_a_bad_address_is_retried_then_dead_lettered(tusk_app):
    app = tusk_app(APP).run_until_idle()

    letter = app.assert_dead_lettered("welcome_email", reason_contains="cannot send a welcome email")
    assert letter.payload["email"] == "not-an-email"
    assert letter.attempts == 3  # retries: 2
    assert letter.line == 39  # the `raise` in configs/app.tsk
    assert len(app.clock.sleeps) == 2  # two backoffs, taken on the virtual clock
    app.assert_not_published("welcome_email_sent", payload={"user_id": 3})
    app.assert_published("profile_created", payload={"user_id": 3})  # the other service is unaffected
    app.assert_no_dead_letters("user_profile")


def test_a_redelivered_registration_is_handled_once(tusk_app):
    app = tusk_app(APP, startup=False)
    registered = app.publish("user_registered", {"user_id": 7, "name": "Edsger", "email": "ed@example.com"})
    app.run_until_idle()

    app.redeliver(registered)  # the same event id again: what an at-least-once bus may do
    app.run_until_idle()

    app.assert_handled("welcome_email", count=1)
    app.assert_handled("user_profile", count=1)
    app.assert_published("welcome_email_sent", payload={"user_id": 7}, count=1)
    assert [e.type for e in app.store.events()] == ["user_registered", "welcome_email_sent", "profile_created"]


def test_the_email_service_with_a_stubbed_handler(tusk_app):
    app = tusk_app(APP, startup=False)
    outbox = []
    app.stub_fujsen("welcome_email", "handle", lambda event: outbox.append(event["payload"]["email"]))
    app.publish("user_registered", {"user_id": 8, "name": "Barbara", "email": "bl@example.com"})
    app.run_until_idle()

    assert outbox == ["bl@example.com"]
    app.assert_not_published("welcome_email_sent")  # the stub sends nothing on the bus
    app.assert_no_dead_letters()


if __name__ == "__main__":
    import pytest

    from tusk_events.testing.plugin import plugin_args

    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *plugin_args()]))
