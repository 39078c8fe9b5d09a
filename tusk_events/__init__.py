"""tusk_events: TuskLang configs that run.

    >>> from tusk_events import TSK
    >>> cfg = TSK.from_string("[math]\\nadd_fujsen = \'\'\'\\ndef add(a, b):\\n    return a + b\\n\'\'\'\\n")
    >>> cfg.execute_fujsen("math", "add", 2, 3)
    5
"""

from __future__ import annotations

from tusk_events.config import TSK
from tusk_events.errors import (
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

__version__ = "0.1.0"

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
]
