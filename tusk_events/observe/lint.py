"""Mistakes that parse: what ``tusk-events check`` warns about (and ``--strict`` fails on).

A config can be valid and still not do what its author meant. Each check here returns
:class:`Finding` objects (``path:line:col: warning: message``, with a did-you-mean where a
near spelling exists); :func:`lint` runs them all over the configs that run together,
because event flow is only meaningful across every file of a system:

* ``empty``        a document with no sections and no keys;
* ``service-key``  a key of a service section that is not a service setting and that no
  fujsen of the section reads (``retires: 3``);
* ``unpublished``  a subscribed type that no fujsen of any given file publishes;
* ``unhandled``    a type published by a fujsen that no service subscribes to, unless the
  config says it leaves the system (a ``publishes`` key or a contract for it);
* ``env``          ``@env("X")`` without a default while ``X`` is unset (it becomes ``""``);
* ``fallback``     ``event_bus``/``event_store`` taking a default because its variable is unset
  (except the convention ``@env("EVENT_BUS", default)``, unless a near name is set);
* ``operator``     operators the language parses but does not support (when the loader
  reports them as ``TSK.unsupported_operators``).

Adding a check is adding a function that yields findings and calling it from :func:`lint`.
"""

from __future__ import annotations

import ast
import difflib
import re
import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tusk_events.defaults import BUS_ENV_VAR, DEFAULT_BUS_URL, DEFAULT_STORE_URL, STORE_ENV_VAR

if TYPE_CHECKING:
    from tusk_events.config import TSK

NOT_SERVICE_KEYS = frozenset({"event_bus", "event_store", "event_channel", "dlq_channel", "fujsen_timeout",
                              "isolation", "description", "schema_version"})
"""Keys a service section may carry that are read by the runtime or the loader, not by the service."""

_SIMILAR = 0.8
"""difflib ratio above which a name is offered as "did you mean"."""


@dataclass(frozen=True)
class Finding:
    """One warning, located in a file."""

    path: str
    line: int
    column: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: warning: {self.message} [{self.code}]"


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the nearest candidate, or ``""``."""
    close = difflib.get_close_matches(word, sorted(set(candidates) - {word}), n=1, cutoff=_SIMILAR)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _path(cfg: TSK) -> str:
    return cfg.path or "<string>"


def _line(cfg: TSK, *keys: str) -> int:
    lines: Mapping[tuple[str, ...], int] = getattr(cfg, "_lines", {})
    return lines.get(tuple(keys), 1)


def _section_path(section: str) -> tuple[str, ...]:
    return tuple(section.split("."))


# --- documents and services --------------------------------------------------------------------


def check_empty(cfg: TSK) -> Iterator[Finding]:
    if not cfg.data:
        yield Finding(_path(cfg), 1, 1, "empty", "empty document: no sections and no keys")


def _fujsen_sources(cfg: TSK) -> Iterator[tuple[str, str, str]]:
    """(section, key, source) of every fujsen block of ``cfg``."""
    from tusk_events.config import _is_fujsen_key

    for section, values in cfg.sections().items():
        for key, value in values.items():
            if _is_fujsen_key(key, value):
                yield section, key, value


def check_service_keys(cfg: TSK) -> Iterator[Finding]:
    from tusk_events.config import _is_fujsen_key
    from tusk_events.runtime.services import SERVICE_KEYS

    for section, values in cfg.sections().items():
        if "subscribe" not in values:
            continue
        code = " ".join(src for sect, _, src in _fujsen_sources(cfg) if sect == section)
        for key, value in values.items():
            if key in SERVICE_KEYS or key in NOT_SERVICE_KEYS or isinstance(value, dict):
                continue
            if _is_fujsen_key(key, value):
                continue
            hint = did_you_mean(key, SERVICE_KEYS)
            if not hint and re.search(rf"\b{re.escape(key)}\b", code):
                continue  # a setting its own fujsen reads
            yield Finding(_path(cfg), _line(cfg, *_section_path(section), key), 1, "service-key",
                          f"[{section}] unknown service key '{key}'{hint}"
                          + ("" if hint else "; not a service setting and no fujsen of the section reads it"))


# --- event flow ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Publish:
    type: str
    cfg: TSK
    line: int
    column: int


def _published(cfg: TSK) -> tuple[list[_Publish], bool]:
    """Constant ``publish("type", ...)`` calls in every fujsen; and whether a computed type exists."""
    found: list[_Publish] = []
    dynamic = False
    for section, key, source in _fujsen_sources(cfg):
        dedented = textwrap.dedent(source)
        indent = _indent(source) - _indent(dedented)
        try:
            tree = ast.parse(dedented)
        except SyntaxError:
            continue  # the loader compiled it; a stray case is not linted
        first = _line(cfg, *_section_path(section), key)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "publish"):
                continue
            arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "type"), None)
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value:
                found.append(_Publish(arg.value, cfg, first + arg.lineno - 1, arg.col_offset + 1 + indent))
            else:
                dynamic = True
    return found, dynamic


def _indent(source: str) -> int:
    widths = [len(ln) - len(ln.lstrip()) for ln in source.splitlines() if ln.strip()]
    return min(widths) if widths else 0


def _declared_outgoing(cfg: TSK) -> set[str]:
    """Types the config says leave the system: ``publishes`` keys and contracted types."""
    out: set[str] = set()
    for values in cfg.sections().values():
        declared = values.get("publishes")
        if isinstance(declared, str):
            out.add(declared)
        elif isinstance(declared, list):
            out.update(t for t in declared if isinstance(t, str))
    contracts = getattr(cfg, "contracts", None)
    types = getattr(contracts, "types", None)
    if isinstance(types, (list, tuple, Mapping)):
        out.update(str(t) for t in types)
    return out


def check_event_flow(configs: Sequence[TSK]) -> Iterator[Finding]:
    from tusk_events.runtime.services import services

    publishes: list[_Publish] = []
    dynamic = False
    subscribed: list[tuple[str, TSK, str]] = []
    declared: set[str] = set()
    for cfg in configs:
        found, dyn = _published(cfg)
        publishes += found
        dynamic = dynamic or dyn
        declared |= _declared_outgoing(cfg)
        try:
            specs = services(cfg)
        except Exception:  # noqa: BLE001 - a broken service is reported by check's own pass
            specs = []
        for spec in specs:
            subscribed += [(t, cfg, spec.name) for t in spec.types]
    published_types = {p.type for p in publishes}
    subscribed_types = {t for t, _, _ in subscribed}
    note = " (some fujsen publish a type computed at run time; if that is where it comes from, ignore this)"
    for t, cfg, service in subscribed:
        if t in published_types:
            continue
        yield Finding(_path(cfg), _line(cfg, *_section_path(service), "subscribe"), 1, "unpublished",
                      f"[{service}] subscribes to '{t}', which nothing in these files publishes"
                      + did_you_mean(t, published_types) + (note if dynamic else ""))
    reported: set[str] = set()
    for p in publishes:
        if p.type in subscribed_types or p.type in declared or p.type in reported:
            continue
        reported.add(p.type)
        yield Finding(_path(p.cfg), p.line, p.column, "unhandled",
                      f"'{p.type}' is published but no service subscribes to it"
                      + did_you_mean(p.type, subscribed_types)
                      + ("" if did_you_mean(p.type, subscribed_types) else
                         "; declare it in a 'publishes' key if it leaves the system"))


# --- the environment ----------------------------------------------------------------------------

_ENV_CALL = re.compile(r"@env\(\s*(?P<q>[\"'])(?P<name>[^\"'\n]*)(?P=q)\s*(?P<next>[,)])")
_URL_KEY = re.compile(r"^\s*(?P<key>event_bus|event_store)\s*[:=]\s*@env\(")
_TRIPLE = re.compile(r"'''.*?'''|\"\"\".*?\"\"\"", re.S)


def _blank_blocks(text: str) -> str:
    """``text`` with triple-quoted blocks (fujsen) blanked, newlines kept, so lines still match."""
    return _TRIPLE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def _code_part(line: str) -> str:
    """``line`` without a trailing ``#`` comment (a ``#`` inside quotes is kept)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[:i]
    return line


def check_env(cfg: TSK, text: str | None) -> Iterator[Finding]:
    if text is None:
        return
    env: Mapping[str, str] = cfg.env
    for n, raw in enumerate(_blank_blocks(text).splitlines(), start=1):
        line = _code_part(raw)
        for m in _ENV_CALL.finditer(line):
            name = m.group("name")
            if env.get(name) is not None:
                continue
            hint = did_you_mean(name, env.keys())
            url_key = _URL_KEY.match(line)
            col = m.start() + 1
            if url_key is not None:
                key = url_key.group("key")
                standard = BUS_ENV_VAR if key == "event_bus" else STORE_ENV_VAR
                if m.group("next") == ",":
                    if name == standard and not hint:
                        continue  # the documented convention: $EVENT_BUS, else the file's default
                    shown = "the default in the file"
                else:
                    var = BUS_ENV_VAR if key == "event_bus" else STORE_ENV_VAR
                    dflt = DEFAULT_BUS_URL if key == "event_bus" else DEFAULT_STORE_URL
                    shown = f"{var} or else {dflt}"
                yield Finding(_path(cfg), n, col, "fallback",
                              f"{key}: ${name} is unset, so {shown} is used{hint}")
            elif m.group("next") == ")":
                yield Finding(_path(cfg), n, col, "env",
                              f"@env(\"{name}\") has no default and ${name} is unset: the value is \"\"{hint}")


def check_operators(cfg: TSK) -> Iterator[Finding]:
    for item in getattr(cfg, "unsupported_operators", None) or []:
        try:
            name, line, col = item
        except (TypeError, ValueError):
            continue
        yield Finding(_path(cfg), int(line), int(col), "operator",
                      f"operator '@{str(name).lstrip('@')}' is not supported and has no effect")


# --- all of it ----------------------------------------------------------------------------------


def lint(configs: Sequence[TSK], texts: Mapping[str, str] | None = None) -> list[Finding]:
    """Every finding for ``configs`` run together; ``texts`` maps a path to its source (else read)."""
    findings: list[Finding] = []
    for cfg in configs:
        findings += check_empty(cfg)
        findings += check_service_keys(cfg)
        findings += check_env(cfg, _text(cfg, texts))
        findings += check_operators(cfg)
    findings += check_event_flow([c for c in configs if c.data])
    return sorted(findings, key=lambda f: (f.path, f.line, f.column, f.code))


def _text(cfg: TSK, texts: Mapping[str, str] | None) -> str | None:
    if cfg.path is None:
        return None
    if texts is not None and cfg.path in texts:
        return texts[cfg.path]
    try:
        with open(cfg.path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError):
        return None


def lint_files(paths: Sequence[str], *, env: Mapping[str, str] | None = None) -> tuple[list[Finding], list[Any]]:
    """Load ``paths`` and lint them together: (findings, load errors as TuskError)."""
    from tusk_events.config import TSK
    from tusk_events.errors import TuskError

    configs: list[TSK] = []
    errors: list[Any] = []
    for p in paths:
        try:
            configs.append(TSK.from_file(p, env=env))
        except TuskError as err:
            errors.append(err)
    return lint(configs), errors


__all__ = ["Finding", "did_you_mean", "lint", "lint_files"]
