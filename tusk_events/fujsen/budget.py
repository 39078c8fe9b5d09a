"""Time and memory budgets for fujsen running in the caller's thread.

A fujsen runs in the thread that called it, so nothing is copied and a call costs almost
nothing. One watchdog thread looks at the running calls every ``WATCHDOG_TICK_S``; a call
past its deadline (or whose call made the process's memory grow past
``FUJSEN_MEMORY_LIMIT``) gets an :class:`Interrupt` raised asynchronously in its thread,
and again every ``FUJSEN_TIMEOUT_GRACE_S`` until it stops. The interrupt derives from
``BaseException`` and the policy turns bare ``except:`` into ``except Exception:``, so
the fujsen cannot swallow it, and the outcome is recorded in the thread's
:class:`CallState`: the caller gets ``FujsenTimeout`` even if the fujsen found some other
way to return.

Time blocked in helpers (waiting for Redis messages or SQL) does not count: helpers run
inside :func:`blocking`, which pauses the clock and never lets an interrupt land in host
code.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from tusk_events.defaults import (
    FUJSEN_MEMORY_LIMIT,
    FUJSEN_TIMEOUT_GRACE_S,
    SANDBOX_MAX_PRINT,
    WATCHDOG_TICK_S,
)

log = logging.getLogger("tusk_events.fujsen")

T = TypeVar("T")

# Two prototypes of one C function: raise an exception class in a thread, or clear it.
_set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
_clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)


class Interrupt(BaseException):
    """Raised asynchronously in a fujsen that ran out of budget. Never reaches the caller."""


def _clear_pending(thread_id: int) -> None:
    _clear_async_exc(thread_id, None)


_CLEAN: tuple[bool, bool, str | None] = (False, False, None)


class CallState:
    """The budget of the fujsen call running in one thread (one object per thread, reused)."""

    __slots__ = (
        "thread_id", "lock", "active", "deadline", "paused", "fired", "timed_out",
        "memory_exceeded", "violation", "rss0", "printed", "depth", "last_outcome",
    )

    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id
        self.lock = threading.Lock()
        self.active = False
        self.deadline = 0.0
        self.paused = 0
        self.fired = False
        self.timed_out = False
        self.memory_exceeded = False
        self.violation: str | None = None
        self.rss0: int | None = None
        self.printed = 0
        self.depth = 0
        self.last_outcome: tuple[bool, bool, str | None] = _CLEAN

    def begin(self, budget_s: float) -> tuple[Any, ...] | None:
        """Start a call; returns what a nested call must restore, or None for an outer one.

        The outcome flags are clean here: ``end`` resets whatever a call set.
        """
        if self.active:
            # a fujsen called from host code that a fujsen called (e.g. a sync handler run by
            # publish()): its own budget runs, even though the outer call is paused
            saved = (self.deadline, self.timed_out, self.memory_exceeded, self.violation, self.fired, self.paused)
            self.deadline = time.monotonic() + budget_s
            with self.lock:
                self.timed_out = self.memory_exceeded = self.fired = False
                self.violation = None
                self.paused = 0
            self.depth += 1
            return saved
        self.deadline = time.monotonic() + budget_s
        self.depth += 1
        self.active = True
        if not _watchdog_running:
            _ensure_watchdog()
        return None

    def finish(self, saved: tuple[Any, ...] | None, depth: int) -> tuple[bool, bool, str | None]:
        """Finish a call; returns (timed_out, memory_exceeded, violation) for the caller.

        An interrupt landing in the caller's bookkeeping cannot break it: ``depth`` is
        ``self.depth`` right after ``begin``, which makes this idempotent, so when an
        interrupt arrives before or just after it ran, running it again is right.
        """
        while True:
            try:
                with self.lock:
                    if self.depth < depth:
                        return self.last_outcome  # this call already ended (a retry)
                    self.last_outcome = outcome = self._end(saved)
                    return outcome
            except Interrupt:
                continue

    def end(self, saved: tuple[Any, ...] | None) -> tuple[bool, bool, str | None]:
        """Finish the innermost call (see ``finish``)."""
        return self.finish(saved, self.depth)

    def _end(self, saved: tuple[Any, ...] | None) -> tuple[bool, bool, str | None]:
        # caller holds self.lock
        self.depth -= 1
        if saved is None:
            self.active = False
            self.rss0 = None
            self.printed = 0
            if not (self.timed_out or self.memory_exceeded or self.violation or self.fired):
                return _CLEAN
            outcome = (self.timed_out, self.memory_exceeded, self.violation)
            if self.fired:
                _clear_pending(self.thread_id)
            self.timed_out = self.memory_exceeded = self.fired = False
            self.violation = None
            self.paused = 0
            return outcome
        # nested call: its outcome goes to the host code that called it; the outer
        # call resumes with its own state
        outcome = (self.timed_out, self.memory_exceeded, self.violation)
        if self.fired:
            _clear_pending(self.thread_id)
        (self.deadline, self.timed_out, self.memory_exceeded, self.violation, self.fired,
         self.paused) = saved
        return outcome


_local = threading.local()
_states: dict[int, CallState] = {}
_states_lock = threading.Lock()


def state() -> CallState:
    """This thread's call state."""
    try:
        return _local.state  # type: ignore[no-any-return]
    except AttributeError:
        st = CallState(threading.get_ident())
        _local.state = st
        with _states_lock:
            _states[st.thread_id] = st
        return st


def record_violation(message: str) -> None:
    """Remember a run-time violation so it is reported even if the fujsen swallows it.

    Only inside a call: host code that trips a guard outside one (a helper opened by the host)
    gets the exception, and must not leave a violation behind for this thread's next call.
    """
    st = state()
    if st.active and st.violation is None:
        st.violation = message


def record_print(text: str) -> None:
    st = state()
    if st.printed < SANDBOX_MAX_PRINT:
        # logging takes handler locks: no interrupt may land while one is held (the time counts)
        shielded(log.info, "fujsen print: %s", text.rstrip("\n")[: SANDBOX_MAX_PRINT - st.printed])
    st.printed += len(text)


def remaining() -> float:
    """Seconds left in the current call's budget (inf outside a fujsen)."""
    st = state()
    if not st.active:
        return float("inf")
    return st.deadline - time.monotonic()


def blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run host code from a fujsen: the clock is paused and no interrupt lands inside it."""
    st = state()
    if not st.active:
        return fn(*args, **kwargs)
    with st.lock:
        if st.fired:
            # the budget ran out just before: stop here, at a safe point
            _clear_pending(st.thread_id)
            raise Interrupt()
        st.paused += 1
    t0 = time.monotonic()
    try:
        return fn(*args, **kwargs)
    finally:
        with st.lock:
            st.paused -= 1
            st.deadline += time.monotonic() - t0


def shielded(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run host code from a fujsen with no interrupt landing inside it; its time still counts."""
    st = state()
    if not st.active:
        return fn(*args, **kwargs)
    with st.lock:
        if st.fired:
            _clear_pending(st.thread_id)
            raise Interrupt()
        st.paused += 1
    try:
        result = fn(*args, **kwargs)
    finally:
        with st.lock:
            st.paused -= 1
    if time.monotonic() >= st.deadline:
        # a loop spending its time in here is never seen running fujsen code: stop it here
        with st.lock:
            st.timed_out = True
        raise Interrupt()
    return result


# --- the watchdog -------------------------------------------------------------------------

_watchdog: threading.Thread | None = None
_watchdog_running = False
_watchdog_lock = threading.Lock()
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _ensure_watchdog() -> None:
    global _watchdog, _watchdog_running
    with _watchdog_lock:
        if _watchdog is None or not _watchdog.is_alive():
            _watchdog = threading.Thread(target=_watch, name="tusk-fujsen-watchdog", daemon=True)
            _watchdog.start()
        _watchdog_running = True


def _after_fork() -> None:
    # threads do not survive fork(): the child starts its own watchdog on first use
    global _watchdog, _watchdog_running, _watchdog_lock, _states_lock
    _watchdog, _watchdog_running = None, False
    _watchdog_lock = threading.Lock()
    _states_lock = threading.Lock()
    _states.clear()
    try:
        del _local.state
    except AttributeError:
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


HOST_FILES: set[str] = {__file__, logging.__file__, threading.__file__}
"""Source files of host code an interrupt must never land in (the executor adds its own):
while the thread's innermost Python frame is in one of them, the watchdog waits a tick."""


def _in_host_code(thread_id: int) -> bool:
    frame = sys._current_frames().get(thread_id)
    return frame is not None and frame.f_code.co_filename in HOST_FILES


def _fire(st: CallState) -> None:
    """Send the interrupt (caller holds st.lock)."""
    if _in_host_code(st.thread_id):
        return  # bookkeeping or logging: try again next tick, when it is back in the fujsen
    st.fired = True
    st.deadline = time.monotonic() + FUJSEN_TIMEOUT_GRACE_S
    _set_async_exc(st.thread_id, Interrupt)


def _watch() -> None:
    ticks = 0
    while True:
        time.sleep(WATCHDOG_TICK_S)
        ticks += 1
        running = [st for st in list(_states.values()) if st.active]
        if not running:
            if ticks % 500 == 0:
                _prune()
            continue
        rss = _rss()
        now = time.monotonic()
        for st in running:
            with st.lock:
                if not st.active or st.paused:
                    continue
                if rss is not None:
                    if st.rss0 is None:
                        st.rss0 = rss
                    elif rss - st.rss0 > FUJSEN_MEMORY_LIMIT:
                        st.memory_exceeded = True
                        _fire(st)
                        continue
                if now >= st.deadline:
                    st.timed_out = True
                    _fire(st)


def _prune() -> None:
    alive = {t.ident for t in threading.enumerate()}
    with _states_lock:
        for tid in [tid for tid, st in _states.items() if tid not in alive and not st.active]:
            del _states[tid]


__all__ = ["CallState", "Interrupt", "blocking", "record_violation", "remaining", "shielded", "state"]
