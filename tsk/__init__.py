"""``from tsk import TSK``: the name the TuskLang docs' Python uses, so their code runs verbatim.

A thin alias of :mod:`tusk_events`'s public API (the same objects, not copies).
"""

from __future__ import annotations

from tusk_events import (
    TSK,
    BusError,
    ConfigError,
    ContractError,
    FujsenError,
    FujsenTimeout,
    SandboxViolation,
    StoreError,
    TskSyntaxError,
    TuskError,
)
from tusk_events.lang import dumps, load

__all__ = [
    "TSK",
    "BusError",
    "ConfigError",
    "ContractError",
    "FujsenError",
    "FujsenTimeout",
    "SandboxViolation",
    "StoreError",
    "TskSyntaxError",
    "TuskError",
    "dumps",
    "load",
]
