"""Orchestration: a coordinator drives order -> stock -> payment -> shipping (configs/orchestration.tsk).

Three orders: one completes, one's payment is declined (the coordinator compensates by
releasing the stock), one is out of stock. Each order's flow is read back from the event
store.

    python examples/orchestration.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tusk_events import TSK
from tusk_events.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent

with tempfile.TemporaryDirectory() as tmp:
    env = {"EVENT_BUS": "memory://orchestration", "EVENT_STORE": f"sqlite:///{tmp}/orders.db"}
    with Runtime([TSK.from_file(ROOT / "configs" / "orchestration.tsk", env=env)]) as runtime:
        print(runtime.run_until_idle().render())
        flows: dict[str, list[str]] = {}
        for stored in runtime.store.replay():
            e = stored.to_event()
            flows.setdefault(e.payload["order_id"], []).append(e.type)
        for order_id, steps in flows.items():
            print(f"{order_id}: " + " -> ".join(steps))
        assert flows["A-1"][-1] == "order_completed"
        assert "release_stock" in flows["A-2"] and flows["A-2"][-1] == "order_failed"
