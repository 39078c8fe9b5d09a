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

    def __init__(self, filename: str, bound_names: set[str], small_ints: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.filename = filename
        self.bound_names = bound_names
        self.small_ints = small_ints
        self.violations: list[tuple[int, str]] = []
        self._finally_depth = 0
        self._loop_in_finally: list[int] = []

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
            if "*" not in node.left.value:
                return node  # a constant format without '*' widths was checked here
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
        if not isinstance(target, (ast.Name, ast.Subscript, ast.Attribute)) or not _simple_target(target):
            self.violation(node, "augmented *, **, <<, % assignment to a complex target; write it out")
            return node
        load = _as_load(node.target)
        call = ast.Call(func=ast.Name(guard, ast.Load()), args=[load, node.value], keywords=[])
        assign = ast.Assign(targets=[node.target], value=call)
        return ast.copy_location(assign, node)

    def visit_FormattedValue(self, node: ast.FormattedValue) -> ast.AST:
        node.value = self.visit(node.value)  # type: ignore[assignment]
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

    def visit_Call(self, node: ast.Call) -> ast.AST:
        return self.node_contents_visit(node)

    def visit_Global(self, node: ast.Global) -> ast.AST:
        self.violation(node, "'global' statements are not allowed (each call gets fresh globals)")
        return node

    def visit_Import(self, node: ast.Import) -> ast.AST:
        for alias in node.names:
            if alias.name not in ALLOWED_IMPORTS or (alias.asname and alias.asname != alias.name):
                self.violation(node, f"import of '{alias.name}' is not allowed in fujsen")
        # The helper is already bound: the statement becomes a no-op.
        return ast.copy_location(ast.Pass(), node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        self.violation(node, f"import from '{node.module}' is not allowed in fujsen")
        return node

    def visit_Try(self, node: ast.Try) -> ast.AST:
        for handler in node.handlers:
            self._check_handler(handler)
        if node.finalbody:
            for child in node.body:
                for sub in ast.walk(child):
                    if isinstance(sub, (ast.Yield, ast.YieldFrom)):
                        self.violation(sub, "'yield' inside 'try ... finally' is not allowed")
            self._finally_depth += 1
            self._loop_in_finally.append(0)
            try:
                node.finalbody = [self.visit(s) for s in node.finalbody]  # type: ignore[misc]
            finally:
                self._finally_depth -= 1
                self._loop_in_finally.pop()
            finalbody = node.finalbody
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
            ok = isinstance(n, ast.Name) or (
                isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            )
            if not ok:
                self.violation(handler, "an 'except' clause must name exception classes")
            elif isinstance(n, ast.Name) and n.id in self.bound_names:
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
        if node.decorator_list:
            self.violation(node, "decorators are not allowed in fujsen")
        # A nested def starts a new scope for the 'finally' checks.
        saved = self._finally_depth
        self._finally_depth = 0
        try:
            return super().visit_FunctionDef(node)  # type: ignore[return-value]
        finally:
            self._finally_depth = saved

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        if node.bases or node.keywords or node.decorator_list:
            self.violation(node, "classes with bases, keywords or decorators are not allowed")
            return node
        for stmt in node.body:
            if isinstance(stmt, ast.FunctionDef) and stmt.name.startswith("_"):
                self.violation(stmt, f"special method '{stmt.name}' is not allowed")
        return super().visit_ClassDef(node)  # type: ignore[return-value]

    def visit_Delete(self, node: ast.Delete) -> ast.AST:
        return self.node_contents_visit(node)


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
        elif isinstance(node, ast.arg):
            elsewhere.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            elsewhere.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            elsewhere.add(node.name)
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


def _bound_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


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

    problems: list[tuple[int, str]] = []
    functions: list[str] = []
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
            if isinstance(stmt, ast.FunctionDef):
                functions.append(stmt.name)
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
    for node in ast.walk(tree):
        # Whatever runs when the definitions are executed must be inert: defaults are
        # literals, annotations are dropped, class bodies hold defs and literals only.
        if isinstance(node, (ast.FunctionDef, ast.Lambda)):
            for default in node.args.defaults + [d for d in node.args.kw_defaults if d]:
                if not _is_literal(default):
                    problems.append((node.lineno, "default argument values must be literals"))
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

    policy = FujsenPolicy(filename, _bound_names(tree), _range_loop_names(tree))
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
        first_line=first_line, stateless=_stateless(tree),
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
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.Lambda)):
            defaults = node.args.defaults + node.args.kw_defaults
            if not all(_immutable_literal(d) for d in defaults):
                return False
    return True


def _is_literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)  # type: ignore[arg-type]
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


__all__ = ["CompiledFujsen", "FujsenPolicy", "compile_fujsen"]
