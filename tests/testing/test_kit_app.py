"""The test app: what it records, its assertions and their messages, stubs, isolation."""

from __future__ import annotations

import pytest

from tusk_events import ConfigError
from tusk_events.testing import TuskApp
from tusk_events.testing.records import matches

APP = "configs/app.tsk"


def test_published_is_every_event_in_causal_order_with_its_cause(tusk_app):
    app = tusk_app(APP).run_until_idle()
    published = app.published()
    assert len(published) == 11
    seen: set[str] = set()
    for p in published:
        if p.caused_by is not None:
            assert p.caused_by.id in seen  # a cause comes before its effects
            assert p.metadata["causation_id"] == p.caused_by.id
            assert p.metadata["trace_id"] == p.caused_by.metadata["trace_id"]
        seen.add(p.id)
    roots = [p for p in published if p.caused_by is None]
    assert [p.type for p in roots] == ["user_registered"] * 4
    assert {p.service for p in roots} == {None}
    ada = roots[0]
    assert sorted(e.type for e in ada.effects) == ["profile_created", "welcome_email_sent"]
    assert {e.service for e in ada.effects} == {"welcome_email", "user_profile"}
    assert [p.type for p in app.published("welcome_email_sent")] == ["welcome_email_sent"] * 3


def test_handled_and_the_store(tusk_app):
    app = tusk_app(APP).run_until_idle()
    assert [p.payload["user_id"] for p in app.handled("user_profile")] == [1, 2, 3, 4]
    assert [p.payload["user_id"] for p in app.handled("welcome_email")] == [1, 2, 4]
    assert [p.type for p in app.handled("activity")].count("profile_created") == 4
    stored = app.store.events("profile_created")
    assert [e.payload["user_id"] for e in stored] == [1, 2, 3, 4]
    assert app.store.count() == 11  # the store's own API is there too
    with pytest.raises(ConfigError, match=r"no service \[nope\].*welcome_email, user_profile, activity"):
        app.handled("nope")


def test_dead_letters_carry_the_reason_and_the_tsk_line(tusk_app):
    app = tusk_app(APP).run_until_idle()
    (letter,) = app.dead_letters("welcome_email")
    assert letter.service == "welcome_email" and letter.type == "user_registered"
    assert letter.location is not None and letter.location.endswith("configs/app.tsk:39")
    assert letter.line == 39
    assert 'line 39, in handle' in letter.traceback
    assert app.dead_letters() == [letter]
    assert app.dead_letters("user_profile") == []


def test_a_failing_assertion_shows_what_was_published(tusk_app):
    app = tusk_app(APP).run_until_idle()
    with pytest.raises(AssertionError) as failed:
        app.assert_published("welcome_email_sent", payload={"user_id": 3})
    text = str(failed.value)
    assert text.startswith("expected at least one 'welcome_email_sent' event with a payload matching")
    assert "found 0" in text
    # the causal tree: each registration with its effects indented below it, with payloads
    assert '  user_registered {"email": "ada@example.com", "name": "Ada", "user_id": 1}' in text
    assert '    welcome_email_sent {"to": "ada@example.com", "user_id": 1}  <- welcome_email' in text
    assert text.count("profile_created") == 4
    # and the dead letter that explains it
    assert "welcome_email: user_registered" in text and "app.tsk:39 in handle: ValueError" in text


@pytest.mark.parametrize(
    "check,message",
    [
        (lambda a: a.assert_published("profile_created", count=3), "expected exactly 3 'profile_created' event, found 4"),
        (lambda a: a.assert_not_published("profile_created", payload={"user_id": 2}), "expected no 'profile_created'"),
        (lambda a: a.assert_handled("welcome_email", count=4), "expected [welcome_email] to have handled exactly 4"),
        (lambda a: a.assert_no_dead_letters(), "expected no dead letters, found 1"),
        (lambda a: a.assert_dead_lettered("welcome_email", reason_contains="timeout"),
         "expected a dead letter in [welcome_email] with a reason containing 'timeout', found 1"),
        (lambda a: a.assert_dead_lettered("user_profile"), "expected a dead letter in [user_profile], found 0"),
    ],
)
def test_every_assertion_fails_with_the_published_events(tusk_app, check, message):
    app = tusk_app(APP).run_until_idle()
    with pytest.raises(AssertionError) as failed:
        check(app)
    assert message in str(failed.value)
    assert "published (11 events" in str(failed.value)


def test_assertions_that_hold_return_what_they_found(tusk_app):
    app = tusk_app(APP).run_until_idle()
    assert app.assert_published("profile_created", count=4).payload["user_id"] == 1
    assert len(app.assert_handled("welcome_email", count=3)) == 3
    assert app.assert_dead_lettered("welcome_email", payload={"user_id": 3}).attempts == 3
    app.assert_no_dead_letters("user_profile")
    app.assert_published("welcome_email_sent", payload=lambda p: p["to"].endswith("@example.com"))


def test_payload_matching():
    assert matches({"a": 1}, {"a": 1, "b": 2})
    assert not matches({"a": 1, "c": 3}, {"a": 1, "b": 2})
    assert matches({"a": {"x": 1}}, {"a": {"x": 1, "y": 2}})
    assert not matches({"a": {"x": 2}}, {"a": {"x": 1}})
    assert matches([1, 2], [1, 2]) and not matches([1], [1, 2])
    assert matches(lambda p: p > 2, 3) and not matches({"a": 1}, None)


def test_a_stubbed_helper_replaces_the_real_one_for_this_app(tusk_app):
    calls = []

    class FakeRedis:
        def from_url(self, url):
            return self

        def hincrby(self, key, field, n):
            calls.append((key, field, n))

    app = tusk_app(APP)
    app.stub("redis", FakeRedis())
    app.run_until_idle()
    assert sorted(calls) == sorted([("activity", "welcome_email_sent", 1)] * 3 + [("activity", "profile_created", 1)] * 4)
    assert app.redis.hgetall("activity") == {}  # the real bus was not touched


def test_a_stubbed_fujsen_that_raises_is_retried_then_dead_lettered(tusk_app):
    app = tusk_app(APP, startup=False)
    attempts = []

    def send(event):
        attempts.append(event["id"])
        raise ConnectionError("smtp down")

    app.stub_fujsen("welcome_email", "handle", send)
    app.publish("user_registered", {"user_id": 5, "name": "Alan", "email": "alan@example.com"})
    app.run_until_idle()
    assert len(attempts) == 3
    letter = app.assert_dead_lettered("welcome_email", reason_contains="ConnectionError: smtp down")
    assert letter.reason.startswith("stub of [welcome_email] handle")


def test_a_stubbed_startup_fujsen_and_a_stub_that_publishes(tusk_app):
    app = tusk_app(APP)
    app.stub_fujsen("app", "startup", lambda: app.publish("user_registered", {"user_id": 9, "name": "Kay", "email": "k@x.org"}))
    app.stub_fujsen("user_profile", "handle", lambda e: app.publish("profile_created", {
        "user_id": e["payload"]["user_id"], "display_name": "stub", "created_from": e["id"]}))
    app.run_until_idle()
    profile = app.assert_published("profile_created", payload={"display_name": "stub"}, count=1)
    assert profile.caused_by.payload["user_id"] == 9  # stubs publish inside the handled event's context
    assert profile.service == "user_profile"


def test_stubbing_what_does_not_exist_names_what_does(tusk_app):
    app = tusk_app(APP)
    with pytest.raises(ConfigError, match=r"no fujsen 'send' in \[welcome_email\] to stub \(available: handle\)"):
        app.stub_fujsen("welcome_email", "send", lambda e: None)
    with pytest.raises(ConfigError, match=r"no section \[mailer\] to stub \(sections: .*welcome_email"):
        app.stub_fujsen("mailer", "handle", lambda e: None)


def test_two_apps_in_one_test_are_isolated(tusk_app):
    a = tusk_app(APP, startup=False)
    b = tusk_app(APP, startup=False)
    assert a.bus_url != b.bus_url and a.store_url != b.store_url
    a.publish("user_registered", {"user_id": 1, "name": "A", "email": "a@example.com"})
    a.run_until_idle()
    b.run_until_idle()
    assert len(a.published()) == 3 and b.published() == []
    assert b.store.events() == [] and b.redis.hgetall("activity") == {}


PINNED = """
[app]
event_bus: "memory://shared-by-everyone"
event_store: "sqlite:///STORE"

[counter]
subscribe: "tick"
delivery: "sync"
handle_fujsen = '''
def handle(event):
    redis.from_url(event_bus).incr("ticks")
    publish("counted", {"n": len(query("SELECT id FROM event_store"))})
'''
"""


def test_a_config_that_names_its_bus_and_store_runs_on_the_apps_own(tusk_app, tmp_path):
    pinned_store = tmp_path / "pinned.db"
    path = tmp_path / "pinned.tsk"
    path.write_text(PINNED.replace("STORE", str(pinned_store)))
    app = tusk_app(path, startup=False)
    app.publish("tick")
    counted = app.assert_published("counted")
    assert counted.payload == {"n": 1}  # query() read the app's store
    assert app.redis.get("ticks") == b"1"
    assert not pinned_store.exists()
    assert app.bus_url != "memory://shared-by-everyone"


@pytest.mark.redis
def test_the_app_runs_on_a_real_redis_when_asked(redis_url):
    with TuskApp(APP, bus=redis_url) as app:
        app.run_until_idle()
        app.assert_published("welcome_email_sent", payload={"user_id": 4})
        app.assert_dead_lettered("welcome_email", reason_contains="not-an-email")
        assert app.redis.hgetall("activity") == {b"welcome_email_sent": b"3", b"profile_created": b"4"}
    import redis

    assert redis.Redis.from_url(redis_url).dbsize() == 0  # the test's data went with it


@pytest.mark.redis
def test_a_real_redis_that_holds_data_is_refused_unless_flushed(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.set("someone-elses", "data")
    with pytest.raises(ConfigError, match="is not empty: a test app needs a database of its own"):
        TuskApp(APP, bus=redis_url)
    assert client.get("someone-elses") == b"data"
    with TuskApp(APP, bus=redis_url, flush=True) as app:
        assert app.redis.get("someone-elses") is None


def test_closing_an_app_drops_its_bus_and_its_temporary_store():
    from pathlib import Path

    from tusk_events.bus import memory

    with TuskApp(APP) as app:
        app.run_until_idle()
        store_file = Path(app.store_url.split("sqlite:///", 1)[1].split("?")[0])
        assert store_file.exists()
        server = memory.server(app.bus_url)
    assert not store_file.parent.exists()
    assert memory.server(app.bus_url) is not server  # a fresh, empty server if the name is used again
    memory.forget(app.bus_url)


def test_a_config_that_does_not_load_leaves_nothing_behind(tmp_path, monkeypatch):
    import tempfile

    bad = tmp_path / "bad.tsk"
    bad.write_text("[svc]\nsubscribe: []\nhandle_fujsen = '''\ndef handle(event):\n    return 1\n'''\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the app's temporary store would go
    with pytest.raises(ConfigError, match=r"\[svc\] subscribe must be an event type or a list"):
        TuskApp(bad)
    assert list(scratch.iterdir()) == []
