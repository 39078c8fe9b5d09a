"""The runtime's signals: published, handled, failed, retried, dead-lettered.

The runtime only *sends* them; the summary, metrics and logs are receivers. A signal with
no receiver costs one attribute test, so the hot path pays for nothing it does not use.

    from tusk_events.runtime import signals

    @signals.handled.connect
    def on_handled(service, event, seconds, **_):
        print(service, event.type, seconds)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Receiver = Callable[..., Any]


class Signal:
    """A named event with receivers called as ``receiver(**fields)``; receivers never break the sender."""

    __slots__ = ("name", "receivers")

    def __init__(self, name: str) -> None:
        self.name = name
        self.receivers: tuple[Receiver, ...] = ()

    def connect(self, receiver: Receiver) -> Receiver:
        if receiver not in self.receivers:
            self.receivers = self.receivers + (receiver,)
        return receiver

    def disconnect(self, receiver: Receiver) -> None:
        self.receivers = tuple(r for r in self.receivers if r is not receiver)

    def send(self, **fields: Any) -> None:
        for receiver in self.receivers:
            try:
                receiver(**fields)
            except Exception:  # noqa: BLE001 - an observer must not break event handling
                log.exception("receiver %r of signal %r failed", receiver, self.name)

    def __repr__(self) -> str:
        return f"<Signal {self.name} ({len(self.receivers)} receivers)>"


# Every signal also carries ``runtime``: the Runtime that sent it.

published = Signal("published")
"""``event``, ``service`` (the publisher, or None for host code)."""

handled = Signal("handled")
"""``service``, ``event``, ``seconds`` (handler time), ``attempt``."""

failed = Signal("failed")
"""``service``, ``event``, ``error`` (a FujsenError), ``attempt``, ``seconds``."""

retried = Signal("retried")
"""``service``, ``event``, ``attempt`` (the one about to run), ``delay``."""

dead_lettered = Signal("dead_lettered")
"""``service``, ``event``, ``reason``, ``attempts``."""

ALL = (published, handled, failed, retried, dead_lettered)

__all__ = ["ALL", "Signal", "dead_lettered", "failed", "handled", "published", "retried"]
