"""``dumps()``: write plain data as a .tsk document that ``load()`` reads back equal."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from tusk_events.lang.operators import Deferred
from tusk_events.lang.values import CLOSERS, DELIMS

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
    if isinstance(value, Deferred):  # an operator value: written as it was read
        return str.__str__(value)
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
    for delim in DELIMS:
        if CLOSERS[delim].search(s) is None:
            return delim
    return None


def _write_pair(out: list[str], key: str, value: Any) -> None:
    if isinstance(value, str) and not isinstance(value, Deferred):
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
