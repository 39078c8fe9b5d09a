"""The [contracts] section: what parses into which contracts, and the errors that name a line."""

from __future__ import annotations

import pytest

from tusk_events import TSK, ConfigError
from tusk_events.contracts.model import Contracts
from tusk_events.runtime.services import services

SINGLE = """
[contracts]
unknown_events: "reject"
title: "Shop"
api_version: "2.1.0"

user_registered {
    version: 3
    description: "A person signed up"
    schema: {
        type: "object"
        required: ["user_id", "email"]
        properties: {
            user_id: {type: "integer"}
            email: {type: "string"}
        }
    }
}
"""

VERSIONS = """
[contracts]
profile_created {
    description: "A profile exists"
    v2 {
        description: "adds the display name"
        schema: '{"type": "object", "required": ["user_id", "display_name"]}'
    }
    v1 {
        schema: {type: "object", required: ["user_id"]}
    }
}
"order.placed": {
    schema: '''
    {"type": "object", "properties": {"sku": {"type": "string", "pattern": "^[A-Z]+\\\\d+$"}}}
    '''
}
any_payload {
    schema: {}
}
"""


def load(text: str) -> TSK:
    return TSK.from_string(text, env={}, path="c.tsk")


def test_one_block_per_event_type_with_version_description_and_schema():
    c = load(SINGLE).contracts
    assert c.types == ["user_registered"]
    assert (c.unknown_events, c.title, c.api_version) == ("reject", "Shop", "2.1.0")
    contract = c.get("user_registered")
    assert contract.description == "A person signed up"
    assert list(contract.versions) == [3] and contract.latest.version == 3
    assert contract.latest.schema["required"] == ["user_id", "email"]
    assert contract.latest.draft == "draft-07"
    assert contract.latest.where == "c.tsk:10"


def test_version_blocks_json_strings_and_quoted_types():
    c = load(VERSIONS).contracts
    assert c.types == ["profile_created", "order.placed", "any_payload"]
    p = c.get("profile_created")
    assert list(p.versions) == [1, 2]  # ordered by number, whatever the order written
    assert p.latest.version == 2
    assert p.versions[1].description == "A profile exists"  # the shared one
    assert p.versions[2].description == "adds the display name"
    assert p.versions[2].schema == {"type": "object", "required": ["user_id", "display_name"]}
    sku = c.get("order.placed").latest.schema["properties"]["sku"]
    assert sku["pattern"] == "^[A-Z]+\\d+$"
    assert c.get("any_payload").latest.violation(["anything"]) is None
    assert c.unknown_events == "allow"


def test_a_config_without_contracts_checks_nothing():
    c = load("[app]\nx: 1\n").contracts
    assert not c and len(c) == 0 and c.check_incoming is not None
    assert c.types == []


def test_contract_schemas_are_neither_sections_nor_fujsen_globals():
    cfg = load(SINGLE + """
[app]
probe_fujsen = '''
def probe():
    try:
        leaked = description
    except NameError:
        leaked = None
    return leaked, unknown_events
'''
[props]
subscribe_like {
    x: 1
}
""" + """
[contracts]
with_subscribe {
    schema: {type: "object", properties: {subscribe: {type: "string"}, event_bus: {type: "string"}}}
}
""")
    assert "contracts" in cfg.sections()
    assert not [s for s in cfg.sections() if s.startswith("contracts.")]
    # a contract's keys (its description) are not fujsen globals; section settings still are
    assert cfg.execute_fujsen("app", "probe") == (None, "reject")
    # a property named `subscribe` does not make a schema a service
    assert services(cfg) == []
    assert cfg.bus_url == "memory://"


@pytest.mark.parametrize(
    "body,message",
    [
        ('x {\n    shcema: {}\n}', ("c.tsk:3: [contracts] x: unknown key 'shcema' (keys: description, schema, version; "
                                   "versions are blocks named v1, v2...)")),
        ('x {\n    version: 0\n    schema: {}\n}', "c.tsk:3: [contracts] x: version must be an integer >= 1, not 0"),
        ('x {\n    description: "d"\n}', "c.tsk:2: [contracts] x v1: a contract needs a schema (schema: {} accepts any payload)"),
        ("x {\n    schema: '{\"type\": '\n}", "c.tsk:3: [contracts] x v1: schema is not valid JSON: Expecting value: line 1 column 10 (char 9)"),
        ('x {\n    schema: [1]\n}', "c.tsk:3: [contracts] x v1: schema must be an object (or a JSON string of one), not [1]"),
        ('x {\n    schema: {type: "integr"}\n}', "c.tsk:3: [contracts] x v1: invalid schema: Unknown type: 'integr'"),
        ('x {\n    schema: {type: "string", pattern: "("}\n}', "c.tsk:3: [contracts] x v1: invalid schema: "),
        ('x {\n    schema: {"$ref": "https://example.com/s.json"}\n}',
         ("c.tsk:3: [contracts] x v1: $ref 'https://example.com/s.json' points outside the schema; only references "
          "inside it (#/definitions/...) are allowed")),
        ('x {\n    schema: {"$schema": "https://json-schema.org/draft/2020-12/schema"}\n}',
         ("c.tsk:3: [contracts] x v1: $schema 'https://json-schema.org/draft/2020-12/schema' is not supported "
          "(draft-04, draft-06, draft-07 or 2019-09; draft-07 when absent)")),
        ('x {\n    v1 {\n        schema: {}\n    }\n    schema: {}\n}',
         "c.tsk:6: [contracts] x: with version blocks (v1 {...}), only description may sit beside them, not schema"),
        ('x {\n    v2 {\n        version: 3\n        schema: {}\n    }\n}',
         "c.tsk:4: [contracts] x v2: version 3 does not match the block name"),
        ('unknown_events: "maybe"', "c.tsk:2: [contracts] unknown_events must be one of allow, reject, not 'maybe'"),
        ('strict: true', ("c.tsk:2: [contracts] unknown setting 'strict' (settings: api_version, description, "
                         "title, unknown_events; a contract is a block: name { schema: {...} })")),
        ('title: 3', "c.tsk:2: [contracts] title must be a string, not 3"),
    ],
)
def test_mistakes_are_config_errors_naming_the_line(body, message):
    with pytest.raises(ConfigError) as info:
        load(f"[contracts]\n{body}\n")
    assert str(info.value).startswith(message)


def test_type_errors_of_the_schema_compiler_are_config_errors():
    with pytest.raises(ConfigError, match=r"x v1: invalid schema: required must be an array"):
        load('[contracts]\nx {\n    schema: {required: "a"}\n}\n')


def test_draft_04_06_and_2019_are_accepted():
    for uri, draft in [("http://json-schema.org/draft-04/schema#", "draft-04"),
                       ("http://json-schema.org/draft-06/schema#", "draft-06"),
                       ("https://json-schema.org/draft/2019-09/schema", "2019-09")]:
        c = load(f'[contracts]\nx {{\n    schema: {{"$schema": "{uri}", type: "integer"}}\n}}\n').contracts
        assert c.get("x").latest.draft == draft
        assert c.get("x").latest.violation("1") == "x v1: payload: '1' is not of type 'integer'"


def test_local_refs_resolve():
    c = load("""
[contracts]
x {
    schema: {
        definitions: {id: {type: "integer", minimum: 1}}
        type: "object"
        properties: {a: {"$ref": "#/definitions/id"}}
    }
}
""").contracts
    assert c.get("x").latest.violation({"a": 0}) == "x v1: payload.a: 0 is less than the minimum of 1"


def test_contracts_of_several_configs_merge():
    a = load('[contracts]\nunknown_events: "allow"\nx {\n    schema: {type: "object"}\n}\n')
    b = TSK.from_string('[contracts]\nunknown_events: "reject"\nx {\n    version: 2\n    schema: {}\n}\n'
                        'y {\n    schema: {}\n}\n', env={}, path="b.tsk")
    merged = Contracts.merge([a.contracts, b.contracts])
    assert merged.types == ["x", "y"]
    assert list(merged.get("x").versions) == [1, 2]
    assert merged.unknown_events == "reject"
    clash = TSK.from_string('[contracts]\nx {\n    schema: {type: "string"}\n}\n', env={}, path="d.tsk")
    with pytest.raises(ConfigError, match=r"contract x v1 is declared twice with different schemas "
                                          r"\(c.tsk:4 and d.tsk:3\)"):
        Contracts.merge([a.contracts, clash.contracts])


def test_the_documented_example_parses():
    import textwrap

    import tusk_events.contracts.model as module

    doc = module.__doc__ or ""
    example = doc.split("::\n", 1)[1].split("\nA schema is", 1)[0]
    c = TSK.from_string(textwrap.dedent(example), env={}).contracts
    assert c.types == ["user_registered", "profile_created", "order.placed"]
    assert (c.title, c.api_version) == ("Sign-up events", "1.2.0")
    assert c.get("user_registered").latest.violation({"user_id": 1, "email": "e", "code": "AB12"}) is None
    assert c.get("user_registered").latest.violation({"user_id": 1, "email": "e", "code": "A12"}) == (
        "user_registered v1: payload.code: 'A12' does not match '^[A-Z]{2}\\\\d+$'")
    assert list(c.get("profile_created").versions) == [1, 2]
