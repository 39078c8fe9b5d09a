"""One exception hierarchy for everything tusk_events raises.

    TuskError
    ├── TskSyntaxError       a .tsk text that cannot be parsed (path, line, column, caret excerpt)
    ├── ConfigError          a well-formed config that asks for something impossible
    ├── FujsenError          a fujsen failed: missing, raised, or crashed
    │   ├── SandboxViolation a fujsen tried to reach past the sandbox
    │   └── FujsenTimeout    a fujsen ran past its time budget
    ├── BusError             the event bus cannot publish or deliver
    │   └── PayloadError     an event that is not strict JSON (NaN, Infinity...)
    └── StoreError           the event store cannot read or write
        └── AlreadyHandled   this service has already handled this event (tracking row)

Exceptions that *user code* raises for control flow are not here: they live with the
runtime that interprets them.
"""

from __future__ import annotations


class TuskError(Exception):
    """Root of every error tusk_events raises on purpose."""


class TskSyntaxError(TuskError):
    """A .tsk text that cannot be parsed.

    The message reads ``path:line:col: what`` followed by the offending line and a caret,
    so it can be pasted into an editor's "go to" box.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int = 1,
        column: int = 1,
        source_line: str | None = None,
    ) -> None:
        self.reason = message
        self.path = path
        self.line = line
        self.column = column
        self.source_line = source_line
        where = f"{path or '<string>'}:{line}:{column}"
        text = f"{where}: {message}"
        if source_line is not None:
            shown = source_line.rstrip("\r\n").expandtabs(1)
            text += f"\n    {shown}\n    {' ' * (max(column, 1) - 1)}^"
        super().__init__(text)


class ConfigError(TuskError):
    """A config that parses but cannot be used as written (unknown scheme, bad setting...)."""


class FujsenError(TuskError):
    """A fujsen could not run to completion: missing, raised an exception, or crashed."""


class SandboxViolation(FujsenError):
    """A fujsen used a construct the sandbox forbids; the message names it and where."""


class FujsenTimeout(FujsenError):
    """A fujsen computed for longer than its time budget."""


class BusError(TuskError):
    """The event bus cannot publish or deliver (unreachable server, unknown URL scheme...)."""


class PayloadError(BusError):
    """An event whose payload or metadata is not strict JSON (NaN, Infinity, sets...): refused at publish."""


class StoreError(TuskError):
    """The event store cannot read or write; driver errors are chained as the cause."""


class AlreadyHandled(StoreError):
    """A handler's SQL found the event already handled by its service (another delivery won).

    Raised into the handler so it stops; the runtime rolls its work back and acknowledges.
    """


class ContractError(TuskError):
    """An event breaks its type's contract (or has none where one is required).

    The message names the event type, the contract version, the field and the rule, e.g.
    ``user_registered v1: payload.user_id: 'abc' is not of type 'integer'``.
    """


__all__ = [
    "BusError",
    "ConfigError",
    "ContractError",
    "FujsenError",
    "FujsenTimeout",
    "PayloadError",
    "SandboxViolation",
    "StoreError",
    "TskSyntaxError",
    "TuskError",
]
