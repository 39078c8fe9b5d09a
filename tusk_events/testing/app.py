"""A config under test: its services on a private bus and store, a virtual clock, stubs, assertions.

:class:`TuskApp` is what the ``tusk_app`` fixture hands a test. It is built from the public
pieces a user would assemble by hand — :class:`~tusk_events.config.TSK`,
:class:`~tusk_events.runtime.Runtime`, the runtime's signals and its dead-letter queue — plus
three seams those pieces offer: ``Runtime(clock=...)`` for retry backoffs,
``TSK.bind_helpers(time=...)`` for the fujsen's ``time`` and a TSK subclass whose
``fujsen()`` can hand back a stub.

Unacknowledged bus entries wait for their service's ``visibility_timeout`` before they are
delivered again; the app makes that wait virtual by setting the entries' idle time on the
bus (``XCLAIM ... IDLE ms JUSTID``: same owner, same delivery count), which works the same
on ``memory://`` and a real Redis.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tusk_events.bus import redis_client
from tusk_events.config import TSK
from tusk_events.defaults import (
    BUS_ENV_VAR,
    STORE_ENV_VAR,
    TESTING_BUS_PREFIX,
    TESTING_IDLE_SLICE_S,
    TESTING_IDLE_TIMEOUT_S,
)
from tusk_events.errors import ConfigError, FujsenError
from tusk_events.events import Event
from tusk_events.fujsen.helpers import SqlHelpers, make_functions
from tusk_events.runtime import Runtime, Summary, signals
from tusk_events.testing.assertions import Assertions
from tusk_events.testing.clock import VirtualClock, VirtualTimeHelper
from tusk_events.testing.records import Letter, Published, report
from tusk_events.testing.store import StoreView

Paths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


class _StubbableTSK(TSK):
    """A TSK whose ``fujsen(section, name)`` returns a stub when the test set one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.stubs: dict[tuple[str, str], Callable[..., Any]] = {}
        super().__init__(*args, **kwargs)

    def fujsen(self, section: str, name: str) -> Callable[..., Any]:
        stub = self.stubs.get((section, name))
        return stub if stub is not None else super().fujsen(section, name)


class TuskApp(Assertions):
    """One or more ``.tsk`` configs running for one test. See the README, "Testing your configs".

    ``env``: what ``@env`` reads (``EVENT_BUS``/``EVENT_STORE`` are the test's own);
    ``bus``: a real Redis instead of a private ``memory://`` (it must be empty, or ``flush``);
    ``store``: a store URL instead of a temporary SQLite file; ``startup``: run the startup
    fujsen on the first :meth:`run_until_idle`; ``root``: where relative paths are also
    looked for; ``tmp_dir``: where the temporary store goes.

        >>> app = TuskApp("configs/app.tsk")
        >>> app.run_until_idle().assert_published("welcome_email_sent", payload={"user_id": 1})
    """

    def __init__(
        self,
        paths: Paths,
        *,
        env: Mapping[str, str] | None = None,
        bus: str | None = None,
        store: str | None = None,
        startup: bool = True,
        clock: VirtualClock | None = None,
        flush: bool = False,
        root: str | os.PathLike[str] | None = None,
        tmp_dir: str | os.PathLike[str] | None = None,
        isolation: str = "inline",
    ) -> None:
        self.clock = clock or VirtualClock()
        self.bus_url = bus or TESTING_BUS_PREFIX + uuid.uuid4().hex[:12]
        self._own_tmp = tmp_dir is None
        self._own_store = store is None
        self._tmp = Path(tempfile.mkdtemp(prefix="tusk-test-") if tmp_dir is None else tmp_dir)
        self._tmp.mkdir(parents=True, exist_ok=True)
        self.store_url = store or f"sqlite:///{self._tmp / 'events.db'}?synchronous=off"  # a test's store need not outlive a power cut
        self._owns_bus_data = self._claim_bus(flush)
        full_env = {**dict(env or {}), BUS_ENV_VAR: self.bus_url, STORE_ENV_VAR: self.store_url}
        self.configs: list[_StubbableTSK] = []
        try:
            for path in _resolve(paths, root):
                cfg = _StubbableTSK.from_file(path, env=full_env, isolation=isolation)
                assert isinstance(cfg, _StubbableTSK)
                _pin(cfg, self.bus_url, self.store_url)
                helpers: dict[str, Any] = {"time": VirtualTimeHelper(self.clock)}
                cfg.bind_helpers(**helpers)
                self.configs.append(cfg)
            self.runtime = Runtime(
                self.configs, bus_url=self.bus_url, store_url=self.store_url, consumer="tusk-test", clock=self.clock
            )
        except BaseException:
            if self._own_tmp:
                shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        self.store = StoreView(self.runtime.store)
        self._startup = startup
        self._lock = threading.Lock()
        self._published: dict[str, Published] = {}
        self._handled: list[tuple[str, Published]] = []
        self._receivers: list[tuple[signals.Signal, Callable[..., Any]]] = [
            (signals.published, self._on_published),
            (signals.handled, self._on_handled),
        ]
        for sig, receiver in self._receivers:
            sig.connect(receiver)
        self.clock.on_advance(self._age_pending)
        self._closed = False

    # -- driving -----------------------------------------------------------------------

    def publish(self, type: str, payload: Any = None, *, metadata: Mapping[str, Any] | None = None) -> Published:
        """Publish an event as host code would (stored, on the bus, sync services run now)."""
        return self._record(self.runtime.publish(type, payload, metadata=metadata))

    def redeliver(self, event: Event | Published) -> None:
        """Deliver an event that was delivered before, same id: what an at-least-once bus does."""
        self.runtime.publish_event(event.event if isinstance(event, Published) else event)

    def run_until_idle(self, *, timeout: float = TESTING_IDLE_TIMEOUT_S) -> TuskApp:
        """Handle until nothing is left; runs the startup fujsen the first time (unless ``startup=False``).

        Backoffs take no time (virtual clock); entries waiting for a visibility timeout get
        it at once (the clock is advanced to it). Fails with what is left after ``timeout``
        real seconds.
        """
        deadline = time.monotonic() + timeout
        startup, self._startup = self._startup, False
        first = True
        while True:
            waiting = self._waiting()
            if not first and not waiting:
                return self
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not idle after {timeout:g} s: {waiting}\n" + report(self.published(), self.dead_letters())
                )
            # nothing runs between passes: an unacknowledged entry waits for its visibility timeout
            due = [vt for _, _, pending, vt in waiting if pending]
            if due:
                self.clock.advance(max(due))
            self.runtime.run_until_idle(startup=startup, timeout=TESTING_IDLE_SLICE_S)
            startup, first = False, False

    # -- what happened -------------------------------------------------------------------

    def published(self, type: str | None = None) -> list[Published]:
        """Every event published through the app (cause before effect), or those of one type."""
        with self._lock:
            items = list(self._published.values())
        return items if type is None else [p for p in items if p.type == type]

    def handled(self, service: str) -> list[Published]:
        """The events ``service`` handled (its handler returned), in order."""
        self._check_service(service)
        with self._lock:
            return [p for s, p in self._handled if s == service]

    def dead_letters(self, service: str | None = None) -> list[Letter]:
        """Dead-lettered events (of one service, or all) with reason, traceback and ``.tsk`` line."""
        if service is not None:
            self._check_service(service)
        return [Letter.of(d) for d in self.runtime.dlq.list(service)]

    def _check_service(self, service: str) -> None:
        names = [svc.spec.name for svc in self.runtime.services]
        if service not in names:
            raise ConfigError(f"no service [{service}] in the config (services: {', '.join(names) or 'none'})")

    @property
    def redis(self) -> Any:
        """A redis-py client on the app's bus: what fujsen reach with ``redis.from_url(event_bus)``."""
        return redis_client(self.bus_url)

    @property
    def summary(self) -> Summary:
        return self.runtime.summary

    # -- stubs -------------------------------------------------------------------------------

    def stub(self, helper: str, fake: Any) -> None:
        """Give every fujsen ``fake`` as the helper ``helper`` (``redis``, ``time``, a new name)."""
        helpers: dict[str, Any] = {helper: fake}
        for cfg in self.configs:
            cfg.bind_helpers(**helpers)
        self._rebind()

    def stub_fujsen(self, section: str, name: str, fn: Callable[..., Any]) -> None:
        """Run ``fn`` (a Python callable, same arguments) instead of ``section``'s fujsen ``name``.

        An exception from ``fn`` counts as a failure of the fujsen: retried, then dead-lettered.
        """
        for cfg in self.configs:
            if cfg.get_section(section) is not None:
                if name not in cfg.fujsen_names(section):
                    known = ", ".join(cfg.fujsen_names(section)) or "none"
                    raise ConfigError(f"no fujsen '{name}' in [{section}] to stub (available: {known})")
                cfg.stubs[(section, name)] = _as_fujsen(section, name, fn)
                self._rebind()
                return
        known = ", ".join(sorted(s for c in self.configs for s in c.sections()))
        raise ConfigError(f"no section [{section}] to stub (sections: {known})")

    def _rebind(self) -> None:
        # bound handlers keep the globals they were made with: make them again
        for svc in self.runtime.services:
            svc.handler = svc.tsk.fujsen(svc.spec.name, svc.spec.handler)

    # -- bookkeeping ---------------------------------------------------------------------------

    def _record(self, event: Event, service: str | None = None) -> Published:
        with self._lock:
            record = self._published.get(event.id)
            if record is None:
                record = self._published[event.id] = Published(event, service, self._published)
            return record

    def _on_published(self, runtime: Runtime, event: Event, service: str | None = None, **_: Any) -> None:
        if runtime is self.runtime:
            self._record(event, service)

    def _on_handled(self, runtime: Runtime, service: str, event: Event, **_: Any) -> None:
        if runtime is self.runtime:
            record = self._record(event)
            with self._lock:
                self._handled.append((service, record))

    def _durable(self) -> list[tuple[str, str, float]]:
        """(event type, group, visibility timeout) of every durable subscription."""
        return [
            (t, svc.spec.group, svc.spec.visibility_timeout_s)
            for svc in self.runtime.services if svc.spec.delivery == "durable"
            for t in svc.spec.types
        ]

    def _waiting(self) -> list[tuple[str, str, int, float]]:
        """(type, group, pending, visibility timeout) of the groups with entries not yet handled."""
        durable = self._durable()
        info = self.runtime.bus.stream_info(sorted({t for t, _, _ in durable}))
        out = []
        for t, group, vt in durable:
            g = info[t].groups.get(group) if t in info else None
            if g is not None and (g.pending or g.lag):
                out.append((t, group, g.pending, vt))
        return out

    def _age_pending(self, seconds: float) -> None:
        """Let ``seconds`` pass for the bus's unacknowledged entries (their visibility timeout)."""
        client = redis_client(self.bus_url)
        bus: Any = self.runtime.bus
        for t, group, _ in self._durable():
            key = bus.key(t)
            if not client.exists(key):
                continue
            rows: list[dict[str, Any]] = client.xpending_range(key, group, "-", "+", 10_000)
            for row in rows:
                idle = int(row["time_since_delivered"]) + int(seconds * 1000)
                client.xclaim(key, group, row["consumer"], 0, [row["message_id"]], idle=idle, justid=True)

    # -- the bus of the test -----------------------------------------------------------------

    def _claim_bus(self, flush: bool) -> bool:
        """On a real Redis, whether its database is the test's (empty, or emptied with ``flush``)."""
        if self.bus_url.startswith("memory://"):
            return True
        client = redis_client(self.bus_url)
        if flush:
            client.flushdb()
        elif client.dbsize():
            raise ConfigError(
                f"the bus {self.bus_url} is not empty: a test app needs a database of its own "
                "(pass flush=True to empty it before and after the test)"
            )
        return True

    def close(self) -> None:
        """Stop the services and drop what the test made (bus data, the temporary store)."""
        if self._closed:
            return
        self._closed = True
        for sig, receiver in self._receivers:
            sig.disconnect(receiver)
        self.runtime.close()
        if self.bus_url.startswith("memory://"):
            from tusk_events.bus import memory

            memory.forget(self.bus_url)
        elif self._owns_bus_data:
            redis_client(self.bus_url).flushdb()
        if self._own_store:
            self.store.close()  # a store the test named may still be in use elsewhere: left open
        if self._own_tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> TuskApp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        names = ", ".join(c.path or "<string>" for c in self.configs)
        return f"<TuskApp {names} on {self.bus_url}>"


def _resolve(paths: Paths, root: str | os.PathLike[str] | None) -> list[Path]:
    """Each path as given when it exists, else relative to ``root`` (pytest's rootdir)."""
    items: Iterable[Any] = [paths] if isinstance(paths, (str, os.PathLike)) else paths
    out = []
    for p in items:
        path = Path(p)
        if not path.exists() and root is not None and (Path(root) / path).exists():
            path = Path(root) / path
        out.append(path)
    return out


def _pin(cfg: TSK, bus: str, store: str) -> None:
    """Point a config that names its bus or store outright (not through @env) at the test's."""
    pinned = False
    for values in cfg.sections().values():
        if isinstance(values.get("event_bus"), str) and values["event_bus"] != bus:
            values["event_bus"], pinned = bus, True
        if isinstance(values.get("event_store"), str) and values["event_store"] != store:
            values["event_store"], pinned = store, True
    if pinned:
        cfg.bind_helpers(**make_functions(SqlHelpers(store)))


def _as_fujsen(section: str, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FujsenError:
            raise
        except Exception as err:  # noqa: BLE001 - a stub fails like the fujsen it stands for
            raise FujsenError(f"stub of [{section}] {name}: {type(err).__name__}: {err}") from err

    return call


__all__ = ["TuskApp"]
