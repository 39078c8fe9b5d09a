"""Redis replies read within a byte allowance: the untrusted config's redis helper.

A redis-py parser reads a bulk reply's length from its header line, then the whole payload.
A value a fujsen grew across many calls (``APPEND`` a MiB at a time) would be read whole into
the parent before the helper's reply cap refused it. The parsers here check every header
against what the current helper request may still read (:func:`set_allowance`, the size of the
reply frame to the worker) and refuse *before* reading the payload: redis-py then drops the
connection with its unread bytes, so the parent never holds more than the allowance plus one
socket read. Aggregates (arrays, maps, sets) are refused from their element count, each
element costing at least its smallest encoding; every byte read counts, so a pipeline's
replies share one allowance.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from tusk_events.defaults import UNTRUSTED_MAX_MESSAGE
from tusk_events.errors import FujsenError


class ReplyTooLarge(FujsenError):
    """A Redis reply larger than the helper call may read; refused from its header, unread."""


_local = threading.local()

_BULK = frozenset(b"$=!")  # bulk string, verbatim string, bulk error
_AGGREGATE = frozenset(b"*~>")  # array, set, push
_PAIRS = frozenset(b"%|")  # map, attribute: two elements per entry
_MIN_ELEMENT = 3  # the shortest element encoding: "_\r\n" (RESP3 null), ":0\r\n" is 4


def set_allowance(limit: int | None) -> tuple[int | None, int]:
    """Let the replies read in this thread from now on total at most ``limit`` bytes (None:
    one frame per reply); returns what :func:`restore` puts back."""
    saved = (getattr(_local, "left", None), getattr(_local, "limit", UNTRUSTED_MAX_MESSAGE))
    _local.left = limit
    _local.limit = limit if limit is not None else UNTRUSTED_MAX_MESSAGE
    return saved


def restore(saved: tuple[int | None, int]) -> None:
    _local.left, _local.limit = saved


def _charge(need: int, what: str, *, consume: bool = True) -> None:
    """Take ``need`` bytes from the allowance (or only check they are there), else refuse."""
    left: int = _local.left
    if need > left:
        limit: int = _local.limit
        raise _classes()[0](
            f"redis: a reply of {what} exceeds the {limit:,} bytes one helper call may read "
            f"({left:,} left); "
            "read it in parts (GETRANGE, LRANGE, HSCAN/SSCAN/ZSCAN with COUNT, XRANGE with COUNT)"
        )
    if consume:
        _local.left = left - need


@functools.cache
def _classes() -> tuple[type[ReplyTooLarge], type[Any], type[Any]]:
    """The redis-py subclasses, built on first use (redis-py is imported only by configs that use it)."""
    from redis._parsers import _RESP2Parser, _RESP3Parser
    from redis._parsers.socket import SocketBuffer
    from redis.exceptions import InvalidResponse

    class RedisReplyTooLarge(ReplyTooLarge, InvalidResponse):
        """An ``InvalidResponse`` too, so redis-py treats the connection as unusable and drops it."""

    class CappedBuffer(SocketBuffer):  # type: ignore[misc]
        """Charges every line; refuses a payload whose header says it is too big, before reading it.

        Status and error lines are charged after they are read: Redis keeps them short.
        """

        def readline(self, *args: Any, **kwargs: Any) -> bytes:
            line: bytes = super().readline(*args, **kwargs)
            _charge(len(line) + 2, f"{len(line) + 2:,} bytes")
            kind = line[:1]
            if kind and line[1:] not in (b"-1", b"?"):
                try:
                    n = int(line[1:])
                except ValueError:
                    return line  # not a length: a status, an error, a double
                if kind[0] in _BULK:
                    _charge(n + 2, f"{n + 2:,} bytes")
                elif kind[0] in _AGGREGATE:  # checked here, charged as the elements arrive
                    _charge(n * _MIN_ELEMENT, f"{n:,} elements", consume=False)
                elif kind[0] in _PAIRS:
                    _charge(2 * n * _MIN_ELEMENT, f"{n:,} pairs", consume=False)
            return line

    class Capped:
        """What both capped parsers add: the buffer above, and one frame per reply by default."""

        _buffer: Any

        def on_connect(self, connection: Any) -> None:
            super().on_connect(connection)  # type: ignore[misc]
            self._buffer = CappedBuffer(self._sock, self.socket_read_size, connection.socket_timeout)  # type: ignore[attr-defined]

        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            if getattr(_local, "left", None) is not None:
                return super().read_response(*args, **kwargs)  # type: ignore[misc]
            # outside a helper request (a health check, a direct use): one frame per reply
            saved = set_allowance(UNTRUSTED_MAX_MESSAGE)
            try:
                return super().read_response(*args, **kwargs)  # type: ignore[misc]
            finally:
                restore(saved)

    class CappedRESP2Parser(Capped, _RESP2Parser):  # type: ignore[misc]
        """redis-py's RESP2 parser, reading within the allowance."""

    class CappedRESP3Parser(Capped, _RESP3Parser):  # type: ignore[misc]
        """redis-py's RESP3 parser, reading within the allowance."""

    return RedisReplyTooLarge, CappedRESP2Parser, CappedRESP3Parser


def parser_for(url: str) -> type[Any]:
    """The capped parser for the protocol ``url`` asks for (``?protocol=``), else redis-py's default."""
    from urllib.parse import parse_qs, urlsplit

    import redis.utils

    default = str(getattr(redis.utils, "DEFAULT_RESP_VERSION", 2))
    protocol = parse_qs(urlsplit(url).query).get("protocol", [default])[-1]
    return _classes()[2] if protocol.strip() == "3" else _classes()[1]


__all__ = ["ReplyTooLarge", "parser_for", "restore", "set_allowance"]
