"""Helpers of the observability tests (importable: this folder is on sys.path)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "configs" / "app.tsk"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency; skip without it, except under CI, where it must be installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if IN_CI:
            raise
        pytest.skip(f"{module} is not installed (pip install 'tusk_events[{extra}]')", allow_module_level=True)
        raise
