"""The helpers injected into fujsen: facades, never real modules or clients.

A real module leaks everything without a single dunder (``json.codecs.sys.modules["os"]``),
so each helper is a small object exposing chosen *functions*. Facades cannot be modified
(``json.dumps = ...`` is a violation) and an unknown attribute is a violation that names
what is available. Calls that wait on the outside world (Redis, SQL) run through
:func:`budget.blocking`: their time does not count against the fujsen's budget.
"""

from __future__ import annotations

import collections as _collections
import collections.abc
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
    SANDBOX_MAX_ITEMS,
    UNTRUSTED_MAX_GLOB_WILDCARDS,
)
from tusk_events.fujsen import budget, stdlib
from tusk_events.fujsen.facade import Facade, _static
from tusk_events.fujsen.guards import Violation, register_facades, violate

# --- json, time, math, datetime, uuid, hashlib ---------------------------------------------


def _dumps(obj: Any, *, indent: Any = None, **kwargs: Any) -> str:
    if isinstance(indent, int) and indent > 64 or isinstance(indent, str) and len(indent) > 64:
        violate("json.dumps indent larger than 64 is not allowed")
    seps = kwargs.get("separators")
    if seps is not None and (
        not isinstance(seps, (tuple, list)) or any(not isinstance(x, str) or len(x) > 64 for x in seps)
    ):
        violate("json.dumps separators must be two strings of at most 64 characters")
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


def _isqrt(n: Any) -> int:
    from tusk_events.defaults import SANDBOX_MAX_ISQRT_BITS

    if type(n) is int and n.bit_length() > SANDBOX_MAX_ISQRT_BITS:
        violate(f"math.isqrt argument of {n.bit_length():,} bits exceeds {SANDBOX_MAX_ISQRT_BITS:,}")
    return _math.isqrt(n)


def _prod(iterable: Iterable[Any], *, start: Any = 1) -> Any:
    from tusk_events.fujsen.guards import _mul_

    result = start
    for x in iterable:
        result = _mul_(result, x)
    return result


_MATH_PLAIN = (
    "acos acosh asin asinh atan atan2 atanh ceil copysign cos cosh degrees dist erf erfc exp "
    "expm1 fabs floor fmod frexp fsum gamma gcd hypot isclose isfinite isinf isnan ldexp "
    "lgamma log log10 log1p log2 modf nextafter radians remainder sin sinh sqrt tan tanh trunc ulp"
).split()


class MathHelper(Facade):
    __slots__ = ()
    helper_name = "math"
    locals().update({n: staticmethod(getattr(_math, n)) for n in _MATH_PLAIN})
    pow = _static(_math.pow)
    isqrt = _static(_isqrt)
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

_FACADES: dict[str, Facade] = {
    "json": JSON, "time": TIME, "math": MATH, "datetime": DATETIME, "uuid": UUID, "hashlib": HASHLIB,
    "re": stdlib.ReHelper(), "random": stdlib.RandomHelper(), "secrets": stdlib.SecretsHelper(),
    "base64": stdlib.Base64Helper(), "statistics": stdlib.StatisticsHelper(), "html": stdlib.HtmlHelper(),
    "urllib": stdlib.UrllibHelper(), "urllib.parse": stdlib.URL_PARSE,
    "collections": stdlib.CollectionsHelper(), "functools": stdlib.FunctoolsHelper(),
    "string": stdlib.StringHelper(),
}


def import_facade(module: str, name: str | None = None) -> Any:
    """What ``import module`` (or ``from module import name``) binds in a fujsen."""
    facade = _FACADES.get(module)
    if facade is None:
        violate(f"import of '{module}' is not allowed in fujsen")
    if name is None:
        return facade
    return getattr(facade, name)  # a missing name is a violation naming what is offered


register_facades(Facade, import_facade)

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


REDIS_KEYWORDS = frozenset(
    """
    ex px exat pxat nx xx keepttl get ch incr gt lt withscores desc start end num byscore bylex rev
    offset count match block noack id maxlen approximate minid limit streams groupname consumername
    min idle_time idle justid mkstream entries_read name fields mapping items amount value timeout
    src dst source destination where refvalue pivot position index pos keys key channel message
    pattern type wherefrom whereto min_idle_time max
    """.split()
)
"""Keyword arguments a fujsen may pass to redis-py commands: plain values only, no callbacks
(``score_cast_func=``) and nothing that reaches the connection (``**options``)."""

_PLAIN_SCALARS = (
    str, bytes, int, float, bool, type(None),
    # immutable stdlib values whose methods no fujsen can override (no subclassing them)
    _datetime.datetime, _datetime.date, _datetime.time, _datetime.timedelta, _uuid.UUID,
)


def plain(value: Any, depth: int = 0, count: list[int] | None = None) -> Any:
    """``value`` as plain data, built *before* host code sees it.

    Helpers hand their arguments to host libraries (redis-py calls ``.items()``, iterates,
    encodes): with fujsen objects that would run fujsen code without the clock. Iterables are
    drained here, inside the budget; anything else is a TypeError.
    """
    count = count if count is not None else [0]
    count[0] += 1
    if count[0] > SANDBOX_MAX_ITEMS:
        violate(f"helper arguments hold more than {SANDBOX_MAX_ITEMS:,} items")
    t = type(value)
    if t in _PLAIN_SCALARS:
        return value
    if depth > 16:
        raise TypeError("helper arguments nested deeper than 16 levels")
    if t is bytearray:
        return bytes(value)
    if isinstance(value, dict):
        return {plain(k, depth + 1, count): plain(v, depth + 1, count) for k, v in dict.items(value)}
    if t is tuple:
        return tuple(plain(v, depth + 1, count) for v in value)
    if isinstance(value, (list, tuple, set, frozenset)) or _is_iterator(value):
        return [plain(v, depth + 1, count) for v in value]
    raise TypeError(
        f"helper arguments must be plain data (str, bytes, numbers, lists, dicts), not {t.__name__}"
    )


def _is_iterator(value: Any) -> bool:
    import types

    return isinstance(value, (types.GeneratorType, _collections.abc.Iterator, dict().keys().__class__,
                              dict().values().__class__, dict().items().__class__))


def _plain_call(method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    for key in kwargs:
        if key not in REDIS_KEYWORDS:
            violate(f"the redis helper does not take the keyword '{key}' in fujsen")
    args = plain(args)
    kwargs = {k: plain(v) for k, v in kwargs.items()}
    return budget.blocking(method, *args, **kwargs)


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
                return hide_runtime_keys(key, _plain_call(method, args, kwargs))

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

    def pubsub(self, ignore_subscribe_messages: bool = False) -> PubSub:
        flag = bool(plain(ignore_subscribe_messages))
        return PubSub(budget.blocking(self._target.pubsub, ignore_subscribe_messages=flag))

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
                _plain_call(method, args, kwargs)
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
        budget.blocking(self._ps.subscribe, *plain(channels))

    def psubscribe(self, *patterns: Any) -> None:
        budget.blocking(self._ps.psubscribe, *plain(patterns))

    def unsubscribe(self, *channels: Any) -> None:
        budget.blocking(self._ps.unsubscribe, *plain(channels))

    def punsubscribe(self, *patterns: Any) -> None:
        budget.blocking(self._ps.punsubscribe, *plain(patterns))

    def get_message(self, ignore_subscribe_messages: bool = False, timeout: float = 0.0) -> Any:
        flag, wait = bool(plain(ignore_subscribe_messages)), plain(timeout)
        if type(wait) not in (int, float) or wait != wait:
            raise TypeError("get_message(timeout=...) takes a number of seconds")
        return budget.blocking(self._ps.get_message, ignore_subscribe_messages=flag, timeout=wait)

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
    of :func:`check_command`, opens clients of its own whose replies are refused from their
    header past the helper call's allowance (:mod:`tusk_events.fujsen.replycap`), and refuses
    the in-process ``memory://`` bus, whose memory and CPU would be the parent's (bounding its
    values and glob matching would mean metering fakeredis from inside).
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
                    real = self._allowed[url]
                    if self._strict and real.startswith("memory://"):
                        violate(
                            "redis.from_url: the in-process memory:// bus is not open to untrusted configs "
                            "(its memory and CPU are the runtime's own); run them on a redis:// bus"
                        )
                    opener = _open_capped_redis if self._strict else _open_redis
                    client = RedisClient(budget.blocking(opener, real), url, self._strict)
                    self._clients[url] = client
        return client


def _open_redis(url: str) -> Any:
    # importing the bus (and redis-py) is host work too: it must not eat the fujsen's budget
    from tusk_events.bus import redis_client

    return redis_client(url)


def _open_capped_redis(url: str) -> Any:
    """A client of this config's own whose replies are read within the helper call's
    allowance (:mod:`tusk_events.fujsen.replycap`): a big value is refused from its header.

    Only on one Redis server: redis-py's cluster client drops the parser it is given, so a
    cluster's replies could not be bounded; the helper is refused there rather than unbounded.
    """
    from tusk_events.bus import new_redis_client
    from tusk_events.fujsen.replycap import parser_for

    parser = parser_for(url)
    client = new_redis_client(url, parser_class=parser)
    pool = getattr(client, "connection_pool", None)
    if pool is None or pool.connection_kwargs.get("parser_class") is not parser:
        client.close()
        violate(
            "redis.from_url: untrusted configs may use the redis helper on a single Redis server only "
            "(a cluster's reply sizes cannot be bounded)"
        )
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
        from tusk_events.store.unit import current_unit

        if not isinstance(sql, str):
            violate(f"{kind}(): the SQL must be a string")
        params = plain(params)
        try:
            store = budget.blocking(self._store)
            unit = current_unit.get()
            if unit is not None and unit.store is store:
                # a handler running under exactly-once tracking: its SQL joins the handling's
                # transaction (committed with the tracking row, or not at all)
                return budget.blocking(getattr(unit, kind), sql, params)
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
        g.update({k: _plain_arguments(v) if callable(v) else v for k, v in extra.items()})
    return g


def _plain_arguments(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A host function given to fujsen receives plain data (e.g. ``publish(t, p, metadata)``
    would otherwise call the fujsen's objects' methods inside ``blocking``, with no clock)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*plain(args), **{k: plain(v) for k, v in kwargs.items()})

    call.__name__ = call.__qualname__ = getattr(fn, "__name__", "helper")
    call.__doc__ = fn.__doc__
    return call


__all__ = ["Facade", "RedisHelper", "SqlHelpers", "Violation", "check_command", "helper_globals"]
