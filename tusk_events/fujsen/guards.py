"""Run-time guards for the operations the policy rewrites, and the builtins a fujsen gets.

Work that runs inside C cannot be interrupted by the time budget (``"a" * 10**10`` is one
``memset``), so its size is checked *before* it starts. The limits are generous for real
event code and far below what would hurt the host; each is named in ``defaults.py``.
"""

from __future__ import annotations

import _string  # the parser str.format itself uses
import builtins
import re
import string
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any

from tusk_events.defaults import (
    SANDBOX_MAX_INT_BITS,
    SANDBOX_MAX_ITEMS,
    SANDBOX_MAX_POWMOD_BITS,
    SANDBOX_MAX_PRINT,
    SANDBOX_MAX_STR,
    SANDBOX_MAX_WIDTH,
)
from tusk_events.fujsen.policy import FORBIDDEN_ATTRIBUTES

_SEQ = (str, bytes, bytearray, list, tuple)
_STRINGS = (str, bytes, bytearray)


class Violation(BaseException):
    """Raised *inside* a fujsen for a run-time violation.

    It derives from BaseException so ``except Exception`` in the fujsen cannot swallow it;
    the executor also records it, so it is reported even if it is swallowed some other way.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def violate(message: str) -> None:
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


_PRINTF = re.compile(rb"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def check_printf(fmt: str) -> str | None:
    """The problem with a constant %-format (a width or precision over the limit), or None."""
    for m in _PRINTF.finditer(fmt.encode("utf-8", "replace")):
        for part in m.groups():
            if part and part != b"*" and int(part) > SANDBOX_MAX_WIDTH:
                return f"format width {int(part):,} exceeds the sandbox limit of {SANDBOX_MAX_WIDTH:,}"
    return None


def _mod_(a: Any, b: Any) -> Any:
    if isinstance(a, _STRINGS):
        fmt = a.encode("utf-8", "replace") if isinstance(a, str) else bytes(a)
        star = False
        for m in _PRINTF.finditer(fmt):
            for part in m.groups():
                if part == b"*":
                    star = True
                elif part and int(part) > SANDBOX_MAX_WIDTH:
                    _too_big("format width", int(part), SANDBOX_MAX_WIDTH)
        if star:
            for v in b if isinstance(b, tuple) else (b,):
                if type(v) is int and abs(v) > SANDBOX_MAX_WIDTH:
                    _too_big("format width", abs(v), SANDBOX_MAX_WIDTH)
    return a % b


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


_formatter = _SafeFormatter()


def _guarded_method(obj: Any, name: str) -> Callable[..., Any]:
    if obj is str and name in ("format", "format_map"):
        # the unbound method, e.g. map(str.format, templates, values)
        if name == "format":
            return lambda s, *a, **k: _guarded_method(s, "format")(*a, **k)
        return lambda s, mapping: _guarded_method(s, "format_map")(mapping)
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


def _bytes_like(factory: type) -> Callable[..., Any]:
    def make(*args: Any, **kwargs: Any) -> Any:
        if args and type(args[0]) is int and args[0] > SANDBOX_MAX_STR:
            _too_big(factory.__name__, args[0], SANDBOX_MAX_STR)
        return factory(*args, **kwargs)

    make.__name__ = factory.__name__
    return make


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
