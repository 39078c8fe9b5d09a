"""Recovery times of the fault tests, printed together at the end of the run.

A fault test records ``record_property("recovery_s", seconds)`` (time from the fault until
everything was handled, plus any other ``recovery_*`` or ``after_*`` figures); they are
listed after the test results so they can be quoted.
"""

from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    rows = []
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "") != "call":
                continue
            figures = [(k, v) for k, v in report.user_properties
                       if k.startswith(("recovery", "after_"))]
            if figures:
                name = report.nodeid.split("::", 1)[-1]
                rows.append(f"{name} ({outcome}): " + ", ".join(f"{k} {v}" for k, v in figures))
    if rows:
        terminalreporter.write_sep("-", "recovery times (seconds from the fault until all handled)")
        for row in rows:
            terminalreporter.write_line(row)
