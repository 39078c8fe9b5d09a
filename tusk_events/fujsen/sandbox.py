"""The fujsen policy: what embedded Python may say, checked and rewritten before it is compiled.

RestrictedPython's ``RestrictingNodeTransformer`` supplies the base policy (no names or
attributes starting with ``_``, no ``exec``-style nodes, no ``try/except*``, no ``nonlocal``,
no async). It would also wrap *every* attribute access, subscript and iteration in a guard
call, which costs ~4x on ordinary code; here names known at compile time are checked at
compile time instead, and only the operations whose danger depends on run-time values are
rewritten into guard calls (``guards.py``):

* ``a * b``, ``a ** b``, ``a << b``, ``a % b`` and the augmented forms -> size guards, so
  ``"a" * 10**10`` or ``10**10**10`` is refused before C starts on it;
* ``x.format`` / ``x.format_map`` / ``x.ljust`` ... -> a guarded attribute that checks field
  names and widths;
* f-string format specs that are not constant -> a guarded ``format``;
* ``obj.attr = v`` -> a write guard (only instances of classes the fujsen defined are writable);
* bare ``except:`` -> ``except Exception:``, so the sandbox's own interrupts (which derive
  from ``BaseException``) cannot be swallowed.

Everything else is refused with a :class:`SandboxViolation` that names the construct and its
``.tsk`` line, at load time, even in code that never runs.

The module is long on purpose: the whole compile-time policy (what is refused, what is
rewritten into which guard, and the small-value proofs that let ordinary loops skip guards)
reads as one unit; splitting it would hide a rewrite from the rule it depends on.
"""

from __future__ import annotations

import ast
import unicodedata
from dataclasses import dataclass
from types import CodeType

from RestrictedPython.transformer import RestrictingNodeTransformer

from tusk_events.errors import SandboxViolation
from tusk_events.fujsen.policy import (
    ALLOWED_IMPORTS,
    EXCEPTION_BASES,
    FORBIDDEN_ATTRIBUTES,
    FORBIDDEN_NAMES,
    GUARDED_ATTRIBUTES,
    HELPER_NAMES,
)

_GUARDED_BINOPS: dict[type[ast.operator], str] = {
    ast.Mult: "_mul_",
    ast.Pow: "_pow_",
    ast.LShift: "_lshift_",
    ast.Mod: "_mod_",
    ast.FloorDiv: "_floordiv_",
}

@dataclass(frozen=True)
class CompiledFujsen:
    """A fujsen that passed the policy: its module code and the functions it defines."""

    name: str
    code: CodeType
    functions: tuple[str, ...]
    filename: str
    first_line: int
    stateless: bool = False
    """True when executing the definitions creates nothing a call could mutate (no classes,
    no mutable module constants or defaults): the functions can then be reused across calls."""


class FujsenPolicy(RestrictingNodeTransformer):
    """RestrictedPython's checks, plus ours, without per-access guard calls."""

    def __init__(
        self,
        filename: str,
        bound_names: set[str],
        small_ints: frozenset[str] = frozenset(),
        *,
        class_names: frozenset[str] = frozenset(),
        load_time: frozenset[int] = frozenset(),
    ) -> None:
        super().__init__()
        self.filename = filename
        self.bound_names = bound_names
        self.small_ints = small_ints
        self.class_names = class_names
        self.load_time = load_time  # ids of defs whose defaults/decorators run at load
        self.violations: list[tuple[int, str]] = []
        self._finally_depth = 0
        self._loop_in_finally: list[int] = []
        self._methods: set[int] = set()  # ids of defs directly in a class body
        self._classes: list[str] = []  # enclosing class names (for super())
        self._class_body: set[int] = set()  # ids of every def directly in a class body
        self._self_name: list[str] = []  # first parameter of the enclosing method ('' elsewhere)

    # -- reporting -------------------------------------------------------------------

    def error(self, node: ast.AST, info: str) -> None:  # RestrictedPython reports here
        self.violations.append((getattr(node, "lineno", 0), info))

    def violation(self, node: ast.AST, what: str) -> None:
        self.violations.append((getattr(node, "lineno", 0), what))

    # -- names -----------------------------------------------------------------------

    def check_name(self, node, name, allow_magic_methods=False):  # type: ignore[no-untyped-def]
        if name is None:
            return
        name = unicodedata.normalize("NFKC", name)
        if name == "__init__" and id(node) in self._methods:
            return  # a constructor: runs only when the fujsen calls its class
        if name.startswith("_") and name != "_":
            self.violation(node, f"name '{name}' starts with '_'")
            return
        super().check_name(node, name, allow_magic_methods)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        name = unicodedata.normalize("NFKC", node.id)
        if (
            isinstance(node.ctx, ast.Load)
            and name in FORBIDDEN_NAMES
            and name not in self.bound_names
        ):
            self.violation(node, f"'{name}' is not available in fujsen")
            return node
        if isinstance(node.ctx, ast.Store) and name in HELPER_NAMES:
            self.violation(node, f"rebinding the injected helper '{name}' is not allowed")
        return super().visit_Name(node)  # type: ignore[return-value]

    # -- attributes ------------------------------------------------------------------

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        attr = unicodedata.normalize("NFKC", node.attr)
        if attr == "__name__" and isinstance(node.ctx, ast.Load):
            return self._name_of(node)
        if (
            attr == "__init__" and isinstance(node.ctx, ast.Load) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name) and node.value.func.id == "super"
        ):
            node.value = self.visit(node.value)  # type: ignore[assignment]
            return node  # super().__init__(...): _super_ checks the class is the fujsen's
        if attr.startswith("_"):
            self.violation(node, f"attribute '{attr}' starts with '_'")
            return node
        if attr in FORBIDDEN_ATTRIBUTES or attr.startswith(("gi_", "cr_", "ag_", "f_", "tb_", "co_")):
            self.violation(node, f"attribute '{attr}' is not available in fujsen")
            return node
        node.value = self.visit(node.value)  # type: ignore[assignment]
        if isinstance(node.ctx, ast.Load):
            if attr in GUARDED_ATTRIBUTES:
                call = ast.Call(
                    func=ast.Name("_attr_", ast.Load()),
                    args=[node.value, ast.Constant(attr)],
                    keywords=[],
                )
                return ast.copy_location(call, node)
            return node
        if isinstance(node.value, ast.Name) and node.value.id in HELPER_NAMES:
            self.violation(node, f"modifying the injected helper '{node.value.id}' is not allowed")
            return node
        # Store/Del: route through the write guard.
        node.value = ast.copy_location(
            ast.Call(func=ast.Name("_write_", ast.Load()), args=[node.value], keywords=[]),
            node.value,
        )
        return node

    def _name_of(self, node: ast.Attribute) -> ast.AST:
        """``x.__name__``, ``type(x).__name__``, ``x.__class__.__name__`` -> guarded reads."""
        value = node.value
        guard = "_name_"
        if (
            isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "type"
            and "type" not in self.bound_names and len(value.args) == 1 and not value.keywords
        ):
            value, guard = value.args[0], "_typename_"
        elif isinstance(value, ast.Attribute) and value.attr == "__class__" and isinstance(value.ctx, ast.Load):
            value, guard = value.value, "_typename_"
        call = ast.Call(func=ast.Name(guard, ast.Load()), args=[self.visit(value)], keywords=[])
        return ast.copy_location(call, node)

    # -- operations whose danger depends on run-time sizes -----------------------------

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        node = self.node_contents_visit(node)
        guard = _GUARDED_BINOPS.get(type(node.op))
        if guard is None or _obviously_small(node, self.small_ints):
            return node
        if isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
            from tusk_events.fujsen.guards import check_printf

            problem = check_printf(node.left.value)
            if problem:
                self.violation(node, problem)
            if not _printf_needs_values(node.left.value):
                return node  # a constant format without '*' widths or %r/%a was checked here
        call = ast.Call(func=ast.Name(guard, ast.Load()), args=[node.left, node.right], keywords=[])
        return ast.copy_location(call, node)

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        node.value = self.visit(node.value)  # type: ignore[assignment]
        target = node.target
        guard = _GUARDED_BINOPS.get(type(node.op))
        if isinstance(target, ast.Name):
            self.check_name(target, target.id)
            if target.id in HELPER_NAMES:
                self.violation(node, f"rebinding the injected helper '{target.id}' is not allowed")
        else:
            node.target = self.visit(target)  # type: ignore[assignment]
        if guard is None:
            return node
        if isinstance(node.target, ast.Subscript) and not _simple_target(node.target):
            # d["a"]["b"] *= 2 -> _augitem_(d["a"], "b", _mul_, 2): container and key once
            sub = node.target
            call = ast.Call(
                func=ast.Name("_augitem_", ast.Load()),
                args=[sub.value, sub.slice, ast.Name(guard, ast.Load()), node.value], keywords=[],
            )
            return ast.copy_location(ast.Expr(call), node)
        if isinstance(node.target, ast.Attribute) and not _simple_target(node.target):
            att = node.target  # value is already _write_(...)
            call = ast.Call(
                func=ast.Name("_augattr_", ast.Load()),
                args=[att.value, ast.Constant(att.attr), ast.Name(guard, ast.Load()), node.value],
                keywords=[],
            )
            return ast.copy_location(ast.Expr(call), node)
        if not isinstance(target, (ast.Name, ast.Subscript, ast.Attribute)) or not _simple_target(target):
            self.violation(node, "augmented *, **, <<, % assignment to a complex target; write it out")
            return node
        load = _as_load(node.target)
        call = ast.Call(func=ast.Name(guard, ast.Load()), args=[load, node.value], keywords=[])
        assign = ast.Assign(targets=[node.target], value=call)
        return ast.copy_location(assign, node)

    def visit_FormattedValue(self, node: ast.FormattedValue) -> ast.AST:
        node.value = self.visit(node.value)  # type: ignore[assignment]
        if node.conversion in (114, 97):
            # f"{s!r}" escapes each character of a long str up to 10x: the guarded repr/ascii
            guard = "_repr_" if node.conversion == 114 else "_ascii_"
            node.value = ast.copy_location(_call(guard, node.value), node.value)
            node.conversion = -1
        spec = node.format_spec
        if spec is None:
            return node
        if isinstance(spec, ast.JoinedStr) and all(isinstance(v, ast.Constant) for v in spec.values):
            from tusk_events.fujsen.guards import check_format_spec

            text = "".join(str(v.value) for v in spec.values)  # type: ignore[attr-defined]
            problem = check_format_spec(text)
            if problem:
                self.violation(node, problem)
            return node
        spec = self.visit(spec)  # type: ignore[assignment]
        # f"{x:{w}}" -> f"{_format_(x, f'{w}')}" so the dynamic width is checked first.
        value: ast.expr = node.value
        if node.conversion != -1:
            conv = {115: "str", 114: "repr", 97: "ascii"}[node.conversion]
            value = ast.Call(func=ast.Name(conv, ast.Load()), args=[value], keywords=[])
        call = ast.Call(func=ast.Name("_format_", ast.Load()), args=[value, spec], keywords=[])
        new = ast.FormattedValue(value=call, conversion=-1, format_spec=None)
        return ast.copy_location(new, node)

    # -- statements ------------------------------------------------------------------

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        return self.node_contents_visit(node)

    def visit_For(self, node: ast.For) -> ast.AST:
        return self._loop(node)

    def visit_While(self, node: ast.While) -> ast.AST:
        return self._loop(node)

    def _loop(self, node: ast.For | ast.While) -> ast.AST:
        self._loop_in_finally.append(0)
        try:
            return self.node_contents_visit(node)
        finally:
            self._loop_in_finally.pop()

    def visit_comprehension(self, node: ast.comprehension) -> ast.AST:
        return self.node_contents_visit(node)

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        return self.node_contents_visit(node)

    def visit_Global(self, node: ast.Global) -> ast.AST:
        self.violation(node, "'global' statements are not allowed (each call gets fresh globals)")
        return node

    def visit_Nonlocal(self, node: ast.Nonlocal) -> ast.AST:
        for name in node.names:
            self.check_name(node, name)
        return node

    def visit_Import(self, node: ast.Import) -> ast.AST:
        """``import json`` binds the injected facade; other stdlib facades come from ``_import_``."""
        out: list[ast.stmt] = []
        for alias in node.names:
            if not self._importable(node, alias.name, alias.asname):
                continue
            bind = alias.asname or alias.name.split(".")[0]
            if alias.asname is None and alias.name in HELPER_NAMES:
                continue  # the helper is already bound: a no-op
            if alias.name in HELPER_NAMES:
                value: ast.expr = ast.Name(alias.name, ast.Load())
            else:
                module = alias.name if alias.asname else alias.name.split(".")[0]
                value = _call("_import_", ast.Constant(module))
            out.append(ast.Assign(targets=[ast.Name(bind, ast.Store())], value=value))
        if not out:
            return ast.copy_location(ast.Pass(), node)
        for stmt in out:
            ast.copy_location(stmt, node)
        return out  # type: ignore[return-value]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        module = node.module or ""
        if node.level or not self._importable(node, module, None) or module == "redis":
            if module == "redis":
                self.violation(node, "'from redis import ...' is not available in fujsen; use redis.from_url(event_bus)")
            return node
        out: list[ast.stmt] = []
        for alias in node.names:
            if alias.name == "*":
                self.violation(node, f"'from {module} import *' is not allowed; name what you use")
                continue
            bind = alias.asname or alias.name
            for n in (alias.name, bind):
                if n.startswith("_"):
                    self.violation(node, f"imported name '{n}' starts with '_'")
            value = _call("_import_", ast.Constant(module), ast.Constant(alias.name))
            out.append(ast.copy_location(ast.Assign(targets=[ast.Name(bind, ast.Store())], value=value), node))
        return out or ast.copy_location(ast.Pass(), node)  # type: ignore[return-value]

    def _importable(self, node: ast.AST, module: str, asname: str | None) -> bool:
        if asname is not None and (asname.startswith("_") or asname in HELPER_NAMES and asname != module):
            self.violation(node, f"'import {module} as {asname}' would hide a helper or bind a private name")
            return False
        if module in ALLOWED_IMPORTS:
            return True
        available = ", ".join(sorted(ALLOWED_IMPORTS))
        self.violation(node, f"import of '{module}' is not allowed in fujsen (available: {available})")
        return False

    def visit_Try(self, node: ast.Try) -> ast.AST:
        for handler in node.handlers:
            self._check_handler(handler)
        if node.finalbody:
            suspends = any(
                isinstance(sub, (ast.Yield, ast.YieldFrom)) for child in node.body for sub in ast.walk(child)
            )
            self._finally_depth += 1
            self._loop_in_finally.append(0)
            try:
                node.finalbody = [self.visit(s) for s in node.finalbody]  # type: ignore[misc]
            finally:
                self._finally_depth -= 1
                self._loop_in_finally.pop()
            finalbody = node.finalbody
            if suspends:
                # a generator closed by the host's garbage collector runs its 'finally' with
                # no budget: only run it inside a fujsen call
                guard = ast.If(test=_call("_in_budget_"), body=finalbody, orelse=[])
                finalbody = [ast.copy_location(guard, finalbody[0])]
            node.finalbody = []
            node = self.node_contents_visit(node)
            node.finalbody = finalbody
            return node
        return self.node_contents_visit(node)

    def _check_handler(self, handler: ast.ExceptHandler) -> None:
        if handler.type is None:
            # A bare except must not swallow the sandbox's interrupts.
            handler.type = ast.copy_location(ast.Name("Exception", ast.Load()), handler)
            return
        names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        for n in names:
            ok = isinstance(n, ast.Name) or (isinstance(n, ast.Attribute) and _dotted(n))
            if not ok:
                self.violation(handler, "an 'except' clause must name exception classes")
            elif isinstance(n, ast.Name) and n.id in self.bound_names and n.id not in self.class_names:
                self.violation(handler, f"'except {n.id}' names a variable the fujsen rebinds")

    def visit_Return(self, node: ast.Return) -> ast.AST:
        if self._finally_depth and self._loop_in_finally and self._loop_in_finally[-1] == 0:
            self.violation(node, "'return' inside 'finally' is not allowed")
        return self.node_contents_visit(node)

    def visit_Break(self, node: ast.Break) -> ast.AST:
        if self._finally_depth and self._loop_in_finally and self._loop_in_finally[-1] == 0:
            self.violation(node, "'break' inside 'finally' is not allowed")
        return node

    def visit_Continue(self, node: ast.Continue) -> ast.AST:
        if self._finally_depth and self._loop_in_finally and self._loop_in_finally[-1] == 0:
            self.violation(node, "'continue' inside 'finally' is not allowed")
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        if node.decorator_list and id(node) in self.load_time:
            self.violation(
                node, "decorators on top-level functions and methods are not allowed in fujsen "
                "(they run at load); decorate a function defined inside the entry point instead"
            )
        # A nested def starts a new scope for the 'finally' checks.
        saved = self._finally_depth
        self._finally_depth = 0
        params = node.args.posonlyargs + node.args.args
        self._self_name.append(params[0].arg if id(node) in self._class_body and params else "")
        try:
            return super().visit_FunctionDef(node)  # type: ignore[return-value]
        finally:
            self._finally_depth = saved
            self._self_name.pop()

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        if node.keywords or node.decorator_list:
            self.violation(node, "classes with keywords or decorators are not allowed")
            return node
        for base in node.bases:
            if not (isinstance(base, ast.Name) and (base.id in EXCEPTION_BASES or base.id in self.class_names)):
                self.violation(
                    node, "a class may only derive from a builtin exception class or a class defined in the same fujsen (define the base class there too)"
                )
                return node
        for stmt in node.body:
            if isinstance(stmt, ast.FunctionDef):
                self._class_body.add(id(stmt))
                if stmt.name == "__init__":
                    self._methods.add(id(stmt))
                elif stmt.name.startswith("_"):
                    self.violation(
                        stmt, f"special method '{stmt.name}' is not allowed (only __init__; "
                        "write an ordinary method and call it)"
                    )
        self._classes.append(node.name)
        try:
            return super().visit_ClassDef(node)  # type: ignore[return-value]
        finally:
            self._classes.pop()

    def visit_Call(self, node: ast.Call) -> ast.AST:
        # super() -> _super_(Class, self): zero-argument super needs a __class__ cell
        if isinstance(node.func, ast.Name) and node.func.id == "super" and "super" not in self.bound_names:
            if node.args or node.keywords or not self._classes or not self._self_name:
                self.violation(node, "super() is only available, without arguments, in a method")
                return node
            call = _call("_super_", ast.Name(self._classes[-1], ast.Load()), ast.Name(self._self_name[-1], ast.Load()))
            return ast.copy_location(call, node)
        return self.node_contents_visit(node)

    def visit_Match(self, node: ast.AST) -> ast.AST:
        return self.node_contents_visit(node)

    def visit_match_case(self, node: ast.AST) -> ast.AST:
        return self.node_contents_visit(node)

    def visit_MatchValue(self, node: ast.AST) -> ast.AST:
        return self.node_contents_visit(node)

    def visit_MatchSingleton(self, node: ast.AST) -> ast.AST:
        return self.node_contents_visit(node)

    def visit_MatchSequence(self, node: ast.AST) -> ast.AST:
        return self.node_contents_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> ast.AST:
        self.check_name(node, node.name)
        return self.node_contents_visit(node)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> ast.AST:
        self.check_name(node, node.rest)
        return self.node_contents_visit(node)

    def visit_MatchClass(self, node: ast.MatchClass) -> ast.AST:
        for attr in node.kwd_attrs:
            if attr.startswith("_") or attr in FORBIDDEN_ATTRIBUTES:
                self.violation(node, f"attribute '{attr}' is not available in fujsen")
        return self.node_contents_visit(node)

    def visit_MatchAs(self, node: ast.MatchAs) -> ast.AST:
        self.check_name(node, node.name)
        return self.node_contents_visit(node)

    def visit_MatchOr(self, node: ast.AST) -> ast.AST:
        return self.node_contents_visit(node)

    def visit_Delete(self, node: ast.Delete) -> ast.AST:
        return self.node_contents_visit(node)


def _printf_needs_values(fmt: str) -> bool:
    """Whether a constant %-format's safety depends on its values (``*`` widths, ``%r``/``%a``)."""
    from tusk_events.fujsen.guards import printf_fields

    return any(
        b"*" in (w or b"") + (p or b"") or conv in (b"r", b"a")
        for w, p, conv in printf_fields(fmt.encode("utf-8", "replace"))
    )


def _small_int(node: ast.expr, small_ints: frozenset[str]) -> bool:
    if isinstance(node, ast.Constant):
        return type(node.value) is int and abs(node.value) <= 1 << 16
    return isinstance(node, ast.Name) and node.id in small_ints


def _obviously_small(node: ast.BinOp, small_ints: frozenset[str]) -> bool:
    """Operands whose result cannot be large: checked here instead of at run time.

    A ``small int`` is an int literal up to 65536 or a name only ever bound by
    ``for NAME in range(...)``: ranges are size-guarded and their elements are ints, so a
    product of two such values cannot compound into a huge number.
    """
    left, right = node.left, node.right
    if isinstance(node.op, ast.Mod):
        # "i % 2": an int on the left cannot be a format string
        return _small_int(left, small_ints) or (
            isinstance(left, ast.Constant) and isinstance(left.value, (int, float))
        )
    if isinstance(node.op, ast.Mult):
        if _small_int(left, small_ints) and _small_int(right, small_ints):
            return True
        # a float literal makes sequence repetition a TypeError
        return any(isinstance(x, ast.Constant) and isinstance(x.value, float) for x in (left, right))
    if isinstance(node.op, ast.FloorDiv):
        # dividing by (or dividing) a machine-sized int is linear: only big / big is quadratic
        return _small_int(left, small_ints) or _small_int(right, small_ints) or any(
            isinstance(x, ast.Constant) and isinstance(x.value, float) for x in (left, right)
        )
    if isinstance(node.op, ast.LShift):
        return isinstance(right, ast.Constant) and type(right.value) is int and right.value <= 64 and _small_int(left, small_ints)
    return False


def _range_loop_names(tree: ast.AST) -> frozenset[str]:
    """Names bound only as the target of ``for NAME in range(...)`` (anywhere in the fujsen)."""
    from_range: set[str] = set()
    elsewhere: set[str] = set()
    loops: list[ast.For | ast.comprehension] = [
        n for n in ast.walk(tree) if isinstance(n, (ast.For, ast.comprehension))
    ]
    range_targets = set()
    for loop in loops:
        it = loop.iter
        if (
            isinstance(loop.target, ast.Name)
            and isinstance(it, ast.Call)
            and isinstance(it.func, ast.Name)
            and it.func.id == "range"
        ):
            from_range.add(loop.target.id)
            range_targets.add(id(loop.target))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            if id(node) not in range_targets:
                elsewhere.add(node.id)
        else:
            elsewhere.update(_other_bindings(node))
    if "range" in elsewhere:
        return frozenset()
    return frozenset(from_range - elsewhere)


def _simple_target(target: ast.expr) -> bool:
    if isinstance(target, ast.Name):
        return True
    if isinstance(target, ast.Attribute):
        return isinstance(target.value, ast.Name) or (
            isinstance(target.value, ast.Call)
            and isinstance(target.value.func, ast.Name)
            and target.value.func.id == "_write_"
            and isinstance(target.value.args[0], ast.Name)
        )
    if isinstance(target, ast.Subscript):
        return isinstance(target.value, ast.Name) and isinstance(target.slice, (ast.Name, ast.Constant))
    return False


def _as_load(target: ast.expr) -> ast.expr:
    if isinstance(target, ast.Name):
        return ast.Name(target.id, ast.Load())
    if isinstance(target, ast.Attribute):
        value = target.value
        if isinstance(value, ast.Call):  # _write_(x).attr -> x.attr for the read
            value = value.args[0]
        return ast.Attribute(value=value, attr=target.attr, ctx=ast.Load())
    assert isinstance(target, ast.Subscript)
    return ast.Subscript(value=target.value, slice=target.slice, ctx=ast.Load())


def _other_bindings(node: ast.AST) -> list[str]:
    """Names a node binds other than through an ``ast.Name`` store."""
    if isinstance(node, ast.arg):
        return [node.arg]
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
        return [node.name]
    if isinstance(node, ast.MatchMapping) and node.rest:
        return [node.rest]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in node.names]
    if isinstance(node, (ast.Nonlocal, ast.Global)):
        return list(node.names)
    return []


def _bound_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        else:
            names.update(_other_bindings(node))
    return names


def _call(name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=ast.Name(name, ast.Load()), args=list(args), keywords=[])


def _dotted(node: ast.expr) -> bool:
    """``a.b.C``: attribute reads rooted in a name (the policy checks each attribute)."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


def _load_time_defs(tree: ast.Module) -> frozenset[int]:
    """Defs whose defaults and decorators run when the definitions execute (at load)."""
    out: set[int] = set()

    def scan(body: list[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, ast.FunctionDef):
                out.add(id(stmt))
            elif isinstance(stmt, ast.ClassDef):
                scan(stmt.body)

    scan(tree.body)
    return frozenset(out)


def _lambda_fujsen(tree: ast.Module, name: str) -> None:
    """A fujsen that is one lambda expression becomes ``def <name>(...): return ...``."""
    body = [s for s in tree.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if len(body) != 1 or not isinstance(body[0], ast.Expr) or not isinstance(body[0].value, ast.Lambda):
        return
    lam = body[0].value
    fname = name[: -len("_fujsen")] if name.endswith("_fujsen") else name
    if not fname.isidentifier() or fname.startswith("_"):
        fname = "fujsen"
    ret = ast.copy_location(ast.Return(lam.body), lam.body)
    fdef = ast.FunctionDef(name=fname, args=lam.args, body=[ret], decorator_list=[], returns=None, type_comment=None)
    tree.body[tree.body.index(body[0])] = ast.copy_location(fdef, body[0])
    ast.fix_missing_locations(tree)


def compile_fujsen(
    source: str,
    *,
    name: str,
    filename: str = "<tsk>",
    first_line: int = 1,
) -> CompiledFujsen:
    """Check ``source`` against the policy and compile it; raise SandboxViolation otherwise.

    ``first_line`` is the ``.tsk`` line of the source's first line, so tracebacks and
    violations point into the config file.
    """
    import textwrap

    text = textwrap.dedent(source.expandtabs(4) if "\t" in source and " " not in source else source)
    try:
        tree = ast.parse(text, filename=filename, mode="exec")
    except SyntaxError as err:
        line = (err.lineno or 1) + first_line - 1
        raise SandboxViolation(
            f"{filename}:{line}: fujsen '{name}' is not valid Python: {err.msg}"
        ) from None
    ast.increment_lineno(tree, first_line - 1)
    _lambda_fujsen(tree, name)

    problems: list[tuple[int, str]] = []
    functions: list[str] = []
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
            if isinstance(stmt, ast.FunctionDef):
                functions.append(stmt.name)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            continue  # binds a facade: inert (the policy checks the module)
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring or literal constant does nothing at load
        elif (
            isinstance(stmt, ast.Assign)
            and all(isinstance(t, ast.Name) for t in stmt.targets)
            and _is_literal(stmt.value)
        ):
            continue  # module-level literal constants are allowed
        else:
            problems.append(
                (stmt.lineno, f"top-level {type(stmt).__name__} statement (fujsen hold definitions only)")
            )
    load_time = _load_time_defs(tree)
    for node in ast.walk(tree):
        # Whatever runs when the definitions are executed must be inert: defaults of
        # top-level functions and methods are literals, annotations are dropped, class
        # bodies hold defs and literals only. (Defaults of nested functions and lambdas
        # run at call time, inside the budget.)
        if isinstance(node, (ast.FunctionDef, ast.Lambda)):
            if id(node) in load_time:
                for default in node.args.defaults + [d for d in node.args.kw_defaults if d]:
                    if not _is_literal(default):
                        problems.append((
                            node.lineno,
                            "default argument values of top-level functions must be literals "
                            "(use None and set the value in the body)",
                        ))
            for arg in node.args.posonlyargs + node.args.args + node.args.kwonlyargs:
                arg.annotation = None
            for maybe in (node.args.vararg, node.args.kwarg):
                if maybe is not None:
                    maybe.annotation = None
            if isinstance(node, ast.FunctionDef):
                node.returns = None
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                inert = isinstance(item, (ast.FunctionDef, ast.Pass)) or (
                    isinstance(item, ast.Expr) and isinstance(item.value, ast.Constant)
                ) or (isinstance(item, ast.Assign) and _is_literal(item.value))
                if not inert:
                    problems.append((item.lineno, "class bodies hold definitions and literals only"))

    stateless = _stateless(tree)
    # names bound only by a class statement (their classes derive from exceptions or each other)
    rebound = {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))
    } | {b for n in ast.walk(tree) if not isinstance(n, ast.ClassDef) for b in _other_bindings(n)}
    class_names = frozenset(n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)) - rebound
    policy = FujsenPolicy(
        filename, _bound_names(tree), _range_loop_names(tree), class_names=class_names, load_time=load_time
    )
    new_tree = policy.visit(tree)
    problems.extend(policy.violations)
    if problems:
        problems.sort()
        lines = "; ".join(f"{filename}:{ln}: {what}" for ln, what in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise SandboxViolation(f"fujsen '{name}' refused: {lines}{more}")
    ast.fix_missing_locations(new_tree)
    code = compile(new_tree, filename, "exec", dont_inherit=True)
    return CompiledFujsen(
        name=name, code=code, functions=tuple(functions), filename=filename,
        first_line=first_line, stateless=stateless,
    )


def _immutable_literal(node: ast.AST | None) -> bool:
    if node is None or isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Tuple):
        return all(_immutable_literal(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp):
        return _immutable_literal(node.operand)
    return False


def _stateless(tree: ast.Module) -> bool:
    for stmt in tree.body:
        if isinstance(stmt, ast.ClassDef):
            return False
        if isinstance(stmt, ast.Assign) and not _immutable_literal(stmt.value):
            return False
    for node in _top_level_defs(tree):
        defaults = node.args.defaults + node.args.kw_defaults
        if not all(_immutable_literal(d) for d in defaults):
            return False
    return True


def _top_level_defs(tree: ast.Module) -> list[ast.FunctionDef]:
    return [s for s in tree.body if isinstance(s, ast.FunctionDef)]


def _is_literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)  # type: ignore[arg-type]
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


__all__ = ["CompiledFujsen", "FujsenPolicy", "compile_fujsen"]
