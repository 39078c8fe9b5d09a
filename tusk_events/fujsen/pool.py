"""The worker pool: persistent worker processes, their life cycle, and the calls that hold them.

See :mod:`tusk_events.fujsen.isolation` for what a worker is and what the parent enforces.
A call holds one worker until it returns (nested calls reuse it); a worker lost to a
timeout, a crash or a protocol break is killed, reaped and replaced at once.
"""

from __future__ import annotations

import atexit
import collections
import ctypes
import itertools
import json
import logging
import marshal
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tusk_events.defaults import (
    ISOLATION_CPU_LIMIT_S,
    ISOLATION_ENV_KEEP,
    ISOLATION_FOLLOW_S,
    ISOLATION_KILL_GRACE_S,
    ISOLATION_MAX_MESSAGE,
    ISOLATION_MAX_OPEN_FILES,
    ISOLATION_MEMORY_LIMIT,
    ISOLATION_RECYCLE_RSS,
    ISOLATION_START_TIMEOUT_S,
    ISOLATION_WORKERS,
    UNTRUSTED_MAX_MESSAGE,
)
from tusk_events.errors import FujsenError, FujsenTimeout
from tusk_events.fujsen.helpserve import HelperServer, _Frame, _remote_failure
from tusk_events.fujsen.wire import Channel, ProtocolError, loads_plain, loads_strict

if TYPE_CHECKING:
    from tusk_events.fujsen.isolation import IsolatedRunner

log = logging.getLogger("tusk_events.fujsen.isolation")

_pools: dict[tuple[int, int, bool], WorkerPool] = {}
_pools_lock = threading.Lock()


def shutdown() -> None:
    """Stop every worker of every pool (pools start new workers on next use)."""
    with _pools_lock:
        pools = list(_pools.values())
    for pool in pools:
        pool.close()


_exiting = False


def _at_exit() -> None:
    # Only daemon threads are left at this point: a call of theirs whose worker is stopped
    # now is abandoned, as the thread is, instead of printing a traceback.
    global _exiting
    _exiting = True
    shutdown()


atexit.register(_at_exit)


def _park_if_exiting() -> None:
    """A daemon thread whose call lost its worker to the exit shutdown waits for the end."""
    if _exiting and threading.current_thread().daemon:
        while True:
            time.sleep(3600)


def _cpu_reader() -> Callable[[], int] | None:
    """``sched_getcpu`` (the CPU this thread runs on), where there is one to pin workers with."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    try:
        fn = ctypes.CDLL(None).sched_getcpu
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = []
    return fn  # type: ignore[no-any-return]


_current_cpu = _cpu_reader()


class _Worker(HelperServer):
    """The parent's handle on one worker process."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.tmpdir = tempfile.mkdtemp(prefix="tusk-worker-")
        env = {k: os.environ[k] for k in ISOLATION_ENV_KEEP if k in os.environ}
        settings = {
            "memory": pool.memory, "cpu": ISOLATION_CPU_LIMIT_S, "files": ISOLATION_MAX_OPEN_FILES,
            # a worker whose peak grew past this retires (half the limit: it came close to it)
            "recycle": min(ISOLATION_RECYCLE_RSS, pool.memory // 2), "path": _worker_path(),
            "harden": pool.untrusted, "limit": pool.max_message,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _BOOT, json.dumps(settings)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=self.tmpdir, env=env, close_fds=True,
        )
        assert self.proc.stdin and self.proc.stdout
        self.pid = self.proc.pid
        self.channel = Channel(
            self.proc.stdout.fileno(), self.proc.stdin.fileno(), limit=pool.max_message, eager=True
        )
        self.loads = loads_strict if pool.untrusted else loads_plain
        self.ready = False
        self.alive = True
        self.retire = False
        self.busy = False
        self.info: dict[str, Any] = {"pid": self.pid}
        self.loaded: set[int] = set()
        self.forgotten: collections.deque[int] = collections.deque()
        self._handles = itertools.count(1)
        # redis clients the worker may name by handle in any call of the same config
        self.clients: dict[tuple[int, str], tuple[Any, Any, int]] = {}
        self.client_handles: dict[int, tuple[Any, Any]] = {}
        # the CPU the worker is pinned to while a call is short (-1: none, -2: pinning failed)
        self.cpu = -1 if _current_cpu is not None else -2
        self.cpus: set[int] | None = None

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Wait for the worker's hello (it reports its limits and network)."""
        if self.ready:
            return
        deadline = time.monotonic() + ISOLATION_START_TIMEOUT_S
        reason = "no hello in time"
        try:
            data = self.channel.recv(deadline)
            hello = None if data is None else self.loads(data)
        except (EOFError, OSError, ProtocolError):
            hello = None
            try:
                self.proc.wait(2.0)  # it closed the pipe: it is exiting
                reason = _exit_reason(self.proc)
            except subprocess.TimeoutExpired:
                reason = "it closed its pipe"
        if not (type(hello) is tuple and len(hello) == 2 and hello[0] == "hello" and type(hello[1]) is dict):
            self._kill()
            text = self._stderr_tail()
            self.stop()
            raise FujsenError(f"cannot start an isolation worker ({reason}){': ' + text if text else ''}")
        self.info.update(hello[1])
        self.ready = True
        self._close_stderr()
        self.pool.report(self.info)

    def _stderr_tail(self) -> str:
        err = self.proc.stderr
        if err is None or err.closed:
            return ""
        try:
            text = err.read(65536).decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return text.splitlines()[-1] if text else ""

    def _close_stderr(self) -> None:
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            self.proc.stderr.close()

    def _kill(self) -> None:
        if self.proc.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be refused
                log.error("isolation worker %d did not die after SIGKILL", self.pid)

    def stop(self) -> None:
        """Kill the process, reap it, remove its directory (idempotent)."""
        self.alive = False
        self._kill()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None and not f.closed:
                try:
                    f.close()
                except OSError:
                    pass
        self._close_stderr()
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def abandon(self) -> None:
        """In a forked child: let go of the parent's worker without touching it."""
        self.alive = False
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None and not f.closed:
                try:
                    f.close()
                except OSError:
                    pass
        self.proc.returncode = 0  # never reap or kill a process that is not ours

    # -- a call ------------------------------------------------------------------------------

    def call(self, runner: IsolatedRunner, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self.alive:
            raise FujsenError(f"{runner.where}: the isolation worker died during an enclosing call")
        try:
            payload = marshal.dumps(("c", runner.fid, args, kwargs, ()))
            callbacks: dict[str, Callable[..., Any]] = {}
        except (ValueError, TypeError, RecursionError):
            payload, callbacks = runner.encode_call(args, kwargs)  # refusals leave the worker clean
        if len(payload) > self.channel.limit:
            raise FujsenError(f"{runner.where}: arguments of {len(payload):,} bytes exceed {self.channel.limit:,}")
        clean = False
        try:
            if self.cpu != -2:
                self._follow()
            if self.forgotten or runner.fid not in self.loaded:
                self.channel.send(*self._prelude(runner), payload)
            else:
                self.channel.send(payload)
            ok, value = self._exchange(runner, callbacks)
            clean = True
        except OSError:
            _park_if_exiting()
            raise FujsenError(f"{runner.where}: {self._death()}") from None
        except FujsenError:
            _park_if_exiting()
            raise
        finally:
            if not clean:
                self.stop()
        if ok:
            return value
        raise value

    def _follow(self) -> None:
        """Pin the worker to the caller's CPU: the request wakes it there, not on another CPU."""
        assert _current_cpu is not None
        cpu = _current_cpu()
        if cpu == self.cpu or cpu < 0:
            return
        try:
            if self.cpus is None:
                self.cpus = os.sched_getaffinity(self.pid)
            if cpu not in self.cpus or len(self.cpus) < 2:
                return
            os.sched_setaffinity(self.pid, (cpu,))
            self.cpu = cpu
        except OSError:
            self.cpu = -2  # not ours to pin (or gone): the call finds out which

    def _unpin(self) -> None:
        """A long call: the worker may run on any CPU again."""
        try:
            os.sched_setaffinity(self.pid, self.cpus or ())
            self.cpu = -1
        except OSError:
            self.cpu = -2

    def _prelude(self, runner: IsolatedRunner) -> list[bytes]:
        """What must reach the worker before this call: dropped code, this fujsen's definition."""
        frames = []
        drop = []
        while self.forgotten:
            fid = self.forgotten.popleft()
            if fid in self.loaded:
                self.loaded.discard(fid)
                drop.append(fid)
        if drop:
            frames.append(marshal.dumps(("f", tuple(drop))))
        if runner.fid not in self.loaded:
            frames.append(runner.definition())
            self.loaded.add(runner.fid)
        return frames

    def _exchange(self, runner: IsolatedRunner, callbacks: dict[str, Callable[..., Any]]) -> tuple[bool, Any]:
        """Serve the worker's helper calls until it answers: (True, result) or (False, error).

        Raising means the worker is in an unknown state: the caller kills it.
        """
        recv = self.channel.recv
        deadline = time.monotonic() + runner.budget_s + ISOLATION_KILL_GRACE_S
        frame: _Frame | None = None
        while True:
            try:
                if self.cpu >= 0:  # pinned: only while the call is short
                    data = recv(min(deadline, time.monotonic() + ISOLATION_FOLLOW_S))
                    if data is None and time.monotonic() < deadline:
                        self._unpin()
                        continue
                else:
                    data = recv(deadline)
                if data is None:
                    raise FujsenTimeout(
                        f"{runner.where}: still running after its {runner.budget_s:g} s budget "
                        f"(isolation worker {self.pid} killed)"
                    )
                msg = self.loads(data)
                if type(msg) is not tuple or not msg:
                    raise ProtocolError("a message that is not a tuple")
                tag = msg[0]
                if tag == "ok" and len(msg) == 3:
                    if msg[2]:
                        self.retire = True
                    return True, msg[1]
                if tag == "err" and len(msg) == 5:
                    if msg[4]:
                        self.retire = True
                    return False, _remote_failure(msg[1], msg[2], msg[3])
                if frame is None:
                    frame = _Frame(runner, callbacks)
                t0 = time.monotonic()
                reply = self._serve(frame, msg, deadline if self.pool.untrusted else None)
                self.channel.send(reply)
                # an untrusted config's helper time is its own, except opening the operator's
                # bus client (once per URL, bounded: the parent's setup, not the fujsen's work)
                if not self.pool.untrusted or tag == "r":
                    deadline += time.monotonic() - t0
            except EOFError:
                raise FujsenError(f"{runner.where}: {self._death()}") from None
            except ProtocolError as err:
                raise FujsenError(
                    f"{runner.where}: the isolation worker broke the protocol ({err})"
                ) from None

    def _death(self) -> str:
        try:
            self.proc.wait(1.0)
        except subprocess.TimeoutExpired:
            return "the isolation worker stopped answering"
        return f"the isolation worker died during the call ({_exit_reason(self.proc)})"


def _exit_reason(proc: subprocess.Popen[bytes]) -> str:
    code = proc.returncode
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {
            "SIGKILL": ": killed, e.g. by the OOM killer or an operator",
            "SIGXCPU": ": its CPU limit",
            "SIGSEGV": ": a crash",
        }.get(name, "")
        return f"{name}{hint}"
    return f"exit status {code}"


def _worker_path() -> list[str]:
    """The import path a worker needs: this package's root, then the parent's own path."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return list(dict.fromkeys([root, *(p for p in sys.path if p and os.path.exists(p))]))


_BOOT = (
    "import json, sys\n"
    "s = json.loads(sys.argv[1])\n"
    "sys.path[:0] = [p for p in s['path'] if p not in sys.path]\n"
    "from tusk_events.fujsen.worker import main\n"
    "main(s)\n"
)

# --- the pool -----------------------------------------------------------------------------------

_local = threading.local()


class WorkerPool:
    """Persistent workers shared by every thread; each call holds one worker until it returns."""

    def __init__(
        self, *, workers: int = ISOLATION_WORKERS, memory: int = ISOLATION_MEMORY_LIMIT, untrusted: bool = False
    ) -> None:
        self.size = workers
        self.memory = memory
        # untrusted: hardened workers, smaller frames, a decoder safe against hash collisions,
        # and the parent's time serving helpers charged to the call's deadline
        self.untrusted = untrusted
        self.max_message = UNTRUSTED_MAX_MESSAGE if untrusted else ISOLATION_MAX_MESSAGE
        # the per-call path takes the bare lock (a C context manager); waiting uses the condition
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []
        self._waiting = 0
        self._reported = False
        self._reported_hardening = False

    def __repr__(self) -> str:
        return f"<WorkerPool {len(self._workers)}/{self.size} workers>"

    # -- calls -----------------------------------------------------------------------------------

    def run(self, runner: IsolatedRunner, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call ``runner`` on a worker; a nested call reuses the worker this thread holds."""
        try:
            held = _local.held
        except AttributeError:
            held = _local.held = {}
        worker = held.get(self)
        if worker is not None:
            return worker.call(runner, args, kwargs)
        with self._lock:
            worker = self._idle.pop() if self._idle else None
            if worker is not None:
                worker.busy = True
        if worker is None or not worker.ready:
            worker = self._acquire(worker)
        held[self] = worker
        try:
            return worker.call(runner, args, kwargs)
        finally:
            del held[self]
            worker.busy = False
            if worker.alive and not worker.retire:
                with self._lock:
                    self._idle.append(worker)
                    if self._waiting:
                        self._cond.notify()
            else:
                self._replace(worker)

    def _acquire(self, worker: _Worker | None) -> _Worker:
        """A started worker: ``worker`` (taken, maybe not started yet) or the next free one."""
        if worker is None:
            with self._cond:
                while not self._idle:
                    if len(self._workers) < self.size:
                        self._spawn_locked(1)  # workers start on demand, up to the pool size
                        continue
                    self._waiting += 1
                    try:
                        self._cond.wait()
                    finally:
                        self._waiting -= 1
                worker = self._idle.pop()
                worker.busy = True
        if not worker.ready:
            try:
                worker.start()
            except BaseException:
                worker.busy = False
                self._replace(worker)
                raise
        return worker

    def _release(self, worker: _Worker) -> None:
        worker.busy = False
        if not worker.alive or worker.retire:
            self._replace(worker)
            return
        with self._cond:
            self._idle.append(worker)
            if self._waiting:
                self._cond.notify()

    def _replace(self, worker: _Worker) -> None:
        worker.stop()
        with self._cond:
            if worker in self._workers:
                self._workers.remove(worker)
            if worker in self._idle:
                self._idle.remove(worker)
            if not _exiting:
                self._spawn_locked(1)  # a fresh worker starts now; the next call waits for its hello
            if self._waiting:
                self._cond.notify()

    def _spawn_locked(self, n: int) -> None:
        for _ in range(min(n, self.size - len(self._workers))):
            worker = _Worker(self)
            self._workers.append(worker)
            self._idle.append(worker)

    def forget(self, fid: int) -> None:
        """A runner is gone: workers drop its code with their next call (no lock: GC calls this)."""
        for worker in tuple(self._workers):
            worker.forgotten.append(fid)

    def report(self, info: Mapping[str, Any]) -> None:
        if info.get("network") != "isolated" and not self._reported:
            self._reported = True
            log.warning(
                "isolation workers share the host's network (%s)", info.get("network_error", "unknown")
            )
        if self.untrusted and not self._reported_hardening:
            missing = _missing_confinement(info.get("hardening"))
            if missing:
                self._reported_hardening = True
                log.warning("untrusted config's workers run without: %s", "; ".join(missing))

    # -- inspection and shutdown -------------------------------------------------------------------

    def worker_pids(self) -> list[int]:
        """Pids of the pool's worker processes (started or starting)."""
        return [w.pid for w in tuple(self._workers) if w.alive]

    def busy_pids(self) -> list[int]:
        """Pids of the started workers running a call right now."""
        return [w.pid for w in tuple(self._workers) if w.alive and w.busy and w.ready]

    def info(self) -> list[dict[str, Any]]:
        """What each started worker reported: pid, network, limits (waits for idle ones' hello)."""
        out = []
        for w in tuple(self._workers):
            if w.ready:
                out.append(dict(w.info, busy=w.busy))
        return out

    def start(self) -> None:
        """Start every worker now instead of on first use, and wait until they are up."""
        with self._cond:
            self._spawn_locked(self.size)
        workers = [self._acquire(None) for _ in range(self.size)]
        for w in workers:
            self._release(w)

    def close(self) -> None:
        """Stop every worker; a later call starts new ones."""
        with self._cond:
            workers, self._workers, self._idle = self._workers, [], []
        for w in workers:
            w.stop()

    def _abandon(self) -> None:
        for w in self._workers:
            w.abandon()
        self._workers, self._idle = [], []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)


def _missing_confinement(report: Any) -> list[str]:
    """The confinement steps a worker's hello says did not apply, with their reasons."""
    if not isinstance(report, dict):
        return ["confinement (no report)"]
    missing = []
    for step in ("landlock", "seccomp"):
        part = report.get(step)
        if not (isinstance(part, dict) and part.get("applied")):
            missing.append(f"{step} ({part.get('error') if isinstance(part, dict) else 'not run'})")
    user = report.get("user")
    if isinstance(user, dict) and user.get("uid") == 0:
        missing.append(f"an unprivileged user ({user.get('error', 'still root')})")
    return missing


def _after_fork_in_child() -> None:
    # a forked child must not talk to (or kill) its parent's workers
    global _pools_lock, _local
    _pools_lock = threading.Lock()
    _local = threading.local()
    for pool in list(_pools.values()):
        pool._abandon()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


__all__ = ["WorkerPool", "shutdown"]
