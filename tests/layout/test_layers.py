"""The import layers: a lower layer never imports a higher one, and no module circles.

The table is the architecture; the README's "Layout" map shows the same arrows.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tusk_events"

LAYERS: dict[str, int] = {
    # the base every layer may use
    "errors": 0, "defaults": 0, "events": 0,
    # the language knows nothing else
    "lang": 1,
    # transports and storage
    "bus": 2, "store": 2,
    # embedded Python, its helpers reach bus and store
    "fujsen": 3,
    # contracts read configs through their data (a protocol), never through ``config``
    "contracts": 4,
    # the TSK object joins language, fujsen and contracts
    "config": 5,
    "runtime": 6,
    # observers listen to the runtime's signals
    "observe": 7,
    # entry points
    "testing": 8, "console": 8, "cli": 9, "__init__": 9, "__main__": 10,
}
"""Each top-level module or subpackage of tusk_events and its layer."""


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module imported, line) for every import, lazy ones included, type-only ones excluded."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if _type_checking_block(node):
            skip.update(id(n) for n in ast.walk(node))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("tusk_events")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tusk_events"):
            if node.module == "tusk_events":
                names = [a.name for a in node.names if a.name != "__version__"]
                found += [(f"tusk_events.{n}", node.lineno) for n in names]
            else:
                found.append((node.module, node.lineno))
    return found


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_unit_has_a_layer() -> None:
    units = {_unit(m) for m in MODULES}
    assert units <= set(LAYERS), f"add these to LAYERS: {sorted(units - set(LAYERS))}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_reaches_up(module: str) -> None:
    mine = _unit(module)
    bad = []
    for target, line in _imports(MODULES[module]):
        theirs = _unit(target)
        if theirs != mine and LAYERS[theirs] >= LAYERS[mine]:
            bad.append(f"{MODULES[module].name}:{line} imports {target} ({theirs} is not below {mine})")
    assert not bad, "\n".join(bad)


def test_no_import_circles() -> None:
    graph = {m: {t for t, _ in _imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    # a subpackage's __init__ re-exporting its modules is not a circle with them
    for m in graph:
        graph[m] = {t for t in graph[m] if not (m.startswith(t + ".") and MODULES[t].name == "__init__.py")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from tusk_events.runtime import Runtime\nif TYPE_CHECKING:\n    import tusk_events.cli\n")
    assert _imports(bad) == [("tusk_events.runtime", 1)]
