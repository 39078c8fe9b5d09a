"""The one text form of timestamps in the event store, on every backend.

The docs' fujsen write ``datetime('now')`` (SQLite's ``'YYYY-MM-DD HH:MM:SS'``, UTC) and filter
with ``timestamp > ?`` against a string, so timestamps are TEXT compared as text. The canonical
form is::

    YYYY-MM-DD HH:MM:SS            a whole second
    YYYY-MM-DD HH:MM:SS.f          otherwise: 1 to 6 fraction digits, no trailing zero

always UTC. Because the date and time fields are fixed-width and the fraction carries no
trailing zero, comparing two canonical strings byte by byte compares the instants they name:
``'... 10:00:00' < '... 10:00:00.5' < '... 10:00:01'``, and two spellings of one instant never
differ. The second-precision strings of ``datetime('now')`` are canonical too. Other spellings
do not compare correctly ('T' sorts after ' ', so ``'2024-01-01T09:00'`` is "later" than every
stored time of that day), which is why :func:`canonical` rewrites them: the Python API applies
it to ``since`` arguments and the fujsen SQL path to every parameter that is an ISO-8601
date-time. Precision is one microsecond.
"""

from __future__ import annotations

import functools
import math
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from tusk_events.errors import StoreError

_UTC = UTC
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_US = 1_000_000

_ISO = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)"
    r"(?:[Tt ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d{1,9}))?)?"
    r"\s*(Z|z|[+-]\d\d(?::?\d\d)?)?)?"
)
"""ISO-8601 / RFC 3339 date-times as people write them: 'T' or ' ', optional seconds,
fraction and offset; a bare date is midnight."""

CANONICAL_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{0,5}[1-9])?$"
"""The canonical form as a POSIX regular expression (used in PostgreSQL's CHECK constraint)."""


@functools.lru_cache(maxsize=4096)
def _second_text(sec: int) -> str:
    # Events of one batch share their seconds: the cache turns formatting into a lookup.
    return (_NAIVE_EPOCH + timedelta(seconds=sec)).isoformat(sep=" ")


@functools.lru_cache(maxsize=4096)
def _second_epoch(head: str) -> int:
    dt = datetime(
        int(head[0:4]),
        int(head[5:7]),
        int(head[8:10]),
        int(head[11:13]),
        int(head[14:16]),
        int(head[17:19]),
        tzinfo=_UTC,
    )
    return (dt - _EPOCH) // timedelta(seconds=1)


def _from_micros(us: int) -> str:
    sec, frac = divmod(us, _US)
    text = _second_text(sec)
    if frac:
        return f"{text}.{frac:06d}".rstrip("0")
    return text


def from_epoch(ts: float) -> str:
    """The canonical text of a Unix timestamp (seconds, float or int), to the microsecond."""
    try:
        sec = math.floor(ts)
        frac = round((ts - sec) * _US)  # exact split: ts * 1e6 would lose digits past 2**53
        if frac == _US:
            sec, frac = sec + 1, 0
        text = _second_text(sec)
    except (OverflowError, ValueError, TypeError) as e:
        raise StoreError(f"cannot store timestamp {ts!r}: {e}") from e
    if frac:
        return f"{text}.{frac:06d}".rstrip("0")
    return text


def to_epoch(text: str) -> float:
    """The Unix timestamp named by a stored timestamp (canonical or any ISO-8601 spelling)."""
    if len(text) >= 19 and text[10] == " " and (len(text) == 19 or text[19] == "."):
        try:
            base = _second_epoch(text[:19])
            frac = text[20:]
            if not frac:
                return float(base)
            if len(frac) <= 6 and frac.isdigit():
                return (base * _US + int(frac.ljust(6, "0"))) / _US
        except ValueError:
            pass
    canon = canonical(text)
    if canon == text:
        raise StoreError(f"cannot read stored timestamp {text!r}")
    return to_epoch(canon)


def _from_match(m: re.Match[str]) -> str:
    y, mo, d, hh, mm, ss, frac, off = m.groups()
    dt = datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0))
    if off and off not in ("Z", "z"):
        sign = 1 if off[0] == "+" else -1
        digits = off[1:].replace(":", "")
        delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
        dt -= sign * delta
    us = ((dt - _NAIVE_EPOCH) // timedelta(microseconds=1)) + (
        int(frac[:6].ljust(6, "0")) if frac else 0
    )
    return _from_micros(us)


def canonical(value: Any) -> str:
    """The canonical text of a point in time: epoch seconds, datetime, date, or ISO-8601 text.

    Naive datetimes and strings without an offset are taken as UTC, like SQLite does.
    """
    if isinstance(value, bool):
        raise StoreError(f"not a point in time: {value!r}")
    if isinstance(value, (int, float)):
        return from_epoch(value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=_UTC)
        return _from_micros((aware - _EPOCH) // timedelta(microseconds=1))
    if isinstance(value, date):
        return canonical(datetime(value.year, value.month, value.day))
    if isinstance(value, str):
        m = _ISO.fullmatch(value.strip())
        if m is not None:
            try:
                return _from_match(m)
            except (ValueError, OverflowError) as e:
                raise StoreError(f"not a valid point in time: {value!r} ({e})") from e
    raise StoreError(
        f"not a point in time: {value!r} (use epoch seconds, a datetime, "
        "or text like '2024-01-31 12:00:00')"
    )


def canonical_param(value: str) -> str:
    """A fujsen SQL parameter, with ISO-8601 date-times (with a time part) made canonical.

    Anything else, including bare dates and canonical text, is returned unchanged.
    """
    if len(value) < 16 or len(value) > 40 or not value[:4].isdigit():
        return value
    m = _ISO.fullmatch(value)
    if m is None or m.group(4) is None:
        return value
    try:
        return _from_match(m)
    except (ValueError, OverflowError):
        return value


__all__ = ["CANONICAL_PATTERN", "canonical", "canonical_param", "from_epoch", "to_epoch"]
