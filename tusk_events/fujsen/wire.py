"""The worker pipe's wire format: length-prefixed frames and a plain-data codec.

Frames are a 4-byte little-endian size and a payload of at most a given limit. The parent
sends :mod:`marshal` (plain types and code objects; the worker trusts its parent); the worker
answers with :mod:`pickle` protocol 5 read back by :class:`PlainUnpickler`, which refuses
every class or function reference, so nothing a compromised worker sends can name code to
run in the parent.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import pickle
import select
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

from tusk_events.defaults import ISOLATION_MAX_MESSAGE, UNTRUSTED_MAX_DICT_KEYS

PLAIN_TYPES = "dict, list, tuple, set, str, bytes, int, float, bool, None"

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

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict  # frames past _SMALL as tagged JSON (an untrusted config's worker)
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
        data = buf.getvalue()
        if self.strict and len(data) > _SMALL:
            return dumps_tagged(obj)
        return data


def loads_plain(data: bytes) -> Any:
    try:
        return PlainUnpickler(io.BytesIO(data)).load()
    except Exception as err:  # noqa: BLE001 - whatever is wrong, the message is not plain data
        raise ProtocolError(f"undecodable message ({type(err).__name__}: {err})") from None


_SMALL = 4096
"""Frames up to this size are pickles even from an untrusted worker: too few keys to collide."""

_TAG = "\x00"


def _tagged(obj: Any) -> Any:
    """``obj`` as JSON values: tuples, sets, bytes and dicts with non-text keys become tagged objects."""
    t = type(obj)
    if t is str or t is int or t is float or t is bool or obj is None:
        return obj
    if t is list:
        return [_tagged(v) for v in obj]
    if t is dict:
        if all(type(k) is str for k in obj) and not (len(obj) == 1 and next(iter(obj)).startswith(_TAG)):
            return {k: _tagged(v) for k, v in obj.items()}
        return {_TAG + "d": [[_tagged(k), _tagged(v)] for k, v in obj.items()]}
    if t is tuple:
        return {_TAG + "t": [_tagged(v) for v in obj]}
    if t is set or t is frozenset:
        return {_TAG + ("s" if t is set else "f"): [_tagged(v) for v in obj]}
    if t is bytes or t is bytearray:
        return {_TAG + ("b" if t is bytes else "a"): base64.b64encode(obj).decode("ascii")}
    raise TypeError(f"{t.__name__} is not plain data ({PLAIN_TYPES})")


def dumps_tagged(obj: Any) -> bytes:
    """The JSON form of plain data, which the parent decodes without building a dict of non-text keys in C."""
    return json.dumps(_tagged(obj), separators=(",", ":")).encode("ascii")


def _untag(max_keys: int) -> Callable[[dict[str, Any]], Any]:
    counted = [0]

    def count(keys: Iterable[Any]) -> None:
        # text hashes with the interpreter's random seed: only the other keys can be aimed
        counted[0] += sum(1 for k in keys if type(k) is not str and type(k) is not bytes)
        if counted[0] > max_keys:
            raise ValueError(f"more than {max_keys:,} dict keys or set members that are not text")

    def hook(d: dict[str, Any]) -> Any:
        if len(d) != 1:
            return d
        ((key, value),) = d.items()
        if not key.startswith(_TAG) or len(key) != 2:
            return d
        tag = key[1]
        if tag == "t":
            return tuple(value)
        if tag in "sf":
            count(value)
            return set(value) if tag == "s" else frozenset(value)
        if tag in "ba":
            raw = base64.b64decode(value, validate=True)
            return raw if tag == "b" else bytearray(raw)
        if tag == "d":
            count(p[0] for p in value)
            return {k: v for k, v in value}
        raise ValueError(f"unknown tag {tag!r}")

    return hook


def loads_strict(data: bytes, max_keys: int = UNTRUSTED_MAX_DICT_KEYS) -> Any:
    """What an untrusted config's worker sent: a small pickle, or tagged JSON for anything larger.

    Ints, floats and tuples hash without a random seed, so a few thousand keys chosen to
    collide would cost the parent seconds while the C unpickler built the dict. Large frames
    are therefore JSON (text keys only, hashed with the seed) whose other keys and set
    members are counted before they are inserted, and refused past ``max_keys``.
    """
    if len(data) <= _SMALL:
        return loads_plain(data)
    if data[:1] not in (b"[", b"{", b"\""):
        raise ProtocolError(f"a {len(data):,}-byte frame from an untrusted worker that is not tagged JSON")
    try:
        return json.loads(data, object_hook=_untag(max_keys))
    except (ValueError, TypeError, RecursionError) as err:
        raise ProtocolError(f"undecodable message ({type(err).__name__}: {_short(err)})") from None


def _short(err: BaseException) -> str:
    text = str(err)
    return text if len(text) <= 200 else text[:200] + "..."


class Channel:
    """One end of a pipe pair carrying length-prefixed frames."""

    __slots__ = ("rfd", "wfd", "_buf", "_poll", "limit", "eager")

    def __init__(self, rfd: int, wfd: int, *, limit: int = ISOLATION_MAX_MESSAGE, eager: bool = False) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self.limit = limit
        # eager: the read end is non-blocking and ``recv`` reads before it polls. A reply to a
        # request is usually there already (the peer ran while the write woke it), so the
        # common round trip saves the poll.
        self.eager = eager
        if eager:
            os.set_blocking(rfd, False)
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
        eager = ready = self.eager
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
            if ready:
                if deadline is not None and time.monotonic() >= deadline:
                    return None  # as when polling: past the deadline, data that came late is not read
            elif deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0 or not self._poll.poll(math.ceil(wait * 1000)):
                    if time.monotonic() >= deadline:
                        return None
                    continue
            elif eager:
                self._poll.poll()
            try:
                chunk = os.read(self.rfd, max(65536, need - len(buf)))
            except BlockingIOError:  # only on an eager end: nothing yet, wait for it
                ready = False
                continue
            ready = eager
            if not chunk:
                raise EOFError("the other end closed the pipe")
            if not buf and len(chunk) >= 4:
                size = _HEADER.unpack_from(chunk)[0]
                if len(chunk) == 4 + size and size <= self.limit:
                    return chunk[4:]  # the common case: exactly one frame in one read
            buf += chunk


__all__ = ["PLAIN_TYPES", "Channel", "PlainPickler", "PlainUnpickler", "PlainWriter", "ProtocolError", "dumps_plain", "dumps_tagged", "loads_plain", "loads_strict"]
