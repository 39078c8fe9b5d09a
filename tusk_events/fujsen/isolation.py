"""Process isolation: fujsen executed in a pool of persistent worker processes with OS limits.

The in-process sandbox (policy, guards, budget watchdog) stops what it can see; it cannot
stop a long operation inside C (``pow(3, 2**100000, 2**200000 + 1)`` passes every guard and
runs for hours in one call), nor keep a fujsen that found a way past the policy away from the
host's memory, environment, files and sockets. With ``isolation: "process"`` the same
compiled fujsen run in worker processes that hold nothing worth stealing, and the parent
enforces the wall-clock budget with SIGKILL.

Where the parts live: this module holds the settings and :class:`IsolatedRunner`;
:mod:`~tusk_events.fujsen.pool` the worker processes and their calls;
:mod:`~tusk_events.fujsen.helpserve` the parent's side of proxied helper calls;
:mod:`~tusk_events.fujsen.wire` the frames and plain-data codecs;
:mod:`~tusk_events.fujsen.worker` the worker's side and :mod:`~tusk_events.fujsen.harden`
the confinement of an untrusted config's workers.

Untrusted configs
-----------------
``TSK(..., trust="untrusted")`` (``--untrusted``) always runs isolated, in pools of its own:
workers confined by :mod:`~tusk_events.fujsen.harden`, frames of at most
:data:`UNTRUSTED_MAX_MESSAGE` decoded by :func:`~tusk_events.fujsen.wire.loads_strict`,
``isolation_workers``/``isolation_memory_mb`` capped at the operator's defaults, the
parent's helper time charged to the call's deadline (SQL statements end with it), and Redis
replies read within one frame per helper call (:mod:`~tusk_events.fujsen.replycap`).

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
request/response and driven by the thread that made the call: no thread per worker. Where
the OS allows it (Linux ``sched_setaffinity``), a call pins its worker to the caller's CPU
and frees it once the worker has been silent for :data:`ISOLATION_FOLLOW_S`: a short call
(or a quick back-and-forth of helper calls) is then a hand-over on one CPU rather than a
wake-up of another one, which costs tens of microseconds when that CPU is idle (in a VM
above all); a long computation runs wherever there is room. The parent reads a reply before it polls for it, since the worker has usually
answered by the time the request's write returns.

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

import dataclasses
import itertools
import linecache
import marshal
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tusk_events.defaults import (
    ISOLATION_DEFAULT,
    ISOLATION_MAX_WORKERS,
    ISOLATION_MEMORY_LIMIT,
    ISOLATION_WORKERS,
)
from tusk_events.errors import ConfigError, FujsenError
from tusk_events.fujsen import helpers
from tusk_events.fujsen.helpserve import RemoteTraceback
from tusk_events.fujsen.pool import WorkerPool, _pools, _pools_lock, shutdown
from tusk_events.fujsen.sandbox import CompiledFujsen
from tusk_events.fujsen.wire import (
    PLAIN_TYPES,
    PlainPickler,
    PlainUnpickler,
    ProtocolError,
    dumps_plain,
    loads_plain,
)

LEVELS = ("inline", "process")
"""The values ``isolation`` accepts."""

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


def pool_settings(data: Mapping[str, Any], *, untrusted: bool = False) -> tuple[int, int]:
    """(workers, memory bytes) named by the config, validated.

    For an untrusted config the operator's defaults are ceilings: the config can only lower them.
    """
    workers = _int_setting(data, "isolation_workers", ISOLATION_WORKERS, 1, ISOLATION_MAX_WORKERS)
    memory_mb = _int_setting(data, "isolation_memory_mb", ISOLATION_MEMORY_LIMIT >> 20, 64, 1 << 20)
    if untrusted:
        workers = min(workers, ISOLATION_WORKERS)
        memory_mb = min(memory_mb, ISOLATION_MEMORY_LIMIT >> 20)
    return workers, memory_mb << 20


def pool_for(cfg: Any) -> WorkerPool:
    """The shared pool for a config's settings (created on first use; workers start lazily).

    Untrusted configs get pools of their own: hardened workers, a smaller message cap, a
    strict decoder, and helper time charged to the call.
    """
    untrusted = getattr(cfg, "trust", "trusted") == "untrusted"
    workers, memory = pool_settings(cfg.data, untrusted=untrusted)
    key = (workers, memory, untrusted)
    pool = _pools.get(key)
    if pool is None:
        with _pools_lock:
            pool = _pools.get(key)
            if pool is None:
                pool = _pools[key] = WorkerPool(workers=workers, memory=memory, untrusted=untrusted)
    return pool


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


__all__ = [
    "LEVELS",
    "PLAIN_TYPES",
    "ProtocolError",
    "dumps_plain",
    "loads_plain",
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
