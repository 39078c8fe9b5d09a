"""The runtime on the embedded bus: services, retries, idempotency, dead letters, the CLI."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tusk_events import TSK, ConfigError
from tusk_events.cli import main
from tusk_events.events import new_event
from tusk_events.runtime.core import Runtime, _backoff
from tusk_events.runtime.services import ServiceSpec

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "configs" / "app.tsk"


@pytest.fixture
def env(tmp_path):
    return {
        "EVENT_BUS": "memory://" + uuid.uuid4().hex[:10],
        "EVENT_STORE": f"sqlite:///{tmp_path / 'events.db'}",
    }


def runtime_for(text: str, env: dict[str, str]) -> Runtime:
    return Runtime([TSK.from_string(text, env=env)])


def test_app_config_runs_the_choreography_until_idle(env):
    with Runtime([TSK.from_file(APP, env=env)]) as rt:
        summary = rt.run_until_idle()
        assert summary.to_dict() | {"latency_ms_p50": None, "latency_ms_p99": None} == {
            "published": 11, "handled": 14, "duplicates_skipped": 0, "failed_attempts": 3,
            "retried": 2, "dead_lettered": 1, "latency_ms_p50": None, "latency_ms_p99": None,
        }
        # every published event is in the store
        assert rt.store.count(type="user_registered") == 4
        assert rt.store.count(type="welcome_email_sent") == 3
        assert rt.store.count(type="profile_created") == 4
        # the sync service ran inline for each of the 7 follow-up events
        assert {k: int(v) for k, v in rt.client.hgetall("activity").items()} == {
            b"welcome_email_sent": 3, b"profile_created": 4,
        }
        (letter,) = rt.dlq.list("welcome_email")
        assert letter.event.type == "user_registered"
        assert letter.event.payload["email"] == "not-an-email"
        assert letter.attempts == 3
        assert letter.reason.startswith(f"{APP}:39 in handle: ValueError: cannot send")
        assert f'File "{APP}", line 39, in handle' in letter.traceback


def test_follow_up_events_carry_the_causal_chain(env):
    with Runtime([TSK.from_file(APP, env=env)]) as rt:
        rt.run_until_idle()
        stored = {e.to_event().id: e.to_event() for e in rt.store.replay()}
    profiles = [e for e in stored.values() if e.type == "profile_created"]
    for p in profiles:
        cause = stored[p.causation_id]
        assert cause.type == "user_registered"
        assert p.trace_id == cause.trace_id and p.correlation_id == cause.correlation_id


SERVICE = """
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///unused.db")

[counter]
subscribe: ["thing_happened"]
delivery: "{delivery}"
retries: 2
backoff: 0.001
handle_fujsen = '''
def handle(event):
    r = redis.from_url(event_bus)
    n = r.incr("calls:" + event["id"])
    if event["payload"].get("fail_times", 0) >= n:
        raise RuntimeError("attempt " + str(n) + " fails")
    r.rpush("done", event["id"])
    publish("thing_counted", {{"of": event["id"]}})
'''
"""


@pytest.mark.parametrize("delivery", ["durable", "sync", "broadcast"])
def test_retries_then_success_in_every_delivery_mode(env, delivery):
    with runtime_for(SERVICE.format(delivery=delivery), env) as rt:
        if delivery == "broadcast":
            rt._subscribe_all()  # broadcast listeners must be live before publishing
            rt._subscriptions.clear()
        e = rt.publish("thing_happened", {"fail_times": 2})
        summary = rt.run_until_idle(startup=False)
        assert rt.client.lrange("done", 0, -1) == [e.id.encode()]
        assert summary.retried == 2 and summary.dead_lettered == 0
        assert rt.store.count(type="thing_counted") == 1


@pytest.mark.parametrize("delivery", ["durable", "sync"])
def test_exhausted_retries_go_to_the_dlq_and_redrive_handles_them(env, delivery):
    with runtime_for(SERVICE.format(delivery=delivery), env) as rt:
        e = rt.publish("thing_happened", {"fail_times": 3})
        rt.run_until_idle(startup=False)
        (letter,) = rt.dlq.list("counter")
        assert letter.event.id == e.id and letter.attempts == 3
        assert "RuntimeError: attempt 3 fails" in letter.reason
        # the 4th call succeeds: redrive puts it back and it is handled normally
        assert rt.redrive("counter") == 1
        rt.run_until_idle(startup=False)
        assert rt.client.lrange("done", 0, -1) == [e.id.encode()]
        assert rt.dlq.list("counter") == []


@pytest.mark.parametrize("delivery", ["durable", "sync"])
def test_an_event_published_twice_is_handled_once(env, delivery):
    with runtime_for(SERVICE.format(delivery=delivery), env) as rt:
        event = new_event("thing_happened", {})
        rt.publish_event(event)
        rt.publish_event(event)
        summary = rt.run_until_idle(startup=False)
        assert rt.client.lrange("done", 0, -1) == [event.id.encode()]
        assert summary.handled == 1
        assert rt.store.count(type="thing_happened") == 1  # the store dedups by id too


def test_a_handler_run_twice_publishes_the_same_event_ids(env):
    # a crash after the handler's effects and before its ack means a second run: what it
    # publishes gets ids derived from (event, service, n), so nothing is published twice
    # (without tracking rows; with them the second run does not happen, tests/runtime/
    # test_exactly_once.py)
    cfg = TSK.from_string(SERVICE.format(delivery="sync"), env=env)
    with Runtime([cfg], tracking=False) as rt:
        svc = rt.services[0]
        event = new_event("thing_happened", {})
        rt.process(svc, event)
        rt.client.delete(f"tusk:dedup:counter:{event.id}")  # forget it was handled
        rt.process(svc, event)
        assert rt.client.llen("done") == 2  # a raw redis effect happens twice (documented)
        assert rt.store.count(type="thing_counted") == 1


def test_backoff_is_exponential_with_full_jitter_and_capped():
    spec = ServiceSpec(name="s", types=("t",), handler="handle", backoff_s=0.1, backoff_max_s=0.5)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)]:
        delays = [_backoff(spec, attempt) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.7  # jitter spans the range


@pytest.mark.parametrize(
    "section,message",
    [
        ('subscribe: ["a"]\ndelivery: "eventually"', "delivery must be one of durable, broadcast, sync"),
        ("subscribe: []", "subscribe must be an event type or a list"),
        ('subscribe: "a"\nretries: -1', "retries must be an integer >= 0"),
        ('subscribe: "a"\nhandler: "missing"', "no fujsen 'missing'"),
        ('subscribe: "a"\nconcurrency: 0', "concurrency must be an integer >= 1"),
    ],
)
def test_check_reports_bad_service_sections(tmp_path, capsys, section, message):
    path = tmp_path / "bad.tsk"
    path.write_text(f"[svc]\n{section}\nhandle_fujsen = '''\ndef handle(event):\n    return 1\n'''\n")
    assert main(["check", str(path)]) == 1
    assert message in capsys.readouterr().err


def test_duplicate_section_across_files_is_an_error(tmp_path, env):
    a = TSK.from_string("[svc]\nx: 1\n", env=env, path="a.tsk")
    b = TSK.from_string("[svc]\nx: 2\n", env=env, path="b.tsk")
    with pytest.raises(ConfigError, match=r"section \[svc\] is defined in both a.tsk and b.tsk"):
        Runtime([a, b])


def test_cli_run_until_idle_prints_the_summary(monkeypatch, capsys, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(["run", str(APP), "--until-idle", "--json"]) == 3  # one event dead-lettered
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["published"] == 11 and summary["handled"] == 14
    assert summary["dead_lettered"] == 1 and summary["retried"] == 2
    assert summary["latency_ms_p50"] is not None


def test_cli_exec_runs_one_fujsen(capsys, tmp_path):
    path = tmp_path / "m.tsk"
    path.write_text("[math]\nadd_fujsen = '''\ndef add(a, b):\n    return {'sum': a + b}\n'''\n")
    assert main(["exec", str(path), "math", "add", "2", "40"]) == 0
    assert json.loads(capsys.readouterr().out) == {"sum": 42}
    assert main(["exec", str(path), "math", "nope"]) == 1
    assert "no fujsen 'nope'" in capsys.readouterr().err
