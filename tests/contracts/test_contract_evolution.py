"""Contract evolution: which changes break existing consumers (``check NEW --against OLD``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tusk_events import TSK
from tusk_events.cli import main
from tusk_events.contracts.compat import check_contracts, compare

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "configs" / "app.tsk"

CONSUMER = '''
[welcome]
subscribe: "user_registered"
handle_fujsen = """
def handle(event):
    user = event["payload"]
    return user["email"], user.get("plan"), user["address"]["city"]
"""
'''

BASE = {
    "type": "object",
    "required": ["user_id", "email"],
    "properties": {
        "user_id": {"type": "integer"},
        "email": {"type": "string"},
        "plan": {"enum": ["free", "pro"]},
        "nickname": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}}},
    },
}


def tsk(schema: dict | None = None, *, extra: str = "", versions: str | None = None,
        consumer: str = CONSUMER, head: str = "") -> TSK:
    import json

    body = versions if versions is not None else f"    schema: '{json.dumps(schema or BASE)}'\n"
    return TSK.from_string(f"[contracts]\n{head}user_registered {{\n{body}}}\n{extra}{consumer}", env={})


def changed(**edits) -> dict:
    """BASE with edits: ``name=None`` drops a top-level key, ``prop__x=...`` sets properties.x."""
    import copy

    schema = copy.deepcopy(BASE)
    for key, value in edits.items():
        target, name = (schema["properties"], key[6:]) if key.startswith("prop__") else (schema, key)
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value
    return schema


def breaking(old: TSK, new: TSK) -> list[str]:
    return [str(c) for c in compare(old, new) if c.breaking]


def compatible(old: TSK, new: TSK) -> list[str]:
    return [str(c) for c in compare(old, new) if not c.breaking]


@pytest.mark.parametrize(
    "new,expected",
    [
        (changed(required=["user_id"]),
         "user_registered v1: payload.email: no longer required: consumers may rely on it (read by welcome)"),
        (changed(required=["user_id"], prop__email=None),
         "user_registered v1: payload.email: required field removed (read by welcome)"),
        (changed(required=["user_id", "email", "age"]),
         "user_registered v1: payload.age: became required: events without it are refused"),
        (changed(prop__user_id={"type": "string"}),
         "user_registered v1: payload.user_id: type changed from 'integer' to 'string': integer values are now refused"),
        (changed(prop__plan={"enum": ["free"]}),
         "user_registered v1: payload.plan: enum narrowed: 'pro' no longer allowed"),
        (changed(prop__plan={"enum": ["free", "pro", "team"]}),
         "user_registered v1: payload.plan: enum widened: 'team' now allowed; read by welcome"),
        (changed(prop__address={"type": "object", "properties": {"zip": {"type": "string"}}}),
         "user_registered v1: payload.address.city: property removed; read by welcome"),
        (changed(prop__age={"type": "integer", "minimum": 18, "maximum": 150}),
         "user_registered v1: payload.age: minimum raised from 0 to 18: values that passed are refused"),
        (changed(prop__age={"type": "integer", "minimum": 0, "maximum": 120}),
         "user_registered v1: payload.age: maximum lowered from 150 to 120: values that passed are refused"),
        (changed(prop__nickname={"type": "string", "pattern": "^[a-z]+$"}),
         "user_registered v1: payload.nickname: pattern added ('^[a-z]+$'): values that passed may be refused"),
        (changed(prop__tags={"type": "array", "items": {"type": "integer"}}),
         "user_registered v1: payload.tags[]: type changed from 'string' to 'integer': string values are now refused"),
        (changed(additionalProperties=False),
         "user_registered v1: payload: additionalProperties set to false: events with other fields are refused"),
        (changed(prop__nickname=None, additionalProperties=False),
         ("user_registered v1: payload.nickname: property removed and additionalProperties is false: events that "
          "carry it are refused")),
        (changed(prop__user_id={"type": "integer", "oneOf": [{"minimum": 1}, {"maximum": -1}]}),
         "user_registered v1: payload.user_id: 'oneOf' changed; not analysed, so treated as breaking"),
    ],
)
def test_breaking_changes(new, expected):
    assert expected in breaking(tsk(), tsk(new))


@pytest.mark.parametrize(
    "new,expected",
    [
        (changed(prop__referrer={"type": "string"}), "user_registered v1: payload.referrer: optional property added"),
        (changed(prop__nickname=None), "user_registered v1: payload.nickname: optional property removed; no consumer reads it"),
        (changed(prop__age={"type": "integer", "minimum": 0}), "user_registered v1: payload.age: maximum 150 removed"),
        (changed(prop__user_id={"type": "number"}),
         "user_registered v1: payload.user_id: type widened from 'integer' to 'number'; no consumer reads it"),
        (changed(prop__nickname={"type": ["string", "null"]}),
         "user_registered v1: payload.nickname: type widened from 'string' to 'null' | 'string'; no consumer reads it"),
        (changed(description="now documented", prop__email={"type": "string", "description": "where to write"}), None),
    ],
)
def test_compatible_changes(new, expected):
    old = tsk()
    assert breaking(old, tsk(new)) == []
    if expected is not None:
        assert expected in compatible(old, tsk(new))


def test_the_same_config_has_no_changes():
    assert compare(tsk(), tsk()) == []


def test_local_refs_are_followed():
    with_ref = changed(definitions={"id": {"type": "integer"}}, prop__user_id={"$ref": "#/definitions/id"})
    assert compare(tsk(), tsk(with_ref)) == []
    narrowed = changed(definitions={"id": {"type": "integer", "minimum": 5}}, prop__user_id={"$ref": "#/definitions/id"})
    assert breaking(tsk(), tsk(narrowed)) == [
        "user_registered v1: payload.user_id: minimum 5 added: values that passed are refused"]


V1 = '    v1 {\n        schema: {type: "object", required: ["user_id"], properties: {user_id: {type: "integer"}}}\n    }\n'
V2_OK = '    v2 {\n        schema: {type: "object", required: ["user_id"], properties: {user_id: {type: "integer"}, email: {type: "string"}}}\n    }\n'
V2_BAD = '    v2 {\n        schema: {type: "object", required: ["user_id"], properties: {user_id: {type: "string"}}}\n    }\n'


def test_a_new_compatible_version_is_fine_and_an_incompatible_one_is_flagged():
    old = tsk(versions=V1)
    assert breaking(old, tsk(versions=V1 + V2_OK)) == []
    assert "user_registered v1 -> v2: payload.email: optional property added" in compatible(old, tsk(versions=V1 + V2_OK))
    assert breaking(old, tsk(versions=V1 + V2_BAD)) == [
        "user_registered v1 -> v2: payload.user_id: type changed from 'integer' to 'string': integer values are now refused"]


def test_dropping_a_version_or_a_consumed_contract_breaks():
    old = tsk(versions=V1 + V2_OK)
    assert breaking(old, tsk(versions=V2_OK)) == [
        "user_registered v1: version removed: events stamped with it are refused"]
    gone = TSK.from_string("[contracts]\nother {\n    schema: {}\n}\n" + CONSUMER, env={})
    assert breaking(old, gone) == [
        "user_registered: contract removed (consumed by welcome): its events lose their checks or are refused"]
    assert compatible(old, gone) == ["other: contract added"]
    unconsumed = TSK.from_string("[contracts]\n", env={})
    assert breaking(tsk(consumer=""), unconsumed) == []


def test_switching_to_reject_breaks_the_types_without_contracts():
    extra = '[pub]\nsend_fujsen = """\ndef send():\n    publish("audit_logged", {})\n"""\n'
    old = tsk(extra=extra)
    new = tsk(extra=extra, head='unknown_events: "reject"\n')
    assert breaking(old, new) == [
        'audit_logged: no contract, and unknown_events is now "reject": its events are refused']


def test_check_consistency_of_publishes_and_of_reject_mode():
    cfg = TSK.from_string('''
[contracts]
unknown_events: "reject"
user_registered {
    schema: {}
}
[signup]
publishes: "user_registered"
go_fujsen = """
def go():
    publish("user_registered", {})
    publish("audit_logged", {})
"""
''' + CONSUMER.replace('subscribe: "user_registered"', 'subscribe: ["user_registered", "user_deleted"]'), env={})
    assert check_contracts(cfg) == [
        "[signup] publishes audit_logged in its fujsen but does not declare it in publishes",
        'user_deleted has no contract, and unknown_events is "reject" (used by welcome)',
    ]


def write(path: Path, cfg_text: str) -> str:
    path.write_text(cfg_text)
    return str(path)


def test_cli_check_against_an_older_config(tmp_path, capsys):
    old = APP.read_text()
    same = write(tmp_path / "same.tsk", old)
    assert main(["check", same, "--against", str(APP)]) == 0
    assert capsys.readouterr().out.strip() == f"{same}: ok (5 sections, 4 fujsen)"
    newer = old.replace('required: ["user_id", "name", "email"]', 'required: ["user_id", "name"]').replace(
        'user_id: {type: "integer"}\n            display_name', 'user_id: {type: "string"}\n            display_name')
    new = write(tmp_path / "new.tsk", newer)
    assert main(["check", new, "--against", str(APP)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        (f"{new}: breaking change against {APP}: user_registered v1: payload.email: no longer required: "
         "consumers may rely on it (read by welcome_email)"),
        (f"{new}: breaking change against {APP}: profile_created v1: payload.user_id: type changed from "
         "'integer' to 'string': integer values are now refused"),
    ]
    assert main(["check", same, "--against", str(tmp_path / "missing.tsk")]) == 1
    assert f"--against {tmp_path / 'missing.tsk'}: cannot read" in capsys.readouterr().err


def test_cli_check_reports_a_broken_contract(tmp_path, capsys):
    bad = write(tmp_path / "bad.tsk", '[contracts]\nx {\n    schema: {type: "integr"}\n}\n')
    assert main(["check", bad]) == 1
    assert capsys.readouterr().err.strip() == (
        f"{bad}:3: [contracts] x v1: invalid schema: Unknown type: 'integr'")


def test_rewriting_a_contract_as_version_blocks_changes_nothing():
    single = tsk(versions=V1.replace("    v1 {\n", "").replace("\n    }\n", "\n").replace("        schema", "    schema"))
    assert compare(single, tsk(versions=V1)) == []


def test_relaxed_bounds_are_compatible():
    old = tsk(changed(prop__age={"type": "integer", "minimum": 18, "maximum": 150}))
    assert compatible(old, tsk()) == ["user_registered v1: payload.age: minimum relaxed from 18 to 0"]
    assert breaking(old, tsk()) == []
