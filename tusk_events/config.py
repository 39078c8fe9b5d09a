"""The TSK object: a parsed .tsk document whose fujsen can be executed."""

from __future__ import annotations

from typing import Any


class TSK:
    """Placeholder until the executor lands."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
