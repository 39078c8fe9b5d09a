"""The fujsen policy tables: names, attributes and imports, in one place.

``sandbox`` (compile time) and ``guards`` (run time) both read these; neither imports the other
for them.
"""

from __future__ import annotations

from RestrictedPython.transformer import INSPECT_ATTRIBUTES

FORBIDDEN_NAMES = frozenset(
    {
        "open", "exec", "eval", "compile", "globals", "locals", "vars", "dir", "getattr",
        "setattr", "delattr", "type", "object", "super", "breakpoint", "input",
        "help", "exit", "quit", "memoryview", "classmethod", "staticmethod", "property",
        "id", "BaseException", "SystemExit", "KeyboardInterrupt", "GeneratorExit",
        "BaseExceptionGroup", "ExceptionGroup", "copyright", "credits", "license",
    }
)
"""Builtins a fujsen may not name (unless it binds the name itself, e.g. ``type = event["type"]``)."""

FORBIDDEN_ATTRIBUTES = INSPECT_ATTRIBUTES | frozenset(
    {
        "mro", "gi_running", "gi_suspended", "cr_running", "cr_suspended", "ag_running",
        "f_lineno", "f_lasti", "f_trace_lines", "f_trace_opcodes", "tb_lasti", "tb_lineno",
        "co_consts", "co_names", "co_varnames", "co_filename", "co_name", "co_qualname",
        "co_lines", "co_positions", "co_exceptiontable", "co_linetable", "co_freevars",
        "co_cellvars", "obj", "with_traceback", "add_note", "format_field",
    }
)
"""Attributes that lead from an ordinary object to frames, code or the interpreter."""

GUARDED_ATTRIBUTES = frozenset(
    {
        "format", "format_map", "ljust", "rjust", "center", "zfill", "expandtabs",
        "replace", "join", "encode", "decode", "to_bytes", "from_bytes", "translate", "count",
    }
)
"""Methods whose cost depends on their arguments: resolved through ``_attr_`` at run time."""

HELPER_NAMES = frozenset({"redis", "json", "time", "math", "datetime", "uuid", "hashlib"})
"""Injected helper facades: a fujsen may use them but never rebind their attributes."""

STDLIB_FACADES = frozenset(
    {
        "re", "random", "secrets", "base64", "statistics", "html", "urllib", "urllib.parse",
        "collections", "functools", "string",
    }
)
"""Pure standard-library modules a fujsen may import: each binds a small facade, never the module."""

ALLOWED_IMPORTS = HELPER_NAMES | STDLIB_FACADES
"""``import json`` binds the injected facade (so pasted code keeps working); others bind facades."""

EXCEPTION_BASES = frozenset(
    {
        "Exception", "ArithmeticError", "AssertionError", "AttributeError", "EOFError", "IndexError",
        "KeyError", "LookupError", "NameError", "NotImplementedError", "OverflowError",
        "RuntimeError", "TypeError", "ValueError", "ZeroDivisionError", "TimeoutError",
        "ConnectionError", "UnicodeError",
    }
)
"""Builtin classes a fujsen's own class may derive from (``class PaymentDeclined(ValueError)``)."""
