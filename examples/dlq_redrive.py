"""Dead-letter queue and redrive: a handler fails until its dependency is back, then a redrive succeeds.

The `[invoices]` service depends on a "billing API" switch kept in Redis. While it is
off, every attempt fails; after the retries the event is dead-lettered with the reason.
Switch it on, redrive, and the same event is handled normally.

    python examples/dlq_redrive.py
"""

from __future__ import annotations

import tempfile

from tusk_events import TSK
from tusk_events.runtime import Runtime

CONFIG = """
[billing]
event_bus: "memory://dlq-example"
event_store: @env("EVENT_STORE", "sqlite:///events.db")

[invoices]
subscribe: "order_completed"
retries: 2
backoff: 0.01
handle_fujsen = '''
def handle(event):
    r = redis.from_url(event_bus)
    if r.get("billing_api") != b"up":
        raise ConnectionError("billing API unavailable")
    r.rpush("invoices", event["payload"]["order_id"])
'''
"""

with tempfile.TemporaryDirectory() as tmp:
    cfg = TSK.from_string(CONFIG, env={"EVENT_STORE": f"sqlite:///{tmp}/events.db"})
    with Runtime([cfg]) as runtime:
        runtime.publish("order_completed", {"order_id": "A-1"})
        print(runtime.run_until_idle(startup=False).render())
        for letter in runtime.dlq.list("invoices"):
            print(f"DLQ: {letter.event.type} {letter.event.payload} attempts={letter.attempts}: {letter.reason}")

        runtime.client.set("billing_api", "up")  # the dependency is back
        print("redriven:", runtime.redrive("invoices"))
        runtime.run_until_idle(startup=False)
        invoices = runtime.client.lrange("invoices", 0, -1)
        print("invoices:", invoices, "| still dead-lettered:", len(runtime.dlq.list("invoices")))
        assert invoices == [b"A-1"]
