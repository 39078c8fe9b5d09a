"""Logging for the CLI: text for people, JSON lines for machines, each line tied to its event.

Library modules only ever get loggers (``logging.getLogger(__name__)``); :func:`setup_logging`
is for the CLI and for applications that want the same lines. What it adds:

* the event being handled: every record logged while a handler runs (the runtime's, the bus's,
  a fujsen's ``print``) carries ``trace_id``, ``event_id``, ``event_type`` and ``service``
  (:class:`EventContextFilter`), so one flow can be grepped out of many workers' logs;
* levels per component: ``"tusk_events.bus=DEBUG,WARNING"`` (:func:`parse_levels`);
* the runtime's failed attempts and retries (INFO, logger ``tusk_events.flow``) and, when that
  logger is at DEBUG, every publish and handled event: receivers of :mod:`tusk_events.runtime.signals`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import IO, Any

from tusk_events.errors import ConfigError
from tusk_events.events import Event, current_event
from tusk_events.runtime import signals

CONTEXT_FIELDS = ("trace_id", "event_id", "event_type", "service")
"""Record attributes :class:`EventContextFilter` sets, in the order text lines show them."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

flow_log = logging.getLogger("tusk_events.flow")
"""Where the runtime's signals are logged: failed attempts and retries, and at DEBUG the rest."""


def _publish_context() -> Callable[[], Any]:
    """The runtime's record of which service is handling which event (None outside handlers)."""
    from tusk_events.runtime.core import _context

    return _context.get


class EventContextFilter(logging.Filter):
    """Adds the handled event's ``trace_id``, ``event_id``, ``event_type`` and ``service`` to records.

    Fields a record already has (``extra=``) win: the logger knew better. Outside a handler
    the record is left alone.
    """

    def __init__(self) -> None:
        super().__init__()
        self._handling = _publish_context()

    def filter(self, record: logging.LogRecord) -> bool:
        event = current_event()
        if event is None:
            return True
        d = record.__dict__
        if "event_id" not in d:
            d["event_id"] = event.id
            d.setdefault("trace_id", event.trace_id)
            d.setdefault("event_type", event.type)
            ctx = self._handling()
            if ctx is not None and ctx.event is event:
                d.setdefault("service", ctx.service)
        return True


class TextFormatter(logging.Formatter):
    """The classic one-line format, with ``[service=... event_type=... event_id=... trace_id=...]`` when known."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        d = record.__dict__
        ctx = [f"{k}={d[k]}" for k in ("service", "event_type", "event_id", "trace_id") if d.get(k)]
        return f"{text} [{' '.join(ctx)}]" if ctx else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any extra fields."""

    _STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _level(text: str, spec: str) -> int:
    name = text.strip().upper()
    if name.isdigit():
        return int(name)
    value = logging.getLevelName(name)
    if not isinstance(value, int):
        raise ConfigError(
            f"unknown log level {text.strip()!r} in {spec!r} "
            "(use DEBUG, INFO, WARNING, ERROR or CRITICAL, optionally per logger: tusk_events.bus=DEBUG,WARNING)"
        )
    return value


def parse_levels(spec: str) -> tuple[int, dict[str, int]]:
    """``"WARNING"`` or ``"tusk_events.bus=DEBUG,tusk_events.runtime.core=INFO,WARNING"``.

    Returns the root level (WARNING when only loggers are named) and a level per logger name.
    """
    root = logging.WARNING
    per_logger: dict[str, int] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        name, sep, level = item.partition("=")
        if sep:
            if not name.strip():
                raise ConfigError(f"missing logger name before '=' in log level {spec!r}")
            per_logger[name.strip()] = _level(level, spec)
        else:
            root = _level(name, spec)
    return root, per_logger


_configured: dict[str, int] = {}


def setup_logging(level: str = "WARNING", fmt: str = "text", *, stream: IO[str] | None = None) -> logging.Handler:
    """Configure the root logger (library code only ever gets loggers); returns the handler.

    ``level``: see :func:`parse_levels`. ``fmt``: "text" or "json". Calling it again replaces
    the previous configuration.
    """
    if fmt not in ("text", "json"):
        raise ConfigError(f"log format must be text or json, not {fmt!r}")
    root_level, per_logger = parse_levels(level)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(EventContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(root_level)
    for name in _configured:
        if name not in per_logger:
            logging.getLogger(name).setLevel(logging.NOTSET)
    for name, lvl in per_logger.items():
        logging.getLogger(name).setLevel(lvl)
    _configured.clear()
    _configured.update(per_logger)
    connect_flow_logging()
    return handler


# --- the runtime's signals as log lines ------------------------------------------------------


def _fields(event: Event, service: str | None) -> dict[str, Any]:
    return {"event_id": event.id, "trace_id": event.trace_id, "event_type": event.type, "service": service}


def _on_failed(service: str, event: Event, error: BaseException, attempt: int, seconds: float = 0.0,
               **_: Any) -> None:
    flow_log.info("attempt %d failed after %.1f ms: %s", attempt, seconds * 1000,
                  str(error).split("\n")[0], extra=_fields(event, service))


def _on_retried(service: str, event: Event, attempt: int, delay: float, **_: Any) -> None:
    flow_log.info("retrying in %.0f ms (attempt %d)", delay * 1000, attempt, extra=_fields(event, service))


def _on_published(event: Event, service: str | None = None, **_: Any) -> None:
    flow_log.debug("published %s", event.type, extra=_fields(event, service))


def _on_handled(service: str, event: Event, seconds: float, attempt: int = 1, **_: Any) -> None:
    flow_log.debug("handled in %.2f ms (attempt %d)", seconds * 1000, attempt, extra=_fields(event, service))


def connect_flow_logging() -> None:
    """Log failed attempts and retries; publishes and handled events too when ``tusk_events.flow``
    is at DEBUG now (checked once, so a run at INFO pays nothing per event)."""
    signals.failed.connect(_on_failed)
    signals.retried.connect(_on_retried)
    if flow_log.isEnabledFor(logging.DEBUG):
        signals.published.connect(_on_published)
        signals.handled.connect(_on_handled)
    else:
        signals.published.disconnect(_on_published)
        signals.handled.disconnect(_on_handled)


def disconnect_flow_logging() -> None:
    for sig, receiver in ((signals.failed, _on_failed), (signals.retried, _on_retried),
                          (signals.published, _on_published), (signals.handled, _on_handled)):
        sig.disconnect(receiver)


__all__ = [
    "CONTEXT_FIELDS",
    "EventContextFilter",
    "JsonFormatter",
    "TextFormatter",
    "connect_flow_logging",
    "disconnect_flow_logging",
    "parse_levels",
    "setup_logging",
]
