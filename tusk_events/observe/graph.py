"""The architecture a config declares, as a picture: ``tusk-events graph FILE... [--format mermaid|dot]``.

Nothing runs: services come from the service sections (see :mod:`tusk_events.runtime.services`),
what each consumes from ``subscribe``, what each publishes from the ``publish("type", ...)``
calls in its handler fujsen (read with :mod:`ast`: constant types only; a type computed at run
time cannot be drawn and is listed in a comment), and every service has its dead-letter queue.
Other fujsen that publish (a ``startup``, say) are drawn as sources.
"""

from __future__ import annotations

import ast
import re
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tusk_events.errors import ConfigError
from tusk_events.runtime.dlq import DLQ_PREFIX

if TYPE_CHECKING:
    import argparse

    from tusk_events.config import TSK


@dataclass
class ServiceNode:
    """A service: what it consumes, what its handler publishes."""

    name: str
    delivery: str
    retries: int
    consumes: tuple[str, ...]
    publishes: list[str] = field(default_factory=list)
    dynamic: bool = False
    """Its handler also publishes types computed at run time (not drawn)."""


@dataclass
class SourceNode:
    """A fujsen outside any handler that publishes events (``[app] startup``)."""

    section: str
    fujsen: str
    publishes: list[str] = field(default_factory=list)
    dynamic: bool = False

    @property
    def name(self) -> str:
        return f"{self.section}: {self.fujsen}"


@dataclass
class Architecture:
    services: list[ServiceNode] = field(default_factory=list)
    sources: list[SourceNode] = field(default_factory=list)

    @property
    def event_types(self) -> list[str]:
        """Every event type, in order of first mention (sources first, then services)."""
        seen: dict[str, None] = {}
        for src in self.sources:
            seen.update(dict.fromkeys(src.publishes))
        for svc in self.services:
            seen.update(dict.fromkeys(svc.consumes))
            seen.update(dict.fromkeys(svc.publishes))
        return list(seen)


# --- reading fujsen --------------------------------------------------------------------------


def _functions(source: str) -> dict[str, ast.FunctionDef]:
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:  # the loader compiled it already; a stray case is simply not drawn
        return {}
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _published_types(fn: ast.AST) -> tuple[list[str], bool]:
    """The constant first arguments of ``publish(...)`` calls in ``fn``; and whether others exist."""
    types: list[str] = []
    dynamic = False
    for node in ast.walk(fn):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "publish"):
            continue
        arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "type"), None)
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value:
            if arg.value not in types:
                types.append(arg.value)
        else:
            dynamic = True
    return types, dynamic


def _reachable(entry: str, functions: dict[str, ast.FunctionDef]) -> list[str]:
    """``entry`` and the functions of the same fujsen it calls, transitively, in discovery order."""
    order: list[str] = []
    todo = [entry]
    while todo:
        name = todo.pop(0)
        if name in order or name not in functions:
            continue
        order.append(name)
        for node in ast.walk(functions[name]):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions:
                todo.append(node.func.id)
    return order


def _publishes(names: Iterable[str], functions: dict[str, ast.FunctionDef]) -> tuple[list[str], bool]:
    types: list[str] = []
    dynamic = False
    for name in names:
        found, dyn = _published_types(functions[name])
        types.extend(t for t in found if t not in types)
        dynamic = dynamic or dyn
    return types, dynamic


def _fujsen_blocks(values: dict[str, Any]) -> list[tuple[str, str]]:
    from tusk_events.config import _is_fujsen_key

    return [(k, v) for k, v in values.items() if _is_fujsen_key(k, v)]


def _handler_block(blocks: list[tuple[str, str]], handler: str) -> tuple[str, str] | None:
    for key in (handler, f"{handler}_fujsen"):
        for k, v in blocks:
            if k == key:
                return k, v
    for k, v in blocks:
        if k == "fujsen" and handler in _functions(v):
            return k, v
    return None


def _entry(key: str, functions: dict[str, ast.FunctionDef], wanted: str) -> str | None:
    if wanted in functions:
        return wanted
    return next(iter(functions)) if len(functions) == 1 else None


def architecture(configs: Sequence[TSK]) -> Architecture:
    """Services, sources and event types of ``configs`` (one system, as the runtime runs them)."""
    from tusk_events.runtime.services import services

    arch = Architecture()
    for cfg in configs:
        specs = {s.name: s for s in services(cfg)}
        for section, values in cfg.sections().items():
            blocks = _fujsen_blocks(values)
            handled: set[str] = set()
            spec = specs.get(section)
            if spec is not None:
                node = ServiceNode(spec.name, spec.delivery, spec.retries, spec.types)
                block = _handler_block(blocks, spec.handler)
                if block is not None:
                    functions = _functions(block[1])
                    entry = _entry(block[0], functions, spec.handler)
                    if entry is not None:
                        names = _reachable(entry, functions)
                        node.publishes, node.dynamic = _publishes(names, functions)
                        handled = {f"{block[0]}:{n}" for n in names}
                arch.services.append(node)
            for key, source in blocks:
                functions = _functions(source)
                entries = list(functions) if key == "fujsen" else [
                    e for e in [_entry(key, functions, key.removesuffix("_fujsen"))] if e]
                for name in entries:
                    if f"{key}:{name}" in handled:
                        continue
                    types, dynamic = _publishes(_reachable(name, functions), functions)
                    if types or dynamic:
                        arch.sources.append(SourceNode(section, name, types, dynamic))
    return arch


# --- drawing ---------------------------------------------------------------------------------


class _Ids:
    """Stable, unique, diagram-safe node ids."""

    def __init__(self) -> None:
        self.ids: dict[tuple[str, str], str] = {}
        self.used: set[str] = set()

    def __call__(self, kind: str, name: str) -> str:
        key = (kind, name)
        if key not in self.ids:
            base = f"{kind}_{re.sub(r'[^A-Za-z0-9_]+', '_', name)}"
            ident, n = base, 1
            while ident in self.used:
                n += 1
                ident = f"{base}_{n}"
            self.used.add(ident)
            self.ids[key] = ident
        return self.ids[key]


def _mm(text: str) -> str:
    """Text inside a quoted mermaid label."""
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def _service_detail(svc: ServiceNode) -> str:
    return f"{svc.delivery}, retries {svc.retries}"


def _nodes(arch: Architecture) -> list[SourceNode | ServiceNode]:
    return [*arch.sources, *arch.services]


def to_mermaid(arch: Architecture) -> str:
    """A mermaid flowchart: sources and services (boxes), event types (stadiums), DLQs (cylinders)."""
    ids = _Ids()
    lines = ["flowchart LR"]
    for src in arch.sources:
        lines.append(f'    {ids("src", src.name)}[/"{_mm(src.name)}"/]:::source')
    for t in arch.event_types:
        lines.append(f'    {ids("evt", t)}(["{_mm(t)}"]):::event')
    for svc in arch.services:
        lines.append(f'    {ids("svc", svc.name)}["{_mm(svc.name)}<br/>{_mm(_service_detail(svc))}"]:::service')
        lines.append(f'    {ids("dlq", svc.name)}[("{_mm(DLQ_PREFIX + svc.name)}")]:::dlq')
    for src in arch.sources:
        for t in src.publishes:
            lines.append(f"    {ids('src', src.name)} --> {ids('evt', t)}")
    for svc in arch.services:
        s = ids("svc", svc.name)
        for t in svc.consumes:
            lines.append(f"    {ids('evt', t)} --> {s}")
        for t in svc.publishes:
            lines.append(f"    {s} --> {ids('evt', t)}")
        lines.append(f"    {s} -.->|dead letters| {ids('dlq', svc.name)}")
    for node in _nodes(arch):
        if node.dynamic:
            lines.append(f"    %% {node.name} also publishes event types computed at run time")
    lines += [
        "    classDef source fill:#f3f4f6,stroke:#6b7280",
        "    classDef event fill:#fef9c3,stroke:#a16207",
        "    classDef service fill:#dbeafe,stroke:#1d4ed8",
        "    classDef dlq fill:#fee2e2,stroke:#b91c1c",
    ]
    return "\n".join(lines) + "\n"


def _dot(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(arch: Architecture) -> str:
    """The same picture in Graphviz dot (``dot -Tpng``)."""
    ids = _Ids()
    lines = [
        "digraph tusk_events {",
        "    rankdir=LR;",
        '    node [fontname="Helvetica", fontsize=11];',
        '    edge [fontname="Helvetica", fontsize=9];',
    ]
    for src in arch.sources:
        lines.append(f'    {ids("src", src.name)} [label={_dot(src.name)}, shape=parallelogram, '
                     'style=filled, fillcolor="#f3f4f6", color="#6b7280"];')
    for t in arch.event_types:
        lines.append(f'    {ids("evt", t)} [label={_dot(t)}, shape=box, style="rounded,filled", '
                     'fillcolor="#fef9c3", color="#a16207"];')
    for svc in arch.services:
        label = f"{svc.name}\\n{_service_detail(svc)}"
        lines.append(f'    {ids("svc", svc.name)} [label="{label}", shape=box, style=filled, '
                     'fillcolor="#dbeafe", color="#1d4ed8"];')
        lines.append(f'    {ids("dlq", svc.name)} [label={_dot(DLQ_PREFIX + svc.name)}, shape=cylinder, '
                     'style=filled, fillcolor="#fee2e2", color="#b91c1c", fontsize=9];')
    for src in arch.sources:
        for t in src.publishes:
            lines.append(f"    {ids('src', src.name)} -> {ids('evt', t)};")
    for svc in arch.services:
        s = ids("svc", svc.name)
        for t in svc.consumes:
            lines.append(f"    {ids('evt', t)} -> {s};")
        for t in svc.publishes:
            lines.append(f"    {s} -> {ids('evt', t)};")
        lines.append(f'    {s} -> {ids("dlq", svc.name)} [style=dashed, color="#b91c1c", label="dead letters"];')
    for node in _nodes(arch):
        if node.dynamic:
            lines.append(f"    // {node.name} also publishes event types computed at run time")
    lines.append("}")
    return "\n".join(lines) + "\n"


RENDERERS = {"mermaid": to_mermaid, "dot": to_dot}


def cmd_graph(args: argparse.Namespace) -> int:
    """``tusk-events graph FILE... [--format mermaid|dot]``: print the architecture diagram."""
    from tusk_events.config import TSK

    configs = [TSK.from_file(p) for p in args.files]
    arch = architecture(configs)
    if not arch.services and not arch.sources:
        raise ConfigError(f"nothing to draw: no service section (with 'subscribe') in {', '.join(args.files)}")
    sys.stdout.write(RENDERERS[args.format](arch))
    return 0


__all__ = ["RENDERERS", "Architecture", "ServiceNode", "SourceNode", "architecture", "cmd_graph", "to_dot", "to_mermaid"]
