"""``@date(format[, timestamp])``: PHP-style format letters, as the TuskLang docs use them.

A format containing ``%`` is passed to ``strftime`` instead. Times are UTC; a backslash
escapes the next letter (``"Y\\\\m"``). Letters: ``d D j l N S w z W F m M n t L o Y y a A
g G h H i s u v e T P O p Z c r U``; any other character is copied.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime


def _suffix(day: int) -> str:
    if 11 <= day % 100 <= 13:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def _letter(c: str, t: datetime, stamp: float) -> str:
    hour12 = t.hour % 12 or 12
    table = {
        "d": f"{t.day:02d}", "D": t.strftime("%a"), "j": str(t.day), "l": t.strftime("%A"),
        "N": str(t.isoweekday()), "S": _suffix(t.day), "w": str(t.isoweekday() % 7),
        "z": str(t.timetuple().tm_yday - 1), "W": f"{t.isocalendar()[1]:02d}",
        "F": t.strftime("%B"), "m": f"{t.month:02d}", "M": t.strftime("%b"), "n": str(t.month),
        "t": str(calendar.monthrange(t.year, t.month)[1]),
        "L": "1" if calendar.isleap(t.year) else "0", "o": str(t.isocalendar()[0]),
        "Y": str(t.year), "y": f"{t.year % 100:02d}", "a": "am" if t.hour < 12 else "pm",
        "A": "AM" if t.hour < 12 else "PM", "g": str(hour12), "G": str(t.hour),
        "h": f"{hour12:02d}", "H": f"{t.hour:02d}", "i": f"{t.minute:02d}",
        "s": f"{t.second:02d}", "u": f"{t.microsecond:06d}", "v": f"{t.microsecond // 1000:03d}",
        "e": "UTC", "T": "UTC", "P": "+00:00", "O": "+0000", "p": "Z", "Z": "0",
        "c": t.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        "r": t.strftime("%a, %d %b %Y %H:%M:%S +0000"), "U": str(int(stamp)),
    }
    return table.get(c, c)


def format_date(fmt: str, stamp: float) -> str:
    """``fmt`` applied to the UTC time ``stamp`` (seconds since the epoch)."""
    t = datetime.fromtimestamp(stamp, tz=UTC)
    if "%" in fmt:
        return t.strftime(fmt)
    out: list[str] = []
    escaped = False
    for c in fmt:
        if escaped:
            out.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        else:
            out.append(_letter(c, t, stamp))
    return "".join(out)
