"""Payloads against contracts: the messages, and where checks happen (publish, bus, consume)."""

from __future__ import annotations

import pytest

from tusk_events import TSK, ContractError, FujsenError
from tusk_events.bus import connect
from tusk_events.events import Event, new_event
from tusk_events.runtime.core import Runtime

CONTRACTS = """
[contracts]
unknown_events: "{unknown}"

user_registered {{
    description: "A person signed up"
    v1 {{
        schema: {{
            type: "object"
            required: ["user_id"]
            properties: {{user_id: {{type: "integer"}}}}
        }}
    }}
    v2 {{
        schema: {{
            type: "object"
            required: ["user_id", "email"]
            properties: {{
                user_id: {{type: "integer", minimum: 1}}
                email: {{type: "string", format: "email"}}
                plan: {{enum: ["free", "pro"]}}
                tags: {{type: "array", items: {{type: "string"}}, maxItems: 2, uniqueItems: true}}
                name: {{type: ["string", "null"], minLength: 1, maxLength: 5, pattern: '^[A-Z]'}}
                ratio: {{type: "number", exclusiveMaximum: 1, multipleOf: 0.25}}
                kind: {{const: "person"}}
                address: {{
                    type: "object"
                    additionalProperties: false
                    properties: {{city: {{type: "string"}}}}
                }}
            }}
        }}
    }}
}}
"""

SERVICE = """
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///unused.db")
startup_fujsen = '''
def startup():
    publish("user_registered", {{"user_id": "abc", "email": "a@b.co"}})
'''

[welcome]
subscribe: ["user_registered", "mystery"]
delivery: "{delivery}"
retries: 2
backoff: 0.001
handle_fujsen = '''
def handle(event):
    r = redis.from_url(event_bus)
    r.rpush("handled", event["id"])
'''
"""


def config(env, *, unknown="allow", delivery="durable") -> TSK:
    return TSK.from_string(CONTRACTS.format(unknown=unknown) + SERVICE.format(delivery=delivery),
                           env=env, path="svc.tsk")


V2 = {"user_id": 1, "email": "ada@example.com"}


@pytest.mark.parametrize(
    "payload,message",
    [
        ({**V2, "user_id": "abc"}, "payload.user_id: 'abc' is not of type 'integer'"),
        ({**V2, "user_id": True}, "payload.user_id: True is not of type 'integer'"),
        ({"user_id": 1}, "payload: 'email' is a required property"),
        ({}, "payload: 'user_id' is a required property"),
        ("not an object", "payload: 'not an object' is not of type 'object'"),
        ({**V2, "user_id": 0}, "payload.user_id: 0 is less than the minimum of 1"),
        ({**V2, "email": "nope"}, "payload.email: 'nope' is not a 'email'"),
        ({**V2, "plan": "gold"}, "payload.plan: 'gold' is not one of ['free', 'pro']"),
        ({**V2, "tags": ["a", 3]}, "payload.tags[1]: 3 is not of type 'string'"),
        ({**V2, "tags": ["a", "b", "c"]}, "payload.tags: ['a', 'b', 'c'] is too long"),
        ({**V2, "tags": ["a", "a"]}, "payload.tags: ['a', 'a'] has non-unique elements"),
        ({**V2, "name": 3}, "payload.name: 3 is not of type 'string', 'null'"),
        ({**V2, "name": ""}, "payload.name: '' should be non-empty"),
        ({**V2, "name": "Abcdef"}, "payload.name: 'Abcdef' is too long"),
        ({**V2, "name": "abc"}, "payload.name: 'abc' does not match '^[A-Z]'"),
        ({**V2, "ratio": 1}, "payload.ratio: 1 is greater than or equal to the maximum of 1"),
        ({**V2, "ratio": 0.3}, "payload.ratio: 0.3 is not a multiple of 0.25"),
        ({**V2, "kind": "robot"}, "payload.kind: 'person' was expected"),
        ({**V2, "address": {"city": "Oslo", "zip": 1, "pin": 2}},
         "payload.address: Additional properties are not allowed ('zip', 'pin' were unexpected)"),
        ({**V2, "address": {"zip": 1}}, "payload.address: Additional properties are not allowed ('zip' was unexpected)"),
        ({**V2, "note": "x" * 200}, None),  # other fields are fine
        ({**V2, "name": None, "plan": "pro", "tags": ["a"], "ratio": 0.5, "kind": "person"}, None),
    ],
)
def test_messages_name_the_field_and_the_rule(env, payload, message):
    contracts = config(env).contracts
    reason = contracts.violation(Event("user_registered", payload))
    assert reason == (None if message is None else f"user_registered v2: {message}")


def test_long_values_are_shortened_in_messages(env):
    reason = config(env).contracts.violation(Event("user_registered", {**V2, "user_id": "x" * 500}))
    assert reason == "user_registered v2: payload.user_id: '" + "x" * 76 + "... is not of type 'integer'"


def test_runtime_publish_refuses_a_bad_payload_and_stores_nothing(env):
    with Runtime([config(env)]) as rt:
        with pytest.raises(ContractError) as info:
            rt.publish("user_registered", {"user_id": "abc", "email": "a@b.co"})
        assert str(info.value) == "user_registered v2: payload.user_id: 'abc' is not of type 'integer'"
        with pytest.raises(ContractError, match=r"^user_registered v2: payload: 'email' is a required property$"):
            rt.publish_event(new_event("user_registered", {"user_id": 1}))
        assert rt.store.count() == 0
        assert rt.bus.stream_info(["user_registered"])["user_registered"].length == 0


def test_events_carry_the_version_they_were_checked_against(env):
    with Runtime([config(env)]) as rt:
        latest = rt.publish("user_registered", V2)
        assert latest.metadata["schema_version"] == 2
        old = rt.publish("user_registered", {"user_id": 7}, metadata={"schema_version": 1})
        assert old.metadata["schema_version"] == 1
        with pytest.raises(ContractError, match=r"^user_registered v1: payload.user_id: 'x' is not of type 'integer'$"):
            rt.publish("user_registered", {"user_id": "x"}, metadata={"schema_version": 1})
        with pytest.raises(ContractError, match=r"^user_registered: no contract version 3 \(versions: 1, 2\)$"):
            rt.publish("user_registered", V2, metadata={"schema_version": 3})
        stored = {e.to_event().id: e.to_event() for e in rt.store.replay()}
        assert stored[latest.id].metadata["schema_version"] == 2
        assert stored[old.id].metadata["schema_version"] == 1


def test_publish_inside_a_fujsen_fails_the_fujsen_with_the_contract_message(env):
    with Runtime([config(env)]) as rt:
        with pytest.raises(FujsenError) as info:
            rt.run_startup()
        assert "ContractError: user_registered v2: payload.user_id: 'abc' is not of type 'integer'" in str(info.value)
        assert rt.store.count() == 0


def test_the_configs_own_publish_helper_checks_too(env):
    cfg = TSK.from_string(CONTRACTS.format(unknown="allow") + """
[tools]
good_fujsen = '''
def good():
    return publish("user_registered", {"user_id": 5, "email": "x@y.zz"})
'''
bad_fujsen = '''
def bad():
    return publish("user_registered", {"user_id": 5})
'''
""", env=env)
    event = cfg.execute_fujsen("tools", "good")
    assert event["metadata"]["schema_version"] == 2
    with pytest.raises(FujsenError, match=r"ContractError: user_registered v2: payload: 'email' is a required property"):
        cfg.execute_fujsen("tools", "bad")


def test_a_guarded_bus_checks_publish_publish_event_and_publish_many(env):
    contracts = config(env).contracts
    raw = connect(env["EVENT_BUS"])
    bus = contracts.guard(raw)
    seen = []
    sub = raw.subscribe(lambda e: seen.append(e), ["user_registered"], group="g")
    assert bus.publish("user_registered", V2).metadata["schema_version"] == 2
    bus.publish_event(new_event("user_registered", V2))
    with pytest.raises(ContractError):
        bus.publish("user_registered", {"user_id": "abc"})
    with pytest.raises(ContractError, match=r"payload.user_id: 'abc'"):
        bus.publish_many([("user_registered", V2), ("user_registered", {**V2, "user_id": "abc"})])
    assert len(bus.publish_many([("user_registered", V2), new_event("user_registered", V2)])) == 2
    sub.run_until_idle(timeout=5)
    assert len(seen) == 4  # the refused batch sent nothing
    assert bus.url == raw.url  # everything else is the wrapped bus
    from tusk_events.bus import Bus

    assert isinstance(bus, Bus)
    raw.close()


def test_without_contracts_the_bus_is_not_wrapped(env):
    raw = connect(env["EVENT_BUS"])
    assert TSK.from_string("[app]\nx: 1\n", env=env).contracts.guard(raw) is raw
    raw.close()


def test_unknown_event_types_are_allowed_or_refused_by_the_switch(env):
    with Runtime([config(env, unknown="allow")]) as rt:
        e = rt.publish("mystery", {"anything": [1, 2]})
        assert "schema_version" not in e.metadata
    with Runtime([config(env, unknown="reject")]) as rt:
        with pytest.raises(ContractError, match=r'^mystery: no contract for this event type \(unknown_events is "reject"\)$'):
            rt.publish("mystery", {})
        assert rt.contracts.validate("user_registered", V2) == 2


@pytest.mark.parametrize("delivery", ["durable", "broadcast"])
def test_an_incoming_event_that_breaks_its_contract_goes_to_the_dlq(env, delivery):
    outside = connect(env["EVENT_BUS"])  # another process's bus: nothing is checked there
    with Runtime([config(env, delivery=delivery)]) as rt:
        if delivery == "broadcast":
            rt._subscribe_all()  # broadcast listeners must be live before publishing
            rt._subscriptions.clear()
        good = outside.publish("user_registered", V2)
        bad = outside.publish("user_registered", {"user_id": "abc", "email": "a@b.co"})
        old_version = outside.publish("user_registered", {"user_id": 1}, metadata={"schema_version": 1})
        unknown_version = outside.publish("user_registered", V2, metadata={"schema_version": 9})
        summary = rt.run_until_idle(startup=False)
        handled = [x.decode() for x in rt.client.lrange("handled", 0, -1)]
        assert sorted(handled) == sorted([good.id, old_version.id])
        letters = {d.event.id: d for d in rt.dlq.list("welcome")}
        assert set(letters) == {bad.id, unknown_version.id}
        assert letters[bad.id].reason == (
            "contract violation: user_registered v2: payload.user_id: 'abc' is not of type 'integer'")
        assert letters[unknown_version.id].reason == (
            "contract violation: user_registered: no contract version 9 (versions: 1, 2)")
        assert letters[bad.id].attempts == 0 and letters[bad.id].traceback == ""
        assert summary.dead_lettered == 2 and summary.retried == 0 and summary.failed == 0
        assert ("welcome", "user_registered", letters[bad.id].reason) in summary.dead_letters
    outside.close()


def test_incoming_unknown_types_follow_the_switch(env):
    outside = connect(env["EVENT_BUS"])
    with Runtime([config(env, unknown="reject")]) as rt:
        e = outside.publish("mystery", {"x": 1})
        rt.run_until_idle(startup=False)
        (letter,) = rt.dlq.list("welcome")
        assert letter.event.id == e.id
        assert letter.reason == 'contract violation: mystery: no contract for this event type (unknown_events is "reject")'
    with Runtime([config({**env, "EVENT_BUS": env["EVENT_BUS"] + "b"}, unknown="allow")]) as rt:
        other = connect(env["EVENT_BUS"] + "b")
        e = other.publish("mystery", {"x": 1})
        rt.run_until_idle(startup=False)
        assert rt.client.lrange("handled", 0, -1) == [e.id.encode()]
        other.close()
    outside.close()


def test_a_redriven_event_is_checked_again(env):
    outside = connect(env["EVENT_BUS"])
    with Runtime([config(env, delivery="sync")]) as rt:
        bad = new_event("user_registered", {"user_id": "abc", "email": "a@b.co"})
        svc = rt.services[0]
        assert rt.process(svc, bad) == "dead-lettered"
        assert rt.redrive("welcome") == 1
        (letter,) = rt.dlq.list("welcome")  # still breaks its contract: back in the DLQ
        assert letter.event.id == bad.id
    outside.close()


def test_configs_run_together_share_one_contracts_section(env):
    a = TSK.from_string('[contracts]\nx {\n    schema: {type: "object", required: ["a"]}\n}\n'
                        '[app]\nevent_bus: @env("EVENT_BUS", "memory://")\n'
                        'event_store: @env("EVENT_STORE", "sqlite:///unused.db")\n', env=env, path="a.tsk")
    b = TSK.from_string('[contracts]\ny {\n    schema: {type: "integer"}\n}\n', env=env, path="b.tsk")
    with Runtime([a, b]) as rt:
        assert rt.contracts.types == ["x", "y"]
        with pytest.raises(ContractError, match=r"^y v1: payload: 'one' is not of type 'integer'$"):
            rt.publish("y", "one")
        rt.publish("x", {"a": 1})
