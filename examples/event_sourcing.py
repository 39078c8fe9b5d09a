"""Event sourcing with replay: the docs' `store_event` / `replay_events` fujsen on SQLite.

The event store is a SQLite file in a temporary folder (set EVENT_STORE to use another,
e.g. postgresql://...). Replays run all, by type, and since a time, as in the docs.

    python examples/event_sourcing.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from tusk_events import TSK

ROOT = Path(__file__).resolve().parent.parent

with tempfile.TemporaryDirectory() as tmp:
    cfg = TSK.from_file(ROOT / "configs" / "event_sourcing.tsk", env={"EVENT_STORE": f"sqlite:///{tmp}/events.db"})
    store = cfg.fujsen("event_sourcing", "store_event")
    replay = cfg.fujsen("event_sourcing", "replay_events")

    store("account_opened", {"account": "A-1", "owner": "Ada"})
    store("money_deposited", {"account": "A-1", "amount": 100})
    before_withdrawal = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    time.sleep(1.1)  # datetime('now') has one-second resolution
    store("money_withdrawn", {"account": "A-1", "amount": 30})

    everything = replay()
    print(f"{len(everything)} events:")
    for e in everything:
        print(f"  {e['timestamp']}  {e['event_type']:16} {e['payload']}")

    # rebuild a projection: the balance, from the events alone
    balance = 0
    for e in everything:
        if e["event_type"] == "money_deposited":
            balance += e["payload"]["amount"]
        elif e["event_type"] == "money_withdrawn":
            balance -= e["payload"]["amount"]
    print("balance rebuilt from events:", balance)
    assert balance == 70

    deposits = replay("money_deposited")
    recent = replay(None, before_withdrawal)
    print("deposits:", [e["payload"] for e in deposits])
    print(f"since {before_withdrawal}:", [e["event_type"] for e in recent])
    assert [e["event_type"] for e in recent] == ["money_withdrawn"]
