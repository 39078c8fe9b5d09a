"""The store is the log, the bus delivers: the relay puts stored events on the bus.

Every event the runtime publishes is first stored with an outbox row (host code's
``Runtime.publish``: one transaction; a handler's ``publish``: in its handling's transaction).
Then it is sent on the bus and its outbox row deleted (confirmations are batched). A send that
fails (the bus is down) leaves the row; the relay pass publishes rows older than
``RELAY_GRACE_S``, with their stored ids, so consumers see the same event however often it
is sent. A caller retrying ``Runtime.publish`` with the same id stores nothing new.

The pass also watches the bus for data loss: a random id is written once under
``BUS_EPOCH_KEY`` and remembered in the store. When the key is gone or different (a Redis
restarted without persistence, the in-process bus of a new process), every stored event of the
last ``redeliver_since`` seconds that a service has no tracking row for is delivered again
(durable services: on the bus; sync services: handled here), and the counts are logged and kept
in :attr:`Relay.report`. Dead-lettered events have a tracking row and are left alone. On a
Redis Cluster the key carries the bus's hash tag, so it lives on the master that holds the bus.

A restart can also lose only the tail and keep the epoch (Redis back from its last RDB
snapshot, an AOF fsynced every second after a host crash, a replica promoted before it caught
up, on one server or on the cluster master that serves the bus's slot). So the run id of the
server holding the bus (new at every start, different on a promoted replica) is remembered too;
when it changes, the durable services get the same re-delivery. Events that survived on the bus
then arrive twice, and the second copy meets the tracking row: acknowledged without running the
handler.

Several runtimes may run the relay on one store: a lease in the store (``RELAY_LEASE_S``,
renewed each pass) lets one of them work at a time; and since a second send of an event only
meets the consumers' tracking rows, a pass that overlaps a takeover costs time, not effects.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tusk_events.bus import Bus
from tusk_events.bus.base import redact_url
from tusk_events.bus.redis_cluster import serving_node
from tusk_events.defaults import (
    BUS_EPOCH_KEY,
    REDELIVER_SINCE_S,
    RELAY_BATCH,
    RELAY_CONFIRM_BATCH,
    RELAY_GRACE_S,
    RELAY_INTERVAL_S,
    RELAY_LEASE_S,
)
from tusk_events.errors import BusError, ConfigError, StoreError
from tusk_events.events import Event
from tusk_events.store import EventStore

log = logging.getLogger(__name__)

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def redeliver_since(value: Any) -> float:
    """The ``redeliver_since`` setting in seconds: a number, or "90s", "15m", "24h", "7d"."""
    if value is None:
        return REDELIVER_SINCE_S
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        unit = _UNITS.get(text[-1:])
        try:
            number = float(text[:-1] if unit else text)
        except ValueError:
            number = -1.0
        if number >= 0:
            return number * (unit or 1.0)
    raise ConfigError(
        f"redeliver_since must be seconds or a duration like '15m', '24h', '7d' (got {value!r})"
    )


@dataclass
class Target:
    """A service the re-delivery serves: its name, types and how it receives events."""

    name: str
    types: Sequence[str] | None
    """None: every type (a subscription to all types, as ``Bus.subscribe(types=None)``)."""
    sync: bool


@dataclass
class RelayReport:
    """What the relay did since the runtime started."""

    sent_from_outbox: int = 0
    redelivered: dict[str, int] = field(default_factory=dict)
    """Events re-delivered from the store, per service."""
    redelivery_passes: int = 0
    recovery_s: float | None = None
    """Duration of the last re-delivery pass."""
    send_failures: int = 0


class Relay:
    """Outbox sending and re-delivery for one runtime; thread-safe."""

    def __init__(
        self,
        store: EventStore,
        bus: Bus,
        client: Any,
        *,
        bus_url: str,
        owner: str,
        targets: Iterable[Target] = (),
        handle_sync: Callable[[str, Event], Any] | None = None,
        redeliver_since_s: float,
    ) -> None:
        self.store = store
        self.bus = bus
        self.client = client
        self.owner = owner
        self.targets = list(targets)
        self.handle_sync = handle_sync
        self.redeliver_since_s = redeliver_since_s
        self.epoch_key = f"bus_epoch:{redact_url(bus_url)}"
        self.server_key = f"bus_server:{redact_url(bus_url)}"
        # on a Redis Cluster the epoch lives in the slot of the bus's keys: a master that comes back
        # empty loses both, so the loss is seen (an untagged key could sit on a master that did not)
        self.bus_epoch_key = getattr(bus, "key_tag", "") + BUS_EPOCH_KEY
        # an embedded bus starts empty in every process by design: its fresh epoch is news, not a loss
        self._notice = logging.INFO if bus_url.startswith("memory://") else logging.WARNING
        self.report = RelayReport()
        self._confirmed: list[str] = []
        self._confirmed_since = 0.0
        self._lock = threading.Lock()
        self._pass_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._leased = False
        self.before_pass: Callable[[], Any] | None = None
        """Run first in each pass and at stop (the tracker's batched rows)."""

    # --- sending -------------------------------------------------------------------------

    def store_event(self, event: Event) -> bool:
        """Store ``event`` with its outbox row; False when this id was stored before."""
        return self.store.append_outbox(event)

    def send(self, events: Iterable[Event]) -> bool:
        """Publish stored events on the bus; on failure leave them to the relay pass."""
        sent = []
        try:
            for event in events:
                self.bus.publish_event(event)
                sent.append(event.id)
        except BusError as e:
            with self._lock:
                self.report.send_failures += 1
            log.warning("bus unavailable, events left in the outbox for the relay: %s", e)
            self._confirm(sent)
            return False
        self._confirm(sent)
        return True

    def _confirm(self, ids: list[str]) -> None:
        if not ids:
            return
        with self._lock:
            if not self._confirmed:
                self._confirmed_since = time.monotonic()
            self._confirmed.extend(ids)
            due = (
                len(self._confirmed) >= RELAY_CONFIRM_BATCH
                or time.monotonic() - self._confirmed_since > RELAY_GRACE_S / 4
            )
        if due:
            self.flush()

    def flush(self) -> None:
        """Delete the outbox rows of everything sent so far."""
        with self._lock:
            ids, self._confirmed = self._confirmed, []
        if not ids:
            return
        try:
            self.store.confirm(ids)
        except StoreError as e:  # rows stay; the relay sends them again (same ids)
            log.warning("cannot confirm %d outbox rows: %s", len(ids), e)

    # --- the pass --------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> bool:
        """One relay pass; False when another runtime holds the lease (nothing done)."""
        with self._pass_lock:
            if self.before_pass is not None:
                self.before_pass()
            now = time.time() if now is None else now
            if not self.store.lease("relay", self.owner, RELAY_LEASE_S, now):
                return False
            self._leased = True
            self.flush()
            self._send_outbox(now)
            self._watch_bus()
            return True

    def _send_outbox(self, now: float) -> None:
        while True:
            stored = self.store.outbox(now - RELAY_GRACE_S, RELAY_BATCH)
            if not stored:
                return
            events = [s.to_event() for s in stored]
            if not self.send(events):
                return
            self.flush()
            with self._lock:
                self.report.sent_from_outbox += len(events)
            if len(stored) < RELAY_BATCH:
                return

    def _watch_bus(self) -> None:
        try:
            self.client.set(self.bus_epoch_key, uuid.uuid4().hex, nx=True)
            raw = self.client.get(self.bus_epoch_key)
            server = _server_id(self.client, self.bus_epoch_key)
        except Exception as e:  # noqa: BLE001 - any client failure: the bus is down, try later
            log.debug("cannot read the bus epoch: %s", e)
            return
        epoch = raw.decode() if isinstance(raw, bytes) else str(raw)
        known = self.store.meta(self.epoch_key)
        known_server = self.store.meta(self.server_key) if server else None
        if known is not None and known != epoch:
            log.log(self._notice, "the bus lost its data (epoch %s, was %s): re-delivering from the store",
                    epoch, known)
            self.redeliver()
        elif known is not None and known_server is not None and known_server != server:
            # a restart that kept the epoch may still have lost the tail: an RDB snapshot, an
            # AOF fsynced each second after a host crash, a replica promoted before it caught up
            log.warning("the server holding the bus changed (%s, was %s): a restart or a failover; "
                        "re-delivering what no "
                        "service has handled yet; copies still on the bus are acknowledged unrun",
                        server, known_server)
            self.redeliver(bus_only=True)
        if known != epoch:  # first sight of this bus: its history was delivered before tracking
            self.store.set_meta(self.epoch_key, epoch)
        if server and known_server != server:
            self.store.set_meta(self.server_key, server)

    def redeliver(self, since_s: float | None = None, *, bus_only: bool = False) -> dict[str, int]:
        """Deliver again every stored event of the look-back a service has no tracking row for.

        ``bus_only``: the services that receive events on the bus only (after a bus restart;
        sync services never depended on it). Returns the counts per service (also logged and
        added to :attr:`report`).
        """
        t0 = time.monotonic()
        since = time.time() - (self.redeliver_since_s if since_s is None else since_s)
        counts: dict[str, int] = {}
        on_bus: set[str] = set()
        for target in self.targets:
            if bus_only and target.sync:
                continue
            after = 0
            while True:
                batch = self.store.untracked(target.name, target.types, since, after, RELAY_BATCH)
                if not batch:
                    break
                after = batch[-1].seq
                events = [s.to_event() for s in batch]
                if target.sync:
                    assert self.handle_sync is not None
                    for event in events:
                        self.handle_sync(target.name, event)
                else:
                    fresh = [e for e in events if e.id not in on_bus]
                    on_bus.update(e.id for e in fresh)
                    if fresh and not self.send(fresh):
                        raise BusError("the bus failed during re-delivery from the store")
                counts[target.name] = counts.get(target.name, 0) + len(events)
                if len(batch) < RELAY_BATCH:
                    break
        self.flush()
        seconds = time.monotonic() - t0
        with self._lock:
            self.report.redelivery_passes += 1
            self.report.recovery_s = seconds
            for name, n in counts.items():
                self.report.redelivered[name] = self.report.redelivered.get(name, 0) + n
        log.log(logging.WARNING if counts else self._notice, "re-delivered from the store in %.2f s: %s", seconds,
                ", ".join(f"{k} {v}" for k, v in counts.items()) or "nothing missing")
        return counts

    # --- background ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="tusk-relay", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(RELAY_INTERVAL_S):
            try:
                self.tick()
            except Exception as e:  # noqa: BLE001 - a failed pass is retried on the next one
                log.warning("relay pass failed: %s", e)

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()
        if self.before_pass is not None:
            self.before_pass()
        self.flush()
        if self._leased:  # hand the outbox over at once rather than after RELAY_LEASE_S
            self._leased = False
            try:
                self.store.lease("relay", self.owner, 0.0, 0.0)
            except StoreError as e:
                log.debug("cannot release the relay lease: %s", e)


def _server_id(client: Any, key: str = "") -> str:
    """Who holds the bus now: the Redis run id (new at every start), or "" when unknown.

    On a Redis Cluster it is the run id of the master serving ``key``'s slot, named with its
    address: a replica that took over, or that master restarted, shows as a change.
    """
    node = serving_node(client, key) if key else None
    try:
        info = client.info("server", target_nodes=node) if node is not None else client.info("server")
    except Exception:  # noqa: BLE001 - a client without INFO (an embedded bus): no restarts to see
        return ""
    if not isinstance(info, dict):
        return ""
    if "run_id" in info:
        return f"{node.name}/{info['run_id']}" if node is not None else str(info["run_id"])
    # a cluster client asked every node: any of them changing is a change
    ids = sorted(str(v["run_id"]) for v in info.values() if isinstance(v, dict) and "run_id" in v)
    return ",".join(ids)


__all__ = ["Relay", "RelayReport", "Target", "redeliver_since"]
