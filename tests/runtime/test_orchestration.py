"""configs/orchestration.tsk: a coordinator drives the order flow and compensates a failed payment."""

from __future__ import annotations

import uuid
from pathlib import Path

from tusk_events import TSK
from tusk_events.runtime.core import Runtime

ORCH = Path(__file__).resolve().parents[2] / "configs" / "orchestration.tsk"


def test_orders_complete_fail_and_compensate(tmp_path):
    env = {"EVENT_BUS": "memory://" + uuid.uuid4().hex[:10], "EVENT_STORE": f"sqlite:///{tmp_path / 'o.db'}"}
    with Runtime([TSK.from_file(ORCH, env=env)]) as rt:
        summary = rt.run_until_idle()
        flow: dict[str, list[str]] = {}
        for stored in rt.store.replay():
            e = stored.to_event()
            flow.setdefault(e.payload["order_id"], []).append(e.type)
        reserved = {k.decode(): int(v) for k, v in rt.client.hgetall("reserved").items()}
    assert flow["A-1"] == [
        "order_placed", "reserve_stock", "stock_reserved", "charge_payment", "payment_charged",
        "ship_order", "order_shipped", "order_completed",
    ]
    assert flow["A-2"] == [
        "order_placed", "reserve_stock", "stock_reserved", "charge_payment", "payment_declined",
        "release_stock", "stock_released", "order_failed",
    ]
    assert flow["A-3"] == ["order_placed", "reserve_stock", "stock_unavailable", "order_failed"]
    # the compensation gave the lamp back; the book stays reserved; the vase never was
    assert reserved == {"book": 1, "lamp": 0, "vase": 0}
    assert summary.dead_lettered == 0
