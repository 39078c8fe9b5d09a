"""Values of the language: numbers, truthiness, equality, and the error helper.

Shared by the parser (literals, comparisons, conditions) and the operator engine
(``+``, ``&&``, ``@if``), so both read values the same way.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

from tusk_events.errors import TskSyntaxError

KEYWORDS: dict[str, Any] = {"true": True, "false": False, "null": None}
FALSY_STRINGS = frozenset({"", "false", "0", "no", "off"})
NUMBER_RE = re.compile(r"[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
ESCAPES = {
    "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "0": "\0",
    "\\": "\\", '"': '"', "'": "'", "/": "/", "$": "$",
}
DQ_SPECIAL = re.compile(r"\\|\$\{")
SQ_ESCAPE = re.compile(r"\\([\\'])")
NAME_RE = re.compile(r"[\w-]+")
HEX_RE = re.compile(r"[0-9a-fA-F]+")


def number(text: str) -> int | float | None:
    """The int or float a number literal denotes, or None when it cannot be represented."""
    if "." in text or "e" in text or "E" in text:
        value = float(text)
        return value if math.isfinite(value) else None
    try:
        return int(text)
    except ValueError:  # more digits than int() accepts
        return None


def text_of(value: Any) -> str:
    """How a value reads inside a string (``${name}``): strings as is, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def copy(value: Any) -> Any:
    """A fresh copy of a JSON-like value, so a referenced global is never shared."""
    if isinstance(value, dict):
        return {k: copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy(v) for v in value]
    return value


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() not in FALSY_STRINGS
    return bool(value)


def as_number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and NUMBER_RE.fullmatch(value.strip()):
        return number(value.strip())
    return None


def as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        return True if word == "true" else False if word == "false" else None
    return None


def equal(a: Any, b: Any) -> bool:
    """``==`` of the language: exact for like kinds, a string read as a number/boolean otherwise."""
    if isinstance(a, bool) or isinstance(b, bool):
        flag = as_bool(a)
        return flag is not None and flag == as_bool(b)
    if type(a) is type(b) or (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        return bool(a == b)
    if isinstance(a, str) or isinstance(b, str):
        n = as_number(a)
        return n is not None and n == as_number(b)
    return False


def kind(value: Any) -> str:
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


def source_line(text: str, line: int) -> str | None:
    lines = text.split("\n")
    return lines[line - 1] if 1 <= line <= len(lines) else None


def fail(message: str, text: str, path: str | None, line: int, column: int) -> NoReturn:
    raise TskSyntaxError(
        message, path=path, line=line, column=column, source_line=source_line(text, line)
    )



# The two multi-line string delimiters, and for each the regex of a line that closes it:
# the same delimiter, nothing else but whitespace (as str.strip() sees it).
DELIMS = ("'''", '"""')
CLOSERS = {d: re.compile(r"^[^\S\n]*" + d + r"[^\S\n]*$", re.MULTILINE) for d in DELIMS}
