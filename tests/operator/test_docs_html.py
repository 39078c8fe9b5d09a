"""The HTML docs render the Markdown of descriptions instead of showing backticks."""

from __future__ import annotations

from pathlib import Path

from tusk_events import TSK
from tusk_events.contracts.asyncapi import _md, document, render

CONFIG = '''
[contracts]
title: "Shop"
description: "Events of the `shop`, see [the guide](https://example.org/guide)."

order_placed {
    version: 1
    description: "An order was **placed**; `order_id` is unique."
    schema: {
        type: "object"
        properties: {
            order_id: {type: "string", description: "the `id`"}
        }
    }
}

[app]
startup_fujsen = """
def startup():
    publish("order_placed", {"order_id": "A-1"})
"""
'''


def test_markdown_in_descriptions_becomes_html(tmp_path: Path):
    path = tmp_path / "shop.tsk"
    path.write_text(CONFIG)
    page = render(document([TSK.from_file(path, env={})]), "html")
    assert "`" not in page.split("<pre>")[0]  # no raw backticks outside the JSON Schema listing
    assert "Events of the <code>shop</code>" in page
    assert '<a href="https://example.org/guide" rel="noreferrer">the guide</a>' in page
    assert "was <strong>placed</strong>; <code>order_id</code> is unique" in page
    assert "<td>the <code>id</code></td>" in page


def test_markdown_stays_escaped():
    assert _md("a <b>`<i>`</b> [x](javascript:alert(1))") == (
        "a &lt;b&gt;<code>&lt;i&gt;</code>&lt;/b&gt; [x](javascript:alert(1))")
    assert _md("snake_case_names stay as_they_are") == "snake_case_names stay as_they_are"
