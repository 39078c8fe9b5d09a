"""Process isolation: fujsen executed in a pool of persistent worker processes with OS limits.

The in-process sandbox (policy, guards, budget watchdog) stops what it can see; it cannot
stop a long operation inside C (``pow(3, 2**100000, 2**200000 + 1)`` passes every guard and
runs for hours in one call), nor keep a fujsen that found a way past the policy away from the
host's memory, environment, files and sockets. With ``isolation: "process"`` the same
compiled fujsen run in worker processes that hold nothing worth stealing, and the parent
enforces the wall-clock budget with SIGKILL.

Choosing it
-----------
``isolation`` is a config-wide setting, like ``event_bus``: write it at the top level or in
any section (``isolation: "process"``); if any of them says ``"process"`` the whole config
runs isolated. ``TSK.from_file(..., isolation=...)`` (or ``from_string``, ``TSK(...)``,
``Runtime.from_files(..., isolation=...)``, ``tusk-events run|exec --isolation ...``)
overrides what the file says, in both directions; the default is ``"inline"``.
``isolation_workers`` (default :data:`ISOLATION_WORKERS`) sizes the pool and
``isolation_memory_mb`` (default :data:`ISOLATION_MEMORY_LIMIT`) is the address space a
worker may add to its size at start; for these the first value found counts, top level
first. Configs with equal settings share one pool. Calls from every thread share it: a call
holds one worker until it returns, and waits when all are busy. Workers start on demand
(:meth:`WorkerPool.start` starts them all up front) and stop at interpreter exit.

Fujsen are compiled in the parent with the same policy, so violations are still reported at
load time; ``TSK.fujsen(...)`` returns an :class:`IsolatedRunner` that behaves like the
in-process runner: same error classes, same ``file:line in name`` messages (the cause is a
:class:`RemoteTraceback` holding the worker's traceback), same budget.

The worker
----------
``python -I`` (no ``PYTHON*`` variables, no user site-packages), started with ``close_fds``:
once it is up its only descriptors are the request and reply pipes, with stdin, stdout and
stderr on /dev/null (stderr is a pipe to the parent until then, so a worker that cannot start
says why). Its environment holds only :data:`ISOLATION_ENV_KEEP`, its working directory is an
empty temporary directory (removed with it), and before it says hello it applies, soft =
hard so they cannot be raised again: ``RLIMIT_AS`` (its size + ``isolation_memory_mb``),
``RLIMIT_CPU`` (:data:`ISOLATION_CPU_LIMIT_S`, a lifetime backstop: the worker retires at
90 %), ``RLIMIT_FSIZE=0`` (SIGXFSZ ignored: a write fails instead), ``RLIMIT_CORE=0``,
``RLIMIT_NOFILE`` (:data:`ISOLATION_MAX_OPEN_FILES`), ``RLIMIT_NPROC=0`` (no new processes or
threads; **root is exempt from it**, and a worker started by root keeps uid 0: run the
runtime as an unprivileged user for that limit and for file permissions to apply) and
``PR_SET_NO_NEW_PRIVS``. Where the kernel allows it, the worker then lives in a network
namespace of its own (``unshare(CLONE_NEWNET)``, or with an unprivileged user namespace;
``os.unshare`` on 3.12+, libc through ctypes on 3.11): no interface but a loopback that is
down. When that fails it keeps the host's network, the parent logs one warning, and
:meth:`WorkerPool.info` says so with the reason.

The worker has no Redis or database connection. ``redis.*`` (commands, pipelines - buffered
in the worker and sent in one request at ``execute()`` -, pub/sub), ``query``, ``execute``,
``publish`` and any helper bound with ``bind_helpers`` are proxied to the parent, which runs
the real facades of :mod:`tusk_events.fujsen.helpers` on the worker's behalf, with the same
allowlists and the config's own URL list, in the calling thread (so the runtime's publish
context and the event's causal context apply). Violations come back as violations,
exceptions as exceptions of the same name (derived from their nearest builtin class) with
the same arguments. A worker keeps the handle of a client it opened for the next calls of the
same config. ``json time math datetime uuid hashlib`` - ``time.sleep`` included - run in the
worker. ``print`` output of an isolated fujsen is dropped (in-process it is only logged at
INFO level).

The parent is in charge
-----------------------
A call that has not answered :data:`ISOLATION_KILL_GRACE_S` after its budget (time the
parent spends serving the worker's helper calls does not count, as in-process) gets its
worker SIGKILLed and raises :class:`FujsenTimeout`; a worker that dies (OOM killer,
``RLIMIT_CPU``, a crash, an operator's kill) raises :class:`FujsenError` naming the signal; a
worker that breaks the protocol is killed the same way. A fresh worker takes the place of a
lost one at once. Inside the worker the in-process watchdog still runs as the first line, so
an ordinary runaway loop ends in a ``FujsenTimeout`` without losing the worker, and a
``MemoryError`` under ``RLIMIT_AS`` is the usual "out of memory" :class:`FujsenError`. A
worker whose peak memory grew past :data:`ISOLATION_RECYCLE_RSS` (or half its limit) retires
after the call. In the runtime these failures are failed attempts like any other: retried,
then dead-lettered.

Nested calls (a proxied ``publish`` running a ``sync`` service's handler) run on the worker
the thread already holds: the worker is waiting for the helper's reply and runs the nested
call first, as the in-process runtime would, so nesting never needs a second worker and
cannot exhaust the pool. A nested call killed at its deadline takes the outer call with it.

Protocol
--------
Length-prefixed frames (4-byte little-endian size, at most :data:`ISOLATION_MAX_MESSAGE`;
larger arguments, results or replies are refused before sending) on two pipes, strictly
request/response and driven by the thread that made the call: no thread per worker.

* parent -> worker: :mod:`marshal`. It encodes only plain types, which is what enforces the
  plain-data rule on arguments, and code objects, which is how the compiled fujsen travel;
  the worker trusts its parent.
* worker -> parent: :mod:`pickle` protocol 5 read back with :class:`PlainUnpickler`, whose
  ``find_class`` and ``persistent_load`` refuse everything: the parent can only ever build
  dicts, lists, tuples, sets, str, bytes, bytearray, numbers, bool and None, so nothing a
  compromised worker sends can name a class or function to call. JSON would lose bytes and
  tuples; marshal is documented as unsafe on untrusted input. (What remains for a worker
  that escaped the sandbox is to send expensive plain data, e.g. a dict of colliding int
  keys, within the size cap.)

Arguments, results and helper replies are therefore plain data (those types, no subclasses);
anything else is a :class:`FujsenError`. A *callable* argument - the docs'
``subscribe_events(handler, ...)`` - is supported when passed directly (positionally or by
keyword, not inside a container): the worker gets a stand-in whose calls come back to the
parent, which calls the original, in the calling thread, with plain-data arguments.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import io
import itertools
import json
import linecache
import logging
import marshal
import math
import os
import pickle
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tusk_events.defaults import (
    ISOLATION_CPU_LIMIT_S,
    ISOLATION_DEFAULT,
    ISOLATION_ENV_KEEP,
    ISOLATION_KILL_GRACE_S,
    ISOLATION_MAX_MESSAGE,
    ISOLATION_MAX_OPEN_FILES,
    ISOLATION_MAX_WORKERS,
    ISOLATION_MEMORY_LIMIT,
    ISOLATION_RECYCLE_RSS,
    ISOLATION_START_TIMEOUT_S,
    ISOLATION_WORKERS,
)
from tusk_events.errors import ConfigError, FujsenError, FujsenTimeout, SandboxViolation
from tusk_events.fujsen import budget, helpers
from tusk_events.fujsen.guards import Violation
from tusk_events.fujsen.sandbox import CompiledFujsen

log = logging.getLogger("tusk_events.fujsen.isolation")

LEVELS = ("inline", "process")
"""The values ``isolation`` accepts."""

PLAIN_TYPES = "dict, list, tuple, set, str, bytes, int, float, bool, None"

_ERRORS: dict[str, type[FujsenError]] = {
    "FujsenError": FujsenError,
    "SandboxViolation": SandboxViolation,
    "FujsenTimeout": FujsenTimeout,
}

# --- settings ---------------------------------------------------------------------------------


def _setting_values(data: Mapping[str, Any], key: str) -> list[tuple[str, Any]]:
    """``key`` at the top level, then in every section (nested ones too), in document order."""
    found: list[tuple[str, Any]] = []
    if key in data and not isinstance(data[key], dict):
        found.append(("top level", data[key]))

    def walk(prefix: str, node: Mapping[str, Any]) -> None:
        for name, value in node.items():
            if isinstance(value, dict):
                section = f"{prefix}.{name}" if prefix else name
                if key in value and not isinstance(value[key], dict):
                    found.append((f"[{section}]", value[key]))
                walk(section, value)

    walk("", data)
    return found


def isolation_level(data: Mapping[str, Any], explicit: str | None = None) -> str:
    """The isolation level of a config: ``explicit`` when given, else what the config says.

    Settings are checked here, at load, so a bad value is a :class:`ConfigError` before
    anything runs.
    """
    if explicit is not None:
        if explicit not in LEVELS:
            raise ConfigError(f"isolation must be one of {', '.join(LEVELS)}, not {explicit!r}")
        level = explicit
    else:
        level = ISOLATION_DEFAULT
        for where, value in _setting_values(data, "isolation"):
            if value not in LEVELS:
                raise ConfigError(f"{where} isolation must be one of {', '.join(LEVELS)}, not {value!r}")
            if value == "process":
                level = "process"
    if level == "process":
        pool_settings(data)
    return level


def _int_setting(data: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    values = _setting_values(data, key)
    if not values:
        return default
    where, value = values[0]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{where} {key} must be an integer from {low} to {high}, not {value!r}")
    return value


def pool_settings(data: Mapping[str, Any]) -> tuple[int, int]:
    """(workers, memory bytes) named by the config, validated."""
    workers = _int_setting(data, "isolation_workers", ISOLATION_WORKERS, 1, ISOLATION_MAX_WORKERS)
    memory_mb = _int_setting(data, "isolation_memory_mb", ISOLATION_MEMORY_LIMIT >> 20, 64, 1 << 20)
    return workers, memory_mb << 20


_pools: dict[tuple[int, int], WorkerPool] = {}
_pools_lock = threading.Lock()


def pool_for(cfg: Any) -> WorkerPool:
    """The shared pool for a config's settings (created on first use; workers start lazily)."""
    key = pool_settings(cfg.data)
    pool = _pools.get(key)
    if pool is None:
        with _pools_lock:
            pool = _pools.get(key)
            if pool is None:
                pool = _pools[key] = WorkerPool(workers=key[0], memory=key[1])
    return pool


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

# --- wire format ------------------------------------------------------------------------------

_HEADER = struct.Struct("<I")


class ProtocolError(Exception):
    """The other end sent something the protocol does not allow."""


class PlainUnpickler(pickle.Unpickler):
    """Reads only plain data: any class or function reference in the stream is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name}: only plain data may cross the worker pipe")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not plain data")


class PlainPickler(pickle.Pickler):
    """Writes only plain data; anything else is a TypeError naming its type."""

    def reducer_override(self, obj: Any) -> Any:
        # called for every object the pickler has no native opcode for
        raise TypeError(f"{type(obj).__name__} is not plain data ({PLAIN_TYPES})")


def dumps_plain(obj: Any) -> bytes:
    buf = io.BytesIO()
    PlainPickler(buf, protocol=5).dump(obj)
    return buf.getvalue()


class PlainWriter:
    """``dumps_plain`` with one reused pickler (a quarter of the cost; one thread only)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._buf = io.BytesIO()
        self._pickler = PlainPickler(self._buf, protocol=5)

    def dumps(self, obj: Any) -> bytes:
        buf = self._buf
        buf.seek(0)
        buf.truncate()
        self._pickler.clear_memo()
        try:
            self._pickler.dump(obj)
        except BaseException:
            self._reset()  # a half-written pickle must not leak into the next one
            raise
        return buf.getvalue()


def loads_plain(data: bytes) -> Any:
    try:
        return PlainUnpickler(io.BytesIO(data)).load()
    except Exception as err:  # noqa: BLE001 - whatever is wrong, the message is not plain data
        raise ProtocolError(f"undecodable message ({type(err).__name__}: {err})") from None


class Channel:
    """One end of a pipe pair carrying length-prefixed frames."""

    __slots__ = ("rfd", "wfd", "_buf", "_poll", "limit")

    def __init__(self, rfd: int, wfd: int, *, limit: int = ISOLATION_MAX_MESSAGE) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self.limit = limit
        self._buf = bytearray()
        self._poll = select.poll()
        self._poll.register(rfd, select.POLLIN)

    def send(self, *payloads: bytes) -> None:
        """Write frames in one go (a short write is continued; EPIPE means the peer is gone)."""
        if len(payloads) == 1:
            data = _HEADER.pack(len(payloads[0])) + payloads[0]
        else:
            data = b"".join(_HEADER.pack(len(p)) + p for p in payloads)
        n = os.write(self.wfd, data)
        if n < len(data):
            view = memoryview(data)[n:]
            while view:
                view = view[os.write(self.wfd, view):]

    def read(self) -> bytes:
        """The next frame, however long it takes (the worker's side)."""
        data = self.recv()
        assert data is not None  # no deadline, no timeout
        return data

    def recv(self, deadline: float | None = None) -> bytes | None:
        """The next frame; None when ``deadline`` (monotonic) passes first; EOFError at EOF."""
        buf = self._buf
        need = 4
        while True:
            if len(buf) >= 4:
                size = _HEADER.unpack_from(buf)[0]
                if size > self.limit:
                    raise ProtocolError(f"a message of {size:,} bytes exceeds {self.limit:,}")
                need = 4 + size
                if len(buf) >= need:
                    payload = bytes(buf[4:need])
                    del buf[:need]
                    return payload
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0 or not self._poll.poll(math.ceil(wait * 1000)):
                    if time.monotonic() >= deadline:
                        return None
                    continue
            chunk = os.read(self.rfd, max(65536, need - len(buf)))
            if not chunk:
                raise EOFError("the other end closed the pipe")
            if not buf and len(chunk) >= 4:
                size = _HEADER.unpack_from(chunk)[0]
                if len(chunk) == 4 + size and size <= self.limit:
                    return chunk[4:]  # the common case: exactly one frame in one read
            buf += chunk


# --- the runner -------------------------------------------------------------------------------

_fids = itertools.count(1)
_LOCAL_HELPERS = {
    id(helpers.JSON): "json",
    id(helpers.TIME): "time",
    id(helpers.MATH): "math",
    id(helpers.DATETIME): "datetime",
    id(helpers.UUID): "uuid",
    id(helpers.HASHLIB): "hashlib",
}


def _plain(value: Any) -> bool:
    try:
        marshal.dumps(value)
    except (ValueError, TypeError, RecursionError):
        return False
    return not isinstance(value, type(_plain.__code__))


class IsolatedRunner:
    """One fujsen entry point executed in the worker pool; call it like the function.

    The config values of its globals travel to a worker once (with the code); helpers are
    replaced there by local facades or by proxies to the parent, and the parent keeps the
    real ones here.
    """

    __slots__ = (
        "compiled", "entry", "section", "budget_s", "pool", "fid", "functions", "redis",
        "_spec", "_plain", "_definition", "__weakref__",
    )

    def __init__(
        self,
        compiled: CompiledFujsen,
        entry: str,
        section: str,
        base_globals: Mapping[str, Any],
        budget_s: float,
        *,
        pool: WorkerPool,
    ) -> None:
        self.compiled = compiled
        self.entry = entry
        self.section = section
        self.budget_s = budget_s
        self.pool = pool
        self.fid = next(_fids)
        self.functions: dict[str, Callable[..., Any]] = {}
        self.redis: helpers.RedisHelper | None = None
        self._spec: dict[str, str] = {}
        self._plain: dict[str, Any] = {}
        self._definition: bytes | None = None
        for key, value in base_globals.items():
            if key == "__builtins__":
                continue
            local = _LOCAL_HELPERS.get(id(value))
            if local is not None:
                self._spec[key] = "local:" + local
            elif isinstance(value, helpers.RedisHelper):
                self._spec[key] = "redis"
                self.redis = value
            elif _plain(value):
                self._plain[key] = value
            elif callable(value):
                self._spec[key] = "function"
                self.functions[key] = value
            else:
                raise FujsenError(
                    f"[{section}] '{key}' ({type(value).__name__}) cannot be given to an isolated "
                    f"fujsen: helpers must be functions and values plain data"
                )
        weakref.finalize(self, pool.forget, self.fid)

    @property
    def name(self) -> str:
        return self.entry

    def __repr__(self) -> str:
        return f"<isolated fujsen {self.section}.{self.entry} from {self.compiled.filename}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.pool.run(self, args, kwargs)

    @property
    def where(self) -> str:
        return f"{self.compiled.filename}:{self.compiled.first_line} in {self.entry}"

    def definition(self) -> bytes:
        """The message that teaches a worker this fujsen (built once)."""
        if self._definition is None:
            c = self.compiled
            fields = {f.name: getattr(c, f.name) for f in dataclasses.fields(c)}
            lines = linecache.getlines(c.filename)
            self._definition = marshal.dumps(
                ("d", self.fid, fields, self.entry, self.section, self.budget_s, self._plain,
                 self._spec, lines)
            )
        return self._definition

    def encode_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bytes, dict[str, Callable[..., Any]]]:
        """The call message, and the callable arguments the worker will call back."""
        try:
            return marshal.dumps(("c", self.fid, args, kwargs, ())), {}
        except (ValueError, TypeError, RecursionError):
            pass
        callbacks: dict[str, Callable[..., Any]] = {}
        places: list[tuple[Any, str]] = []
        new_args = list(args)
        for i, a in enumerate(args):
            if callable(a) and not _plain(a):
                callbacks[f"#{i}"] = a
                places.append((i, f"#{i}"))
                new_args[i] = None
        new_kwargs = dict(kwargs)
        for k, v in kwargs.items():
            if callable(v) and not _plain(v):
                callbacks[f"#{k}"] = v
                places.append((k, f"#{k}"))
                new_kwargs[k] = None
        try:
            return marshal.dumps(("c", self.fid, tuple(new_args), new_kwargs, tuple(places))), callbacks
        except (ValueError, TypeError, RecursionError):
            bad = _first_unplain([*new_args, *new_kwargs.values()])
            raise FujsenError(
                f"{self.where}: arguments of an isolated fujsen must be plain data ({PLAIN_TYPES}) "
                f"or functions, not {bad}"
            ) from None


def _first_unplain(values: Iterable[Any], depth: int = 0) -> str:
    for v in values:
        if _plain(v):
            continue
        if depth < 20 and type(v) in (list, tuple, set, frozenset):
            return _first_unplain(v, depth + 1)
        if depth < 20 and type(v) is dict:
            return _first_unplain([*v.keys(), *v.values()], depth + 1)
        return type(v).__name__ if depth < 20 else "data nested too deeply"
    return "an object marshal refuses"


# --- the parent's side of a call --------------------------------------------------------------

_CLIENT_METHODS = helpers.REDIS_COMMANDS
_PIPELINE_METHODS = helpers.REDIS_COMMANDS - {"pubsub"}
_PUBSUB_METHODS = frozenset({"subscribe", "psubscribe", "unsubscribe", "punsubscribe", "get_message", "close", "subscribed"})


class _Frame:
    """One call in progress on a worker: the objects its proxies refer to, by handle."""

    __slots__ = ("runner", "callbacks", "objects")

    def __init__(self, runner: IsolatedRunner, callbacks: dict[str, Callable[..., Any]]) -> None:
        self.runner = runner
        self.callbacks = callbacks
        self.objects: dict[int, tuple[str, Any]] = {}


class _Worker:
    """The parent's handle on one worker process."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.tmpdir = tempfile.mkdtemp(prefix="tusk-worker-")
        env = {k: os.environ[k] for k in ISOLATION_ENV_KEEP if k in os.environ}
        settings = {
            "memory": pool.memory, "cpu": ISOLATION_CPU_LIMIT_S, "files": ISOLATION_MAX_OPEN_FILES,
            # a worker whose peak grew past this retires (half the limit: it came close to it)
            "recycle": min(ISOLATION_RECYCLE_RSS, pool.memory // 2), "path": _worker_path(),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _BOOT, json.dumps(settings)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=self.tmpdir, env=env, close_fds=True,
        )
        assert self.proc.stdin and self.proc.stdout
        self.pid = self.proc.pid
        self.channel = Channel(self.proc.stdout.fileno(), self.proc.stdin.fileno())
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

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Wait for the worker's hello (it reports its limits and network)."""
        if self.ready:
            return
        deadline = time.monotonic() + ISOLATION_START_TIMEOUT_S
        reason = "no hello in time"
        try:
            data = self.channel.recv(deadline)
            hello = None if data is None else loads_plain(data)
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
        if len(payload) > ISOLATION_MAX_MESSAGE:
            raise FujsenError(f"{runner.where}: arguments of {len(payload):,} bytes exceed {ISOLATION_MAX_MESSAGE:,}")
        clean = False
        try:
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
                data = recv(deadline)
                if data is None:
                    raise FujsenTimeout(
                        f"{runner.where}: still running after its {runner.budget_s:g} s budget "
                        f"(isolation worker {self.pid} killed)"
                    )
                msg = loads_plain(data)
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
                reply = self._serve(frame, msg)
                self.channel.send(reply)
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

    # -- serving the worker's helper calls ---------------------------------------------------

    def _serve(self, frame: _Frame, msg: tuple[Any, ...]) -> bytes:
        """Run one proxied helper call here, with the real facades; returns the reply frame."""
        st = budget.state()
        saved = st.violation
        try:
            value = self._dispatch(frame, msg)
            try:
                reply = marshal.dumps(("r", value))
            except (ValueError, TypeError, RecursionError):
                return marshal.dumps(("e", "TypeError", "TypeError", ("the helper's reply is not plain data",)))
            if len(reply) > ISOLATION_MAX_MESSAGE:
                text = f"the helper's reply of {len(reply):,} bytes exceeds {ISOLATION_MAX_MESSAGE:,}"
                return marshal.dumps(("e", "ValueError", "ValueError", (text,)))
            return reply
        except Violation as v:
            return marshal.dumps(("v", v.message))
        except FujsenError as err:
            return marshal.dumps(("x", type(err).__name__, _text(err)))
        except ProtocolError:
            raise
        except Exception as err:  # noqa: BLE001 - the fujsen sees the helper's exception
            return marshal.dumps(("e", type(err).__name__, _builtin_base(err), _error_args(err)))
        finally:
            st.violation = saved

    def _dispatch(self, frame: _Frame, msg: tuple[Any, ...]) -> Any:
        tag = msg[0]
        if tag == "f" and len(msg) == 4:
            _, name, args, kwargs = msg
            _check_call(args, kwargs)
            fn = frame.callbacks.get(name) if type(name) is str else None
            if fn is None:
                fn = frame.runner.functions.get(name) if type(name) is str else None
            if fn is None:
                raise ProtocolError(f"unknown helper {name!r}")
            return fn(*args, **kwargs)
        if tag == "r" and len(msg) == 2:
            helper = frame.runner.redis
            if helper is None:
                raise ProtocolError("this fujsen has no redis helper")
            client = helper.from_url(msg[1])  # the URL allowlist of this config
            # the worker keeps the handle across calls (one round trip less per handler call);
            # it stays bound to this config's helper, so no other config can use it
            key = (id(helper), msg[1])
            known = self.clients.get(key)
            if known is None or known[1] is not client:
                handle = next(self._handles)
                self.clients[key] = (helper, client, handle)
                self.client_handles[handle] = (helper, client)
                return handle
            return known[2]
        if tag == "o" and len(msg) == 5:
            _, handle, name, args, kwargs = msg
            _check_call(args, kwargs)
            kind, obj = self._object(frame, handle)
            if kind == "client" and name in _CLIENT_METHODS:
                if name == "pubsub":
                    return self._keep(frame, "pubsub", obj.pubsub(**kwargs))
                return getattr(obj, name)(*args, **kwargs)
            if kind == "pubsub" and name in _PUBSUB_METHODS:
                if name == "subscribed":
                    return bool(obj._ps.subscribed)
                return getattr(obj, name)(*args, **kwargs)
            raise ProtocolError(f"{name!r} is not a {kind} method")
        if tag == "p" and len(msg) == 4:
            _, handle, transaction, commands = msg
            kind, obj = self._object(frame, handle)
            if kind != "client" or type(commands) is not tuple:
                raise ProtocolError("a pipeline needs a client")
            pipe = obj.pipeline(transaction=bool(transaction))
            for command in commands:
                if type(command) is not tuple or len(command) != 3 or command[0] not in _PIPELINE_METHODS:
                    raise ProtocolError("bad pipeline command")
                _check_call(command[1], command[2])
                getattr(pipe, command[0])(*command[1], **command[2])
            return pipe.execute()
        raise ProtocolError(f"unknown request {tag!r}")

    def _keep(self, frame: _Frame, kind: str, obj: Any) -> int:
        handle = next(self._handles)
        frame.objects[handle] = (kind, obj)
        return handle

    def _object(self, frame: _Frame, handle: Any) -> tuple[str, Any]:
        if type(handle) is int:
            found = frame.objects.get(handle)
            if found is not None:
                return found
            client = self.client_handles.get(handle)
            if client is not None and client[0] is frame.runner.redis:
                return "client", client[1]
        from tusk_events.fujsen.guards import violate

        violate("this redis object belongs to another fujsen call")
        raise AssertionError  # pragma: no cover - violate raises


def _check_call(args: Any, kwargs: Any) -> None:
    if type(args) is not tuple or type(kwargs) is not dict or not all(type(k) is str for k in kwargs):
        raise ProtocolError("malformed helper arguments")


def _text(err: BaseException) -> str:
    try:
        text = str(err)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the error
        text = "<unprintable>"
    return text if len(text) <= 2000 else text[:2000] + "..."


def _error_args(err: BaseException) -> tuple[Any, ...]:
    """The exception's arguments when they are small plain data (so ``str()`` reads the same)."""
    try:
        if len(marshal.dumps(err.args)) <= 65536:
            return tuple(err.args)
    except (ValueError, TypeError, RecursionError):
        pass
    return (_text(err),)


def _builtin_base(err: BaseException) -> str:
    """The nearest builtin exception class of ``err``: the class the worker can re-create."""
    import builtins

    for cls in type(err).__mro__:
        if cls.__module__ == "builtins" and getattr(builtins, cls.__name__, None) is cls:
            return cls.__name__
    return "Exception"


class RemoteTraceback(Exception):
    """The traceback of an error inside a worker, as text (the cause of the FujsenError)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def _remote_failure(cls_name: Any, message: Any, tb: Any) -> FujsenError:
    cls = _ERRORS.get(cls_name, FujsenError) if type(cls_name) is str else FujsenError
    err = cls(message if type(message) is str else "the isolated fujsen failed")
    if type(tb) is str and tb:
        err.__cause__ = RemoteTraceback(tb)
    return err


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

    def __init__(self, *, workers: int = ISOLATION_WORKERS, memory: int = ISOLATION_MEMORY_LIMIT) -> None:
        self.size = workers
        self.memory = memory
        self._cond = threading.Condition(threading.Lock())
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []
        self._waiting = 0
        self._reported = False

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
        with self._cond:
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
                with self._cond:
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
        self._cond = threading.Condition(threading.Lock())


def _after_fork_in_child() -> None:
    # a forked child must not talk to (or kill) its parent's workers
    global _pools_lock, _local
    _pools_lock = threading.Lock()
    _local = threading.local()
    for pool in list(_pools.values()):
        pool._abandon()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


__all__ = [
    "LEVELS",
    "IsolatedRunner",
    "PlainPickler",
    "PlainUnpickler",
    "RemoteTraceback",
    "WorkerPool",
    "isolation_level",
    "pool_for",
    "pool_settings",
    "shutdown",
]
