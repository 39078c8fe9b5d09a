"""The Redis bus's own command packing: the bytes redis-py would send, without its per-argument pass."""

from __future__ import annotations

from typing import Any

import pytest
from redis.connection import Connection, PythonRespSerializer
from redis.exceptions import DataError

from tusk_events.bus.redis_bus import _pack

COMMANDS: list[tuple[Any, ...]] = [
    (b"XREADGROUP", b"GROUP", b"g", b"c", b"COUNT", 100, b"BLOCK", 5, b"STREAMS", b"tusk:stream:t", b">"),
    (b"SET", b"tusk:dedup:g:\xc3\xa9", b"1", b"EX", 86400),
    (b"XACK", "tusk:stream:été", b"g", b"1-0", b"2-0"),
    (b"XADD", b"k", b"MAXLEN", b"~", 1_000_000, b"*", b"event", b"x" * 70_000),  # past redis-py's buffer cutoff
    (b"ZADD", b"z", 1.5, b"m", -0.1, b"n", 12345678901234567890, b"o"),
]


def test_packing_gives_the_bytes_redis_py_gives() -> None:
    conn = Connection()
    assert b"".join(_pack(conn, COMMANDS)) == b"".join(conn.pack_commands(COMMANDS))


def test_an_argument_hiredis_refuses_gets_redis_pys_error() -> None:
    with pytest.raises(DataError):
        _pack(Connection(), [(b"SET", b"k", True)])


def test_a_connection_without_hiredis_packing_packs_its_own_way() -> None:
    conn = Connection(command_packer=PythonRespSerializer(6000, Connection().encoder.encode))
    assert _pack(conn, COMMANDS) == conn.pack_commands(COMMANDS)
