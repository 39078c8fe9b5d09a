"""The TuskLang (.tsk) parser: text in, plain JSON-compatible values out.

This module is longer than most (about 900 lines, a third of it this docstring): the
transformer's callbacks share per-document state and the grammar's rule names, so they
stay together; the lexer, the pre-passes, diagnosis, expressions, operators and
``dumps`` live in their own modules.

``load()`` runs in three steps:

1. a line-oriented pre-pass normalises the text (UTF-8 BOM dropped, ``\\r\\n`` read as
   ``\\n``) and cuts out multi-line ``'''``/``\"\"\"`` values, leaving the opening delimiter in
   place and blank lines behind, so every line and column stays where it was;
2. lark parses the rest with ``grammar.lark`` (LALR(1)); an inline transformer turns
   each reduction straight into Python values, no tree is built;
3. ``value_lines`` is collected from the line numbers recorded along the way.

Every rejected input raises :class:`~tusk_events.errors.TskSyntaxError` with the line,
column and text of the offending spot; lark's own exceptions never escape. Messages
come from the parser state at the failure (what was open, what was expected), so an
unclosed ``{``, ``[``, ``>`` block or ``@env(`` is reported where it was opened.

Speed. The Lark object is built once per process (from lark's cache after the first
run). Its parser loop costs about a microsecond per token and per reduction, so the
grammar keeps both counts low (see its header; a whole ``key: scalar`` line is one
token), and tokens come from ``_ContextualLexer``: lark's contextual lexing algorithm
(one scanner per parser state, built from the grammar's terminals in lark's priority
order) written as a single loop and plugged in through lark's custom-lexer interface.
Parses are serialised by a lock: the transformer holds the document being built.

The language, where the TuskLang documents leave room to choose:

* **Sections.** ``[a.b.c]`` nests (``{"a": {"b": {"c": {}}}}``). A section that is
  opened again (by a second ``[a]``, by ``[a.b]`` after ``[a]``, or by a ``name { }`` /
  ``name > <`` block of the same name) merges into the same dict. Setting the same
  key twice in one dict is an error (``duplicate key``), and so is reopening as a
  section a key that holds a plain value or an inline object (``key: {...}``).
* **Blocks.** ``name { ... }`` and ``name > ... <`` nest into the section that is open
  where they appear (top level before any header); they may nest in each other.
* **Keys** are letters (any script), digits, ``_`` and ``-`` (``X-Frame-Options``, ``404``);
  a key may also be quoted (``"my key": 1``), using the rules of the matching string style.
  ``$name: value`` defines a global: it is stored at top level as ``name`` (unless a
  plain key or section ``name`` exists: ``.data`` keeps that one) and can be read
  afterwards as ``$name`` or, inside double quotes, as ``${name}``. ``$name`` and
  ``${name}`` read a global first, then a key defined *earlier* in the open section or
  block, then at top level; ``$a.b.c`` / ``${a.b.c}`` walk into sections. A reference
  to nothing defined earlier is an error. Arrays and objects are copied where they are
  referenced. An unquoted dotted key ``a.b.c: v`` nests like ``[a.b]`` then ``c: v``.
* **Comments** run from ``#`` to the end of the line anywhere outside quotes, so a bare
  word stops at ``#``.
* **Double-quoted strings** are single-line and understand ``\\n \\t \\r \\b \\f \\0 \\\\ \\"
  \\' \\/ \\$ \\uXXXX \\UXXXXXXXX`` (a ``\\uD83D\\uDE00`` surrogate pair makes one character)
  and ``${name}`` interpolation of globals (non-strings are written as in JSON:
  ``true``, ``null``, ``8080``); ``\\$`` keeps a literal ``$``. Any other escape is an
  error, so a Windows path must be written ``"C:\\\\dir"`` or ``'C:\\dir'``.
* **Single-quoted strings** are literal except ``\\'`` and ``\\\\``; any other backslash is
  kept as it is; no interpolation.
* **Triple-quoted strings.** ``key: '''`` (or ``\"\"\"``) at the end of the line (blanks may
  follow, a comment may not) opens a multi-line value; it runs until a line whose
  content, stripped of whitespace, is exactly the same delimiter. The lines in between
  are joined by ``\\n`` verbatim: no dedent, no escapes, no interpolation, no trailing
  newline; ``#`` lines, ``x = y`` lines and the other delimiter are plain content.
  ``key: '''text'''`` on one line is allowed too (same verbatim rule). A multi-line
  value must be the whole value of a key (not inside an array or ``@env``).
* **Numbers** are ``-12``, ``+7``, ``3.5``, ``1.5e6``, ``-2E-3``: an int unless there is a
  fraction or an exponent. Anything else word-like is a bare string: ``007``, ``1.2.3``,
  ``0x1F``, ``512Mi``, ``inf``. Numbers too large for a float are an error.
* **Bare words** start with a letter, digit, ``_``, ``.``, ``/`` or ``~`` and continue
  with those and ``+ - @ %``: ``info``, ``/var/log``, ``v1.2``, ``eu-west-1``. They stop at
  spaces, so text with spaces, ``:``, ``,``, ``#`` and the like must be quoted.
  ``true``, ``false`` and ``null`` (lower case) are the literals.
* **Arrays and inline objects** may span lines; items are separated by commas, line
  breaks, or both (a comma goes right after its item), and a trailing comma is
  allowed. Object items are ``key: value``, ``key = value``, ``"key": value`` or blocks.
* **@env("NAME")** reads the ``env`` mapping (``os.environ`` by default) and yields the
  string found there, or ``""`` when unset; ``@env("NAME", default)`` yields the default
  (any value) when unset. Every other operator, ``name(...)`` call, arithmetic and
  ``&& || !`` is an expression (``expr.py``), evaluated by ``operators.py``.
* **The guides' dialect.** A ``;`` may end a line. ``key:`` alone over deeper-indented
  lines opens a YAML-style nested section (an array when they are ``- item`` lines).
  A document that is a JSON object is read as JSON.
* **Conditions.** ``cond ? a : b`` picks ``a`` or ``b``; the else branch may itself be a
  conditional. ``cond`` is a value or a comparison ``x OP y`` with ``== != < > <= >=``;
  a comparison on its own is also a value (``true``/``false``). A string compared
  with a number is read as a number when it looks like one (so
  ``@env("PORT") == 8080`` works), with ``true``/``false`` when it spells one (any
  case); other mixed kinds are unequal, and cannot be ordered (error). Falsy are
  ``false``, ``null``, ``0``, ``""``, ``[]``, ``{}`` and the strings ``"false"``, ``"0"``,
  ``"no"``, ``"off"`` (any case), since environment variables are always strings.
  Both branches are evaluated, so both must be valid.
* Tabs and spaces are both whitespace; ``\\r\\n`` line ends and a leading BOM are fine.

``dumps()`` writes sections for nested dicts under plain keys, ``'''`` blocks (or ``\"\"\"``)
for multi-line strings, and falls back to escaped double-quoted strings when a value
contains ``\\r`` or lines equal to both delimiters.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

from lark import Lark
from lark.exceptions import UnexpectedInput

from tusk_events.errors import TskSyntaxError
from tusk_events.lang.diagnose import diagnose
from tusk_events.lang.dumps import dumps
from tusk_events.lang.expr import HAS_OPERATOR, STARTS, Source, parse_expression
from tusk_events.lang.lexer import ContextualLexer
from tusk_events.lang.operators import (
    STR_METHODS,
    Binary,
    Deferred,
    Evaluator,
    Later,
    Lit,
    Node,
    is_known,
)
from tusk_events.lang.prepass import (
    YAML_OPENER,
    blank_block_comments,
    cut_blocks,
    indented_blocks,
)
from tusk_events.lang.values import (
    DQ_SPECIAL,
    ESCAPES,
    HEX_RE,
    KEYWORDS,
    SQ_ESCAPE,
    as_number,
    copy,
    equal,
    fail,
    kind,
    number,
    text_of,
    truthy,
)

__all__ = ["Parsed", "dumps", "load"]


@dataclass(frozen=True)
class Parsed:
    """A parsed document: its values, where each value starts, the operators it cannot run.

    ``unsupported`` lists ``(operator, line, column)`` for every operator that loads as an
    inert value (``@request``, ``php(...)``, ...): evaluating one raises a ``TuskError``.
    """

    data: dict[str, Any]
    value_lines: dict[tuple[str, ...], int]
    unsupported: list[tuple[str, int, int]] = field(default_factory=list)


_BOM = "\ufeff"

# --------------------------------------------------------------------------- transformer


class _Context:
    """Per-document state the transformer reads and fills while lark parses."""

    __slots__ = (
        "blocks", "current", "env", "exprs", "global_keys", "globals", "globals_at", "inherited",
        "linemaps", "operators", "path", "root", "tables", "text", "text_cut",
    )

    def __init__(self, text: str, env: Mapping[str, str], path: str | None,
                 blocks: dict[int, str]) -> None:
        self.text = text
        self.env = env
        self.path = path
        self.blocks = blocks
        self.globals: dict[str, Any] = {}
        self.globals_at: dict[str, int] = {}  # global -> the line that set it
        self.text_cut = text  # the text lark reads (multi-line values blanked out)
        self.inherited: set[tuple[int, str]] = set()  # (id(section), key) copied from a parent
        self.global_keys: set[str] = set()  # top-level keys that hold a $global (a plain key may replace)
        self.exprs: dict[int, Node] = {}  # offset -> expression node (see expr_end)
        self.operators: list[tuple[str, int, int]] = []  # unsupported operators, in order
        self.root: dict[str, Any] = {}
        self.current = self.root
        # id(dict) -> (dict, {key: entry}); holding the dict keeps ids unique meanwhile.
        self.linemaps: dict[int, tuple[dict[str, Any], dict[str, tuple]]] = {}
        self.tables: set[int] = set()  # ids of dicts that sections and blocks may reopen
        self.register(self.root, table=True)

    def register(self, d: dict[str, Any], *, table: bool) -> dict[str, tuple]:
        lines: dict[str, tuple] = {}
        self.linemaps[id(d)] = (d, lines)
        if table:
            self.tables.add(id(d))
        return lines

    def fail(self, message: str, line: int, column: int) -> NoReturn:
        fail(message, self.text, self.path, line, column)


class _Located(Protocol):
    """What the transformer reads from a lark Token (positions are set by our lexer)."""

    type: str
    value: str
    line: int
    column: int
    start_pos: int


# An entry, as the member rules produce it and the line maps keep it:
#   (key, value, value_line, key_line, key_column, is_table)
_Entry = tuple


class _Builder:
    """Inline lark transformer: rule and terminal callbacks that build the values.

    lark calls the method named after a rule (or its alias) on each reduction with the
    list of children, and the method named after a terminal when that token is shifted
    (what it returns goes on the value stack in place of the token).
    """

    def __init__(self) -> None:
        self.ctx: _Context = None  # type: ignore[assignment]  # set by load() under the lock
        self.split_pair: Any = None  # set with the grammar: split a SIMPLE_PAIR token
        self.flat_item: Any = None
        self.flat_pair: Any = None
        self.open_items: list = []  # the parser's value stack while an expression is read

    # ---- terminals (called on shift) -------------------------------------------

    def STRING(self, tok: _Located) -> str:
        return self._double_quoted(tok.value, tok.line, tok.column)

    def SQSTRING(self, tok: _Located) -> str:
        raw = tok.value[1:-1]
        return SQ_ESCAPE.sub(r"\1", raw) if "\\" in raw else raw

    def TRIPLE(self, tok: _Located) -> str:
        return tok.value[3:-3]

    def NUMBER(self, tok: _Located) -> int | float:
        return self._number(tok.value, tok.line, tok.column)

    def WORD(self, tok: _Located) -> Any:
        text = tok.value
        return KEYWORDS.get(text, text)

    def VAR(self, tok: _Located) -> Any:
        return self._lookup(_var_name(tok.value), tok.line, tok.column)

    def EXPR(self, tok: _Located) -> Any:
        """An expression the lexer cut out (see expr_end): its value, or a Deferred."""
        ctx = self.ctx
        node = ctx.exprs.pop(tok.start_pos)

        def fail(message: str, at: Node) -> NoReturn:
            ctx.fail(message, at.line, at.column)

        try:
            return Evaluator(None, ctx.env, fail).eval(node)
        except Later as later:
            return Deferred.make(tok.value, node, later.operator, inert=later.inert)

    def expr_end(self, text: str, pos: int, line: int, line_start: int,
                 stack: list) -> int | None:
        """Where an expression starting at ``pos`` ends, if a value there is one (lexer hook).

        ``stack`` is the parser's value stack: the items of the blocks still open, which
        names in the expression may read too.
        """
        if _EXPRESSION_HINT(text, pos) is None:
            return None
        ctx = self.ctx
        self.open_items = stack
        node, end, operators = parse_expression(self.source, pos, line, line_start)
        ctx.exprs[pos] = node
        for name, op_line, op_column in operators:
            bare = name.lstrip("@")
            known = name[1:] in STR_METHODS if name[0] == "." else is_known(bare)
            if not known:
                ctx.operators.append((name, op_line, op_column))
        return end

    def SIMPLE_PAIR(self, tok: _Located) -> _Entry:
        """``key: scalar`` (or a one-line array or object of scalars) and its line break."""
        text = tok.value
        m = self.split_pair(text)
        kind = m.lastindex
        if kind == 7:  # [scalar, ...]
            value: Any = []
            pos = m.end()
            item = self.flat_item
            while (im := item(text, pos)) is not None:
                value.append(self._scalar(im.lastindex, im.group(im.lastindex), tok.line,
                                          tok.column + im.start(im.lastindex)))
                pos = im.end()
        elif kind == 8:  # {key: scalar, ...}
            entries: list[_Entry] = []
            pos = m.end()
            pair = self.flat_pair
            while (pm := pair(text, pos)) is not None:
                entries.append((
                    self._key(pm.group(1), tok.line, tok.column + pm.start(1)),
                    self._scalar(pm.lastindex, pm.group(pm.lastindex), tok.line,
                                 tok.column + pm.start(pm.lastindex)),
                    tok.line, tok.line, tok.column + pm.start(1), False,
                ))
                pos = pm.end()
            value = self._entries(entries, table=False)
        else:
            value = self._scalar(kind, m.group(kind), tok.line, tok.column + m.start(kind))
        return (_plain_key(m.group(1)), value, tok.line, tok.line, tok.column, False)

    def _scalar(self, kind: int, text: str, line: int, column: int) -> Any:
        """The value of a STRING, SQSTRING, NUMBER, WORD or VAR (kinds 2 to 6) text."""
        if kind == 2:
            return self._double_quoted(text, line, column)
        if kind == 3:
            raw = text[1:-1]
            return SQ_ESCAPE.sub(r"\1", raw) if "\\" in raw else raw
        if kind == 4:
            return self._number(text, line, column)
        if kind == 5:
            return KEYWORDS.get(text, text)
        return self._lookup(_var_name(text), line, column)

    # ---- helpers -----------------------------------------------------------------

    def _key(self, text: str, line: int, column: int) -> str:
        """The key a KEYSEP or QKEYSEP text names (separator and blanks dropped)."""
        key = text.rstrip(" \t:=")
        if key[0] == '"':
            return self._double_quoted(key, line, column)
        if key[0] == "'":
            raw = key[1:-1]
            return SQ_ESCAPE.sub(r"\1", raw) if "\\" in raw else raw
        return key

    def _double_quoted(self, text: str, line: int, column: int) -> str:
        raw = text[1:-1]
        if "\\" in raw or "${" in raw:
            return self._unescape(raw, line, column + 1)
        return raw

    def _number(self, text: str, line: int, column: int) -> int | float:
        if text.isdigit() and len(text) < 19:
            return int(text)
        value = number(text)
        if value is None:
            shown = text if len(text) <= 20 else text[:20] + "..."
            self.ctx.fail(f"number {shown} is out of range", line, column)
        return value

    def _lookup(self, name: str, line: int, column: int) -> Any:
        """``$name`` / ``${a.b}``: a global, else a key defined earlier (section, then top level)."""
        found, value = self._find(name)
        if not found:
            self.ctx.fail(f"undefined variable ${name}", line, column)
        return copy(value) if isinstance(value, (dict, list)) else value

    def _find(self, name: str) -> tuple[bool, Any]:
        ctx = self.ctx
        head, _, rest = name.partition(".")
        for scope in (ctx.globals, self._open_block(), ctx.current, ctx.root):
            if head in scope:
                value = scope[head]
                for part in rest.split(".") if rest else ():
                    if not isinstance(value, dict) or part not in value:
                        return False, None
                    value = value[part]
                return True, value
        return False, None

    def _open_block(self) -> dict[str, Any]:
        """Keys already read in the blocks still open (innermost wins), from the parser's stack."""
        found: dict[str, Any] = {}
        for item in self.open_items:
            entries = item if type(item) is list else [item] if type(item) is tuple else ()
            for entry in entries:
                if type(entry) is tuple and len(entry) == 6 and isinstance(entry[0], str):
                    found[entry[0]] = entry[1]
        return found

    def _key_value(self, word: str) -> tuple[bool, Any]:
        """A bare word inside an expression reads the key it names, if one is defined."""
        found, value = self._find(word)
        if found and isinstance(value, (dict, list)):
            value = copy(value)
        return found, value

    @property
    def source(self) -> Source:
        ctx = self.ctx
        return Source(
            ctx.text_cut,
            fail=ctx.fail,
            double_quoted=self._double_quoted,
            single_quoted=_single_quoted,
            lookup=self._lookup,
            key_value=self._key_value,
        )

    def _unescape(self, raw: str, line: int, column: int) -> str:
        """Resolve escapes and ``${name}`` in double-quoted text starting at ``column``."""
        out: list[str] = []
        lazy: list[tuple[int, Deferred]] = []  # interpolated values read later
        pos = 0
        n = len(raw)
        while True:
            m = DQ_SPECIAL.search(raw, pos)
            if m is None:
                out.append(raw[pos:])
                if lazy:
                    return _deferred_text(raw, out, lazy, line, column)
                return "".join(out)
            i = m.start()
            out.append(raw[pos:i])
            if m.group() == "${":
                close = raw.find("}", i + 2)
                if close < 0:
                    self.ctx.fail("unterminated ${ in string (missing '}')", line, column + i)
                name = raw[i + 2 : close].strip()
                if not _DOTTED_NAME.fullmatch(name):
                    self.ctx.fail("expected a variable name inside ${...}", line, column + i)
                found = self._lookup(name, line, column + i)
                if isinstance(found, Deferred):
                    lazy.append((len(out), found))
                out.append(text_of(found))
                pos = close + 1
                continue
            c = raw[i + 1] if i + 1 < n else ""
            if c in ESCAPES:
                out.append(ESCAPES[c])
                pos = i + 2
            elif c in ("u", "U"):
                width = 4 if c == "u" else 8
                digits = raw[i + 2 : i + 2 + width]
                if not HEX_RE.fullmatch(digits) or len(digits) != width:
                    self.ctx.fail(f"\\{c} needs {width} hex digits", line, column + i)
                code = int(digits, 16)
                pos = i + 2 + width
                if 0xD800 <= code < 0xDC00 and raw.startswith("\\u", pos):
                    low = raw[pos + 2 : pos + 6]
                    if len(low) == 4 and HEX_RE.fullmatch(low) and 0xDC00 <= int(low, 16) < 0xE000:
                        code = 0x10000 + ((code - 0xD800) << 10) + (int(low, 16) - 0xDC00)
                        pos += 6
                if code > 0x10FFFF:
                    self.ctx.fail(f"\\{c}{digits} is not a Unicode character", line, column + i)
                out.append(chr(code))
            else:
                shown = c if c.isprintable() and c else repr(c)[1:-1]
                self.ctx.fail(
                    f"unknown escape '\\{shown}' in string (write '\\\\' for a backslash)",
                    line, column + i,
                )

    def _block(self, tok: _Located) -> str:
        content = self.ctx.blocks.get(tok.line)
        if content is None:
            self.ctx.fail(f"unterminated {tok.value}-string opened here", tok.line, tok.column)
        return content

    def _entries(self, members: list[_Entry], *, table: bool) -> dict[str, Any]:
        d: dict[str, Any] = {}
        lines = self.ctx.register(d, table=table)
        for entry in members:
            self._insert(d, lines, entry)
        return d

    def _insert(self, d: dict[str, Any], lines: dict[str, _Entry], entry: _Entry) -> None:
        key = entry[0]
        ctx = self.ctx
        if type(key) is _DottedKey and key not in d:  # a.b.c: v nests like [a.b] then c: v
            *parents, key = key.split(".")
            for part in parents:
                sub = d.get(part)
                if sub is None:
                    sub = {}
                    ctx.register(sub, table=True)
                    d[part] = sub
                    lines[part] = (part, sub, entry[2], entry[3], entry[4], True)
                elif not (isinstance(sub, dict) and id(sub) in ctx.tables):
                    ctx.fail(f"'{part}' already holds a value (line {lines[part][3]}); "
                             f"'{entry[0]}' cannot nest in it", entry[3], entry[4])
                d = sub
                lines = ctx.linemaps[id(d)][1]
            entry = (str(key), *entry[1:])
        if key not in d:
            d[key] = entry[1]
            lines[key] = entry
            return
        old = d[key]
        if (id(d), key) in ctx.inherited:  # overriding what [child:parent] copied
            ctx.inherited.discard((id(d), key))
            d[key] = entry[1]
            lines[key] = entry
            return
        if d is ctx.root and key in ctx.global_keys:
            # a plain key or section named like a $global: .data keeps the plain one,
            # $name still reads the global
            ctx.global_keys.discard(key)
            d[key] = entry[1]
            lines[key] = entry
            return
        if entry[5] and isinstance(old, dict) and id(old) in ctx.tables:
            # A block reopening a table: merge its entries one by one.
            old_lines = ctx.linemaps[id(old)][1]
            for sub in ctx.linemaps[id(entry[1])][1].values():
                self._insert(old, old_lines, sub)
            return
        first = lines[key][3]
        ctx.fail(f"duplicate key '{key}' (first set on line {first})", entry[3], entry[4])

    # ---- document ----------------------------------------------------------------

    def start(self, children: list) -> None:
        return None

    def first_member(self, c: list) -> None:
        entry = c[0]
        if entry is not None:
            ctx = self.ctx
            self._insert(ctx.current, ctx.linemaps[id(ctx.current)][1], entry)

    def add_member(self, c: list) -> None:
        entry = c[1]
        if entry is not None:
            ctx = self.ctx
            d = ctx.current
            key = entry[0]
            if key in d or type(key) is _DottedKey:
                self._insert(d, ctx.linemaps[id(d)][1], entry)
            else:
                d[key] = entry[1]
                ctx.linemaps[id(d)][1][key] = entry

    def first_header(self, c: list) -> None:
        return None

    add_header = first_header

    def header(self, c: list) -> None:
        ctx = self.ctx
        name_tok = c[1]
        d = ctx.root
        walked: list[str] = []
        name, _, parent = name_tok.value.partition(":")  # [child:parent] inherits
        for part in name.strip().split("."):
            walked.append(part)
            lines = ctx.linemaps[id(d)][1]
            if part in d and d is ctx.root and part in ctx.global_keys:
                ctx.global_keys.discard(part)  # [name] after $name: the section wins in .data
                del d[part]
            if part in d:
                sub = d[part]
                if not (isinstance(sub, dict) and id(sub) in ctx.tables):
                    ctx.fail(
                        f"'{'.'.join(walked)}' already holds a value (line {lines[part][3]}); "
                        "it cannot be reopened as a section",
                        name_tok.line, name_tok.column,
                    )
                d = sub
            else:
                sub = {}
                ctx.register(sub, table=True)
                lines[part] = (part, sub, name_tok.line, name_tok.line, name_tok.column, True)
                d[part] = sub
                d = sub
        ctx.current = d
        if parent:
            self._inherit(d, parent.strip(), name_tok)

    def _inherit(self, d: dict[str, Any], parent: str, tok: _Located) -> None:
        """``[child:parent]``: the child starts with copies of the parent's keys."""
        ctx = self.ctx
        source: Any = ctx.root
        for part in parent.split("."):
            source = source.get(part) if isinstance(source, dict) else None
        if not isinstance(source, dict) or source is d:
            ctx.fail(f"no section [{parent}] above to inherit from", tok.line, tok.column)
        lines = ctx.linemaps[id(d)][1]
        for key, entry in ctx.linemaps[id(source)][1].items():
            if key not in d and not isinstance(source[key], dict):
                d[key] = copy(source[key])
                lines[key] = (key, d[key], *entry[2:])
                ctx.inherited.add((id(d), key))

    # ---- members -----------------------------------------------------------------

    def pair(self, c: list) -> _Entry:
        tok = c[0]
        return (_plain_key(tok.value), c[1], tok.line, tok.line, tok.column, False)

    def pair_block(self, c: list) -> _Entry:
        tok = c[0]
        return (_plain_key(tok.value), self._block(c[1]), tok.line + 1, tok.line,
                tok.column, False)

    def quoted_pair(self, c: list) -> _Entry:
        tok, value = c[0], c[1]
        key = self._key(tok.value, tok.line, tok.column)
        value_line = tok.line
        if _is_block(value):
            value, value_line = self._block(value), tok.line + 1
        return (key, value, value_line, tok.line, tok.column, False)

    def global_pair(self, c: list) -> None:
        tok, value = c[0], c[1]
        ctx = self.ctx
        name = tok.value[1:].rstrip(" \t:=")
        value_line = tok.line
        if _is_block(value):
            value, value_line = self._block(value), tok.line + 1
        if name in ctx.globals:
            first = ctx.globals_at[name]
            ctx.fail(f"duplicate key '{name}' (first set on line {first})", tok.line, tok.column)
        ctx.globals[name] = value  # references get copies (see _lookup)
        ctx.globals_at[name] = tok.line
        if name not in ctx.root:  # a plain key or section of that name keeps its place in .data
            ctx.root[name] = value
            ctx.global_keys.add(name)
            ctx.linemaps[id(ctx.root)][1][name] = (name, value, value_line, tok.line, tok.column,
                                                   False)

    def curly_block(self, c: list) -> _Entry:
        tok, d = c[0], c[1]
        self.ctx.tables.add(id(d))
        return (tok.value, d, tok.line, tok.line, tok.column, True)

    def angle_block(self, c: list) -> _Entry:
        tok = c[0]
        d = self._entries(c[3] if type(c[3]) is list else [], table=True)
        return (tok.value, d, tok.line, tok.line, tok.column, True)

    def members_first(self, c: list) -> list:
        return [] if c[0] is None else [c[0]]

    def members_more(self, c: list) -> list:
        if c[1] is not None:
            c[0].append(c[1])
        return c[0]

    # ---- values ------------------------------------------------------------------

    def object(self, c: list) -> dict[str, Any]:
        members: list[_Entry] = []
        for item in c[1:-1]:
            if type(item) is list:
                members = item
            elif type(item) is tuple:
                members.append(item)
        return self._entries(members, table=False)

    def array(self, c: list) -> list:
        if type(c[1]) is list:
            return c[1]
        if len(c) > 2 and type(c[2]) is list:
            return c[2]
        return []

    def items_first(self, c: list) -> list:
        return [c[0]]

    def items_more(self, c: list) -> list:
        c[0].append(c[2])
        return c[0]

    def env(self, c: list) -> Any:
        name = c[1]
        if not isinstance(name, str):
            opener = c[0]
            self.ctx.fail("@env( expects the variable name as a string", opener.line, opener.column)
        found = self.ctx.env.get(name)
        if found is not None:
            return found
        return c[3] if len(c) == 5 else ""

    def comparison(self, c: list) -> bool:
        a, op, b = c
        if op == "==":
            return equal(a, b)
        if op == "!=":
            return not equal(a, b)
        x: Any = as_number(a)
        y: Any = as_number(b)
        if x is None or y is None:
            if isinstance(a, str) and isinstance(b, str):
                x, y = a, b
            else:
                self.ctx.fail(f"cannot compare {kind(a)} with {kind(b)} using '{op}'",
                              op.line, op.column)
        if op == "<":
            return bool(x < y)
        if op == ">":
            return bool(x > y)
        if op == "<=":
            return bool(x <= y)
        return bool(x >= y)

    def ternary(self, c: list) -> Any:
        return c[2] if truthy(c[0]) else c[4]


class _DottedKey(str):
    """An unquoted ``a.b.c`` key: it nests (a quoted "a.b" key does not)."""

    __slots__ = ()


def _plain_key(text: str) -> str:
    """The key of a KEYSEP text (separator and blanks dropped)."""
    key = text.rstrip(" \t:=")
    return _DottedKey(key) if "." in key else key


# A value starts like an expression, or its line holds an operator (one regex, one call).
_EXPRESSION_HINT = re.compile(f"{STARTS.pattern}|{HAS_OPERATOR.pattern}").match
_DOTTED_NAME = re.compile(r"[\w-]+(?:\.[\w-]+)*")


def _var_name(text: str) -> str:
    """The name in ``$name``, ``$a.b`` or ``${a.b}``."""
    return text[2:-1].strip() if text[1:2] == "{" else text[1:]


def _single_quoted(text: str) -> str:
    raw = text[1:-1]
    return SQ_ESCAPE.sub(r"\1", raw) if "\\" in raw else raw


def _deferred_text(raw: str, parts: list[str], lazy: list[tuple[int, Deferred]],
                   line: int, column: int) -> Deferred:
    """A double-quoted string that interpolates a value read later: read later too."""
    slots = dict(lazy)
    node: Node = Lit("", line, column)
    for i, part in enumerate(parts):
        piece = Lit(slots[i], line, column) if i in slots else Lit(part, line, column)
        node = Binary("+", node, piece, line, column)
    first = lazy[0][1]
    return Deferred.make(f'"{raw}"', node, first.operator, inert=first.inert)


def _is_block(value: Any) -> bool:
    return getattr(value, "type", None) == "BLOCK" and isinstance(value, str)

# --------------------------------------------------------------------------- lark

_GRAMMAR = Path(__file__).with_name("grammar.lark")
_lock = threading.Lock()
_builder = _Builder()
_lark: Lark | None = None


def _parser() -> Lark:
    """The Lark object, built (or loaded from lark's cache) once per process."""
    global _lark
    if _lark is None:
        _lark = Lark(
            _GRAMMAR.read_text(encoding="utf-8"),
            parser="lalr",
            lexer=ContextualLexer,
            transformer=_builder,
            maybe_placeholders=False,
            cache=True,
        )
        ContextualLexer.expr_hook = staticmethod(_builder.expr_end)  # type: ignore[assignment]
        # EXPR is %declare'd (our lexer makes it), so lark binds no terminal callback for it:
        # add it to the callbacks the parser reads (the same dict).
        _lark._callbacks["EXPR"] = _builder.EXPR
        # Split a SIMPLE_PAIR token using the very terminals the grammar builds it from:
        # group 1 is the key, groups 2-6 a scalar's kind, group 7 the '[' of an array
        # whose items flat_item then reads one by one, group 8 the '{' of an object
        # whose pairs flat_pair reads (the lexer has checked them all).
        key, *scalars = (_lark.get_terminal(n).pattern.to_regexp()
                         for n in ("KEYSEP", "STRING", "SQSTRING", "NUMBER", "WORD", "VAR"))
        alternatives = "|".join(f"({p})" for p in scalars)
        quoted_key = _lark.get_terminal("QKEYSEP").pattern.to_regexp()
        _builder.split_pair = re.compile(f"({key})(?:{alternatives}|(\\[)|(\\{{))").match
        _builder.flat_item = re.compile(f"()[ \\t]*(?:{alternatives})[ \\t]*,?").match
        _builder.flat_pair = re.compile(
            f"[ \\t]*({key}|{quoted_key})(?:{alternatives})[ \\t]*,?"
        ).match
    return _lark

# --------------------------------------------------------------------------- load


def load(text: str, *, env: Mapping[str, str] | None = None, path: str | None = None) -> Parsed:
    """Parse a .tsk document; ``env`` is what ``@env`` reads (``None``: ``os.environ``)."""
    if text.startswith(_BOM):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if not text.endswith("\n"):
        text += "\n"
    source = text
    blocks: dict[int, str] = {}
    if "'''" in text or '"""' in text:
        text, blocks = cut_blocks(text, path)
    if text.lstrip()[:1] == "{":  # a JSON document is TuskLang too
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return Parsed(data, {(k,): 1 for k in data})
    if "/*" in text:
        text = blank_block_comments(text)
    if YAML_OPENER.search(text):
        text = indented_blocks(text)
    ctx = _Context(source, os.environ if env is None else env, path, blocks)
    ctx.text_cut = text
    with _lock:
        parser = _parser()
        _builder.ctx = ctx
        try:
            parser.parse(text)
        except UnexpectedInput as err:
            raise diagnose(err, text, source, path) from None
        except RecursionError:
            raise TskSyntaxError("the document nests too deeply", path=path) from None
        finally:
            _builder.ctx = None  # type: ignore[assignment]
    return Parsed(ctx.root, _value_lines(ctx), ctx.operators)


def _value_lines(ctx: _Context) -> dict[tuple[str, ...], int]:
    """Key path -> line, for every key reachable from the top through dicts."""
    out: dict[tuple[str, ...], int] = {}
    linemaps = ctx.linemaps
    todo: list[tuple[tuple[str, ...], dict[str, Any]]] = [((), ctx.root)]
    while todo:
        prefix, d = todo.pop()
        lines = linemaps[id(d)][1]
        for key, entry in lines.items():
            key_path = (*prefix, key)
            out[key_path] = entry[2]
            value = d[key]
            if type(value) is dict and id(value) in linemaps and linemaps[id(value)][0] is value:
                todo.append((key_path, value))
    return out
