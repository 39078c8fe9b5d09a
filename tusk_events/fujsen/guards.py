"""Run-time guards for the operations the policy rewrites, and the builtins a fujsen gets.

Work that runs inside C cannot be interrupted by the time budget (``"a" * 10**10`` is one
``memset``), so its size is checked *before* it starts. The limits are generous for real
event code and far below what would hurt the host; each is named in ``defaults.py``.

The module is long on purpose: it is the run-time half of the policy in ``sandbox.py`` (every
``_name_`` the policy emits is defined here, next to the builtins it replaces), and a reviewer
checking that a C-level operation is closed needs to see all of its paths in one place.
"""

from __future__ import annotations

import _string  # the parser str.format itself uses
import builtins
import collections
import re
import string
import types
import unicodedata
import weakref
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from tusk_events.defaults import (
    SANDBOX_MAX_DIV_WORK,
    SANDBOX_MAX_INT_BITS,
    SANDBOX_MAX_ITEMS,
    SANDBOX_MAX_ITERATOR_NESTING,
    SANDBOX_MAX_NESTING,
    SANDBOX_MAX_POWMOD_BITS,
    SANDBOX_MAX_PRINT,
    SANDBOX_MAX_RANGE_BITS,
    SANDBOX_MAX_SCAN,
    SANDBOX_MAX_STR,
    SANDBOX_MAX_WIDTH,
)
from tusk_events.fujsen.policy import FORBIDDEN_ATTRIBUTES

_SEQ = (str, bytes, bytearray, list, tuple, collections.deque)
_STRINGS = (str, bytes, bytearray)


class Violation(BaseException):
    """Raised *inside* a fujsen for a run-time violation.

    It derives from BaseException so ``except Exception`` in the fujsen cannot swallow it;
    the executor also records it, so it is reported even if it is swallowed some other way.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def violate(message: str) -> NoReturn:
    from tusk_events.fujsen import budget

    budget.record_violation(message)
    raise Violation(message)


def _too_big(kind: str, size: int, limit: int) -> None:
    violate(f"{kind} of size {size:,} exceeds the sandbox limit of {limit:,}")


# --- binary operators -----------------------------------------------------------------


def _mul_(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is int and tb is int:
        if a.bit_length() + b.bit_length() > SANDBOX_MAX_INT_BITS:
            _too_big("integer product (bits)", a.bit_length() + b.bit_length(), SANDBOX_MAX_INT_BITS)
        return a * b
    if ta is float or tb is float:
        return a * b
    if tb in (int, bool) and isinstance(a, _SEQ):
        _check_repeat(a, b)
    elif ta in (int, bool) and isinstance(b, _SEQ):
        _check_repeat(b, a)
    return a * b


def _check_repeat(seq: Any, times: int) -> None:
    size = len(seq) * times
    limit = SANDBOX_MAX_STR if isinstance(seq, _STRINGS) else SANDBOX_MAX_ITEMS
    if size > limit:
        _too_big(f"{type(seq).__name__} repetition", size, limit)


def _pow_(a: Any, b: Any, mod: Any = None) -> Any:
    if mod is not None:
        # modular exponentiation costs exponent bits x (modulus bits)^2 in C, uninterruptibly
        for name, v in (("exponent", b), ("modulus", mod)):
            if type(v) is int and v.bit_length() > SANDBOX_MAX_POWMOD_BITS:
                _too_big(f"pow() {name} (bits)", v.bit_length(), SANDBOX_MAX_POWMOD_BITS)
    elif type(a) is int and type(b) is int and b > 0:
        bits = max(a.bit_length(), 1) * b
        if abs(a) > 1 and bits > SANDBOX_MAX_INT_BITS:
            _too_big("integer power (bits)", bits, SANDBOX_MAX_INT_BITS)
    if mod is None:
        return a**b
    return builtins.pow(a, b, mod)


def _lshift_(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int and a and a.bit_length() + b > SANDBOX_MAX_INT_BITS:
        _too_big("integer shift (bits)", a.bit_length() + b, SANDBOX_MAX_INT_BITS)
    return a << b


_PRINTF = re.compile(rb"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)?", re.S)


def printf_fields(fmt: bytes) -> list[tuple[bytes | None, bytes | None, bytes | None]]:
    """(width, precision, conversion) of each %-conversion; ``%%`` is skipped."""
    out = []
    for m in _PRINTF.finditer(fmt):
        if m.group(3) == b"%" and m.end() - m.start() == 2:
            continue
        out.append((m.group(1), m.group(2), m.group(3)))
    return out


def check_printf(fmt: str) -> str | None:
    """The problem with a constant %-format (a width or precision over the limit), or None."""
    for width, prec, _conv in printf_fields(fmt.encode("utf-8", "replace")):
        for part in (width, prec):
            if part and part != b"*" and int(part) > SANDBOX_MAX_WIDTH:
                return f"format width {int(part):,} exceeds the sandbox limit of {SANDBOX_MAX_WIDTH:,}"
    return None


def _mod_(a: Any, b: Any) -> Any:
    if isinstance(a, _STRINGS):
        fmt = a.encode("utf-8", "replace") if isinstance(a, str) else bytes(a)
        values = b if isinstance(b, tuple) else (b,)
        pos = 0
        for width, prec, conv in printf_fields(fmt):
            at = pos + (width == b"*") + (prec == b"*")
            if conv in (b"r", b"a") and not isinstance(b, dict) and at < len(values):
                _check_repr_size(values[at], "%" + conv.decode())
            for part in (width, prec):
                if part == b"*":
                    # the star takes the next value as the width: only that value is checked
                    v = values[pos] if pos < len(values) else None
                    if type(v) is int and abs(v) > SANDBOX_MAX_WIDTH:
                        _too_big("format width", abs(v), SANDBOX_MAX_WIDTH)
                    pos += 1
                elif part and int(part) > SANDBOX_MAX_WIDTH:
                    _too_big("format width", int(part), SANDBOX_MAX_WIDTH)
            pos += 1
    elif type(a) is int and type(b) is int:
        _check_division(a, b)
    return a % b


def _check_division(a: int, b: int) -> None:
    work = a.bit_length() * b.bit_length()
    if work > SANDBOX_MAX_DIV_WORK and b.bit_length() > 64:
        _too_big("integer division (bits x bits)", work, SANDBOX_MAX_DIV_WORK)


def _floordiv_(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        _check_division(a, b)
    return a // b


def _divmod(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        _check_division(a, b)
    return builtins.divmod(a, b)


def _round(number: Any, ndigits: Any = None) -> Any:
    if ndigits is None:
        return builtins.round(number)
    if type(number) is int and type(ndigits) is int and ndigits < 0:
        # round(x, -n) builds 10**n in C: when that dwarfs x the answer is 0 anyway
        if -ndigits > number.bit_length() * 0.302 + 2:
            return 0
    return builtins.round(number, ndigits)


def _hash(obj: Any) -> int:
    """hash() of nested tuples recurses in C with no depth check: refuse very deep ones."""
    if type(obj) is tuple:
        _check_nesting(obj)
    return builtins.hash(obj)


def _check_nesting(obj: tuple[Any, ...]) -> None:
    stack = [(obj, 1)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        if depth > SANDBOX_MAX_NESTING:
            violate(f"tuple nested deeper than {SANDBOX_MAX_NESTING:,} levels")
        seen += 1
        if seen > SANDBOX_MAX_ITEMS:
            return
        stack.extend((x, depth + 1) for x in item if type(x) is tuple)


def _check_repr_size(obj: Any, what: str) -> None:
    """repr/ascii escape each character of a str up to 10x (``\\U000e0001``), of bytes 4x."""
    if type(obj) is str and len(obj) * 10 > SANDBOX_MAX_STR and not obj.isascii():
        _too_big(f"{what} result", len(obj) * 10, SANDBOX_MAX_STR)
    elif isinstance(obj, (bytes, bytearray)) and len(obj) * 4 > SANDBOX_MAX_STR:
        _too_big(f"{what} result", len(obj) * 4, SANDBOX_MAX_STR)


def _repr_checked(fn: Callable[[Any], str]) -> Callable[[Any], str]:
    def call(obj: Any) -> str:
        _check_repr_size(obj, f"{fn.__name__}()")
        return fn(obj)

    call.__name__ = fn.__name__
    return call


_guarded_repr = _repr_checked(builtins.repr)
_guarded_ascii = _repr_checked(builtins.ascii)


# --- formatting -------------------------------------------------------------------------

_SPEC = re.compile(r"(?:.?[<>=^])?[+\- ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?")


def check_format_spec(spec: str) -> str | None:
    """The problem with a format spec (a width or precision over the limit), or None."""
    m = _SPEC.match(spec)
    if m:
        for part in m.groups():
            if part and len(part) > 7 or (part and int(part) > SANDBOX_MAX_WIDTH):
                return f"format width {part} exceeds the sandbox limit of {SANDBOX_MAX_WIDTH:,}"
    return None


def _format_(value: Any, spec: str = "") -> str:
    problem = check_format_spec(spec)
    if problem:
        violate(problem)
    return builtins.format(value, spec)


class _SafeFormatter(string.Formatter):
    """``str.format`` whose fields cannot walk to private or frame attributes."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        _first, rest = _string.formatter_field_name_split(field_name)
        for is_attr, key in rest:
            if not is_attr:
                continue  # "{0[key]}" is an item lookup: safe on the builtin containers
            norm = unicodedata.normalize("NFKC", str(key))
            if norm.startswith("_") or norm in FORBIDDEN_ATTRIBUTES:
                violate(f"format field '{field_name}' reaches a forbidden attribute")
        return super().get_field(field_name, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        return _format_(value, format_spec)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion == "r":
            return _guarded_repr(value)
        if conversion == "a":
            return _guarded_ascii(value)
        return super().convert_field(value, conversion)


_formatter = _SafeFormatter()
_FUNCTION_TYPES = (builtins.type(_format_), builtins.type(len), builtins.type(lambda: 0))


_UNBOUND_OWNERS = (str, bytes, bytearray, int, list, tuple)


def _guarded_method(obj: Any, name: str) -> Callable[..., Any]:
    if isinstance(obj, _Proxy):
        obj = obj._real
    if obj in _UNBOUND_OWNERS:
        if name == "from_bytes" and obj is int:
            return _from_bytes
        if name != "maketrans" and hasattr(obj, name):
            # the unbound method, e.g. map(str.format, templates) or str.ljust(s, n): the
            # guard of the bound method applies to the instance it is called on
            owner = obj

            def unbound(self: Any, *a: Any, **k: Any) -> Any:
                if not isinstance(self, owner):
                    raise TypeError(f"descriptor '{name}' requires a '{owner.__name__}' object")
                return _guarded_method(self, name)(*a, **k)

            return unbound
    method = builtins.getattr(obj, name)
    if name == "format" and isinstance(obj, str):
        return lambda *a, **k: _formatter.vformat(obj, a, k)
    if name == "format_map" and isinstance(obj, str):
        return lambda mapping: _formatter.vformat(obj, (), mapping)
    if name in ("ljust", "rjust", "center", "zfill"):

        def pad(width: int, *rest: Any) -> Any:
            if type(width) is int and width > SANDBOX_MAX_STR:
                _too_big(f"str.{name} width", width, SANDBOX_MAX_STR)
            return method(width, *rest)

        return pad
    if name == "expandtabs":

        def expand(tabsize: int = 8) -> Any:
            if type(tabsize) is int and tabsize * obj.count("\t" if isinstance(obj, str) else b"\t") > SANDBOX_MAX_STR:
                _too_big("expandtabs result", tabsize * len(obj), SANDBOX_MAX_STR)
            return method(tabsize)

        return expand
    if name == "replace" and isinstance(obj, _STRINGS):

        def replace(old: Any, new: Any, count: int = -1) -> Any:
            n = obj.count(old) if old else len(obj) + 1
            if count >= 0:
                n = min(n, count)
            size = len(obj) + n * max(len(new) - len(old), 0)
            if size > SANDBOX_MAX_STR:
                _too_big("replace result", size, SANDBOX_MAX_STR)
            return method(old, new, count)

        return replace
    if name == "to_bytes" and type(obj) is int:

        def to_bytes(length: Any = 1, *rest: Any, **kw: Any) -> Any:
            if type(length) is int and length > SANDBOX_MAX_STR:
                _too_big("to_bytes length", length, SANDBOX_MAX_STR)
            return method(length, *rest, **kw)

        return to_bytes
    if name == "translate" and isinstance(obj, str):

        def translate(table: Any) -> Any:
            if isinstance(table, dict):
                grow = max((len(v) for v in table.values() if isinstance(v, str)), default=1)
                if len(obj) * grow > SANDBOX_MAX_STR:
                    _too_big("translate result", len(obj) * grow, SANDBOX_MAX_STR)
            elif not isinstance(table, (str, bytes, bytearray)) and len(obj) > SANDBOX_MAX_STR // 16:
                violate("str.translate with a lookup object on a long string: use a dict")
            return method(table)

        return translate
    if name == "count" and isinstance(obj, (list, tuple)):

        def count(value: Any) -> Any:
            if isinstance(value, _STRINGS) and len(obj) * len(value) > SANDBOX_MAX_SCAN:
                _too_big("count() comparisons", len(obj) * len(value), SANDBOX_MAX_SCAN)
            return method(value)

        return count
    if name == "count" and isinstance(obj, _STRINGS):

        def count_sub(sub: Any, *rest: Any) -> Any:
            if isinstance(sub, _STRINGS) and len(obj) * min(len(sub), 100) > SANDBOX_MAX_SCAN:
                _too_big("count() comparisons", len(obj) * min(len(sub), 100), SANDBOX_MAX_SCAN)
            return method(sub, *rest)

        return count_sub
    if name == "join" and isinstance(obj, _STRINGS):

        def join(items: Iterable[Any]) -> Any:
            items = list(items)
            if len(items) > SANDBOX_MAX_ITEMS:
                _too_big("join input", len(items), SANDBOX_MAX_ITEMS)
            size = len(obj) * max(len(items) - 1, 0) + sum(len(i) for i in items if isinstance(i, _SEQ))
            if size > SANDBOX_MAX_STR:
                _too_big("join result", size, SANDBOX_MAX_STR)
            return method(items)

        return join
    return method


def _from_bytes(data: Any, *rest: Any, **kw: Any) -> int:
    if isinstance(data, (bytes, bytearray)) and len(data) * 8 > SANDBOX_MAX_INT_BITS:
        _too_big("int.from_bytes input (bits)", len(data) * 8, SANDBOX_MAX_INT_BITS)
    if not isinstance(data, (bytes, bytearray)):
        data = bytes(_iter_limited(data))
        if len(data) * 8 > SANDBOX_MAX_INT_BITS:
            _too_big("int.from_bytes input (bits)", len(data) * 8, SANDBOX_MAX_INT_BITS)
    return int.from_bytes(data, *rest, **kw)


def _iter_limited(items: Any) -> list[Any]:
    out = []
    for x in items:
        out.append(x)
        if len(out) > SANDBOX_MAX_STR:
            _too_big("sequence", len(out), SANDBOX_MAX_STR)
    return out


def _attr_(obj: Any, name: str) -> Any:
    """Resolve one of the size-sensitive method names of the policy."""
    return _guarded_method(obj, name)


def _write_(obj: Any) -> Any:
    """Attribute writes are allowed on instances of classes the fujsen defined, nothing else."""
    if type(type(obj)) is type and getattr(type(obj), "__tusk_sandbox_class__", False):
        return obj
    violate(f"setting attributes on {type(obj).__name__} objects is not allowed")


# --- builtins ---------------------------------------------------------------------------


def _range(*args: int) -> range:
    for a in args:
        # machine-sized bounds keep products of loop variables small (the policy relies on it)
        if type(a) is int and a.bit_length() > SANDBOX_MAX_RANGE_BITS:
            _too_big("range bound (bits)", a.bit_length(), SANDBOX_MAX_RANGE_BITS)
    try:
        r = builtins.range(*args)
        n = len(r)
    except OverflowError:
        violate("range too large for the sandbox")
    if n > SANDBOX_MAX_ITEMS:
        _too_big("range", n, SANDBOX_MAX_ITEMS)
    return r


def _iter(obj: Any, *sentinel: Any) -> Any:
    """``iter(callable, sentinel)`` as a Python loop: in C it could spin forever, uninterruptibly."""
    if not sentinel:
        return builtins.iter(obj)
    if len(sentinel) > 1:
        raise TypeError(f"iter expected at most 2 arguments, got {1 + len(sentinel)}")
    return _call_until(obj, sentinel[0])


def _call_until(fn: Callable[[], Any], sentinel: Any) -> Any:
    while True:
        value = fn()
        if value == sentinel:
            return
        yield value


class _Proxy:
    """A builtin class as a fujsen sees it: calls are size-checked, everything else is the class.

    ``isinstance(v, (bytes, bytearray))``, ``bytes.fromhex(...)`` and ``issubclass`` behave as
    with the real class (Python asks the proxy through ``__instancecheck__``).
    """

    __slots__ = ("_real",)

    def __init__(self, real: type) -> None:
        object.__setattr__(self, "_real", real)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args and type(args[0]) is int and args[0] > SANDBOX_MAX_STR:
            _too_big(self._real.__name__, args[0], SANDBOX_MAX_STR)
        return self._real(*args, **kwargs)

    def __instancecheck__(self, obj: Any) -> bool:
        return isinstance(obj, self._real)

    def __subclasscheck__(self, cls: Any) -> bool:
        return issubclass(cls._real if isinstance(cls, _Proxy) else cls, self._real)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._real, name)

    def __setattr__(self, name: str, value: Any) -> None:
        violate(f"setting attributes on {self._real.__name__} is not allowed")

    def __eq__(self, other: Any) -> bool:
        return other is self or other is self._real

    def __hash__(self) -> int:
        return hash(self._real)

    def __repr__(self) -> str:
        return repr(self._real)


def _bytes_like(factory: type) -> Any:
    return _Proxy(factory)


_NESTING: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
"""How deep each live map/filter/zip/enumerate of a fujsen sits in a chain of them."""


def _nest(gen: Any, sources: tuple[Any, ...]) -> Any:
    depth = 1 + max((_NESTING.get(s, 0) for s in sources if isinstance(s, types.GeneratorType)), default=0)
    if depth > SANDBOX_MAX_ITERATOR_NESTING:
        gen.close()
        violate(f"map/filter/zip/enumerate nested more than {SANDBOX_MAX_ITERATOR_NESTING} deep "
                "(C would recurse through all of them); build a list on the way instead")
    _NESTING[gen] = depth
    return gen


def _map(fn: Any, *iterables: Any) -> Any:
    """map() as a generator whose nesting depth is counted: C recurses through nested ones."""
    return _nest((x for x in builtins.map(fn, *iterables)), iterables)


def _filter(fn: Any, iterable: Any) -> Any:
    return _nest((x for x in builtins.filter(fn, iterable)), (iterable,))


def _zip(*iterables: Any, strict: bool = False) -> Any:
    return _nest((x for x in builtins.zip(*iterables, strict=strict)), iterables)


def _enumerate(iterable: Any, start: int = 0) -> Any:
    return _nest((x for x in builtins.enumerate(iterable, start)), (iterable,))


def _name_(obj: Any) -> str:
    """``x.__name__``: the name of a function or class, nothing else."""
    if isinstance(obj, _Proxy):
        obj = obj._real
    name = builtins.getattr(obj, "__name__", None) if isinstance(obj, (type, _FUNCTION_TYPES)) else None
    if not isinstance(name, str):
        raise AttributeError(f"'{builtins.type(obj).__name__}' object has no attribute '__name__'")
    return name


def _typename_(obj: Any) -> str:
    """``type(x).__name__`` / ``x.__class__.__name__``."""
    return builtins.type(obj).__name__


def _hasattr(obj: Any, name: Any) -> bool:
    if not isinstance(name, str):
        raise TypeError("hasattr(): attribute name must be string")
    norm = unicodedata.normalize("NFKC", name)
    if norm.startswith("_") or norm in FORBIDDEN_ATTRIBUTES:
        return False
    if _facades.base is not None and isinstance(obj, _facades.base):
        return norm in dir(builtins.type(obj))
    return builtins.hasattr(obj, name)


def _super_(cls: Any, obj: Any) -> Any:
    if not (isinstance(cls, type) and getattr(cls, "__tusk_sandbox_class__", False) and isinstance(obj, cls)):
        violate("super() is only available in methods of the fujsen's own classes")
    return builtins.super(cls, obj)


def _augitem_(container: Any, key: Any, op: Callable[[Any, Any], Any], value: Any) -> None:
    container[key] = op(container[key], value)


def _augattr_(obj: Any, name: str, op: Callable[[Any, Any], Any], value: Any) -> None:
    builtins.setattr(obj, name, op(builtins.getattr(obj, name), value))


def _in_budget_() -> bool:
    from tusk_events.fujsen import budget

    return budget.state().active


class _Facades:
    """Set by ``helpers`` when it loads (it imports this module, so not the other way round)."""

    base: type | None = None
    importer: Callable[[str, str | None], Any] | None = None


_facades = _Facades()


def register_facades(base: type, importer: Callable[[str, str | None], Any]) -> None:
    _facades.base = base
    _facades.importer = importer


def _import_(module: str, name: str | None = None) -> Any:
    """What ``import X`` / ``from X import name`` binds in a fujsen: a facade or its member."""
    importer = _facades.importer
    if importer is None:
        violate(f"import of '{module}' is not available here")
    return importer(module, name)


# C code (datetime.strptime, strftime) imports through the builtins of the running frame
_C_IMPORTS = frozenset({"_strptime", "time", "datetime", "_datetime", "locale", "calendar", "unicodedata"})


def _c_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
    if level == 0 and name in _C_IMPORTS:
        return builtins.__import__(name, None, None, fromlist, 0)
    raise ImportError(f"import of '{name}' is not available in fujsen")


def _pow_builtin(base: Any, exp: Any, mod: Any = None) -> Any:
    return _pow_(base, exp, mod)


def _metaclass(name: str, bases: tuple[type, ...], ns: dict[str, Any]) -> type:
    ns["__tusk_sandbox_class__"] = True
    return builtins.type(name, bases, ns)


class PrintCollector:
    """``print`` inside a fujsen: collected (capped), never written to the host's stdout."""

    def __init__(self, _getattr_: Any = None) -> None:
        self.parts: list[str] = []
        self.size = 0

    def _call_print(self, *objects: Any, sep: str = " ", end: str = "\n", **_: Any) -> None:
        text = sep.join(str(o) for o in objects) + end
        if self.size < SANDBOX_MAX_PRINT:
            text = text[: SANDBOX_MAX_PRINT - self.size]
            self.parts.append(text)
            self.size += len(text)
        from tusk_events.fujsen import budget

        budget.record_print(text)

    def __call__(self) -> str:
        return "".join(self.parts)


_SAFE_NAMES = (
    "abs all any ascii bin bool bytearray bytes callable chr complex dict divmod enumerate "
    "filter float format frozenset hash hex int isinstance issubclass iter len list map max "
    "min next oct ord pow range repr reversed round set slice sorted str sum tuple zip "
    "None True False Ellipsis NotImplemented "
    "ArithmeticError AssertionError AttributeError EOFError Exception FloatingPointError "
    "IndexError KeyError LookupError NameError NotImplementedError OverflowError "
    "RecursionError RuntimeError StopIteration TypeError UnicodeDecodeError "
    "UnicodeEncodeError UnicodeError ValueError ZeroDivisionError TimeoutError "
    "ConnectionError"
).split()


def safe_builtins() -> dict[str, Any]:
    """The builtins a fujsen sees: pure functions and exception classes, with size guards."""
    table: dict[str, Any] = {n: builtins.__dict__[n] for n in _SAFE_NAMES}
    table.update(
        range=_range,
        iter=_iter,
        bytes=_bytes_like(bytes),
        bytearray=_bytes_like(bytearray),
        pow=_pow_builtin,
        format=_format_,
        divmod=_divmod,
        round=_round,
        hash=_hash,
        repr=_guarded_repr,
        ascii=_guarded_ascii,
        _repr_=_guarded_repr,
        _ascii_=_guarded_ascii,
        map=_map,
        filter=_filter,
        zip=_zip,
        enumerate=_enumerate,
        hasattr=_hasattr,
        _floordiv_=_floordiv_,
        _name_=_name_,
        _typename_=_typename_,
        _super_=_super_,
        _augitem_=_augitem_,
        _augattr_=_augattr_,
        _in_budget_=_in_budget_,
        _import_=_import_,
        __import__=_c_import,
        _mul_=_mul_,
        _pow_=_pow_,
        _lshift_=_lshift_,
        _mod_=_mod_,
        _format_=_format_,
        _attr_=_attr_,
        _write_=_write_,
        _print_=PrintCollector,
        _getattr_=None,
        __metaclass__=_metaclass,
        __name__="fujsen",
    )
    # __build_class__ is what a `class` statement calls; the metaclass marks the class.
    table["__build_class__"] = builtins.__build_class__
    return table


__all__ = ["PrintCollector", "Violation", "check_format_spec", "safe_builtins", "violate"]
