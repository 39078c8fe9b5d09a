"""The console in a real browser: Playwright driving the Debian Chromium the test command installs.

Each page is loaded on a live system; a dead letter is redriven by clicking and the running
service handles it; a trace link is followed; a payload holding markup stays text. With
``TUSK_CONSOLE_SCREENSHOTS=DIR`` the pages are also saved there (``docs/`` holds the ones the
README shows).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = os.environ.get("TUSK_CONSOLE_SCREENSHOTS")


def _need(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what}; under CI=true the console browser test must run")
    pytest.skip(what)


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("playwright is not installed (pip install 'tusk_events[ui-test]')")
    if CHROMIUM is None:
        _need("chromium is not installed (apt package: chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    p = ctx.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.errors = errors
    yield p
    ctx.close()


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"console-{name}.png"), full_page=True)


def test_overview_lists_services_with_backlog_and_dead_letters(live, page):
    page.goto(live.url)
    row = page.locator('tr[data-service="orders"]')
    row.wait_for()
    cells = [c.strip() for c in row.locator("td").all_inner_texts()]
    assert cells[:3] == ["orders", "durable", "orders"]
    assert cells[-1] == "1"  # one dead letter
    assert page.locator('tr[data-service="mailer"] td').first.inner_text() == "mailer"
    assert "memory://console-" in page.locator("#where").inner_text()
    page.locator("img.graph, pre").first.wait_for()
    shot(page, "overview")
    assert page.errors == []


def test_events_page_filters_and_shows_markup_as_text(live, page):
    page.goto(live.url + "#/events")
    page.locator("tr[data-event]").first.wait_for()
    assert page.locator("tr[data-event]").count() == 5  # 3 orders, 2 confirmations
    body = page.locator("main").inner_text()
    assert "<script>window.__xss = 1</script>" in body
    assert page.evaluate("window.__xss") is None
    assert page.locator("main script, main img[src=x]").count() == 0
    shot(page, "events")
    page.fill('input[name="type"]', "order_confirmed")
    page.click("form.filters button")
    expect(page.locator("tr[data-event]")).to_have_count(2)  # (the page's CSP forbids eval)
    types = {t.strip() for t in page.locator("tr[data-event] td:nth-child(3)").all_inner_texts()}
    assert types == {"order_confirmed"}
    assert page.errors == []


def test_redrive_by_click_is_handled_by_the_running_service(live, page):
    page.goto(live.url + "#/dlq")
    letter = page.locator("tr[data-letter]")
    letter.wait_for()
    assert letter.count() == 1
    assert "payment service down for order 2" in letter.inner_text()
    letter.locator("summary").click()
    assert "shop.tsk:" in letter.locator("details").inner_text()  # the traceback names the .tsk line
    shot(page, "dead-letters")
    live.runtime.publish("payments_restored", {})  # the outage is over
    letter.locator("button.redrive").click()
    page.locator("#done").wait_for()
    expect(page.locator("tr[data-letter]")).to_have_count(0)
    deadline = time.monotonic() + 10
    confirmed: list[Any] = []
    while time.monotonic() < deadline:
        confirmed = [e for e in live.runtime.store.replay("order_confirmed") if e.payload == {"id": 2}]
        if confirmed:
            break
        time.sleep(0.05)
    assert len(confirmed) == 1
    assert live.runtime.dlq.count("orders") == 0
    assert page.errors == []


def test_trace_link_shows_the_causation_tree(live, page):
    page.goto(live.url + "#/events?type=order_placed")
    page.locator("a.trace-link").first.wait_for()
    page.locator("a.trace-link").last.click()  # the oldest order: placed, then confirmed
    page.locator(".tree li[data-event]").first.wait_for()
    tree = page.locator(".tree").inner_text()
    assert "order_placed" in tree and "order_confirmed" in tree
    assert "orders: handled" in tree
    shot(page, "trace")
    assert page.errors == []


def test_dead_lettered_branch_is_marked_in_the_trace(live, page):
    letter = live.runtime.dlq.list("orders")[0]
    page.goto(live.url + f"#/trace/{letter.event.metadata['trace_id']}")
    marked = page.locator(".step.dead-lettered")
    marked.wait_for()
    assert "payment service down" in marked.inner_text()


def test_contracts_page_embeds_the_asyncapi_document(live, page):
    page.goto(live.url + "#/contracts")
    frame = page.frame_locator("iframe.contracts")
    frame.locator("body").wait_for()
    assert "order_placed" in frame.locator("body").inner_text()
    shot(page, "contracts")
