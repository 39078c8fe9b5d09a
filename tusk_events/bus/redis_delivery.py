"""What a durable Redis consumer holds in flight: claim renewal, release, attempt counts, read size.

Apart from the consumer loop (``redis_bus.DurableSubscription``) because it is the part that runs
*beside* the loop: a heartbeat thread renews, on a pooled connection, the claim of every entry
the consumer has read and not yet acknowledged, while the loop's own connection is busy
(or idle inside a long handler). Without it an entry waits ``visibility_timeout`` from its read,
not from its handler's start: a batch of 100 entries of 0.3 s each outlives the default 30 s,
and the rest of the batch is reclaimed and run a second time although nothing failed.

The rules:

* entries are *held* from their read (or claim) until acknowledged; an entry whose handler
  raised is dropped at once (not renewed), so it is retried after the visibility timeout;
* entries given up on (abandoned at the end of a stop's grace period, or held when a run
  ended on an error) are *released*: ``XCLAIM ... IDLE <timeout>`` makes them claimable at
  once by any consumer, without waiting out the timeout;
* with attempt tracking, ``INCR tusk:attempt:<group>:<event id>`` before each handler start
  counts real attempts (the counter goes with the ack); Redis's delivery count also counts
  reads of entries that were never started (released, or behind a crash in the same batch);
* the read size follows the handlers: about ``BUS_READ_AHEAD_S`` of work per read, so slow
  handlers read one entry at a time and little is left read-but-not-started at a stop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from tusk_events.defaults import ATTEMPT_PREFIX, BUS_HEARTBEAT_FRACTION, BUS_READ_AHEAD_S

log = logging.getLogger(__name__)

_EWMA = 0.2
"""Weight of the newest handler time in the running average that sizes reads."""


class DeliveryTracking:
    """Mixed into the durable subscription; expects ``_bus``, ``_group_b``, ``_consumer_b``,
    ``visibility_timeout_ms``, ``batch`` and ``_where()`` from it."""

    _bus: Any
    _group_b: bytes
    _consumer_b: bytes
    visibility_timeout_ms: int
    batch: int

    def _where(self) -> str:  # pragma: no cover - the subscription's
        raise NotImplementedError

    def _init_tracking(self, *, group: str, track_attempts: bool, ttl_s: int) -> None:
        self._track = bool(track_attempts)
        self._attempt_prefix = f"{getattr(self._bus, 'key_tag', '')}{ATTEMPT_PREFIX}{group}:".encode()
        self._attempt_ttl = max(1, int(ttl_s))
        self._held: dict[bytes, dict[bytes, None]] = {}
        self._held_lock = threading.Lock()
        self._per_event_s: float | None = None
        self.read_count = 1
        """Entries asked for per read: 1 until handler times are known, then up to ``batch``."""
        self.renewals = 0
        """Heartbeat rounds that renewed at least one claim (for tests and metrics)."""
        self.released = 0
        """Entries given up on and released for any consumer to claim."""

    # --- held entries ------------------------------------------------------------

    def _hold(self, key: bytes, mids: Sequence[bytes]) -> None:
        with self._held_lock:
            held = self._held.setdefault(key, {})
            for m in mids:
                held[m] = None

    def _unhold(self, key: bytes, mids: Sequence[bytes]) -> None:
        with self._held_lock:
            held = self._held.get(key)
            if held:
                for m in mids:
                    held.pop(m, None)

    def _drop_held(self) -> None:
        """Forget everything (after a lost connection: what was read is no longer renewed)."""
        with self._held_lock:
            self._held = {}

    def _held_now(self) -> dict[bytes, list[bytes]]:
        with self._held_lock:
            return {k: list(v) for k, v in self._held.items() if v}

    def _release_commands(self, held: dict[bytes, list[bytes]]) -> list[tuple[Any, ...]]:
        """XCLAIM to ourselves with the idle time set past the timeout: claimable by anyone now."""
        idle = self.visibility_timeout_ms + 1
        return [
            (b"XCLAIM", k, self._group_b, self._consumer_b, 0, *ids, b"IDLE", idle, b"JUSTID")
            for k, ids in held.items()
        ]

    # --- heartbeat ----------------------------------------------------------------

    def _start_heartbeat(self) -> threading.Event:
        done = threading.Event()
        threading.Thread(
            target=self._heartbeat, args=(done,), name=f"tusk-bus-heartbeat-{self._group_b.decode()}", daemon=True
        ).start()
        return done

    def _heartbeat(self, done: threading.Event) -> None:
        every = max(0.005, self.visibility_timeout_ms / 1000 / BUS_HEARTBEAT_FRACTION)
        while not done.wait(every):
            held = self._held_now()
            if not held:
                continue
            try:
                # min-idle 0 + JUSTID: resets the idle time, leaves the delivery count alone
                self._bus._once(
                    [(b"XCLAIM", k, self._group_b, self._consumer_b, 0, *ids, b"JUSTID") for k, ids in held.items()]
                )
                self.renewals += 1
            except Exception as exc:  # noqa: BLE001 - the loop notices a lost server itself
                log.debug("%s: renewing in-flight claims failed: %s", self._where(), exc)

    # --- attempts and read size ---------------------------------------------------

    def _attempt_commands(self, event_id: str) -> tuple[bytes, list[tuple[Any, ...]]]:
        key = self._attempt_prefix + event_id.encode()
        return key, [(b"INCR", key), (b"EXPIRE", key, self._attempt_ttl)]

    def _timed(self, seconds: float) -> None:
        """Feed one handler time into the read size."""
        avg = self._per_event_s
        avg = seconds if avg is None else avg + _EWMA * (seconds - avg)
        self._per_event_s = avg
        self.read_count = max(1, min(self.batch, int(BUS_READ_AHEAD_S / max(avg, 1e-6))))


__all__ = ["DeliveryTracking"]
