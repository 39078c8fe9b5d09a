"""Calling a compiled fujsen: fresh globals per call, the budget, and errors that point into the .tsk.

The executor takes a :class:`~tusk_events.fujsen.sandbox.CompiledFujsen` (policy already applied)
and the globals of its section. Keeping compilation and execution apart is what lets the
same compiled code run in another process later: only this module knows *where* it runs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from tusk_events.errors import FujsenError, FujsenTimeout, SandboxViolation
from tusk_events.fujsen import budget
from tusk_events.fujsen.budget import Interrupt
from tusk_events.fujsen.guards import Violation
from tusk_events.fujsen.sandbox import CompiledFujsen


class FujsenRunner:
    """One fujsen entry point, bound to its section's globals; call it like the function.

    One call cannot poison the next: a fujsen cannot rebind its globals (no ``global``, no
    ``globals()``), and when it could mutate something that outlives a call (a mutable
    section value, default or module constant, a class) every call executes its definitions
    in a fresh copy of the globals, mutable values deep-copied.
    """

    __slots__ = (
        "compiled", "entry", "section", "budget_s", "_base", "_mutable", "_code", "_reusable",
        "__weakref__",
    )

    def __init__(
        self,
        compiled: CompiledFujsen,
        entry: str,
        section: str,
        base_globals: Mapping[str, Any],
        budget_s: float,
    ) -> None:
        self.compiled = compiled
        self.entry = entry
        self.section = section
        self.budget_s = budget_s
        self._base = dict(base_globals)
        # config values a call could mutate; copied per call (helpers and builtins are immutable)
        self._mutable = tuple(
            k for k, v in self._base.items()
            if isinstance(v, (list, dict, set)) and not k.startswith("__")
        )
        self._code = compiled.code
        # Nothing a call could mutate: run the definitions once and reuse the function.
        self._reusable = None
        if compiled.stateless and not self._mutable:
            g = self._base.copy()
            exec(self._code, g)
            self._reusable = g[entry]

    @property
    def name(self) -> str:
        return self.entry

    def __repr__(self) -> str:
        return f"<fujsen {self.section}.{self.entry} from {self.compiled.filename}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        st = budget.state()
        saved = st.begin(self.budget_s)
        depth = st.depth
        timed_out, memory, violation = True, False, None  # if bookkeeping is interrupted
        try:
            try:
                fn = self._reusable
                if fn is None:
                    g = self._base.copy()
                    for key in self._mutable:
                        g[key] = copy.deepcopy(g[key])
                    exec(self._code, g)  # definitions only: the policy guarantees it
                    fn = g[self.entry]
                result = fn(*args, **kwargs)
            finally:
                timed_out, memory, violation = st.finish(saved, depth)
        except BaseException as err:  # noqa: BLE001 - everything is translated below
            translated = self._translate(err, timed_out, memory, violation)
            if translated is err:
                raise
            raise translated from _cause(err)
        if violation or timed_out or memory:
            # the fujsen swallowed the sandbox's error somehow: it still ends in it
            raise self._translate(None, timed_out, memory, violation)
        return result

    def _translate(
        self, err: BaseException | None, timed_out: bool, memory: bool, violation: str | None
    ) -> FujsenError:
        where = _location(err, self.compiled) if err is not None else None
        where = where or f"{self.compiled.filename}:{self.compiled.first_line}"
        label = f"{where} in {self.entry}"
        if violation is not None:
            return SandboxViolation(f"{label}: {violation}")
        if isinstance(err, Violation):
            return SandboxViolation(f"{label}: {err.message}")
        if memory:
            return FujsenError(f"{label}: the call grew the process's memory past the sandbox limit")
        if timed_out or isinstance(err, Interrupt):
            return FujsenTimeout(f"{label}: still running after its {self.budget_s:g} s budget")
        assert err is not None
        if isinstance(err, FujsenError):
            return err  # a nested fujsen's error, already located
        if isinstance(err, RecursionError):
            return FujsenError(f"{label}: recursion too deep")
        if isinstance(err, MemoryError):
            return FujsenError(f"{label}: out of memory")
        return FujsenError(f"{label}: {type(err).__name__}: {_text(err)}")


def _cause(err: BaseException) -> BaseException | None:
    # internal interrupts say nothing useful to the caller; ordinary errors are chained
    if isinstance(err, (Interrupt, Violation, SystemExit, KeyboardInterrupt, GeneratorExit)):
        return None
    return err


def _text(err: BaseException) -> str:
    try:
        text = str(err)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the error
        text = "<unprintable>"
    return text if len(text) <= 2000 else text[:2000] + "..."


def _location(err: BaseException, compiled: CompiledFujsen) -> str | None:
    """``file:line`` of the innermost traceback frame inside the fujsen's source."""
    tb: TracebackType | None = err.__traceback__
    found = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == compiled.filename:
            found = f"{compiled.filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found


budget.HOST_FILES.add(__file__)  # the watchdog never interrupts this module's bookkeeping

__all__ = ["FujsenRunner"]
