"""AsyncAPI 3.0 documents of the events a set of configs exchange (``tusk-events docs``).

What the document holds, read off the configs:

* a channel per event type: its durable stream (``tusk:stream:<type>``), on which every
  published event lands and from which each service's consumer group reads;
* the ``broadcast`` channel: the pub/sub channel (``event_channel``) that carries a copy of
  every event, for services with ``delivery: "broadcast"``;
* a message per contract version (``user_registered.v1``): its payload is the event envelope
  (``v id type payload metadata timestamp``), ``payload`` being the contract's schema (kept in
  ``components.schemas`` under the same name) and ``metadata.schema_version`` the version;
  a type used without a contract gets one message whose payload is anything;
* operations: ``send`` for each section that publishes a type (as its ``publishes`` says, or
  else as its fujsen's ``publish("type", ...)`` calls say), ``receive`` for each service
  subscribed to it (on the broadcast channel for broadcast delivery).

The document is plain data (:func:`document`); :func:`render` writes it as YAML (PyYAML),
JSON, or a single self-contained HTML page that loads nothing from anywhere.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tusk_events.contracts.flows import Flows, Receiver
from tusk_events.contracts.model import Contracts
from tusk_events.defaults import (
    ASYNCAPI_DEFAULT_API_VERSION,
    ASYNCAPI_VERSION,
    BUS_CHANNEL,
    BUS_STREAM_PREFIX,
)
from tusk_events.errors import ConfigError
from tusk_events.events import ENVELOPE_VERSION

if TYPE_CHECKING:
    from tusk_events.contracts.model import TSK

FORMATS: tuple[str, ...] = ("yaml", "json", "html")
_KEY = re.compile(r"[^\w.\-]")
_DELIVERY_NOTES = {
    "durable": "durable: consumer group `{group}` reads the stream; each event is acknowledged "
               "after the handler returns, retried on failure, then dead-lettered",
    "sync": "sync: handled inline, in the process that publishes the event",
    "broadcast": "broadcast: pub/sub, fire and forget; received only while subscribed",
}


def document(configs: Sequence[TSK], *, title: str | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document (a JSON-ready dict) of ``configs`` run together."""
    if not configs:
        raise ConfigError("an AsyncAPI document needs at least one config")
    contracts = Contracts.merge(cfg.contracts for cfg in configs)
    flows = Flows.of(configs)
    types = list(dict.fromkeys([*contracts.types, *flows.types]))
    doc: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": _info(configs, contracts, title),
        "defaultContentType": "application/json",
    }
    server = _server(configs[0].bus_url)
    if server:
        doc["servers"] = {"bus": server}
    keys = _Keys()
    schemas: dict[str, Any] = {"tusk.metadata": _METADATA_SCHEMA}
    messages: dict[str, Any] = {}
    by_type: dict[str, list[str]] = {}  # event type -> its message keys, oldest version first
    for t in types:
        contract = contracts.get(t)
        if contract is None:
            name = keys.new(t)
            messages[name] = _message(t, None, "", None)
            by_type[t] = [name]
            continue
        by_type[t] = []
        for number, cv in contract.versions.items():
            name = keys.new(f"{t}.v{number}")
            schemas[name] = _rebase(cv.schema, f"#/components/schemas/{name}")
            messages[name] = _message(t, number, cv.description, name)
            by_type[t].append(name)
    streams = {t: keys.new(t, "channel") for t in types}
    broadcast = keys.new("broadcast", "channel")
    doc["channels"] = _channels(types, contracts, streams, broadcast, _event_channel(configs), by_type)
    doc["operations"] = _operations(flows, contracts, configs, streams, broadcast, by_type, keys)
    doc["components"] = {"schemas": schemas, "messages": messages}
    return doc


def _channels(types: list[str], contracts: Contracts, streams: dict[str, str], broadcast: str,
              event_channel: str, by_type: dict[str, list[str]]) -> dict[str, Any]:
    """One channel per event type's stream, then the broadcast channel."""
    channels: dict[str, Any] = {}
    for t in types:
        contract = contracts.get(t)
        about = contract.description if contract is not None else ""
        channels[streams[t]] = {
            "address": BUS_STREAM_PREFIX + t,
            "title": t,
            "description": (about + "\n\n" if about else "")
            + f"The durable stream of `{t}` events: every event of this type is appended to it; "
              "each subscribed service reads it with its own consumer group."
            + ("" if contract is not None else " This type has no contract: any payload."),
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in by_type[t]},
        }
    channels[broadcast] = {
        "address": event_channel,
        "title": "broadcast",
        "description": "Pub/sub: every published event is also sent here, for services with "
                       "broadcast delivery. Nothing is stored: a subscriber that is down misses it.",
        "messages": {n: {"$ref": f"#/components/messages/{n}"} for t in types for n in by_type[t]},
    }
    return channels


def _operations(flows: Flows, contracts: Contracts, configs: Sequence[TSK], streams: dict[str, str],
                broadcast: str, by_type: dict[str, list[str]], keys: _Keys) -> dict[str, Any]:
    """``send`` for each publishing section and type, ``receive`` for each service and type."""
    operations: dict[str, Any] = {}
    for sender in flows.senders:
        for t in sender.types:
            channel = streams[t]
            how = (f"Declared in [{sender.section}] publishes." if sender.declared
                   else f"Read off the fujsen of [{sender.section}] (its publish() calls).")
            checked = " The runtime checks the payload against the contract before storing it."
            operations[keys.new(f"{sender.section}.send.{t}", "operation")] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{channel}"},
                "title": f"{sender.section} publishes {t}",
                "description": how + (checked if t in contracts else ""),
                "messages": [{"$ref": f"#/channels/{channel}/messages/{by_type[t][-1]}"}],  # the latest
            }
    for receiver in flows.receivers:
        for t in receiver.types:
            channel = broadcast if receiver.delivery == "broadcast" else streams[t]
            operations[keys.new(f"{receiver.section}.receive.{t}", "operation")] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel}"},
                "title": f"{receiver.section} handles {t}",
                "description": _receive_note(receiver, configs),
                "messages": [{"$ref": f"#/channels/{channel}/messages/{n}"} for n in by_type[t]],
                "x-tusk-delivery": receiver.delivery,
            }
    return operations


def _rebase(node: Any, base: str) -> Any:
    """A copy of a contract schema whose local ``$ref`` (``#/definitions/x``) point to where the
    schema now sits in the document (``#/components/schemas/<name>/definitions/x``)."""
    if isinstance(node, dict):
        return {k: (base + v[1:] if k == "$ref" and isinstance(v, str) and v.startswith("#") else _rebase(v, base))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rebase(v, base) for v in node]
    return node


class _Keys:
    """Component keys (``^[\\w.\\-]+$``), unique within their kind."""

    def __init__(self) -> None:
        self.used: dict[str, set[str]] = {}

    def new(self, text: str, kind: str = "message") -> str:
        used = self.used.setdefault(kind, set())
        base = _KEY.sub("_", text) or "_"
        key, n = base, 1
        while key in used:
            n += 1
            key = f"{base}_{n}"
        used.add(key)
        return key


_METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Where the event comes from: its flow and the contract version of its payload.",
    "properties": {
        "trace_id": {"type": "string", "description": "W3C trace id (32 hex digits), shared by a flow"},
        "correlation_id": {"type": "string", "description": "id of the event that started the flow"},
        "causation_id": {"type": ["string", "null"], "description": "id of the event being handled "
                                                                      "when this one was published"},
        "schema_version": {"type": "integer", "minimum": 1,
                           "description": "the contract version the payload follows"},
    },
}


def _info(configs: Sequence[TSK], contracts: Contracts, title: str | None) -> dict[str, Any]:
    paths = [cfg.path or "<string>" for cfg in configs]
    stem = Path(paths[0]).stem if configs[0].path else "tusk"
    described = contracts.description or ""
    source = f"From {', '.join(paths)}: the [contracts] section, the services' subscribe and publishes."
    unknown = ("Event types without a contract are refused." if contracts.unknown_events == "reject"
               else "Event types without a contract are allowed, payload unchecked.")
    return {
        "title": title or contracts.title or f"{stem} events",
        "version": contracts.api_version or ASYNCAPI_DEFAULT_API_VERSION,
        "description": "\n\n".join(p for p in (described, source, unknown) if p),
    }


def _server(url: str) -> dict[str, Any] | None:
    """The bus as an AsyncAPI server (never with its password); None for the in-process bus."""
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss"):
        server: dict[str, Any] = {
            "host": f"{parts.hostname or 'localhost'}:{parts.port or 6379}",
            "protocol": "redis",
            "description": "Redis: streams for durable delivery, pub/sub for broadcast"
            + (" (TLS)" if parts.scheme == "rediss" else ""),
        }
        if parts.path.strip("/"):
            server["pathname"] = parts.path
        return server
    if parts.scheme == "unix":
        return {"host": "localhost", "pathname": parts.path, "protocol": "redis",
                "description": "Redis on a Unix socket"}
    return None


def _event_channel(configs: Sequence[TSK]) -> str:
    for cfg in configs:
        value = cfg.get_value_anywhere("event_channel")
        if isinstance(value, str) and value:
            return value
    return BUS_CHANNEL


def _receive_note(receiver: Receiver, configs: Sequence[TSK]) -> str:
    group = receiver.section
    for cfg in configs:
        section = cfg.get_section(receiver.section)
        if section is not None and isinstance(section.get("group"), str):
            group = section["group"]
    note = _DELIVERY_NOTES.get(receiver.delivery, receiver.delivery).format(group=group)
    return (f"Service [{receiver.section}], delivery {note}. An event that breaks its contract goes "
            "to the service's dead-letter queue without reaching the handler.")


def _message(event_type: str, version: int | None, description: str, schema_key: str | None) -> dict[str, Any]:
    payload_schema: Any = {"$ref": f"#/components/schemas/{schema_key}"} if schema_key else {
        "description": "no contract: any payload"}
    metadata: dict[str, Any] = {"$ref": "#/components/schemas/tusk.metadata"}
    if version is not None:
        metadata = {"allOf": [metadata, {"properties": {"schema_version": {"const": version}}}]}
    message: dict[str, Any] = {
        "name": event_type,
        "title": event_type if version is None else f"{event_type} v{version}",
        "contentType": "application/json",
        "payload": {
            "type": "object",
            "required": ["type", "payload"],
            "properties": {
                "v": {"type": "integer", "const": ENVELOPE_VERSION, "description": "envelope version"},
                "id": {"type": "string", "description": "event id (UUIDv7)"},
                "type": {"type": "string", "const": event_type},
                "payload": payload_schema,
                "metadata": metadata,
                "timestamp": {"type": "number", "description": "Unix time, seconds"},
            },
        },
        "correlationId": {
            "description": "the flow this event belongs to",
            "location": "$message.payload#/metadata/correlation_id",
        },
    }
    if description:
        message["summary"] = description.splitlines()[0]
        if "\n" in description:
            message["description"] = description
    return message


# --- rendering --------------------------------------------------------------------------------


def format_for(output: str | None) -> str:
    """The format an output file's name asks for (yaml when it says nothing)."""
    suffix = Path(output).suffix.lower() if output else ""
    return {".json": "json", ".html": "html", ".htm": "html"}.get(suffix, "yaml")


def render(doc: dict[str, Any], fmt: str = "yaml") -> str:
    """``doc`` as text: ``yaml`` (needs PyYAML), ``json`` or ``html``."""
    if fmt == "json":
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        try:
            import yaml
        except ImportError:
            raise ConfigError("YAML output needs PyYAML (pip install 'tusk_events[yaml]'), "
                              "or use --format json") from None
        return str(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100))
    if fmt == "html":
        return render_html(doc)
    raise ConfigError(f"unknown format {fmt!r} (formats: {', '.join(FORMATS)})")


_CSS = """
body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#1d3557;color:#fff;padding:1.5rem 2rem}header h1{margin:0 0 .3rem}
header p{margin:.2rem 0;max-width:60rem}.meta{opacity:.8;font-size:.9rem}
.layout{display:flex;align-items:flex-start}nav{position:sticky;top:0;width:16rem;padding:1rem 1.5rem;
max-height:100vh;overflow:auto;font-size:.9rem}nav h2{font-size:.8rem;text-transform:uppercase;
letter-spacing:.05em;color:#5c6773;margin:1rem 0 .3rem}nav ul{list-style:none;padding:0;margin:0}
nav a{color:#1d3557;text-decoration:none}main{flex:1;padding:1rem 2rem 3rem;min-width:0}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:1rem 1.5rem;margin:1rem 0}
section h2{margin:.2rem 0 .5rem;font-size:1.2rem}code{background:#eef1f4;padding:0 .25em;border-radius:3px}
table{border-collapse:collapse;width:100%;margin:.5rem 0;font-size:.9rem}th,td{text-align:left;
padding:.3rem .5rem;border-bottom:1px solid #eef1f4;vertical-align:top}th{color:#5c6773;font-weight:600}
.send{color:#2a7a2a;font-weight:600}.receive{color:#8a4b08;font-weight:600}
pre{background:#f3f5f7;padding:.8rem;overflow:auto;font-size:.85rem}.tag{font-size:.75rem;
border:1px solid #c5ccd3;border-radius:3px;padding:0 .3rem;margin-left:.4rem;color:#5c6773}
p.note{color:#5c6773}
"""


def render_html(doc: dict[str, Any]) -> str:
    """A single page: channels, their operations and messages, each message's payload fields.

    Everything is inline, and its Content-Security-Policy forbids loading anything.
    """
    e = _esc
    info = doc.get("info", {})
    channels: dict[str, Any] = doc.get("channels", {})
    operations: dict[str, Any] = doc.get("operations", {})
    components = doc.get("components", {})
    messages: dict[str, Any] = components.get("messages", {})
    schemas: dict[str, Any] = components.get("schemas", {})
    out: list[str] = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(info.get('title', 'Events'))} {e(info.get('version', ''))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<header><h1>{e(info.get('title', 'Events'))}</h1>",
        (f'<p class="meta">AsyncAPI {e(doc.get("asyncapi", ""))} · version {e(info.get("version", ""))}'
         f' · {e(doc.get("defaultContentType", ""))}</p>'),
    ]
    out += [f"<p>{e(p)}</p>" for p in str(info.get("description", "")).split("\n\n") if p]
    out.append('</header><div class="layout"><nav><h2>Channels</h2><ul>')
    out += [f'<li><a href="#channel-{e(k)}">{e(k)}</a></li>' for k in channels]
    out.append("</ul><h2>Messages</h2><ul>")
    out += [f'<li><a href="#message-{e(k)}">{e(m.get("title", k))}</a></li>' for k, m in messages.items()]
    out.append("</ul></nav><main>")
    for key, server in (doc.get("servers") or {}).items():
        out.append(f'<section id="server-{e(key)}"><h2>Server <code>{e(key)}</code></h2>'
                   f"<p>{e(server.get('protocol'))}://{e(server.get('host'))}{e(server.get('pathname', ''))}"
                   f" — {e(server.get('description', ''))}</p></section>")
    for key, channel in channels.items():
        out.append(f'<section class="channel" id="channel-{e(key)}" data-channel="{e(key)}">')
        out.append(f"<h2>Channel <code>{e(key)}</code></h2>")
        out.append(f"<p>address <code>{e(channel.get('address', ''))}</code></p>")
        out += [f'<p class="note">{e(p)}</p>' for p in str(channel.get("description", "")).split("\n\n") if p]
        ops = [(k, op) for k, op in operations.items() if op["channel"]["$ref"] == f"#/channels/{key}"]
        if ops:
            out.append("<table><tr><th>operation</th><th>action</th><th>messages</th><th>notes</th></tr>")
            for op_key, op in ops:
                names = ", ".join(_last(m["$ref"]) for m in op.get("messages", []))
                out.append(f'<tr data-operation="{e(op_key)}"><td>{e(op.get("title", op_key))}</td>'
                           f'<td class="{e(op["action"])}">{e(op["action"])}</td><td>{e(names)}</td>'
                           f'<td>{e(op.get("description", ""))}</td></tr>')
            out.append("</table>")
        else:
            out.append('<p class="note">No service of these configs sends or receives here.</p>')
        listed = ", ".join(f'<a href="#message-{e(m)}">{e(messages.get(m, {}).get("title", m))}</a>'
                           for m in channel.get("messages", {}))
        out.append(f"<p>messages: {listed or 'none'}</p></section>")
    for key, message in messages.items():
        out.append(f'<section class="message" id="message-{e(key)}" data-message="{e(key)}">')
        out.append(f"<h2>Message <code>{e(message.get('title', key))}</code>"
                   f'<span class="tag">{e(message.get("contentType", ""))}</span></h2>')
        about = message.get("description") or message.get("summary")
        if about:
            out += [f"<p>{e(p)}</p>" for p in str(about).split("\n\n") if p]
        payload = message.get("payload", {}).get("properties", {}).get("payload", {})
        schema = _resolve(payload, schemas)
        rows = list(_fields(schema, "payload", schemas, 0))
        out.append("<table><tr><th>field</th><th>type</th><th>required</th><th>rules</th>"
                   "<th>description</th></tr>")
        for name, kind, required, rules, text in rows:
            out.append(f"<tr><td><code>{e(name)}</code></td><td>{e(kind)}</td>"
                       f"<td>{'yes' if required else ''}</td><td>{e(rules)}</td><td>{e(text)}</td></tr>")
        out.append("</table>")
        out.append(f"<details><summary>JSON Schema of the payload</summary><pre>"
                   f"{e(json.dumps(schema, indent=2, ensure_ascii=False))}</pre></details></section>")
    out.append("</main></div></body></html>")
    return "\n".join(out) + "\n"


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _last(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _resolve(schema: Any, schemas: dict[str, Any]) -> Any:
    if isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and \
            schema["$ref"].startswith("#/components/schemas/"):
        return schemas.get(_last(schema["$ref"]), {})
    return schema


_RULES = ("enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
          "maxLength", "pattern", "format", "minItems", "maxItems", "uniqueItems", "multipleOf")


def _fields(schema: Any, name: str, schemas: dict[str, Any], depth: int,
            required: bool = True, root: Any = None) -> Any:
    """Rows ``(field, type, required, rules, description)`` of a schema, nested properties flattened."""
    root = schema if root is None else root
    if isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#/"):
        target: Any = root
        for part in schema["$ref"][2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        schema = target if isinstance(target, dict) else schema
    if not isinstance(schema, dict):
        yield name, "any" if schema is not False else "nothing", required, "", ""
        return
    kind = schema.get("type", "any")
    kind = " | ".join(kind) if isinstance(kind, list) else str(kind)
    rules = [f"{r}: {json.dumps(schema[r], ensure_ascii=False)}" for r in _RULES if r in schema]
    if schema.get("additionalProperties") is False:
        rules.append("no other fields")
    yield name, kind, required, "; ".join(rules), str(schema.get("description", ""))
    if depth >= 8:
        return
    needed = set(schema.get("required") or ())
    for prop, sub in (schema.get("properties") or {}).items():
        yield from _fields(sub, f"{name}.{prop}", schemas, depth + 1, prop in needed, root)
    items = schema.get("items")
    if isinstance(items, dict):
        yield from _fields(items, f"{name}[]", schemas, depth + 1, False, root)


__all__ = ["FORMATS", "document", "format_for", "render", "render_html"]
