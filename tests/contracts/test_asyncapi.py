"""The AsyncAPI 3.0 document: its structure, and validity against the official 3.0.0 JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from tusk_events import TSK
from tusk_events.cli import main
from tusk_events.contracts.asyncapi import document, format_for, render
from tusk_events.events import new_event

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "configs" / "app.tsk"
SPEC = ROOT / "tests" / "data" / "asyncapi-3.0.0.json"

RICH = '''
[contracts]
title: "Shop"
api_version: "2.3.0"
description: "Orders and what follows them"
unknown_events: "allow"
"order.placed": {
    description: "A customer placed an order"
    v1 {
        schema: {type: "object", required: ["order_id"], properties: {order_id: {type: "integer"}}}
    }
    v2 {
        description: """
        adds the lines

        each line is a sku and a quantity
        """
        schema: {
            type: "object"
            required: ["order_id", "lines"]
            properties: {
                order_id: {type: "integer"}
                lines: {type: "array", minItems: 1, items: {"$ref": "#/definitions/line"}}
            }
            definitions: {line: {type: "object", properties: {sku: {type: "string"}, qty: {type: "integer"}}}}
        }
    }
}
[shop]
event_bus: "redis://:secret@cache.internal:6380/2"
event_channel: "shop_events"
publishes: "order.placed"
[audit]
subscribe: ["order.placed", "order.cancelled"]
delivery: "broadcast"
handle_fujsen = """
def handle(event):
    return event["type"]
"""
[billing]
subscribe: "order.placed"
group: "billing-v2"
handle_fujsen = """
def handle(event):
    publish("invoice.sent", {"order_id": event["payload"]["order_id"]})
"""
'''


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    spec = json.loads(SPEC.read_text())
    assert spec["$id"] == "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
    return jsonschema.Draft7Validator(spec)


def app_doc() -> dict:
    return document([TSK.from_file(APP, env={})])


def rich_doc() -> dict:
    return document([TSK.from_string(RICH, env={}, path="shop.tsk")])


def refs(node, found=None):
    found = [] if found is None else found
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                found.append(v)
            else:
                refs(v, found)
    elif isinstance(node, list):
        for v in node:
            refs(v, found)
    return found


def pointer(doc, ref):
    node = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


@pytest.mark.parametrize("make", [app_doc, rich_doc])
def test_the_document_is_valid_asyncapi_3(validator, make):
    doc = make()
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert [f"{list(e.absolute_path)}: {e.message[:200]}" for e in errors] == []


def test_the_official_schema_catches_mistakes(validator):
    doc = app_doc()
    doc["operations"]["app.send.user_registered"]["action"] = "publish"
    assert not validator.is_valid(doc)


@pytest.mark.parametrize("make", [app_doc, rich_doc])
def test_every_reference_resolves_and_operations_use_their_channels_messages(make):
    doc = make()
    for ref in refs(doc):
        pointer(doc, ref)  # contract schemas' own refs were moved to where the schema sits
    for op in doc["operations"].values():
        channel = op["channel"]["$ref"]
        for m in op["messages"]:
            assert m["$ref"].startswith(channel + "/messages/")


def test_the_app_document(validator):
    doc = app_doc()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] == "User registration" and doc["info"]["version"] == "1.0.0"
    assert "servers" not in doc  # memory:// lives inside one process
    assert {k: c["address"] for k, c in doc["channels"].items()} == {
        "user_registered": "tusk:stream:user_registered",
        "welcome_email_sent": "tusk:stream:welcome_email_sent",
        "profile_created": "tusk:stream:profile_created",
        "broadcast": "tusk_events",
    }
    assert list(doc["channels"]["broadcast"]["messages"]) == [
        "user_registered.v1", "welcome_email_sent.v1", "profile_created.v1"]
    ops = {k: (o["action"], o["channel"]["$ref"]) for k, o in doc["operations"].items()}
    assert ops == {
        "app.send.user_registered": ("send", "#/channels/user_registered"),
        "welcome_email.send.welcome_email_sent": ("send", "#/channels/welcome_email_sent"),
        "user_profile.send.profile_created": ("send", "#/channels/profile_created"),
        "welcome_email.receive.user_registered": ("receive", "#/channels/user_registered"),
        "user_profile.receive.user_registered": ("receive", "#/channels/user_registered"),
        "activity.receive.welcome_email_sent": ("receive", "#/channels/welcome_email_sent"),
        "activity.receive.profile_created": ("receive", "#/channels/profile_created"),
    }
    message = doc["components"]["messages"]["user_registered.v1"]
    assert message["summary"] == "A person signed up"
    assert message["payload"]["properties"]["payload"] == {"$ref": "#/components/schemas/user_registered.v1"}
    assert message["payload"]["properties"]["type"] == {"type": "string", "const": "user_registered"}
    assert message["payload"]["properties"]["metadata"]["allOf"][1] == {
        "properties": {"schema_version": {"const": 1}}}
    schema = doc["components"]["schemas"]["user_registered.v1"]
    assert schema["required"] == ["user_id", "name", "email"]



def envelope_validator(doc: dict, message: str) -> jsonschema.Draft7Validator:
    """A validator of the message's payload, its refs resolved in the document."""
    schema = {**doc["components"]["messages"][message]["payload"], "components": doc["components"]}
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def test_published_envelopes_match_their_message_and_broken_ones_do_not():
    doc = rich_doc()
    contracts = TSK.from_string(RICH, env={}).contracts
    good = contracts.check_outgoing(new_event("order.placed", {"order_id": 1, "lines": [{"sku": "a", "qty": 2}]}))
    check = envelope_validator(doc, "order.placed.v2")
    assert check.is_valid(json.loads(good.to_json()))
    broken = json.loads(good.to_json())
    broken["payload"]["lines"][0]["qty"] = "two"  # through the contract's own #/definitions/line
    assert not check.is_valid(broken)
    assert not envelope_validator(doc, "order.placed.v1").is_valid(json.loads(good.to_json()))  # v2 stamp


def test_versions_broadcast_services_groups_and_the_server(validator):
    doc = rich_doc()
    assert doc["info"]["title"] == "Shop" and doc["info"]["version"] == "2.3.0"
    assert doc["info"]["description"].startswith("Orders and what follows them")
    assert doc["servers"] == {"bus": {
        "host": "cache.internal:6380", "protocol": "redis", "pathname": "/2",
        "description": "Redis: streams for durable delivery, pub/sub for broadcast"}}
    assert "secret" not in json.dumps(doc)
    assert list(doc["channels"]) == ["order.placed", "invoice.sent", "order.cancelled", "broadcast"]
    assert doc["channels"]["broadcast"]["address"] == "shop_events"
    assert list(doc["channels"]["order.placed"]["messages"]) == ["order.placed.v1", "order.placed.v2"]
    assert list(doc["channels"]["order.cancelled"]["messages"]) == ["order.cancelled"]
    assert doc["components"]["messages"]["order.cancelled"]["payload"]["properties"]["payload"] == {
        "description": "no contract: any payload"}
    v2 = doc["components"]["messages"]["order.placed.v2"]
    assert v2["summary"] == "adds the lines" and "each line is a sku" in v2["description"]
    ops = doc["operations"]
    assert ops["shop.send.order.placed"]["messages"] == [
        {"$ref": "#/channels/order.placed/messages/order.placed.v2"}]  # senders send the latest
    assert ops["audit.receive.order.placed"]["channel"] == {"$ref": "#/channels/broadcast"}
    assert ops["audit.receive.order.placed"]["x-tusk-delivery"] == "broadcast"
    assert [m["$ref"] for m in ops["billing.receive.order.placed"]["messages"]] == [
        "#/channels/order.placed/messages/order.placed.v1", "#/channels/order.placed/messages/order.placed.v2"]
    assert "consumer group `billing-v2`" in ops["billing.receive.order.placed"]["description"]
    # publish("invoice.sent", ...) in billing's fujsen: a sender read off the code
    assert ops["billing.send.invoice.sent"]["description"].startswith("Read off the fujsen of [billing]")


def test_yaml_and_json_renderings_round_trip():
    doc = rich_doc()
    assert json.loads(render(doc, "json")) == doc
    assert yaml.safe_load(render(doc, "yaml")) == doc
    assert render(doc, "yaml").startswith("asyncapi: 3.0.0\ninfo:\n  title: Shop\n")
    assert [format_for(n) for n in (None, "a.json", "a.HTML", "a.htm", "a.yml", "x")] == [
        "yaml", "json", "html", "html", "yaml", "yaml"]


def test_cli_docs_writes_each_format(tmp_path, capsys, monkeypatch, validator):
    monkeypatch.delenv("EVENT_BUS", raising=False)
    out = tmp_path / "app.json"
    assert main(["docs", str(APP), "-o", str(out)]) == 0
    assert capsys.readouterr().err.strip() == (
        f"{out}: AsyncAPI 3.0.0 (json), 4 channels, 3 messages, 7 operations")
    assert validator.is_valid(json.loads(out.read_text()))
    assert main(["docs", str(APP)]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == json.loads(out.read_text())
    assert main(["docs", str(APP), "--format", "html", "-o", str(tmp_path / "x.out"), "--title", "Sign-ups"]) == 0
    page = (tmp_path / "x.out").read_text()
    assert page.startswith("<!doctype html>") and "<title>Sign-ups 1.0.0</title>" in page


def test_the_html_page_is_self_contained():
    page = render(rich_doc(), "html")
    assert "default-src 'none'" in page  # the page may not load anything, whatever it contains
    for needle in ("<script", "<link", "<img", "src=", "@import", "url("):
        assert needle not in page
    assert "secret" not in page
    assert '<section class="channel" id="channel-order.placed" data-channel="order.placed">' in page
