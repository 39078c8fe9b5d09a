"""The parent's side of a worker's helper calls: the real facades, run on the worker's behalf.

The worker has no Redis or database connection; its ``redis.*``, ``query``, ``execute``,
``publish`` and bound helpers are proxies whose requests arrive here. :class:`HelperServer`
(mixed into the parent's worker handle) checks each request's shape, runs the real facade
of :mod:`tusk_events.fujsen.helpers` with the config's own allowlists in the calling thread,
and encodes the result, violation or exception as a reply frame.
"""

from __future__ import annotations

import itertools
import marshal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tusk_events.errors import FujsenError, FujsenTimeout, SandboxViolation
from tusk_events.fujsen import budget, helpers, replycap
from tusk_events.fujsen.guards import Violation
from tusk_events.fujsen.wire import Channel, ProtocolError
from tusk_events.store import sqlguard

if TYPE_CHECKING:
    from tusk_events.fujsen.isolation import IsolatedRunner

_ERRORS: dict[str, type[FujsenError]] = {
    "FujsenError": FujsenError,
    "SandboxViolation": SandboxViolation,
    "FujsenTimeout": FujsenTimeout,
}

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


class HelperServer:
    """Serves a worker's helper requests; the worker handle that mixes it in owns the clients."""

    channel: Channel
    _handles: itertools.count[int]
    clients: dict[tuple[int, str], tuple[Any, Any, int]]
    client_handles: dict[int, tuple[Any, Any]]

    def _serve(self, frame: _Frame, msg: tuple[Any, ...], deadline: float | None = None) -> bytes:
        """Run one proxied helper call here, with the real facades; returns the reply frame.

        ``deadline`` (an untrusted config's call) also ends the SQL the helper runs and has
        the database bound its results (:func:`~tusk_events.store.sqlguard.bounded_sql`).
        """
        st = budget.state()
        saved = st.violation
        saved_deadline = sqlguard.call_deadline(deadline)
        saved_bounded = sqlguard.bound_results(deadline is not None)
        # what an untrusted config's redis client may read for this request: one reply frame
        saved_allowance = replycap.set_allowance(self.channel.limit)
        try:
            value = self._dispatch(frame, msg)
            try:
                reply = marshal.dumps(("r", value))
            except (ValueError, TypeError, RecursionError):
                return marshal.dumps(("e", "TypeError", "TypeError", ("the helper's reply is not plain data",)))
            if len(reply) > self.channel.limit:
                text = f"the helper's reply of {len(reply):,} bytes exceeds {self.channel.limit:,}"
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
            sqlguard.call_deadline(saved_deadline)
            sqlguard.bound_results(saved_bounded)
            replycap.restore(saved_allowance)

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


__all__ = ["HelperServer", "RemoteTraceback"]
