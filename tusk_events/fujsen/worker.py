"""The isolation worker: a process that runs fujsen for its parent and holds nothing else.

Started by :mod:`tusk_events.fujsen.isolation` (``python -I -c <boot> <settings>``). Before it says
hello it leaves the host's network where the kernel allows, applies its resource limits and
points stdin/stdout/stderr at /dev/null, keeping only the two protocol pipes. Then it waits
for messages: definitions (compiled code, config values, which helpers to provide), calls,
and "forget" notices. Calls run in the in-process executor, watchdog included; every helper
that reaches the outside world is a proxy whose calls travel to the parent, which answers
with the real facade's result (or its violation or exception). While it waits for such an
answer the worker may be asked to run a nested call first: it does, as the in-process
runtime would.
"""

from __future__ import annotations

import ctypes
import linecache
import marshal
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

from tusk_events.defaults import ISOLATION_MAX_MESSAGE
from tusk_events.errors import FujsenError, FujsenTimeout, SandboxViolation
from tusk_events.fujsen import budget, helpers
from tusk_events.fujsen.executor import FujsenRunner
from tusk_events.fujsen.guards import safe_builtins, violate
from tusk_events.fujsen.sandbox import CompiledFujsen
from tusk_events.fujsen.wire import Channel, PlainWriter, dumps_plain

try:
    import resource
except ImportError:  # pragma: no cover - not POSIX
    resource = None  # type: ignore[assignment]

_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_PR_SET_NO_NEW_PRIVS = 38

_NESTED_ERRORS = {"FujsenError": FujsenError, "SandboxViolation": SandboxViolation, "FujsenTimeout": FujsenTimeout}
_BUILTINS = safe_builtins()
_CHECK_EVERY = 32
_remote_classes: dict[tuple[str, str], type[BaseException]] = {}


# --- talking to the parent ----------------------------------------------------------------------


class Link:
    """The worker's end of the pipes; ``request`` is a helper call answered by the parent."""

    def __init__(self, channel: Channel, loop: WorkerLoop) -> None:
        self.channel = channel
        self.loop = loop

    def request(self, msg: tuple[Any, ...]) -> Any:
        # the clock stops and no interrupt can land while a frame is half written or read
        return budget.blocking(self._roundtrip, msg)

    def _roundtrip(self, msg: tuple[Any, ...]) -> Any:
        try:
            data = self.loop.writer.dumps(msg)
        except (TypeError, RecursionError, ValueError, pickle.PicklingError) as err:
            raise TypeError(f"helper arguments must be plain data: {err}") from None
        if len(data) > self.channel.limit:
            raise ValueError(f"helper arguments of {len(data):,} bytes exceed {self.channel.limit:,}")
        self.channel.send(data)
        while True:
            reply = marshal.loads(self.channel.read())
            tag = reply[0]
            if tag == "r":
                return reply[1]
            if tag == "v":
                violate(reply[1])
            if tag == "e":
                raise _remote_exception(reply[1], reply[2], reply[3])
            if tag == "x":
                raise _NESTED_ERRORS.get(reply[1], FujsenError)(reply[2])
            self.loop.handle(reply)  # a nested call (or a definition it needs) comes first


def _remote_exception(name: str, base: str, args: tuple[Any, ...]) -> BaseException:
    """An exception the fujsen can catch like the parent's: same name, nearest builtin base."""
    base_cls = _BUILTINS.get(base)
    if not (isinstance(base_cls, type) and issubclass(base_cls, Exception)):
        base_cls = Exception
    if name != base:
        cls = _remote_classes.get((name, base))
        if cls is None:
            cls = type(name, (base_cls,), {"__module__": "tusk_events.remote"})
            _remote_classes[(name, base)] = cls
        base_cls = cls
    try:
        return base_cls(*args)
    except Exception:  # noqa: BLE001 - a class that wants other arguments gets the text
        return base_cls(" ".join(map(str, args)))


class RemoteClient:
    """The target of a worker-side ``helpers.RedisClient``: commands run in the parent."""

    __slots__ = ("_link", "_handle")

    def __init__(self, link: Link, handle: int) -> None:
        self._link = link
        self._handle = handle

    def __getattr__(self, name: str) -> Callable[..., Any]:
        link, handle = self._link, self._handle
        if name == "pipeline":
            return lambda transaction=True: BufferedPipeline(link, handle, transaction)
        if name == "pubsub":
            return lambda **kwargs: RemotePubSub(link, link.request(("o", handle, "pubsub", (), kwargs)))

        def command(*args: Any, **kwargs: Any) -> Any:
            return link.request(("o", handle, name, args, kwargs))

        return command


class BufferedPipeline:
    """A pipeline's commands, kept here and sent to the parent in one request by ``execute``."""

    __slots__ = ("_link", "_handle", "_transaction", "_commands")

    def __init__(self, link: Link, handle: int, transaction: bool) -> None:
        self._link = link
        self._handle = handle
        self._transaction = bool(transaction)
        self._commands: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        def command(*args: Any, **kwargs: Any) -> None:
            self._commands.append((name, args, kwargs))

        return command

    def execute(self) -> Any:
        commands, self._commands = tuple(self._commands), []
        return self._link.request(("p", self._handle, self._transaction, commands))


class RemotePubSub:
    """The target of a worker-side ``helpers.PubSub``."""

    __slots__ = ("_link", "_handle")

    def __init__(self, link: Link, handle: int) -> None:
        self._link = link
        self._handle = handle

    @property
    def subscribed(self) -> bool:
        return bool(self._link.request(("o", self._handle, "subscribed", (), {})))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        link, handle = self._link, self._handle

        def method(*args: Any, **kwargs: Any) -> Any:
            return link.request(("o", handle, name, args, kwargs))

        return method


class RedisProxy(helpers.Facade):
    """``redis.from_url(url)`` in a worker: the parent checks the URL and holds the client.

    The handle of an accepted URL is kept for the next calls of the same fujsen.
    """

    __slots__ = ("_link", "_handles")
    helper_name = "redis"

    def __init__(self, link: Link) -> None:
        object.__setattr__(self, "_link", link)
        object.__setattr__(self, "_handles", {})

    def from_url(self, url: str, **_ignored: Any) -> helpers.RedisClient:
        handle = self._handles.get(url) if type(url) is str else None
        if handle is None:
            handle = self._link.request(("r", url))
            self._handles[url] = handle
        return helpers.RedisClient(RemoteClient(self._link, handle), url)


def _remote_function(link: Link, name: str, label: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return link.request(("f", name, args, kwargs))

    call.__name__ = call.__qualname__ = label
    return call


_LOCAL = {
    "json": helpers.JSON, "time": helpers.TIME, "math": helpers.MATH,
    "datetime": helpers.DATETIME, "uuid": helpers.UUID, "hashlib": helpers.HASHLIB,
}

# --- running fujsen -------------------------------------------------------------------------------


class WorkerLoop:
    """Definitions and calls from the parent, answered in order."""

    def __init__(self, channel: Channel, settings: dict[str, Any]) -> None:
        self.channel = channel
        self.link = Link(channel, self)
        self.runners: dict[int, tuple[FujsenRunner, str]] = {}
        self.recycle = int(settings.get("recycle", 1 << 62))
        self.cpu_limit = float(settings.get("cpu", 1e9))
        self.writer = PlainWriter(strict=bool(settings.get("harden")))
        self.calls = 0
        usage = _usage()
        self.peak0 = usage[0] if usage else 0

    def serve(self) -> None:
        recv, loads, call = self.channel.read, marshal.loads, self.call
        while True:
            try:
                msg = loads(recv())
            except EOFError:
                return
            if msg[0] == "c":
                call(msg[1], msg[2], msg[3], msg[4])
            else:
                self.handle(msg)

    def handle(self, msg: tuple[Any, ...]) -> None:
        tag = msg[0]
        if tag == "c":
            self.call(*msg[1:])
        elif tag == "d":
            self.define(*msg[1:])
        elif tag == "f":
            for fid in msg[1]:
                self.runners.pop(fid, None)
        else:
            raise SystemExit(f"unknown message {tag!r}")

    def define(
        self, fid: int, fields: dict[str, Any], entry: str, section: str, budget_s: float,
        plain: dict[str, Any], spec: dict[str, str], lines: list[str],
    ) -> None:
        compiled = CompiledFujsen(**fields)
        g = dict(plain)
        for key, kind in spec.items():
            if kind.startswith("local:"):
                g[key] = _LOCAL[kind[6:]]
            elif kind == "redis":
                g[key] = RedisProxy(self.link)
            else:
                g[key] = _remote_function(self.link, key, key)
        g["__builtins__"] = _BUILTINS
        if lines and compiled.filename not in linecache.cache:
            linecache.cache[compiled.filename] = (sum(map(len, lines)), None, lines, compiled.filename)
        where = f"{compiled.filename}:{compiled.first_line} in {entry}"
        self.runners[fid] = (FujsenRunner(compiled, entry, section, g, budget_s), where)

    def call(self, fid: int, args: tuple[Any, ...], kwargs: dict[str, Any], callbacks: tuple[Any, ...]) -> None:
        runner, where = self.runners[fid]
        if callbacks:
            args_list = list(args)
            for place, name in callbacks:
                fn = _remote_function(self.link, name, "callback" if type(place) is int else place)
                if type(place) is int:
                    args_list[place] = fn
                else:
                    kwargs[place] = fn
            args = tuple(args_list)
        try:
            value = runner(*args, **kwargs)
        except FujsenError as err:
            retire = self._retire(force=True)
            out = self.writer.dumps(("err", type(err).__name__, str(err), _cause_text(err), retire))
        else:
            retire = self._retire(force=False)
            try:
                out = self.writer.dumps(("ok", value, retire))
            except (TypeError, ValueError, RecursionError, MemoryError, pickle.PicklingError) as err:
                text = f"{where}: the result is not plain data ({_short(err)})"
                out = self.writer.dumps(("err", "FujsenError", text, None, retire))
        if len(out) > self.channel.limit:
            text = f"{where}: the result of {len(out):,} bytes exceeds {self.channel.limit:,}"
            out = self.writer.dumps(("err", "FujsenError", text, None, True))
        self.channel.send(out)

    def _retire(self, *, force: bool) -> bool:
        """Whether to be replaced: peak memory grew past the recycle mark, or CPU nears its limit.

        Looked at after every failed call and every ``_CHECK_EVERY`` calls (a syscall each).
        """
        self.calls += 1
        if not force and self.calls % _CHECK_EVERY:
            return False
        usage = _usage()
        if usage is None:
            return False
        peak, cpu = usage
        return peak - self.peak0 > self.recycle or cpu > 0.9 * self.cpu_limit


def _short(err: BaseException) -> str:
    text = str(err)
    return text if len(text) <= 300 else text[:300] + "..."


def _cause_text(err: BaseException) -> str | None:
    cause = err.__cause__
    if cause is None:
        return None
    try:
        return "".join(traceback.format_exception(cause))[-20000:]
    except Exception:  # noqa: BLE001 - a traceback that cannot be formatted is left out
        return None


def _usage() -> tuple[int, float] | None:
    """(peak resident bytes, CPU seconds) of this process."""
    if resource is None:
        return None
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_maxrss * 1024, ru.ru_utime + ru.ru_stime


# --- setting the process up -----------------------------------------------------------------------


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def leave_network() -> tuple[str, str | None]:
    """Move into a network namespace of our own: ("isolated", None) or ("host", why not)."""
    if not sys.platform.startswith("linux"):
        return "host", f"no network namespaces on {sys.platform}"
    errors = []
    for flags, label in ((_CLONE_NEWNET, "CLONE_NEWNET"), (_CLONE_NEWUSER | _CLONE_NEWNET, "CLONE_NEWUSER|CLONE_NEWNET")):
        try:
            if hasattr(os, "unshare"):
                os.unshare(flags)  # Python 3.12+
            else:
                libc = _libc()
                if libc.unshare(flags) != 0:
                    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            return "isolated", None
        except (OSError, AttributeError) as err:
            errors.append(f"unshare({label}): {getattr(err, 'strerror', None) or err}")
    return "host", "; ".join(errors)


def _vm_size() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def apply_limits(settings: dict[str, Any]) -> dict[str, Any]:
    """Resource limits (soft = hard, so they cannot be raised again); returns what was set."""
    if resource is None:
        return {"error": "no resource module"}
    applied: dict[str, Any] = {}

    def limit(name: str, soft: int, hard: int | None = None) -> None:
        res = getattr(resource, name, None)
        if res is None:
            return
        try:
            _, cur_hard = resource.getrlimit(res)
            hard_value = soft if hard is None else hard
            if cur_hard != resource.RLIM_INFINITY:
                soft, hard_value = min(soft, cur_hard), min(hard_value, cur_hard)
            resource.setrlimit(res, (soft, hard_value))
            applied[name] = soft
        except (ValueError, OSError) as err:
            applied[name] = f"not set: {err}"

    vm = _vm_size()
    if vm is not None:
        limit("RLIMIT_AS", vm + int(settings["memory"]))
    limit("RLIMIT_CPU", int(settings["cpu"]), int(settings["cpu"]) + 5)
    limit("RLIMIT_FSIZE", 0)
    limit("RLIMIT_CORE", 0)
    limit("RLIMIT_NOFILE", int(settings["files"]))
    limit("RLIMIT_NPROC", 0)  # no new processes or threads (root is exempt)
    applied["root"] = os.geteuid() == 0
    return applied


def _no_new_privs() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def main(settings: dict[str, Any]) -> None:
    """Set the process up, say hello, serve until the parent closes the pipe."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is the parent's
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writing a file is an error, not a crash
        rfd, wfd = os.dup(0), os.dup(1)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)  # a stray print can never corrupt the protocol
        network, why = leave_network()  # first: an unprivileged namespace needs one thread
        st = budget.state()
        st.end(st.begin(1.0))  # start the watchdog before RLIMIT_NPROC forbids threads
        info: dict[str, Any] = {"pid": os.getpid(), "network": network}
        if why:
            info["network_error"] = why
        info["limits"] = apply_limits(settings)
        info["no_new_privs"] = _no_new_privs()
        if settings.get("harden"):
            from tusk_events.fujsen import harden

            info["hardening"] = harden.apply()  # Landlock needs no_new_privs first
        channel = Channel(rfd, wfd, limit=int(settings.get("limit", ISOLATION_MAX_MESSAGE)))
        loop = WorkerLoop(channel, settings)
        os.dup2(null, 2)  # startup errors went to the parent; from here on nothing does
        os.close(null)
        channel.send(dumps_plain(("hello", info)))
        loop.serve()
    except BaseException:  # noqa: BLE001 - report what we can, then go
        try:
            traceback.print_exc()
        finally:
            os._exit(70)
    os._exit(0)


__all__ = ["WorkerLoop", "apply_limits", "leave_network", "main"]
