"""The helpers injected into fujsen: facades, never real modules or clients.

A real module leaks everything without a single dunder (``json.codecs.sys.modules["os"]``),
so each helper is a small object exposing chosen *functions*. Facades cannot be modified
(``json.dumps = ...`` is a violation) and an unknown attribute is a violation that names
what is available. Calls that wait on the outside world (Redis, SQL) run through
:func:`budget.blocking`: their time does not count against the fujsen's budget.
"""

from __future__ import annotations

import datetime as _datetime
import hashlib as _hashlib
import json as _json
import math as _math
import threading
import time as _time
import uuid as _uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from tusk_events.defaults import (
    MAX_CLIENTS_PER_TSK,
    RUNTIME_KEY_PREFIX,
    UNTRUSTED_MAX_GLOB_WILDCARDS,
)
from tusk_events.fujsen import budget
from tusk_events.fujsen.guards import Violation, violate


class Facade:
    """Base of every helper: immutable, and explicit about what it offers."""

    __slots__ = ()
    helper_name = "helper"

    def __setattr__(self, key: str, value: Any) -> None:
        violate(f"modifying the injected helper '{self.helper_name}' is not allowed")

    def __delattr__(self, key: str) -> None:
        violate(f"modifying the injected helper '{self.helper_name}' is not allowed")

    def __getattr__(self, key: str) -> Any:
        offered = ", ".join(sorted(n for n in dir(type(self)) if not n.startswith("_") and n != "helper_name"))
        violate(f"'{self.helper_name}' offers no '{key}' in fujsen (it offers: {offered})")

    def __repr__(self) -> str:
        return f"<tusk_events {self.helper_name} helper>"


def _static(fn: Callable[..., Any]) -> Any:
    return staticmethod(fn)


# --- json, time, math, datetime, uuid, hashlib ---------------------------------------------


def _dumps(obj: Any, *, indent: Any = None, **kwargs: Any) -> str:
    if isinstance(indent, int) and indent > 64 or isinstance(indent, str) and len(indent) > 64:
        violate("json.dumps indent larger than 64 is not allowed")
    kwargs.pop("cls", None)
    return _json.dumps(obj, indent=indent, **kwargs)


def _loads(s: str | bytes | bytearray, **kwargs: Any) -> Any:
    kwargs.pop("cls", None)
    return _json.loads(s, **kwargs)


class JsonHelper(Facade):
    __slots__ = ()
    helper_name = "json"
    dumps = _static(_dumps)
    loads = _static(_loads)
    JSONDecodeError = _json.JSONDecodeError


def _sleep(seconds: float) -> None:
    """Sleeping counts against the budget: a sleep past it ends the call as a timeout."""
    left = budget.remaining()
    if seconds > left:
        if left > 0:
            _time.sleep(left)
        st = budget.state()
        st.timed_out = True
        raise budget.Interrupt()
    _time.sleep(max(seconds, 0))


def _strftime(fmt: str, t: Any = None) -> str:
    if len(fmt) > 1000:
        violate("time.strftime format longer than 1000 characters")
    return _time.strftime(fmt) if t is None else _time.strftime(fmt, t)


class TimeHelper(Facade):
    __slots__ = ()
    helper_name = "time"
    time = _static(_time.time)
    time_ns = _static(_time.time_ns)
    monotonic = _static(_time.monotonic)
    perf_counter = _static(_time.perf_counter)
    sleep = _static(_sleep)
    strftime = _static(_strftime)
    gmtime = _static(_time.gmtime)
    localtime = _static(_time.localtime)


def _bounded(name: str, fn: Callable[..., Any], limit: int) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        for a in args:
            if isinstance(a, int) and abs(a) > limit:
                violate(f"math.{name} argument larger than {limit:,}")
        return fn(*args)

    call.__name__ = name
    return call


def _prod(iterable: Iterable[Any], *, start: Any = 1) -> Any:
    from tusk_events.fujsen.guards import _mul_

    result = start
    for x in iterable:
        result = _mul_(result, x)
    return result


_MATH_PLAIN = (
    "acos acosh asin asinh atan atan2 atanh ceil copysign cos cosh degrees dist erf erfc exp "
    "expm1 fabs floor fmod frexp fsum gamma gcd hypot isclose isfinite isinf isnan isqrt ldexp "
    "lgamma log log10 log1p log2 modf nextafter radians remainder sin sinh sqrt tan tanh trunc ulp"
).split()


class MathHelper(Facade):
    __slots__ = ()
    helper_name = "math"
    locals().update({n: staticmethod(getattr(_math, n)) for n in _MATH_PLAIN})
    pow = _static(_math.pow)
    factorial = _static(_bounded("factorial", _math.factorial, 20_000))
    comb = _static(_bounded("comb", _math.comb, 100_000))
    perm = _static(_bounded("perm", _math.perm, 100_000))
    prod = _static(_prod)
    pi = _math.pi
    e = _math.e
    tau = _math.tau
    inf = _math.inf
    nan = _math.nan


class DatetimeHelper(Facade):
    __slots__ = ()
    helper_name = "datetime"
    datetime = _datetime.datetime
    date = _datetime.date
    time = _datetime.time
    timedelta = _datetime.timedelta
    timezone = _datetime.timezone
    UTC = _datetime.UTC


class UuidHelper(Facade):
    __slots__ = ()
    helper_name = "uuid"
    uuid4 = _static(_uuid.uuid4)
    uuid5 = _static(_uuid.uuid5)
    uuid3 = _static(_uuid.uuid3)
    UUID = _uuid.UUID
    NAMESPACE_DNS = _uuid.NAMESPACE_DNS
    NAMESPACE_URL = _uuid.NAMESPACE_URL
    NAMESPACE_OID = _uuid.NAMESPACE_OID


class HashlibHelper(Facade):
    __slots__ = ()
    helper_name = "hashlib"
    md5 = _static(_hashlib.md5)
    sha1 = _static(_hashlib.sha1)
    sha224 = _static(_hashlib.sha224)
    sha256 = _static(_hashlib.sha256)
    sha384 = _static(_hashlib.sha384)
    sha512 = _static(_hashlib.sha512)
    sha3_256 = _static(_hashlib.sha3_256)
    sha3_512 = _static(_hashlib.sha3_512)
    blake2b = _static(_hashlib.blake2b)
    blake2s = _static(_hashlib.blake2s)


JSON = JsonHelper()
TIME = TimeHelper()
MATH = MathHelper()
DATETIME = DatetimeHelper()
UUID = UuidHelper()
HASHLIB = HashlibHelper()

# --- redis ----------------------------------------------------------------------------------

REDIS_COMMANDS = frozenset(
    """
    publish pubsub ping echo exists delete unlink expire pexpire expireat ttl pttl persist type
    rename keys scan get set setex psetex setnx getset getdel mget mset msetnx incr incrby
    incrbyfloat decr decrby append strlen getrange setrange
    hget hset hsetnx hmget hmset hgetall hdel hexists hincrby hincrbyfloat hkeys hvals hlen hscan
    lpush rpush lpushx rpushx lpop rpop lrange llen lindex lset lrem ltrim linsert lmove blpop
    brpop blmove rpoplpush
    sadd srem smembers sismember smismember scard spop srandmember sunion sinter sdiff sscan
    zadd zrem zrange zrangebyscore zrevrange zrevrangebyscore zscore zincrby zcard zcount zrank
    zrevrank zpopmin zpopmax zremrangebyscore zremrangebyrank zscan
    xadd xread xreadgroup xack xgroup_create xgroup_destroy xgroup_createconsumer
    xgroup_delconsumer xgroup_setid xlen xrange xrevrange xpending xpending_range xclaim
    xautoclaim xtrim xdel xinfo_stream xinfo_groups xinfo_consumers
    pfadd pfcount pfmerge
    """.split()
)
"""The redis-py data, pub/sub and stream commands a fujsen may call; nothing administrative."""

BLOCKING_COMMANDS = frozenset({"blpop", "brpop", "blmove"})
"""Commands that wait in the parent until data arrives: refused to untrusted configs."""

_PATTERN_COMMANDS = frozenset({"keys", "scan", "hscan", "sscan", "zscan"})
_KEY_PREFIX = RUNTIME_KEY_PREFIX
_KEY_PREFIX_B = RUNTIME_KEY_PREFIX.encode()


def _runtime_key(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` (an argument, or any string inside it) names one of the runtime's keys."""
    if isinstance(value, str):
        return value.startswith(_KEY_PREFIX)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value[: len(_KEY_PREFIX_B)]) == _KEY_PREFIX_B
    if depth < 4 and isinstance(value, dict):
        return any(_runtime_key(k, depth + 1) for k in value)
    if depth < 4 and isinstance(value, (list, tuple, set, frozenset)):
        return any(_runtime_key(v, depth + 1) for v in value)
    return False


def check_command(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], *, strict: bool) -> None:
    """The key policy of a fujsen's redis command; ``strict`` for untrusted configs.

    Every config: no key under the runtime's prefix (dead letters, dedup records, streams and
    their consumer groups are the runtime's, not the fujsen's). Untrusted: no blocking command
    (it would hold a parent thread past the call's budget) and no match pattern with more than
    a few wildcards (glob matching backtracks).
    """
    if _runtime_key(args) or _runtime_key(kwargs):
        violate(f"redis.{name}: keys under {RUNTIME_KEY_PREFIX!r} belong to the runtime")
    if not strict:
        return
    if name in BLOCKING_COMMANDS or (name in ("xread", "xreadgroup") and kwargs.get("block") is not None):
        violate(f"redis.{name}: blocking commands are not available to untrusted configs")
    if name in _PATTERN_COMMANDS:
        pattern = kwargs.get("match", kwargs.get("pattern"))
        if pattern is None and name == "keys":
            pattern = args[0] if args else "*"
        if isinstance(pattern, (bytes, bytearray)):
            pattern = bytes(pattern).decode("latin-1")
        if isinstance(pattern, str) and sum(pattern.count(c) for c in "*?[") > UNTRUSTED_MAX_GLOB_WILDCARDS:
            violate(f"redis.{name}: a match pattern may hold at most {UNTRUSTED_MAX_GLOB_WILDCARDS} wildcards")


def hide_runtime_keys(name: str, result: Any) -> Any:
    """``keys``/``scan`` results without the runtime's own keys (their names are not the fujsen's)."""
    if name == "keys" and isinstance(result, list):
        return [k for k in result if not _runtime_key(k)]
    if name == "scan" and isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], list):
        return result[0], [k for k in result[1] if not _runtime_key(k)]
    return result


PUBSUB_METHODS = frozenset(
    "subscribe psubscribe unsubscribe punsubscribe get_message listen close ping".split()
)


class _Commands(Facade):
    """Shared by the client and its pipeline: the allowlisted commands, run via `blocking`."""

    __slots__ = ("_target", "_label", "_strict")
    helper_name = "redis"

    def __init__(self, target: Any, label: str, strict: bool = False) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_label", label)
        object.__setattr__(self, "_strict", strict)

    def __getattr__(self, key: str) -> Any:
        if key in REDIS_COMMANDS and key != "pubsub":
            method = getattr(self._target, key)
            strict = self._strict

            def command(*args: Any, **kwargs: Any) -> Any:
                check_command(key, args, kwargs, strict=strict)
                return hide_runtime_keys(key, budget.blocking(method, *args, **kwargs))

            command.__name__ = key
            return command
        violate(
            f"the redis helper offers no '{key}' in fujsen: data, pub/sub and stream commands only"
        )

    def __repr__(self) -> str:
        return f"<redis {self._label}>"


class RedisClient(_Commands):
    """A redis-py client as a fujsen sees it: the allowlisted commands, ``pubsub()``, ``pipeline()``."""

    __slots__ = ()

    def pubsub(self, **kwargs: Any) -> PubSub:
        kwargs.pop("connection_pool", None)
        return PubSub(self._target.pubsub(**kwargs))

    def pipeline(self, transaction: bool = True) -> Pipeline:
        return Pipeline(self._target.pipeline(transaction=transaction), self._label, self._strict)


class Pipeline(_Commands):
    """Commands are buffered; ``execute()`` sends them in one round trip."""

    __slots__ = ()

    def __getattr__(self, key: str) -> Any:
        if key in REDIS_COMMANDS and key != "pubsub":
            method = getattr(self._target, key)
            strict = self._strict

            def command(*args: Any, **kwargs: Any) -> Pipeline:
                check_command(key, args, kwargs, strict=strict)
                method(*args, **kwargs)
                return self

            return command
        return super().__getattr__(key)

    def execute(self) -> list[Any]:
        return budget.blocking(self._target.execute)


class PubSub(Facade):
    """``r.pubsub()``: subscribe, then ``listen()`` or ``get_message()``; waiting is free."""

    __slots__ = ("_ps",)
    helper_name = "redis pubsub"

    def __init__(self, ps: Any) -> None:
        object.__setattr__(self, "_ps", ps)

    def subscribe(self, *channels: Any) -> None:
        budget.blocking(self._ps.subscribe, *channels)

    def psubscribe(self, *patterns: Any) -> None:
        budget.blocking(self._ps.psubscribe, *patterns)

    def unsubscribe(self, *channels: Any) -> None:
        budget.blocking(self._ps.unsubscribe, *channels)

    def punsubscribe(self, *patterns: Any) -> None:
        budget.blocking(self._ps.punsubscribe, *patterns)

    def get_message(self, ignore_subscribe_messages: bool = False, timeout: float = 0.0) -> Any:
        return budget.blocking(
            self._ps.get_message, ignore_subscribe_messages=ignore_subscribe_messages, timeout=timeout
        )

    def listen(self) -> Iterator[dict[str, Any]]:
        """Every message, as redis-py's ``listen()``; blocks until one arrives (not counted)."""
        ps = self._ps
        while ps.subscribed:
            msg = budget.blocking(ps.get_message, timeout=1.0)
            if msg is not None:
                yield msg

    def close(self) -> None:
        budget.blocking(self._ps.close)


class RedisHelper(Facade):
    """``redis.from_url(url)``: a cached client, for URLs the config or its env names.

    ``allowed_urls`` may map the URL a fujsen names to the one opened (an untrusted config
    sees the operator's bus without its credentials); ``strict`` applies the untrusted rules
    of :func:`check_command` and refuses the in-process ``memory://`` bus, whose memory and
    CPU would be the parent's.
    """

    __slots__ = ("_allowed", "_clients", "_lock", "_strict")
    helper_name = "redis"

    def __init__(self, allowed_urls: Iterable[str] | Mapping[str, str], *, strict: bool = False) -> None:
        allowed = dict(allowed_urls) if isinstance(allowed_urls, Mapping) else {u: u for u in allowed_urls}
        object.__setattr__(self, "_allowed", allowed)
        object.__setattr__(self, "_clients", {})
        object.__setattr__(self, "_lock", threading.Lock())
        object.__setattr__(self, "_strict", strict)

    def from_url(self, url: str, **_ignored: Any) -> RedisClient:
        if not isinstance(url, str) or url not in self._allowed:
            violate(
                "redis.from_url: only the bus URLs this config names may be opened "
                f"({', '.join(sorted(self._allowed)) or 'none'})"
            )
        client = self._clients.get(url)
        if client is None:
            with self._lock:
                client = self._clients.get(url)
                if client is None:
                    if len(self._clients) >= MAX_CLIENTS_PER_TSK:
                        violate("too many distinct bus URLs opened by this config's fujsen")
                    from tusk_events.bus import redis_client

                    real = self._allowed[url]
                    if self._strict and real.startswith("memory://"):
                        violate("redis.from_url: the in-process memory:// bus is not open to untrusted configs")
                    client = RedisClient(budget.blocking(redis_client, real), url, self._strict)
                    self._clients[url] = client
        return client


# --- SQL on the event store ----------------------------------------------------------------


_stores: dict[str, Any] = {}
_stores_lock = threading.Lock()


def shared_store(url: str) -> Any:
    """One open store per URL per process, shared by every TSK's ``query``/``execute``."""
    store = _stores.get(url)
    if store is None:
        with _stores_lock:
            store = _stores.get(url)
            if store is None:
                from tusk_events.store import open_store

                store = _stores[url] = open_store(url)
    return store


class SqlHelpers:
    """``query`` and ``execute`` bound to one event store URL (opened on first use)."""

    def __init__(self, store_url: str) -> None:
        self.store_url = store_url

    def _store(self) -> Any:
        return shared_store(self.store_url)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return self._run("query", sql, params)

    def execute(self, sql: str, *params: Any) -> int:
        return self._run("execute", sql, params)

    def _run(self, kind: str, sql: str, params: tuple[Any, ...]) -> Any:
        from tusk_events.errors import StoreError

        if not isinstance(sql, str):
            violate(f"{kind}(): the SQL must be a string")
        try:
            store = budget.blocking(self._store)
            return budget.blocking(getattr(store, kind), sql, params)
        except StoreError as err:
            if getattr(err, "refused", False):
                violate(f"{kind}(): {err}")
            raise


def make_functions(sql: SqlHelpers) -> dict[str, Callable[..., Any]]:
    """The plain functions a fujsen sees as ``query`` and ``execute``."""

    def query(sql_text: str, *params: Any) -> list[tuple[Any, ...]]:
        return sql.query(sql_text, *params)

    def execute(sql_text: str, *params: Any) -> int:
        return sql.execute(sql_text, *params)

    return {"query": query, "execute": execute}


def helper_globals(
    *, bus_urls: Iterable[str] | Mapping[str, str], store_url: str, extra: Mapping[str, Any] | None = None,
    untrusted: bool = False,
) -> dict[str, Any]:
    """Everything a TSK injects into its fujsen' globals."""
    g: dict[str, Any] = {
        "json": JSON,
        "time": TIME,
        "math": MATH,
        "datetime": DATETIME,
        "uuid": UUID,
        "hashlib": HASHLIB,
        "redis": RedisHelper(bus_urls, strict=untrusted),
    }
    g.update(make_functions(SqlHelpers(store_url)))
    if extra:
        g.update(extra)
    return g


__all__ = ["Facade", "RedisHelper", "check_command", "SqlHelpers", "Violation", "helper_globals"]
