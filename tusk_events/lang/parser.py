"""The TuskLang (.tsk) parser: text in, plain JSON-compatible values out.

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
  ``$name: value`` defines a global: it is stored at top level as ``name`` and can be
  read afterwards as ``$name`` or, inside double quotes, as ``${name}``. A reference
  to a global that is not defined *earlier* in the document is an error. Globals
  holding arrays or objects are copied where they are referenced.
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
  (any value) when unset. ``@env`` is the only ``@`` operator.
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
import math
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import Lexer, LexerState

from tusk_events.errors import TskSyntaxError

__all__ = ["Parsed", "dumps", "load"]


@dataclass(frozen=True)
class Parsed:
    """A parsed document: its values, and where each value starts in the text."""

    data: dict[str, Any]
    value_lines: dict[tuple[str, ...], int]


# --------------------------------------------------------------------------- pre-pass

_BOM = "\ufeff"
_DELIMS = ("'''", '"""')
# A delimiter at the end of a line (trailing blanks allowed): a candidate opener.
_DELIM_AT_EOL = re.compile(r"""(?:'''|\"\"\")(?=[ \t]*$)""", re.MULTILINE)
# What may precede an opening delimiter on its line: anything but a comment, with
# quoted strings skipped whole, ending in the key's ':' or '='.
_OPENER_PREFIX = re.compile(r"""(?:[^#"'\n]|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')*?[:=][ \t]*""")
# A closing line: the same delimiter, nothing else but whitespace (as str.strip() sees it).
_CLOSERS = {d: re.compile(r"^[^\S\n]*" + d + r"[^\S\n]*$", re.MULTILINE) for d in _DELIMS}


def _cut_blocks(text: str, path: str | None) -> tuple[str, dict[int, str]]:
    """Replace each multi-line ''' / \"\"\" value by blank lines; return the content by line.

    The opening line is left alone (lark lexes its delimiter as BLOCK and the
    transformer looks the content up by that line), so positions do not move.
    """
    blocks: dict[int, str] = {}
    pieces: list[str] = []
    done = 0  # text[:done] has been copied to pieces
    line, counted = 1, 0  # line number at offset `counted`
    for m in _DELIM_AT_EOL.finditer(text):
        start = m.start()
        if start < done:
            continue  # inside a block already cut out
        line_start = text.rfind("\n", 0, start) + 1
        if not _OPENER_PREFIX.fullmatch(text, line_start, start):
            continue
        line += text.count("\n", counted, start)
        counted = start
        delim = m.group()
        body_start = text.index("\n", start) + 1
        close = _CLOSERS[delim].search(text, body_start)
        if close is None:
            _fail(
                f"unterminated {delim}-string opened here",
                text, path, line, start - line_start + 1,
            )
        close_start = close.start()
        blocks[line] = text[body_start : close_start - 1] if close_start > body_start else ""
        end = close.end()  # at the closing line's '\n' (or the end of the text)
        pieces.append(text[done:body_start])
        pieces.append("\n" * text.count("\n", body_start, end))
        done = end
    if not blocks:
        return text, blocks
    pieces.append(text[done:])
    return "".join(pieces), blocks


# --------------------------------------------------------------------------- values

_KEYWORDS: dict[str, Any] = {"true": True, "false": False, "null": None}
_FALSY_STRINGS = frozenset({"", "false", "0", "no", "off"})
_NUMBER = re.compile(r"[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_ESCAPES = {
    "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "0": "\0",
    "\\": "\\", '"': '"', "'": "'", "/": "/", "$": "$",
}
_DQ_SPECIAL = re.compile(r"\\|\$\{")
_SQ_ESCAPE = re.compile(r"\\([\\'])")
_NAME = re.compile(r"[\w-]+")
_HEX = re.compile(r"[0-9a-fA-F]+")


def _number(text: str) -> int | float | None:
    """The int or float a number literal denotes, or None when it cannot be represented."""
    if "." in text or "e" in text or "E" in text:
        value = float(text)
        return value if math.isfinite(value) else None
    try:
        return int(text)
    except ValueError:  # more digits than int() accepts
        return None


def _text_of(value: Any) -> str:
    """How a value reads inside a string (``${name}``): strings as is, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _copy(value: Any) -> Any:
    """A fresh copy of a JSON-like value, so a referenced global is never shared."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() not in _FALSY_STRINGS
    return bool(value)


def _as_number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return _number(value.strip())
    return None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        return True if word == "true" else False if word == "false" else None
    return None


def _equal(a: Any, b: Any) -> bool:
    """``==`` of the language: exact for like kinds, a string read as a number/boolean otherwise."""
    if isinstance(a, bool) or isinstance(b, bool):
        flag = _as_bool(a)
        return flag is not None and flag == _as_bool(b)
    if type(a) is type(b) or (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        return bool(a == b)
    if isinstance(a, str) or isinstance(b, str):
        number = _as_number(a)
        return number is not None and number == _as_number(b)
    return False


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


# --------------------------------------------------------------------------- errors


def _source_line(text: str, line: int) -> str | None:
    lines = text.split("\n")
    return lines[line - 1] if 1 <= line <= len(lines) else None


def _fail(message: str, text: str, path: str | None, line: int, column: int) -> NoReturn:
    raise TskSyntaxError(
        message, path=path, line=line, column=column, source_line=_source_line(text, line)
    )


# --------------------------------------------------------------------------- transformer


class _Context:
    """Per-document state the transformer reads and fills while lark parses."""

    __slots__ = (
        "blocks", "current", "env", "globals", "linemaps", "path", "root", "tables", "text",
    )

    def __init__(self, text: str, env: Mapping[str, str], path: str | None,
                 blocks: dict[int, str]) -> None:
        self.text = text
        self.env = env
        self.path = path
        self.blocks = blocks
        self.globals: dict[str, Any] = {}
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
        _fail(message, self.text, self.path, line, column)


class _Located(Protocol):
    """What the transformer reads from a lark Token (positions are set by our lexer)."""

    type: str
    value: str
    line: int
    column: int


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

    # ---- terminals (called on shift) -------------------------------------------

    def STRING(self, tok: _Located) -> str:
        return self._double_quoted(tok.value, tok.line, tok.column)

    def SQSTRING(self, tok: _Located) -> str:
        raw = tok.value[1:-1]
        return _SQ_ESCAPE.sub(r"\1", raw) if "\\" in raw else raw

    def TRIPLE(self, tok: _Located) -> str:
        return tok.value[3:-3]

    def NUMBER(self, tok: _Located) -> int | float:
        return self._number(tok.value, tok.line, tok.column)

    def WORD(self, tok: _Located) -> Any:
        text = tok.value
        return _KEYWORDS.get(text, text)

    def VAR(self, tok: _Located) -> Any:
        return self._lookup(tok.value[1:], tok.line, tok.column)

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
        return (m.group(1).rstrip(" \t:="), value, tok.line, tok.line, tok.column, False)

    def _scalar(self, kind: int, text: str, line: int, column: int) -> Any:
        """The value of a STRING, SQSTRING, NUMBER, WORD or VAR (kinds 2 to 6) text."""
        if kind == 2:
            return self._double_quoted(text, line, column)
        if kind == 3:
            raw = text[1:-1]
            return _SQ_ESCAPE.sub(r"\1", raw) if "\\" in raw else raw
        if kind == 4:
            return self._number(text, line, column)
        if kind == 5:
            return _KEYWORDS.get(text, text)
        return self._lookup(text[1:], line, column)

    # ---- helpers -----------------------------------------------------------------

    def _key(self, text: str, line: int, column: int) -> str:
        """The key a KEYSEP or QKEYSEP text names (separator and blanks dropped)."""
        key = text.rstrip(" \t:=")
        if key[0] == '"':
            return self._double_quoted(key, line, column)
        if key[0] == "'":
            raw = key[1:-1]
            return _SQ_ESCAPE.sub(r"\1", raw) if "\\" in raw else raw
        return key

    def _double_quoted(self, text: str, line: int, column: int) -> str:
        raw = text[1:-1]
        if "\\" in raw or "${" in raw:
            return self._unescape(raw, line, column + 1)
        return raw

    def _number(self, text: str, line: int, column: int) -> int | float:
        if text.isdigit() and len(text) < 19:
            return int(text)
        value = _number(text)
        if value is None:
            shown = text if len(text) <= 20 else text[:20] + "..."
            self.ctx.fail(f"number {shown} is out of range", line, column)
        return value

    def _lookup(self, name: str, line: int, column: int) -> Any:
        try:
            value = self.ctx.globals[name]
        except KeyError:
            self.ctx.fail(f"undefined variable ${name}", line, column)
        return _copy(value) if isinstance(value, (dict, list)) else value

    def _unescape(self, raw: str, line: int, column: int) -> str:
        """Resolve escapes and ``${name}`` in double-quoted text starting at ``column``."""
        out: list[str] = []
        pos = 0
        n = len(raw)
        while True:
            m = _DQ_SPECIAL.search(raw, pos)
            if m is None:
                out.append(raw[pos:])
                return "".join(out)
            i = m.start()
            out.append(raw[pos:i])
            if m.group() == "${":
                close = raw.find("}", i + 2)
                if close < 0:
                    self.ctx.fail("unterminated ${ in string (missing '}')", line, column + i)
                name = raw[i + 2 : close].strip()
                if not _NAME.fullmatch(name):
                    self.ctx.fail("expected a variable name inside ${...}", line, column + i)
                out.append(_text_of(self._lookup(name, line, column + i)))
                pos = close + 1
                continue
            c = raw[i + 1] if i + 1 < n else ""
            if c in _ESCAPES:
                out.append(_ESCAPES[c])
                pos = i + 2
            elif c in ("u", "U"):
                width = 4 if c == "u" else 8
                digits = raw[i + 2 : i + 2 + width]
                if not _HEX.fullmatch(digits) or len(digits) != width:
                    self.ctx.fail(f"\\{c} needs {width} hex digits", line, column + i)
                code = int(digits, 16)
                pos = i + 2 + width
                if 0xD800 <= code < 0xDC00 and raw.startswith("\\u", pos):
                    low = raw[pos + 2 : pos + 6]
                    if len(low) == 4 and _HEX.fullmatch(low) and 0xDC00 <= int(low, 16) < 0xE000:
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
        if key not in d:
            d[key] = entry[1]
            lines[key] = entry
            return
        old = d[key]
        ctx = self.ctx
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
            if key in d:
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
        for part in name_tok.value.split("."):
            walked.append(part)
            lines = ctx.linemaps[id(d)][1]
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

    # ---- members -----------------------------------------------------------------

    def pair(self, c: list) -> _Entry:
        tok = c[0]
        return (tok.value.rstrip(" \t:="), c[1], tok.line, tok.line, tok.column, False)

    def pair_block(self, c: list) -> _Entry:
        tok = c[0]
        return (tok.value.rstrip(" \t:="), self._block(c[1]), tok.line + 1, tok.line,
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
        if name in ctx.globals or name in ctx.root:
            first = ctx.linemaps[id(ctx.root)][1][name][3]
            ctx.fail(f"duplicate key '{name}' (first set on line {first})", tok.line, tok.column)
        ctx.globals[name] = value  # references get copies (see _lookup)
        ctx.root[name] = value
        ctx.linemaps[id(ctx.root)][1][name] = (name, value, value_line, tok.line, tok.column, False)

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
            return _equal(a, b)
        if op == "!=":
            return not _equal(a, b)
        x: Any = _as_number(a)
        y: Any = _as_number(b)
        if x is None or y is None:
            if isinstance(a, str) and isinstance(b, str):
                x, y = a, b
            else:
                self.ctx.fail(f"cannot compare {_kind(a)} with {_kind(b)} using '{op}'",
                              op.line, op.column)
        if op == "<":
            return bool(x < y)
        if op == ">":
            return bool(x > y)
        if op == "<=":
            return bool(x <= y)
        return bool(x >= y)

    def ternary(self, c: list) -> Any:
        return c[2] if _truthy(c[0]) else c[4]


def _is_block(value: Any) -> bool:
    return getattr(value, "type", None) == "BLOCK" and isinstance(value, str)


# --------------------------------------------------------------------------- lexer


class _Token(Token):
    """lark's Token, built by the lexer below without going through ``Token.__new__``."""

    __slots__ = ()


class _ContextualLexer(Lexer):
    """A contextual lexer for lark's LALR parser, as one tight loop.

    Same algorithm as lark's ``lexer="contextual"``: each parser state gets a scanner
    made of the terminals that state accepts (plus the ignored ones), tried in lark's
    priority order; a text that no scanner of the state matches is re-read with all
    terminals for the error message. lark's generic version goes through several
    layers per token (scanner objects, a line counter, keyword callbacks this grammar
    does not need); this one is plugged in through lark's custom-lexer interface and
    takes about a third of the time. Scanners are compiled on first use and shared by
    states that accept the same terminals; the big composite terminals that lead the
    priority order (SIMPLE_PAIR) are compiled once and tried on their own first, which
    is the same order and keeps each state's regex small.
    """

    __future_interface__ = 2  # lex(lexer_state, parser_state), lexer_state.text may be a slice

    def __init__(self, conf: Any) -> None:
        self.terminals = {t.name: t for t in conf.terminals}
        self.ignore = frozenset(conf.ignore)
        self.flags = conf.g_regex_flags
        self.by_state: dict[Any, tuple] = {}
        self.by_names: dict[frozenset[str], tuple] = {}
        self.compiled: dict[str, Any] = {}
        self.root: Any = None  # all terminals, for error messages only
        self.newline_types = frozenset(
            t.name for t in conf.terminals
            if "\\n" in t.pattern.to_regexp() or "\n" in t.pattern.to_regexp()
        )

    def _scanner(self, accepts: Any) -> tuple:
        """(leading big terminals as (name, match), match of the alternation of the rest)."""
        names = frozenset(n for n in accepts if n in self.terminals) | self.ignore
        try:
            return self.by_names[names]
        except KeyError:
            pass
        terms = sorted(
            (self.terminals[n] for n in names),
            key=lambda t: (-t.priority, -t.pattern.max_width, -len(t.pattern.value), t.name),
        )
        leading = []
        while terms and len(terms[0].pattern.to_regexp()) > 300:
            t = terms.pop(0)
            if t.name not in self.compiled:
                self.compiled[t.name] = re.compile(t.pattern.to_regexp(), self.flags).match
            leading.append((t.name, self.compiled[t.name]))
        pattern = "|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in terms)
        scanner = (tuple(leading), re.compile(pattern, self.flags).match)
        self.by_names[names] = scanner
        return scanner

    def lex(self, lexer_state: LexerState, parser_state: Any) -> Iterator[Token]:
        source = lexer_state.text
        if isinstance(source, str):
            text, pos, end = source, 0, len(source)
        else:  # lark >= 1.3 hands over a TextSlice
            text, pos, end = source.text, source.start, source.end
        line, line_start = 1, 0
        by_state = self.by_state
        states = parser_state.parse_conf.states
        stack = parser_state.state_stack
        ignore = self.ignore
        newline_types = self.newline_types
        new_str = str.__new__
        while pos < end:
            state = stack[-1]
            try:
                leading, scan = by_state[state]
            except KeyError:
                leading, scan = by_state[state] = self._scanner(states[state])
            for kind, match in leading:
                m = match(text, pos, end)
                if m is not None:
                    break
            else:
                m = scan(text, pos, end)
                if m is None:
                    self._fail(text, pos, end, line, pos - line_start + 1, parser_state)
                kind = m.lastgroup
            value = m.group()
            if kind not in ignore:
                # Token(...) goes through two Python-level constructors; this is the
                # same object built directly, at a third of the cost.
                tok = new_str(_Token, value)
                tok.type = kind
                tok.value = value
                tok.start_pos = pos
                tok.line = line
                tok.column = pos - line_start + 1
                tok.end_line = tok.end_column = tok.end_pos = None
                if kind in newline_types:
                    breaks = value.count("\n")
                    if breaks:
                        line += breaks
                        line_start = pos + value.rindex("\n") + 1
                pos += len(value)
                yield tok
            else:
                pos += len(value)

    def _fail(self, text: str, pos: int, end: int, line: int, column: int,
              parser_state: Any) -> NoReturn:
        accepts = {n for n in parser_state.parse_conf.states[parser_state.position]
                   if n in self.terminals}
        if self.root is None:
            self.root = self._scanner(self.terminals)
        leading, scan = self.root
        for kind, match in leading:
            m = match(text, pos, end)
            if m is not None:
                break
        else:
            m = scan(text, pos, end)
            kind = m.lastgroup if m is not None else None
        if m is not None and kind not in self.ignore:
            tok = Token(kind, m.group(), pos, line, column)
            raise UnexpectedToken(tok, accepts, state=parser_state)
        raise UnexpectedCharacters(text, pos, line, column, allowed=accepts, state=parser_state)


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
            lexer=_ContextualLexer,
            transformer=_builder,
            maybe_placeholders=False,
            cache=True,
        )
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
        text, blocks = _cut_blocks(text, path)
    ctx = _Context(source, os.environ if env is None else env, path, blocks)
    with _lock:
        parser = _parser()
        _builder.ctx = ctx
        try:
            parser.parse(text)
        except UnexpectedInput as err:
            raise _diagnose(err, text, source, path) from None
        except RecursionError:
            raise TskSyntaxError("the document nests too deeply", path=path) from None
        finally:
            _builder.ctx = None  # type: ignore[assignment]
    return Parsed(ctx.root, _value_lines(ctx))


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


# --------------------------------------------------------------------------- diagnosis

# A line that starts a statement: the sign that an opener further up was never closed.
_STATEMENT_START = re.compile(
    r"[ \t]*(?:\[|[}<]|\$?[\w-]+[ \t]*[:=]|\"[^\"\n]*\"[ \t]*[:=]|[\w-]+[ \t]*[{>][ \t]*(?:#.*)?$)"
)
_KEY_WITH_SPACE = re.compile(r"[\w-]+(?:[ \t]+[\w-]+)+[ \t]*[:=]")
_TRIPLE_AT = re.compile("'''|\"\"\"")
_AT_OPERATOR = re.compile(r"@([A-Za-z_]\w*)")
_VALUE_TERMINALS = frozenset({"STRING", "SQSTRING", "TRIPLE", "NUMBER", "WORD", "VAR", "ENVOPEN",
                              "LSQB", "LBRACE"})
_VALUE_OPENERS = frozenset({"KEYSEP", "QKEYSEP", "GLOBALSEP", "ENVOPEN", "COMMA", "LSQB", "QMARK",
                            "COLON", "EQ", "NE", "LE", "GE", "LANGLE", "RANGLE"})
_WORDISH = frozenset({"WORD", "NUMBER", "KEY", "DOTTED"})
_NEVER_CLOSED = {
    "env": "unterminated @env( call",
    "array": "array is never closed",
    "curly": "'{{' block{name} is never closed",
    "angle": "'>' block{name} is never closed",
    "object": "'{{' object{name} is never closed",
}


def _describe(token_type: str | None, text: str) -> str:
    """How the unexpected thing is named in a message."""
    if token_type == "$END":
        return "end of file"
    shown = text.strip(" \t")
    if token_type == "NL" or not shown or shown[0] in "\n#":
        return "line break"
    shown = shown.split("\n", 1)[0].rstrip(" \t")
    shown = shown if len(shown) <= 20 else shown[:17] + "..."
    return repr(shown) if "'" not in shown else f'"{shown}"'


def _diagnose(err: Exception, text: str, source: str, path: str | None) -> TskSyntaxError:
    """Turn a lark UnexpectedInput into a TskSyntaxError that says what went wrong."""
    try:
        message, line, column = _explain(err, text, source)
    except Exception:  # noqa: BLE001 - a diagnosis bug must not hide the syntax error itself
        line = getattr(err, "line", 1)
        column = getattr(err, "column", 1)
        message = "invalid syntax"
    if not isinstance(line, int) or line < 1:
        line, column = 1, 1
    if not isinstance(column, int) or column < 1:
        column = 1
    return TskSyntaxError(message, path=path, line=line, column=column,
                          source_line=_source_line(source, line))


def _innermost_opener(stack: list) -> tuple[Any, str, str | None] | None:
    """The innermost unclosed '[', '{', '>' block or '@env(' on the parser's stack.

    Returns the opening token, what it opens (header, array, curly, angle, object, env)
    and the key it belongs to, if any.
    """
    for i in range(len(stack) - 1, -1, -1):
        tok = stack[i]
        if not isinstance(tok, Token) or tok.type not in ("LSQB", "LBRACE", "ENVOPEN", "RANGLE"):
            continue
        before: Any = stack[i - 1] if i > 0 else None
        before_type = before.type if isinstance(before, Token) else None
        if tok.type == "RANGLE":
            if before_type == "KEY":
                return tok, "angle", before.value
            continue  # a comparison
        if tok.type == "ENVOPEN":
            return tok, "env", None
        if tok.type == "LBRACE":
            if before_type == "KEY":
                return tok, "curly", before.value
            if before_type in ("KEYSEP", "GLOBALSEP", "QKEYSEP"):
                return tok, "object", before.value.lstrip("$").rstrip(" \t:=").strip("\"'")
            return tok, "object", None
        after = stack[i + 1] if i + 1 < len(stack) else None
        if isinstance(after, Token) and after.type == "DOTTED":
            return tok, "header", None
        return tok, "array", None
    return None


def _explain(err: Any, text: str, source: str) -> tuple[str, int, int]:
    """Message, line and column for a lark error (see _diagnose)."""
    state = getattr(err, "state", None)
    stack: list = list(getattr(state, "value_stack", None) or [])
    lines = source.split("\n")

    token: Any = None
    if isinstance(err, UnexpectedToken):
        token = err.token
        expected = set(err.expected)
        if token.type == "$END":
            pos = len(text.rstrip("\n \t"))
        else:
            pos = token.start_pos if token.start_pos is not None else 0
    elif isinstance(err, UnexpectedCharacters):
        expected = set(err.allowed or ())
        pos = err.pos_in_stream or 0
    else:
        return "invalid syntax", getattr(err, "line", 1), getattr(err, "column", 1)
    kind = token.type if token is not None else None
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    rest = text[pos:text.find("\n", pos)] if pos < len(text) else ""
    ttext = "" if kind == "$END" else token.value if token is not None else rest[:1]
    found = _describe(kind, ttext)
    top: Any = stack[-1] if stack else None
    top_type = top.type if isinstance(top, Token) else None
    opener = _innermost_opener(stack)
    where = opener[1] if opener is not None else ""

    # Text no terminal accepts: unterminated quotes, unknown operators.
    if token is None:
        triple = _TRIPLE_AT.match(rest)
        if triple:
            delim = triple.group()
            if rest[3:].strip() and _CLOSERS[delim].search(text, pos + len(rest)):
                message = (f"text after an opening {delim} (a multi-line value starts on the "
                           "next line)")
                return message, line, column + len(rest) - len(rest[3:].lstrip())
            return f"unterminated {delim}-string opened here", line, column
        if rest[:1] in ('"', "'"):
            return "unterminated string", line, column
        if rest[:1] == "@":
            op = _AT_OPERATOR.match(rest)
            if op and op.group(1) == "env":
                return "expected '(' right after @env", line, column + 4
            if op:
                message = f"unknown operator '@{op.group(1)}' (only @env(...) is supported)"
                return message, line, column
        if rest[:1] == "$" and expected & {"VAR", "GLOBALSEP"}:
            return "expected a variable name after '$'", line, column
    elif kind == "BLOCK" and top_type not in ("KEYSEP", "GLOBALSEP", "QKEYSEP"):
        if rest.strip() == ttext and "KEYSEP" in expected:
            return f"{ttext} closes nothing: no multi-line value is open", line, column
        return f"a multi-line {ttext}-string must be the whole value of a key", line, column

    # Something opened further up and never closed.
    if opener is not None and where != "header":
        line_text = lines[line - 1] if line - 1 < len(lines) else ""
        if (
            kind == "$END"
            or (where == "env" and kind == "NL")
            or (line > opener[0].line and _STATEMENT_START.match(line_text) is not None)
        ):
            name = f" '{opener[2]}'" if opener[2] else ""
            return _NEVER_CLOSED[where].format(name=name), opener[0].line, opener[0].column

    # Closers without an opener.
    if kind == "RBRACE" and not any(isinstance(x, Token) and x.type == "LBRACE" for x in stack):
        return "'}' without an open '{' block", line, column
    if kind == "RSQB" and not any(isinstance(x, Token) and x.type == "LSQB" for x in stack):
        return "']' without an open '['", line, column
    if kind == "LANGLE" and "KEYSEP" in expected:
        return "'<' without an open '>' block", line, column

    # Section headers.
    if where == "header" or (top_type == "LSQB" and "DOTTED" in expected):
        if top_type == "LSQB":
            return "expected a section name after '['", line, column
        if top_type == "DOTTED" and rest[:1] == ".":
            return "expected a name after '.' in the section header", line, column + 1
        if top_type == "DOTTED":
            return "expected ']' to close the section header", line, column
    if top_type == "RSQB" and expected <= {"NL"}:
        return "unexpected text after section header", line, column

    # Where a key should be.
    if "KEYSEP" in expected:
        if rest[:1] in (":", "="):
            return f"missing key before '{rest[0]}'", line, column
        if kind in ("STRING", "SQSTRING"):
            return "expected ':' or '=' after key", line, column + len(ttext)
        return f"expected a key, found {found}", line, column
    if top_type == "KEY" and expected & {"LBRACE", "RANGLE"}:
        key_line = lines[top.line - 1] if top.line - 1 < len(lines) else ""
        after_key = top.column + len(top.value)
        if _KEY_WITH_SPACE.match(key_line, top.column - 1):
            return "keys cannot contain spaces", top.line, after_key
        return "expected ':' or '=' after key", top.line, after_key
    if top_type == "RANGLE" and "NL" in expected:
        return f"expected a line break after '>', found {found}", line, column

    # Where a value should be.
    if top_type in _VALUE_OPENERS and expected & _VALUE_TERMINALS:
        if top_type == "ENVOPEN":
            return "expected the variable name in @env(...)", line, column
        if kind in ("NL", "$END") and top_type in ("KEYSEP", "QKEYSEP", "GLOBALSEP"):
            return "missing value after the separator", line, column
        return f"expected a value, found {found}", line, column

    # After a complete value.
    if "COLON" in expected and "QMARK" not in expected:
        return f"expected ':' in the conditional (cond ? a : b), found {found}", line, column
    if where == "array":
        return f"expected ',' or ']' in array, found {found}", line, column
    if where == "env":
        return f"expected ',' or ')' in @env( call, found {found}", line, column
    if where in ("object", "curly"):
        return f"expected ',' or a line break between items, found {found}", line, column
    if where == "angle":
        return f"expected a line break between items, found {found}", line, column
    if ttext == ":":
        return "unexpected ':' after the value (quote values that contain ':')", line, column
    if kind in _WORDISH:
        return (f"unexpected {found} after the value (quote text that contains spaces)",
                line, column)
    if kind == "$END":
        return "unexpected end of file", line, column
    return f"unexpected {found} after the value", line, column


# --------------------------------------------------------------------------- dumps

_PLAIN_KEY = re.compile(r"[\w-]+")
_QUOTE_NEEDED = re.compile(r'[\x00-\x1f\x7f"\\]|\$\{|[\ud800-\udfff]')
_QUOTE_MAP = {"\n": "\\n", "\t": "\\t", "\r": "\\r", '"': '\\"', "\\": "\\\\", "${": "\\${"}


def _quote_char(m: re.Match[str]) -> str:
    s = m.group()
    return _QUOTE_MAP.get(s) or f"\\u{ord(s):04x}"


def _quote(s: str) -> str:
    return '"' + _QUOTE_NEEDED.sub(_quote_char, s) + '"'


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"keys must be strings, not {type(key).__name__}")
    return key if _PLAIN_KEY.fullmatch(key) else _quote(key)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} cannot be written: .tsk numbers are finite")
        return float.__repr__(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)}: {_scalar(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    raise TypeError(f"{type(value).__name__} cannot be written to a .tsk document")


def _block_delimiter(s: str) -> str | None:
    """The triple quote that can hold ``s`` verbatim, if any."""
    if "\n" not in s or "\r" in s:
        return None
    for delim in _DELIMS:
        if _CLOSERS[delim].search(s) is None:
            return delim
    return None


def _write_pair(out: list[str], key: str, value: Any) -> None:
    if isinstance(value, str):
        delim = _block_delimiter(value)
        if delim is not None:
            out.append(f"{_key(key)} = {delim}\n{value}\n{delim}")
            return
    out.append(f"{_key(key)}: {_scalar(value)}")


def _is_section(key: Any, value: Any) -> bool:
    return (isinstance(value, Mapping) and isinstance(key, str)
            and _PLAIN_KEY.fullmatch(key) is not None)


def _write_section(out: list[str], path: tuple[str, ...], table: Mapping[str, Any]) -> None:
    out.append("")
    out.append("[" + ".".join(path) + "]")
    for key, value in table.items():
        if not _is_section(key, value):
            _write_pair(out, key, value)
    for key, value in table.items():
        if _is_section(key, value):
            _write_section(out, (*path, key), value)


def dumps(data: Mapping[str, Any]) -> str:
    """Write ``data`` as a .tsk document that ``load()`` reads back to equal data.

    Nested dicts under plain keys become ``[a.b]`` sections, multi-line strings become
    ``'''`` blocks where that is lossless, everything else is written inline.
    """
    out: list[str] = []
    for key, value in data.items():
        if not _is_section(key, value):
            _write_pair(out, key, value)
    for key, value in data.items():
        if _is_section(key, value):
            _write_section(out, (key,), value)
    text = "\n".join(out).lstrip("\n")
    return text + "\n" if text else ""
