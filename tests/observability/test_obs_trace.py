"""Causation trees rebuilt from the event store (and the bus): ``tusk-events trace``."""

from __future__ import annotations

import json
import re

import pytest
from obs_support import APP

from tusk_events import TSK
from tusk_events.cli import main
from tusk_events.errors import ConfigError
from tusk_events.events import Event
from tusk_events.observe.tracing import (
    DEAD_LETTERED,
    HANDLED,
    NO_RECORD,
    UNKNOWN,
    build_trace,
    load_trace,
    render_mermaid,
    render_text,
    trace_to_dict,
)
from tusk_events.runtime.core import Runtime


@pytest.fixture
def app(env):
    """The main example, run until idle; the runtime stays open so its memory:// bus is readable."""
    rt = Runtime([TSK.from_file(APP, env=env)])
    rt.run_until_idle()
    yield rt
    rt.close()


def flow_of(rt: Runtime, name: str) -> str:
    (root,) = [e for e in rt.store.replay(type="user_registered") if e.payload["name"] == name]
    return str(root.metadata["trace_id"])


def shape(node: dict) -> dict:
    """A node without ids and times: what must be equal from run to run."""
    return {
        "type": node["type"],
        "publisher": node["publisher"],
        "steps": [
            {"service": s["service"], "status": s["status"], **({"attempts": s["attempts"]} if "attempts" in s else {}),
             "published": [shape(c) for c in s["published"]]}
            for s in node["steps"]
        ],
    }


def test_a_failed_flow_shows_the_dead_letter_and_the_branch_that_went_on(app):
    trace = load_trace(app.configs, flow_of(app, "Mallory"))
    d = trace_to_dict(trace)
    assert d["events"] == 2 and d["bus_consulted"] is True
    (root,) = d["roots"]
    assert shape(root) == {
        "type": "user_registered",
        "publisher": None,
        "steps": [
            {"service": "welcome_email", "status": DEAD_LETTERED, "attempts": 3, "published": []},
            {"service": "user_profile", "status": HANDLED, "published": [
                {"type": "profile_created", "publisher": "user_profile", "steps": [
                    {"service": "activity", "status": HANDLED, "published": []},
                ]},
            ]},
        ],
    }
    dead = root["steps"][0]
    assert "ValueError: cannot send a welcome email to 'not-an-email'" in dead["reason"]
    assert dead["failed_at"] >= root["timestamp"]
    child = root["steps"][1]["published"][0]
    assert child["offset_ms"] >= 0 and child["payload"]["display_name"] == "Mallory"
    assert d["duration_ms"] >= child["offset_ms"]


def test_a_full_flow_has_two_branches_and_four_events(app):
    d = trace_to_dict(load_trace(app.configs, flow_of(app, "Ada")))
    assert d["events"] == 3
    (root,) = d["roots"]
    assert shape(root) == {
        "type": "user_registered",
        "publisher": None,
        "steps": [
            {"service": "welcome_email", "status": HANDLED, "published": [
                {"type": "welcome_email_sent", "publisher": "welcome_email", "steps": [
                    {"service": "activity", "status": HANDLED, "published": []}]},
            ]},
            {"service": "user_profile", "status": HANDLED, "published": [
                {"type": "profile_created", "publisher": "user_profile", "steps": [
                    {"service": "activity", "status": HANDLED, "published": []}]},
            ]},
        ],
    }


def test_text_rendering(app):
    text = render_text(load_trace(app.configs, flow_of(app, "Mallory")))
    pattern = (
        r"trace [0-9a-f]{32}: 2 events, 1 dead-lettered, [\d.]+ ms\n"
        r"user_registered  \S+  \+0\.0 ms  \(by host code\)\n"
        r"├─ welcome_email: dead-lettered after 3 attempts \(\+[\d.]+ ms\): .*ValueError: cannot send .*\n"
        r"└─ user_profile: handled\n"
        r"   └─ profile_created  \S+  \+[\d.]+ ms  \(by user_profile\)\n"
        r"      └─ activity: handled\n"
    )
    assert re.fullmatch(pattern, text), text


def test_mermaid_rendering(app):
    text = render_mermaid(load_trace(app.configs, flow_of(app, "Mallory")))
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    assert re.fullmatch(r'    e0\["user_registered<br/>\+0\.0 ms"\]:::event', lines[1])
    assert re.fullmatch(r'    e1\["profile_created<br/>\+[\d.]+ ms"\]:::event', lines[2])
    assert re.fullmatch(r'    x1\[\("DLQ welcome_email<br/>3 attempts<br/>.*ValueError: cannot send .*"\)\]:::dead', lines[3])
    assert lines[4:8] == [
        '    x2(["handled"]):::done',
        "    e0 -.->|welcome_email| x1",
        "    e0 -->|user_profile| e1",
        "    e1 -->|activity| x2",
    ]


def test_an_event_id_finds_its_trace(app):
    (letter,) = app.dlq.list("welcome_email")
    by_event = trace_to_dict(load_trace(app.configs, letter.event.id))
    assert by_event["trace_id"] == letter.event.trace_id
    assert by_event["roots"][0]["id"] == letter.event.id


def test_without_the_bus_only_what_the_store_knows(app):
    d = trace_to_dict(load_trace(app.configs, flow_of(app, "Mallory"), client=False))
    assert d["bus_consulted"] is False
    steps = {s["service"]: s["status"] for s in d["roots"][0]["steps"]}
    # user_profile published a follow-up: handled; the others left no trace in the store
    assert steps == {"welcome_email": UNKNOWN, "user_profile": HANDLED}
    assert "not consulted" in render_text(load_trace(app.configs, flow_of(app, "Mallory"), client=False))


def test_an_unknown_trace_id_is_an_error(app):
    with pytest.raises(ConfigError, match="no stored event has trace id"):
        load_trace(app.configs, "0" * 31 + "1")


def test_cli_formats(app, capsys):
    tid = flow_of(app, "Mallory")
    assert main(["trace", str(APP), tid]) == 0
    assert "welcome_email: dead-lettered after 3 attempts" in capsys.readouterr().out
    assert main(["trace", str(APP), tid, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["trace_id"] == tid
    assert main(["trace", str(APP), tid, "--format", "mermaid"]) == 0
    assert capsys.readouterr().out.startswith("flowchart TD\n")
    assert main(["trace", str(APP), "nope"]) == 1
    assert "no stored event has trace id nope" in capsys.readouterr().err


def test_build_trace_orphans_and_unsubscribed_publishers():
    """A cause missing from the store makes its effect a root; a publisher outside the configs still shows."""
    t = "ab" * 16
    a = Event("a", {}, {"trace_id": t, "causation_id": "gone"}, id="A", timestamp=10.0)
    b = Event("b", {}, {"trace_id": t, "causation_id": "A", "service": "elsewhere"}, id="B", timestamp=10.5)
    trace = build_trace([b, a], t, subscribers={"b": [("svc", "grp")]}, handled=lambda g, i: (g, i) == ("grp", "B"))
    d = trace_to_dict(trace)
    (root,) = d["roots"]
    assert root["id"] == "A"
    assert [(s["service"], s["status"]) for s in root["steps"]] == [("elsewhere", HANDLED)]
    assert root["steps"][0]["published"][0]["offset_ms"] == 500.0
    assert root["steps"][0]["published"][0]["steps"] == [{"service": "svc", "status": HANDLED, "published": []}]
    trace = build_trace([a, b], t, subscribers={"b": [("svc", "grp")]}, handled=lambda g, i: False)
    assert trace_to_dict(trace)["roots"][0]["steps"][0]["published"][0]["steps"][0]["status"] == NO_RECORD
