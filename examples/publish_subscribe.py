"""The docs' publish/subscribe example, unchanged fujsen, on the embedded bus.

`configs/event_system.tsk` publishes with Redis PUBLISH and subscribes with `pubsub.listen()`;
here the bus is `memory://`, so it runs with no server. A subscriber runs the docs'
`subscribe_events` fujsen in a background thread and receives only the types it asked for.

    python examples/publish_subscribe.py
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

from tusk_events import TSK

ROOT = Path(__file__).resolve().parent.parent

event_config = TSK.from_file(ROOT / "configs" / "event_system.tsk", env={"EVENT_BUS": "memory://example"})
received: queue.Queue[dict] = queue.Queue()


def handle_event(event: dict) -> None:
    print(f"Received event: {event['type']} at {event['timestamp']:.3f} payload={event['payload']}")
    received.put(event)


# Subscribing to events (in a background thread): waits for messages forever
threading.Thread(
    target=event_config.execute_fujsen,
    args=("event_system", "subscribe_events", handle_event, ["user_registered"]),
    daemon=True,
).start()
time.sleep(0.2)  # let the subscriber subscribe: pub/sub delivers only to live listeners

# Publishing events: the subscriber asked for user_registered only
event_config.execute_fujsen("event_system", "publish_event", "user_registered", {"user_id": 123})
event_config.execute_fujsen("event_system", "publish_event", "user_deleted", {"user_id": 7})
event_config.execute_fujsen("event_system", "publish_event", "user_registered", {"user_id": 124})

got = [received.get(timeout=5)["payload"]["user_id"] for _ in range(2)]
assert got == [123, 124], got
print("the subscriber saw user_registered only:", got)
