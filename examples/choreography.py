"""Choreography: services that only react to events (configs/app.tsk), run until idle.

Service A publishes `user_registered`; B sends a welcome email; C creates a profile; an
activity counter runs inline (sync). One registration has a bad email address: its
welcome email fails, is retried, then dead-lettered with the reason and the .tsk line.

    python examples/choreography.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tusk_events import TSK
from tusk_events.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent

with tempfile.TemporaryDirectory() as tmp:
    env = {"EVENT_BUS": "memory://choreography", "EVENT_STORE": f"sqlite:///{tmp}/events.db"}
    with Runtime([TSK.from_file(ROOT / "configs" / "app.tsk", env=env)]) as runtime:
        summary = runtime.run_until_idle()
        print(summary.render())
        print("\nthe event store, in order:")
        for stored in runtime.store.replay():
            e = stored.to_event()
            cause = e.causation_id[:8] if e.causation_id else "-"
            print(f"  {e.id[:8]}  caused by {cause:8}  {e.type:20} {e.payload}")
        for letter in runtime.dlq.list():
            print(f"\ndead letter in {letter.service} after {letter.attempts} attempts:\n  {letter.reason}")
