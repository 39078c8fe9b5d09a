"""The bus without hiredis: the pure-Python RESP parser (what a plain `pip install` gets)."""

from __future__ import annotations

from tusk_events.bus import connect


def test_durable_and_broadcast_work_with_the_python_parser(url: str) -> None:
    with connect(url, parser="python", channel="tusk_events.python-parser") as bus:
        got: list[int] = []
        sent = bus.publish_many(("t", i) for i in range(5))
        sub = bus.subscribe(lambda e: got.append(e.payload), ["t"], group="g", dedup_ttl_s=60)
        assert sub.run_until_idle(timeout=5) == 5
        assert got == [e.payload for e in sent]
