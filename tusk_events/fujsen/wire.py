"""The worker pipe's wire format: length-prefixed frames and a plain-data codec.

Frames are a 4-byte little-endian size and a payload of at most a given limit. The parent
sends :mod:`marshal` (plain types and code objects; the worker trusts its parent); the worker
answers with :mod:`pickle` protocol 5 read back by :class:`PlainUnpickler`, which refuses
every class or function reference, so nothing a compromised worker sends can name code to
run in the parent.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import select
import struct
import time
from typing import Any

from tusk_events.defaults import ISOLATION_MAX_MESSAGE

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


__all__ = ["PLAIN_TYPES", "Channel", "PlainPickler", "PlainUnpickler", "PlainWriter", "ProtocolError", "dumps_plain", "loads_plain"]
