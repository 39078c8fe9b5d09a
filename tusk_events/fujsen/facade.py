"""The base of every object a fujsen sees in place of a module: immutable, explicit.

Kept apart from ``helpers`` (the injected helpers and the host-facing redis/SQL facades) and
``stdlib`` (the standard-library facades ``import`` binds) so both can derive from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tusk_events.fujsen.guards import violate


class Facade:
    """Base of every helper: immutable, and explicit about what it offers."""

    __slots__ = ()
    helper_name = "helper"

    def __setattr__(self, key: str, value: Any) -> None:
        violate(f"modifying the injected helper '{self.helper_name}' is not allowed")

    def __delattr__(self, key: str) -> None:
        violate(f"modifying the injected helper '{self.helper_name}' is not allowed")

    def __getattr__(self, key: str) -> Any:
        offered = ", ".join(sorted(n for n in dir(type(self)) if not n.startswith("_") and n != "helper_name"))
        violate(f"'{self.helper_name}' offers no '{key}' in fujsen (it offers: {offered})")

    def __repr__(self) -> str:
        return f"<tusk_events {self.helper_name} helper>"


def _static(fn: Callable[..., Any]) -> Any:
    return staticmethod(fn)


__all__ = ["Facade"]
