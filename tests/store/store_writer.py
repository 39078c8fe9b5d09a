"""A separate process writing to an event store, for the multi-process tests.

    python store_writer.py URL MODE TAG N

MODE ``single`` appends N events one by one, ``batch`` in append_many batches of 25, ``hang``
starts one append_many of N events and then blocks inside it (to be killed).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

from tusk_events.events import Event, new_event
from tusk_events.store import open_store


def main(url: str, mode: str, tag: str, n: int) -> None:
    with open_store(url) as store:

        def events(start: int, stop: int) -> list[Event]:
            return [new_event("proc", {"writer": tag, "i": i}) for i in range(start, stop)]

        if mode == "single":
            for e in events(0, n):
                assert store.append(e)
        elif mode == "batch":
            for start in range(0, n, 25):
                store.append_many(events(start, min(start + 25, n)))
        elif mode == "hang":

            def stalled() -> Iterator[Event]:
                yield from events(0, n)
                print("inside", flush=True)
                time.sleep(3600)

            store.append_many(stalled())
        else:
            raise SystemExit(f"unknown mode {mode}")
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
