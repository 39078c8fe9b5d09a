"""Standard-library facades for ``import re``, ``from collections import Counter`` ...

A fujsen never gets a module object; each facade exposes chosen functions and classes of a
pure standard-library module, with the arguments that size a C-level result checked first.
``re`` runs on RE2, a linear-time engine, so no pattern can backtrack for minutes inside C.
"""

from __future__ import annotations

import base64 as _base64
import collections as _collections
import functools as _functools
import html as _html
import random as _random
import secrets as _secrets
import statistics as _statistics
import string as _string
import urllib.parse as _urlparse
from collections.abc import Callable, Iterator
from typing import Any

from tusk_events.defaults import SANDBOX_MAX_ITEMS, SANDBOX_MAX_STR
from tusk_events.fujsen.facade import Facade, _static
from tusk_events.fujsen.guards import violate


def _sized(name: str, fn: Callable[..., Any], *, arg: int = 0, key: str = "", limit: int = SANDBOX_MAX_STR) -> Any:
    """``fn`` with its size argument (position ``arg`` or keyword ``key``) checked first."""

    def call(*args: Any, **kwargs: Any) -> Any:
        n = kwargs.get(key) if key and key in kwargs else (args[arg] if len(args) > arg else None)
        if type(n) is int and n > limit:
            violate(f"{name}: size {n:,} exceeds the sandbox limit of {limit:,}")
        return fn(*args, **kwargs)

    call.__name__ = name.rsplit(".", 1)[-1]
    return staticmethod(call)


class RandomHelper(Facade):
    __slots__ = ()
    helper_name = "random"
    random = _static(_random.random)
    uniform = _static(_random.uniform)
    randint = _static(_random.randint)
    randrange = _static(_random.randrange)
    choice = _static(_random.choice)
    shuffle = _static(_random.shuffle)
    gauss = _static(_random.gauss)
    normalvariate = _static(_random.normalvariate)
    expovariate = _static(_random.expovariate)
    triangular = _static(_random.triangular)
    betavariate = _static(_random.betavariate)
    seed = _static(_random.seed)
    sample = _sized("random.sample", _random.sample, arg=1, key="k", limit=SANDBOX_MAX_ITEMS)
    choices = _sized("random.choices", _random.choices, arg=3, key="k", limit=SANDBOX_MAX_ITEMS)
    getrandbits = _sized("random.getrandbits", _random.getrandbits, limit=1 << 20)
    randbytes = _sized("random.randbytes", _random.randbytes)


class SecretsHelper(Facade):
    __slots__ = ()
    helper_name = "secrets"
    token_hex = _sized("secrets.token_hex", _secrets.token_hex, limit=SANDBOX_MAX_STR // 2)
    token_bytes = _sized("secrets.token_bytes", _secrets.token_bytes)
    token_urlsafe = _sized("secrets.token_urlsafe", _secrets.token_urlsafe, limit=SANDBOX_MAX_STR // 2)
    choice = _static(_secrets.choice)
    randbelow = _static(_secrets.randbelow)
    randbits = _sized("secrets.randbits", _secrets.randbits, limit=1 << 20)
    compare_digest = _static(_secrets.compare_digest)


class Base64Helper(Facade):
    __slots__ = ()
    helper_name = "base64"
    b64encode = _static(_base64.b64encode)
    b64decode = _static(_base64.b64decode)
    urlsafe_b64encode = _static(_base64.urlsafe_b64encode)
    urlsafe_b64decode = _static(_base64.urlsafe_b64decode)
    standard_b64encode = _static(_base64.standard_b64encode)
    standard_b64decode = _static(_base64.standard_b64decode)
    b32encode = _static(_base64.b32encode)
    b32decode = _static(_base64.b32decode)
    b16encode = _static(_base64.b16encode)
    b16decode = _static(_base64.b16decode)
    b85encode = _static(_base64.b85encode)
    b85decode = _static(_base64.b85decode)


class StatisticsHelper(Facade):
    __slots__ = ()
    helper_name = "statistics"
    mean = _static(_statistics.mean)
    fmean = _static(_statistics.fmean)
    geometric_mean = _static(_statistics.geometric_mean)
    harmonic_mean = _static(_statistics.harmonic_mean)
    median = _static(_statistics.median)
    median_low = _static(_statistics.median_low)
    median_high = _static(_statistics.median_high)
    mode = _static(_statistics.mode)
    multimode = _static(_statistics.multimode)
    pstdev = _static(_statistics.pstdev)
    pvariance = _static(_statistics.pvariance)
    stdev = _static(_statistics.stdev)
    variance = _static(_statistics.variance)
    quantiles = _sized("statistics.quantiles", _statistics.quantiles, key="n", arg=99, limit=100_000)
    StatisticsError = _statistics.StatisticsError


class HtmlHelper(Facade):
    __slots__ = ()
    helper_name = "html"
    escape = _static(_html.escape)
    unescape = _static(_html.unescape)


class UrlParseHelper(Facade):
    __slots__ = ()
    helper_name = "urllib.parse"
    quote = _static(_urlparse.quote)
    quote_plus = _static(_urlparse.quote_plus)
    unquote = _static(_urlparse.unquote)
    unquote_plus = _static(_urlparse.unquote_plus)
    urlencode = _static(_urlparse.urlencode)
    urlparse = _static(_urlparse.urlparse)
    urlunparse = _static(_urlparse.urlunparse)
    urlsplit = _static(_urlparse.urlsplit)
    urlunsplit = _static(_urlparse.urlunsplit)
    urljoin = _static(_urlparse.urljoin)
    urldefrag = _static(_urlparse.urldefrag)
    parse_qs = _static(_urlparse.parse_qs)
    parse_qsl = _static(_urlparse.parse_qsl)


URL_PARSE = UrlParseHelper()


class UrllibHelper(Facade):
    __slots__ = ()
    helper_name = "urllib"
    parse = URL_PARSE


class _Counter(_collections.Counter):  # type: ignore[type-arg]
    """``Counter`` whose ``elements()`` is a Python generator: the stdlib's repeats in C, where
    ``list(Counter(a=10**12).elements())`` could not be interrupted."""

    def elements(self) -> Iterator[Any]:
        for elem, count in self.items():
            for _ in range(count):
                yield elem


def _keep_counter(name: str) -> Callable[..., Any]:
    base = getattr(_collections.Counter, name)

    def op(self: Any, *other: Any) -> Any:
        result = base(self, *other)
        return _Counter(result) if type(result) is _collections.Counter else result

    op.__name__ = name
    return op


for _op in ("__add__", "__sub__", "__or__", "__and__", "__pos__", "__neg__"):
    setattr(_Counter, _op, _keep_counter(_op))
_Counter.__name__ = _Counter.__qualname__ = "Counter"


class CollectionsHelper(Facade):
    __slots__ = ()
    helper_name = "collections"
    Counter = _Counter
    defaultdict = _collections.defaultdict
    OrderedDict = _collections.OrderedDict
    deque = _collections.deque
    ChainMap = _collections.ChainMap


class FunctoolsHelper(Facade):
    __slots__ = ()
    helper_name = "functools"
    reduce = _static(_functools.reduce)
    partial = _functools.partial
    cmp_to_key = _static(_functools.cmp_to_key)


class StringHelper(Facade):
    __slots__ = ()
    helper_name = "string"
    ascii_letters = _string.ascii_letters
    ascii_lowercase = _string.ascii_lowercase
    ascii_uppercase = _string.ascii_uppercase
    digits = _string.digits
    hexdigits = _string.hexdigits
    octdigits = _string.octdigits
    punctuation = _string.punctuation
    printable = _string.printable
    whitespace = _string.whitespace
    capwords = _static(_string.capwords)


# -- re: a linear-time engine (RE2), so no pattern can backtrack for minutes inside C --

_RE_FLAGS = {2: "i", 8: "m", 16: "s"}  # re.IGNORECASE, re.MULTILINE, re.DOTALL
_RE_IGNORED = 32 | 256  # re.UNICODE, re.ASCII: RE2's classes are what fujsen expect


def _re2() -> Any:
    try:
        import re2
    except ImportError:
        violate("the re helper needs google-re2 (a dependency of tusk_events): pip install google-re2")
    return re2


def _compile(pattern: Any, flags: int = 0) -> Pattern:
    if isinstance(pattern, Pattern):
        return pattern
    if not isinstance(pattern, (str, bytes)):
        raise TypeError("re: the pattern must be a str or bytes")
    if type(flags) is not int or flags & ~(2 | 8 | 16 | _RE_IGNORED):
        violate("re: only the flags IGNORECASE, MULTILINE and DOTALL are available in fujsen")
    inline = "".join(c for bit, c in _RE_FLAGS.items() if flags & bit)
    text: str | bytes = pattern
    if inline and isinstance(pattern, str):
        text = f"(?{inline})" + pattern
    elif inline and isinstance(pattern, bytes):
        text = f"(?{inline})".encode() + pattern
    re2 = _re2()
    try:
        return Pattern(_compiled(re2, text), pattern, flags)
    except re2.error as err:
        raise ReError(
            f"{err} (fujsen regular expressions run on RE2: no backreferences or lookaround)"
        ) from None


@_functools.lru_cache(maxsize=256)
def _compiled(re2: Any, text: Any) -> Any:
    return re2.compile(text)


class ReError(ValueError):
    """A pattern the regular-expression engine refused (``re.error`` in fujsen)."""


class Pattern(Facade):
    """A compiled pattern: the ``re.Pattern`` methods, with substitution output size-checked."""

    __slots__ = ("_rx", "pattern", "flags")
    helper_name = "re.Pattern"

    def __init__(self, rx: Any, pattern: Any, flags: int) -> None:
        object.__setattr__(self, "_rx", rx)
        object.__setattr__(self, "pattern", pattern)
        object.__setattr__(self, "flags", flags)

    @property
    def groups(self) -> int:
        return int(self._rx.groups)

    @property
    def groupindex(self) -> dict[str, int]:
        return dict(self._rx.groupindex)

    def search(self, string: Any, *pos: Any) -> Any:
        return self._rx.search(string, *pos)

    def match(self, string: Any, *pos: Any) -> Any:
        return self._rx.match(string, *pos)

    def fullmatch(self, string: Any, *pos: Any) -> Any:
        return self._rx.fullmatch(string, *pos)

    def findall(self, string: Any, *pos: Any) -> list[Any]:
        return list(self._rx.findall(string, *pos))

    def finditer(self, string: Any, *pos: Any) -> Iterator[Any]:
        return iter(self._rx.finditer(string, *pos))

    def split(self, string: Any, maxsplit: int = 0) -> list[Any]:
        return list(self._rx.split(string, maxsplit))

    def subn(self, repl: Any, string: Any, count: int = 0) -> tuple[Any, int]:
        total = [len(string)]

        def piece(m: Any) -> Any:
            out = repl(m) if callable(repl) else m.expand(repl)
            total[0] += len(out)
            if total[0] > SANDBOX_MAX_STR:
                violate(f"re.sub result exceeds the sandbox limit of {SANDBOX_MAX_STR:,} characters")
            return out

        return self._rx.subn(piece, string, count)  # type: ignore[no-any-return]

    def sub(self, repl: Any, string: Any, count: int = 0) -> Any:
        return self.subn(repl, string, count)[0]

    def __repr__(self) -> str:
        return f"re.compile({self.pattern!r})"


class ReHelper(Facade):
    __slots__ = ()
    helper_name = "re"
    IGNORECASE = I = 2  # noqa: E741 - the re module's own name
    MULTILINE = M = 8
    DOTALL = S = 16
    UNICODE = U = 32
    ASCII = A = 256
    error = ReError
    compile = _static(_compile)

    @staticmethod
    def search(pattern: Any, string: Any, flags: int = 0) -> Any:
        return _compile(pattern, flags).search(string)

    @staticmethod
    def match(pattern: Any, string: Any, flags: int = 0) -> Any:
        return _compile(pattern, flags).match(string)

    @staticmethod
    def fullmatch(pattern: Any, string: Any, flags: int = 0) -> Any:
        return _compile(pattern, flags).fullmatch(string)

    @staticmethod
    def findall(pattern: Any, string: Any, flags: int = 0) -> list[Any]:
        return _compile(pattern, flags).findall(string)

    @staticmethod
    def finditer(pattern: Any, string: Any, flags: int = 0) -> Iterator[Any]:
        return _compile(pattern, flags).finditer(string)

    @staticmethod
    def split(pattern: Any, string: Any, maxsplit: int = 0, flags: int = 0) -> list[Any]:
        return _compile(pattern, flags).split(string, maxsplit)

    @staticmethod
    def sub(pattern: Any, repl: Any, string: Any, count: int = 0, flags: int = 0) -> Any:
        return _compile(pattern, flags).sub(repl, string, count)

    @staticmethod
    def subn(pattern: Any, repl: Any, string: Any, count: int = 0, flags: int = 0) -> tuple[Any, int]:
        return _compile(pattern, flags).subn(repl, string, count)

    @staticmethod
    def escape(pattern: Any) -> Any:
        import re as _re

        return _re.escape(pattern)


__all__ = ["Pattern", "ReError", "ReHelper", "URL_PARSE"]
