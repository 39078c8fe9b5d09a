"""A live system for the console: a runtime consuming on its own memory:// bus, and its console."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tusk_events import TSK
from tusk_events.console import Console
from tusk_events.runtime.core import Runtime

SHOP = """
[shop]
event_bus: @env("EVENT_BUS")
event_store: @env("EVENT_STORE")

[orders]
subscribe: "order_placed"
retries: 0
handle_fujsen = '''
def handle(event):
    order = event["payload"]
    restored = query("SELECT 1 FROM event_store WHERE event_type = 'payments_restored' LIMIT 1")
    if order.get("needs_payment") and not restored:
        raise ValueError("payment service down for order " + str(order["id"]))
    publish("order_confirmed", {"id": order["id"]})
'''
publishes: "order_confirmed"

[mailer]
subscribe: "order_confirmed"
handle_fujsen = '''
def handle(event):
    return event["payload"]["id"]
'''
"""


@dataclass
class Live:
    runtime: Runtime
    console: Console
    url: str


def shop_runtime(tmp_path: Path) -> Runtime:
    (tmp_path / "shop.tsk").write_text(SHOP)
    env = {"EVENT_BUS": f"memory://console-{uuid.uuid4().hex[:8]}",
           "EVENT_STORE": f"sqlite:///{tmp_path / 'shop.db'}"}
    return Runtime([TSK.from_file(str(tmp_path / "shop.tsk"), env=env)])


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    """Orders 1-3 handled, order 2 dead-lettered (payments down), order 3's payload holds markup;
    then the runtime keeps consuming in a thread while the console serves."""
    rt = shop_runtime(tmp_path)
    rt.publish("order_placed", {"id": 1})
    rt.publish("order_placed", {"id": 2, "needs_payment": True})
    rt.publish("order_placed", {"id": 3, "note": "<script>window.__xss = 1</script><img src=x onerror=window.__xss=2>"})
    rt.run_until_idle()
    stop = threading.Event()
    worker = threading.Thread(target=rt.run, args=(stop,), kwargs={"startup": False}, daemon=True)
    worker.start()
    console = Console(rt, port=0).start()
    try:
        yield Live(rt, console, console.url)
    finally:
        console.close()
        stop.set()
        worker.join(timeout=10)
        rt.close()
