"""The operator engine: expression nodes, lazy values, and what each ``@operator`` means.

``expr.py`` parses a value such as ``@cache("5m", @query("SELECT ..."))`` or
``env("PORT", 8000) + 1`` into the nodes below. The parser evaluates a node at once
when that needs nothing but the document and the ``env`` mapping (``@env``, ``@if``,
``@json``, arithmetic); a value that needs I/O or the clock (``@query``, ``@file``,
``@date``, ``@cache``, cross-file ``.tsk.get``, ``@metrics``) or names an operator this
engine does not know stays a :class:`Deferred`: a ``str`` holding the value's source
text (so ``.data`` stays JSON-safe and shows what was written) that remembers its node.
``evaluate()`` reads a deferred value with an :class:`OperatorContext`, which carries
everything an operator may touch: the env mapping, the config's folder, a ``query``
callable, the trust level. Operators never read ``os.environ`` or any file outside
that folder themselves.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from tusk_events.errors import ConfigError, TuskError
from tusk_events.lang import dates
from tusk_events.lang.values import as_number, equal, kind, text_of, truthy

# --------------------------------------------------------------------------- nodes


class Node:
    """An expression node; ``line``/``column`` locate it in the document."""

    __slots__ = ("column", "line")

    def __init__(self, line: int, column: int) -> None:
        self.line = line
        self.column = column


class Lit(Node):
    __slots__ = ("value",)

    def __init__(self, value: Any, line: int = 0, column: int = 0) -> None:
        super().__init__(line, column)
        self.value = value


class Word(Lit):
    """A bare word in an expression that names no key: the string itself, unless an
    operator needs a number or a value there, then an unknown name (read later)."""

    __slots__ = ()


class Call(Node):
    """``@name(args)``, ``name(args)``, ``@name`` (``args`` None) or ``target.name(args)``."""

    __slots__ = ("args", "at", "name", "target")

    def __init__(self, name: str, args: list[Node] | None, line: int, column: int, *,
                 at: bool = True, target: Node | None = None) -> None:
        super().__init__(line, column)
        self.name = name
        self.args = args
        self.at = at
        self.target = target

    @property
    def label(self) -> str:
        return ("@" if self.at and self.target is None else ".") + self.name


class Unary(Node):
    __slots__ = ("op", "operand")

    def __init__(self, op: str, operand: Node, line: int, column: int) -> None:
        super().__init__(line, column)
        self.op = op
        self.operand = operand


class Binary(Node):
    __slots__ = ("left", "op", "right")

    def __init__(self, op: str, left: Node, right: Node, line: int, column: int) -> None:
        super().__init__(line, column)
        self.op = op
        self.left = left
        self.right = right


class Cond(Node):
    __slots__ = ("other", "test", "then")

    def __init__(self, test: Node, then: Node, other: Node, line: int, column: int) -> None:
        super().__init__(line, column)
        self.test = test
        self.then = then
        self.other = other


class ListNode(Node):
    __slots__ = ("items",)

    def __init__(self, items: list[Node], line: int, column: int) -> None:
        super().__init__(line, column)
        self.items = items


class ObjNode(Node):
    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, Node]], line: int, column: int) -> None:
        super().__init__(line, column)
        self.pairs = pairs


# --------------------------------------------------------------------------- lazy values


class Deferred(str):
    """A value read later: its text is the source as written (``@query("SELECT 1")``).

    ``json.dumps`` writes it as that text; :func:`evaluate` reads it. ``operator`` names
    the first operator that keeps it from being evaluated at load.
    """

    node: Node
    line: int
    column: int
    operator: str
    inert: bool

    @classmethod
    def make(cls, text: str, node: Node, operator: str, *, inert: bool) -> Deferred:
        self = cls(text)
        self.node = node
        self.line = node.line
        self.column = node.column
        self.operator = operator
        self.inert = inert
        return self


class Secret(str):
    """A string read by ``@env.secure``: commands that print a config redact it."""


# --------------------------------------------------------------------------- context

# Who receives ``@metrics(name, value)``: set by the observability layer when it loads.
_gauge_sinks: list[Callable[[str, float], None]] = []


def register_gauge_sink(sink: Callable[[str, float], None]) -> None:
    """Send every ``@metrics(name, value)`` reading to ``sink`` (lang/ knows nothing of Prometheus)."""
    if sink not in _gauge_sinks:
        _gauge_sinks.append(sink)


@dataclass
class OperatorContext:
    """What operators may read: injected by the config, never taken from the process."""

    env: Mapping[str, str]
    path: str | None = None
    folder: Path | None = None
    query: Callable[..., Any] | None = None
    trust: str = "trusted"
    now: Callable[[], float] = time.time
    cache: dict[int, tuple[float, Any]] = field(default_factory=dict)
    depth: int = 0  # how many cross-file reads led here (a cycle stops at MAX_FILE_DEPTH)
    # parses another .tsk text: (text, env=, path=) -> an object with .data (lang.parser.load)
    loader: Callable[..., Any] | None = None

    def where(self, node: Node) -> str:
        return f"{self.path or '<string>'}:{node.line}:{node.column}"


class Later(Exception):  # noqa: N818 - control flow, never escapes the parser
    """Raised during load-time evaluation: this value must wait for an OperatorContext."""

    def __init__(self, operator: str, *, inert: bool) -> None:
        super().__init__(operator)
        self.operator = operator
        self.inert = inert


# --------------------------------------------------------------------------- evaluation

_TTL_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
STR_METHODS = {"split", "lower", "upper", "strip", "trim", "replace", "startswith", "endswith"}
# Operators evaluated at load: they read only the document and the env mapping.
PURE = frozenset({"env", "env.required", "env.secure", "if", "json", "json.encode", "json.parse"})
# Operators read later, when the value is read (I/O or the clock).
LAZY = frozenset({"date", "date.now", "query", "file", "file.read", "file.exists", "cache",
                  "metrics"})
_XFILE_SUFFIX = ".tsk.get"
# SQL that starts with SELECT (after blanks and comments); the store's SQL guard does the rest
_SELECT = re.compile(r"(?:\s|--[^\n]*\n|/\*.*?\*/)*select\b", re.IGNORECASE | re.DOTALL)
MAX_FILE_DEPTH = 8


def is_known(name: str) -> bool:
    return name in PURE or name in LAZY or name.endswith(_XFILE_SUFFIX)


class Evaluator:
    """Evaluates nodes; with ``ctx`` None (at load) lazy and unknown operators raise :class:`Later`."""

    def __init__(self, ctx: OperatorContext | None, env: Mapping[str, str],
                 fail: Callable[[str, Node], Any]) -> None:
        self.ctx = ctx
        self.env = env
        self._fail = fail

    def fail(self, message: str, node: Node) -> NoReturn:
        self._fail(message, node)
        raise AssertionError("fail() returned")  # pragma: no cover

    def eval(self, node: Node) -> Any:
        if type(node) is Lit or type(node) is Word:
            value = node.value
            if isinstance(value, Deferred):
                if self.ctx is None:
                    raise Later(value.operator, inert=value.inert)
                return self.eval(value.node)
            return value
        if type(node) is Call:
            return self.call(node)
        if type(node) is Binary:
            return self.binary(node)
        if type(node) is Cond:
            return self.eval(node.then if truthy(self.eval(node.test)) else node.other)
        if type(node) is Unary:
            value = self.eval(node.operand)
            if node.op == "!":
                return not truthy(value)
            number = as_number(value)
            if number is None:
                self.fail(f"cannot negate {kind(value)}", node)
            return -number  # type: ignore[operator]
        if type(node) is ListNode:
            return [self.eval(item) for item in node.items]
        if type(node) is ObjNode:
            return {key: self.eval(value) for key, value in node.pairs}
        raise TypeError(f"not a node: {node!r}")  # pragma: no cover

    # ---- operators ------------------------------------------------------------------

    def call(self, node: Call) -> Any:
        name = node.name
        if node.target is not None:
            return self.method(node)
        args = node.args or []
        if name in ("env", "env.secure", "env.required"):
            return self.op_env(node, args)
        if name == "if":
            if len(args) not in (2, 3):
                self.fail("if(cond, a, b) takes two or three arguments", node)
            if truthy(self.eval(args[0])):
                return self.eval(args[1])
            return self.eval(args[2]) if len(args) == 3 else None
        if name in ("json", "json.encode", "json.parse"):
            if len(args) != 1:
                self.fail(f"{node.label}(value) takes one argument", node)
            value = self.eval(args[0])
            if name == "json.parse" or (name == "json" and isinstance(value, str)):
                try:
                    return json.loads(value)
                except (TypeError, ValueError) as err:
                    self.fail(f"{node.label}: not valid JSON ({err})", node)
            return json.dumps(value, ensure_ascii=False, sort_keys=True)
        if not is_known(name) or (name == "date" and node.args is None):
            if self.ctx is None:
                raise Later(node.label, inert=True)
            self.fail(f"operator {node.label} is not supported by tusk_events "
                      "(it loads as an inert value; see `tusk-events check`)", node)
        if self.ctx is None:
            raise Later(node.label, inert=False)
        return self.lazy(node, args, self.ctx)

    def op_env(self, node: Call, args: list[Node]) -> Any:
        """``env(name)``, ``env(name, default)``, ``env(name, other_name, ..., default)``."""
        if not args:
            self.fail(f"{node.label}(name[, default]) takes the variable name", node)
        first = self.eval(args[0])
        if node.name == "env.required":
            names = first if isinstance(first, list) else [first]
            values = []
            for var in names:
                if not isinstance(var, str) or not var:
                    self.fail(f"{node.label}( expects variable names as strings", node)
                if self.env.get(var) is None:
                    self.fail(f"environment variable {var} is required (@env.required) "
                              "but not set", node)
                values.append(self.env[var])
            return values if isinstance(first, list) else values[0]
        if not isinstance(first, str) or not first:
            self.fail(f"{node.label}( expects the variable name as a string", node)
        found = self.env.get(first)
        # more than two arguments: fallback variable names, the last one is the default
        for alt in args[1:-1]:
            if found is not None:
                break
            name = self.eval(alt)
            found = self.env.get(name) if isinstance(name, str) else None
        if found is None:
            found = self.eval(args[-1]) if len(args) >= 2 else ""
        return Secret(found) if node.name == "env.secure" and isinstance(found, str) else found

    def method(self, node: Call) -> Any:
        assert node.target is not None
        target = self.eval(node.target)
        args = [self.eval(a) for a in node.args or []]
        if node.name == "[]":
            index = args[0]
            try:
                if isinstance(target, dict) and isinstance(index, str):
                    return target[index]
                if isinstance(target, (list, str)) and type(index) is int:
                    return target[index]
            except (KeyError, IndexError):
                self.fail(f"no item {index!r} in {kind(target)}", node)
            self.type_fail(f"cannot index {kind(target)} with {kind(index)}", node)
        if isinstance(target, str) and node.name in STR_METHODS and node.args is not None:
            name = "strip" if node.name == "trim" else node.name
            try:
                return getattr(str(target), name)(*args)
            except (TypeError, ValueError) as err:
                self.fail(f".{node.name}(): {err}", node)
        if self.ctx is None:
            raise Later(node.label, inert=True)
        self.fail(f"method {node.label} on {kind(target)} is not supported", node)

    def type_fail(self, message: str, node: Node) -> NoReturn:
        """A type error; when a bare word that names no key is involved, that unknown name
        is the cause: the value loads as an inert one and reading it says so."""
        words = [n for n in _operands(node) if type(n) is Word]
        if words:
            if self.ctx is None:
                raise Later(f"name '{words[0].value}'", inert=True)
            self.fail(f"unknown name '{words[0].value}' (no key of that name is defined "
                      f"before it): {message}", node)
        self.fail(message, node)

    def binary(self, node: Binary) -> Any:
        op = node.op
        if op == "&&":
            left = self.eval(node.left)
            return self.eval(node.right) if truthy(left) else left
        if op == "||":
            left = self.eval(node.left)
            return left if truthy(left) else self.eval(node.right)
        a = self.eval(node.left)
        b = self.eval(node.right)
        if op == "==":
            return equal(a, b)
        if op == "!=":
            return not equal(a, b)
        if op == "+":
            if isinstance(a, list) and isinstance(b, list):
                return a + b
            numeric = (_is_number(a) and _num(b) is not None) or (_is_number(b) and _num(a) is not None)
            if (isinstance(a, str) or isinstance(b, str)) and not numeric:
                if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
                    self.type_fail(f"cannot add {kind(a)} and {kind(b)}", node)
                return text_of(a) + text_of(b)
        x, y = _num(a), _num(b)
        if op in ("<", ">", "<=", ">="):
            if x is None or y is None:
                if not (isinstance(a, str) and isinstance(b, str)) or (
                    type(node.left) is Word or type(node.right) is Word
                ):
                    self.type_fail(f"cannot compare {kind(a)} with {kind(b)} using '{op}'", node)
                x, y = a, b  # type: ignore[assignment]
            return {"<": x < y, ">": x > y, "<=": x <= y, ">=": x >= y}[op]  # type: ignore[operator]
        if x is None or y is None:
            self.type_fail(f"cannot apply '{op}' to {kind(a)} and {kind(b)}", node)
        assert x is not None and y is not None
        if op == "+":
            return x + y
        if op == "-":
            return x - y
        if op == "*":
            return x * y
        if y == 0:
            self.fail(f"division by zero in '{op}'", node)
        if op == "%":
            return x % y
        quotient = x / y
        return int(quotient) if isinstance(x, int) and isinstance(y, int) and x % y == 0 else quotient

    # ---- lazy operators ---------------------------------------------------------------

    def lazy(self, node: Call, args: list[Node], ctx: OperatorContext) -> Any:
        name = node.name
        if name in ("date", "date.now"):
            values = [self.eval(a) for a in args]
            fmt = values[0] if values else "c"
            stamp = values[1] if len(values) > 1 else ctx.now()
            if not isinstance(fmt, str):
                self.fail(f"{node.label}(format[, timestamp]): the format must be a string", node)
            number = _num(stamp)
            if number is None:
                self.fail(f"{node.label}: the timestamp must be a number of seconds", node)
            try:
                return dates.format_date(fmt, float(number))  # type: ignore[arg-type]
            except (OverflowError, OSError, ValueError) as err:
                self.fail(f"{node.label}: cannot format {number!r}: {err}", node)
        if name == "cache":
            if len(args) < 2:
                self.fail("@cache(ttl, value) takes a TTL and a value", node)
            ttl = _ttl(self.eval(args[0]))
            if ttl is None:
                self.fail('@cache: the TTL must be seconds or a duration like "30s", "5m", "1h"',
                          node)
            hit = ctx.cache.get(id(node))
            now = ctx.now()
            if hit is not None and hit[0] > now:
                return hit[1]
            value = self.eval(args[-1])
            ctx.cache[id(node)] = (now + float(ttl), value)  # type: ignore[arg-type]
            return value
        if name == "metrics":
            values = [self.eval(a) for a in args]
            if not values or not isinstance(values[0], str) or len(values) > 2:
                self.fail("@metrics(name[, value]) takes a metric name and a number", node)
            value = values[1] if len(values) == 2 else 0
            number = _num(value)
            if number is None:
                self.fail(f"@metrics: the value must be a number, not {kind(value)}", node)
            for sink in list(_gauge_sinks):
                sink(values[0], float(number))  # type: ignore[arg-type]
            return number
        if ctx.trust == "untrusted":
            self.fail(f"{node.label} is refused: the config is loaded as untrusted", node)
        if name == "query":
            return self.op_query(node, args, ctx)
        return self.op_file(node, args, ctx)

    def op_query(self, node: Call, args: list[Node], ctx: OperatorContext) -> Any:
        values = [self.eval(a) for a in args]
        if not values or not isinstance(values[0], str):
            self.fail("@query(sql, *params) takes the SQL text first", node)
        if not _SELECT.match(values[0]):
            self.fail("@query is read-only: the SQL must be a single SELECT", node)
        if ctx.query is None:
            self.fail("@query needs an event store, and this config has none", node)
        try:
            rows = ctx.query(values[0], *values[1:])
        except TuskError as err:
            self.fail(f"@query: {err}", node)
        rows = [list(r) if isinstance(r, tuple) else r for r in rows]
        if len(rows) == 1 and isinstance(rows[0], list) and len(rows[0]) == 1:
            return rows[0][0]  # SELECT COUNT(*) reads as the number
        return rows

    def op_file(self, node: Call, args: list[Node], ctx: OperatorContext) -> Any:
        values = [self.eval(a) for a in args]
        if not values or not isinstance(values[0], str):
            self.fail(f"{node.label} takes a path as a string", node)
        name = node.name
        xfile = name.endswith(_XFILE_SUFFIX)
        relative = name[: -len(".get")] if xfile else values[0]
        target = self._inside(node, ctx, relative)
        if name == "file.exists":
            return target.is_file()
        try:
            text = target.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            self.fail(f"{node.label}: cannot read {relative}: {getattr(err, 'strerror', None) or err}",
                      node)
        if not xfile:
            return text
        return self._other_file(node, ctx, target, text, values[0])

    def _other_file(self, node: Call, ctx: OperatorContext, target: Path, text: str,
                    key: Any) -> Any:
        """``key`` (dotted) of the sibling .tsk ``target``, read with the same env and folder."""
        if not isinstance(key, str):
            self.fail(f"{node.label}(key) takes the key as a string", node)
        if ctx.depth >= MAX_FILE_DEPTH:
            self.fail(f"{node.label}: .tsk files read each other more than {MAX_FILE_DEPTH} "
                      "deep (a cycle?)", node)
        if ctx.loader is None:
            self.fail(f"{node.label}: this context cannot read other .tsk files", node)
        other = ctx.loader(text, env=ctx.env, path=str(target))
        value: Any = other.data
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                self.fail(f"{node.label}: no key {key!r} in {target.name}", node)
            value = value[part]
        sub = OperatorContext(env=ctx.env, path=str(target), folder=ctx.folder, query=ctx.query,
                              trust=ctx.trust, now=ctx.now, depth=ctx.depth + 1,
                              loader=ctx.loader)
        return evaluate(value, sub)

    def _inside(self, node: Call, ctx: OperatorContext, relative: str) -> Path:
        if ctx.folder is None:
            self.fail(f"{node.label} reads files next to the config; a config loaded from a "
                      "string has no folder", node)
        assert ctx.folder is not None
        base = ctx.folder.resolve()
        target = (base / relative).resolve()
        if Path(relative).is_absolute() or not target.is_relative_to(base):
            self.fail(f"{node.label}: {relative!r} is outside the config's folder {base}", node)
        return target


def _operands(node: Node) -> list[Node]:
    if isinstance(node, Binary):
        return [node.left, node.right]
    if isinstance(node, Call):
        return [n for n in (node.target, *(node.args or [])) if n is not None]
    return []


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _num(value: Any) -> int | float | None:
    return as_number(value)


def _ttl(value: Any) -> float | None:
    """Seconds in ``30``, ``"30s"``, ``"5m"``, ``"1h"``, ``"500ms"``, ``"2d"``."""
    number = as_number(value)
    if number is not None:
        return float(number) if number >= 0 else None
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    for unit in sorted(_TTL_UNITS, key=len, reverse=True):
        if text.endswith(unit):
            amount = as_number(text[: -len(unit)].strip())
            if amount is not None and amount >= 0:
                return float(amount) * _TTL_UNITS[unit]
            return None
    return None


def evaluate(value: Any, ctx: OperatorContext) -> Any:
    """``value`` with every :class:`Deferred` inside it read (lists and dicts are copied)."""
    if isinstance(value, Deferred):
        def fail(message: str, node: Node) -> None:
            raise ConfigError(f"{ctx.where(node)}: {message}")

        return evaluate(Evaluator(ctx, ctx.env, fail).eval(value.node), ctx)
    if type(value) is dict:
        return {k: evaluate(v, ctx) for k, v in value.items()}
    if type(value) is list:
        return [evaluate(v, ctx) for v in value]
    return value


REDACTED = "***"


def redact(value: Any) -> Any:
    """``value`` with every :class:`Secret` (``@env.secure``) replaced by ``"***"``."""
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def has_deferred(value: Any) -> bool:
    if isinstance(value, Deferred):
        return True
    if isinstance(value, dict):
        return any(has_deferred(v) for v in value.values())
    if isinstance(value, list):
        return any(has_deferred(v) for v in value)
    return False


__all__ = [
    "Deferred", "Evaluator", "Later", "Node", "OperatorContext", "Secret", "evaluate",
    "has_deferred", "is_known", "redact", "register_gauge_sink",
]
