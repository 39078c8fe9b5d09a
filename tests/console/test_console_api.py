"""The console's HTTP API without a browser: paging, filters, CSRF, tokens, bad requests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tusk_events.console import Console
from tusk_events.errors import ConfigError

from .conftest import shop_runtime


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read()) if "json" in r.headers["Content-Type"] else r.read()
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_events_page_back_by_store_id(live):
    status, first = get(live.url + "api/events?limit=2")
    assert status == 200 and len(first["events"]) == 2 and first["more"]
    status, second = get(live.url + f"api/events?limit=2&before={first['next_before']}")
    positions = [e["position"] for e in first["events"] + second["events"]]
    assert positions == sorted(positions, reverse=True) and len(set(positions)) == 4


def test_events_filter_by_trace_id(live):
    _, all_events = get(live.url + "api/events")
    trace = all_events["events"][-1]["trace_id"]
    _, same = get(live.url + f"api/events?trace_id={trace}")
    assert same["events"] and {e["trace_id"] for e in same["events"]} == {trace}


def test_bad_paging_value_is_a_clear_400(live):
    status, body = get(live.url + "api/events?before=abc")
    assert status == 400 and "store id" in body["error"]


def test_unknown_trace_is_a_400_with_the_reason(live):
    status, body = get(live.url + "api/trace/no-such-trace")
    assert status == 400 and "no stored event" in body["error"]


def test_post_without_csrf_token_is_refused_and_changes_nothing(live):
    status, body = post(live.url + "api/dlq/purge", {"service": "orders", "ids": None})
    assert status == 403 and "CSRF" in body["error"]
    assert live.runtime.dlq.count("orders") == 1


def test_cross_origin_post_is_refused(live):
    status, _ = post(live.url + "api/dlq/purge", {"service": "orders", "ids": None},
                     {"X-Tusk-CSRF": live.console.csrf, "Origin": "http://evil.example"})
    assert status == 403 and live.runtime.dlq.count("orders") == 1


def test_purge_with_csrf_token_and_unknown_service(live):
    h = {"X-Tusk-CSRF": live.console.csrf}
    status, body = post(live.url + "api/dlq/purge", {"service": "nope", "ids": None}, h)
    assert status == 400 and "no service [nope]" in body["error"]
    status, body = post(live.url + "api/dlq/purge", {"service": "orders", "ids": [1]}, h)
    assert status == 400
    status, body = post(live.url + "api/dlq/purge", {"service": "orders", "ids": None}, h)
    assert (status, body) == (200, {"purged": 1}) and live.runtime.dlq.count("orders") == 0


def test_dead_letters_come_a_page_at_a_time(tmp_path):
    rt = shop_runtime(tmp_path)
    try:
        for i in range(120):
            rt.publish("order_placed", {"id": i, "needs_payment": True})
        rt.run_until_idle()
        console = Console(rt, port=0).start()
        try:
            pages = []
            for query in ("service=orders", ""):  # one service's queue, and all queues in turn
                url = console.url + f"api/dlq?{query}&limit=50"
                seen: list[int] = []
                while True:
                    _, page = get(url)
                    seen += [d["event"]["payload"]["id"] for d in page["letters"]]
                    if not page["next_after"]:
                        break
                    url = console.url + f"api/dlq?{query}&limit=50&after={page['next_after']}"
                pages.append((page["total"], seen))
        finally:
            console.close()
        assert pages == [(120, list(range(120))), (120, list(range(120)))]
    finally:
        rt.close()


def test_other_addresses_need_a_token(tmp_path):
    rt = shop_runtime(tmp_path)
    try:
        with pytest.raises(ConfigError, match="token"):
            Console(rt, host="0.0.0.0", port=0)
        console = Console(rt, port=0, token="s3cret").start()
        try:
            assert get(console.url + "api/overview")[0] == 401
            assert get(console.url + "api/overview", {"Authorization": "Bearer wrong"})[0] == 401
            assert get(console.url + "api/overview", {"Authorization": "Bearer s3cret"})[0] == 200
            with urllib.request.urlopen(console.url + "?token=s3cret", timeout=10) as r:
                cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
            assert get(console.url + "api/overview", {"Cookie": cookie.split(";")[0]})[0] == 200
        finally:
            console.close()
    finally:
        rt.close()


def test_secrets_in_bus_urls_are_redacted(tmp_path):
    rt = shop_runtime(tmp_path)
    rt.bus_url = "redis://:hunter2@127.0.0.1:6399/0"  # shown only, never connected
    try:
        console = Console(rt, port=0).start()
        try:
            _, body = get(console.url + "api/overview")
        finally:
            console.close()
        assert "hunter2" not in json.dumps(body) and body["bus"].startswith("redis://")
    finally:
        rt.close()
