"""Diagnosis: turn lark's parse errors into messages that say what went wrong, and where."""

from __future__ import annotations

import re
from typing import Any

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedToken

from tusk_events.errors import TskSyntaxError
from tusk_events.lang.values import CLOSERS, source_line

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


def diagnose(err: Exception, text: str, source: str, path: str | None) -> TskSyntaxError:
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
                          source_line=source_line(source, line))


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
    """Message, line and column for a lark error (see diagnose)."""
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
            if rest[3:].strip() and CLOSERS[delim].search(text, pos + len(rest)):
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
        statement = _STATEMENT_START.match(line_text)
        if (
            kind == "$END"
            or (where == "env" and kind == "NL")
            or (line > opener[0].line and statement is not None
                # the unexpected token is in the start of a new statement, so the opener
                # above was left open; a token later on the line is the mistake itself
                and column - 1 < statement.end())
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

