"""Services declared in a config: which events a section handles, with which fujsen, how.

A section is a service when it has a ``subscribe`` key::

    [welcome_email]
    subscribe: ["user_registered"]   # one type or a list
    delivery: "durable"              # durable (default) | broadcast | sync
    retries: 3                       # further attempts after a failure, then the DLQ
    backoff: 0.05                    # first retry delay (s); doubles, with full jitter
    backoff_max: 2.0                 # cap of one delay (s)
    timeout: 1.0                     # budget of one handler call (s)
    concurrency: 1                   # consumers of this service in each process
    visibility_timeout: 30           # durable: seconds before a dead consumer's events are claimed
    batch: 100                       # durable: most events read per round trip (fewer when handlers are slow)
    handle_fujsen = '''
    def handle(event):
        publish("welcome_email_sent", {"user_id": event["payload"]["user_id"]})
    '''

The handler gets the event as a dict (``id type payload metadata timestamp``) and may
``publish(type, payload)`` further events and use ``query``/``execute`` on the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tusk_events.defaults import (
    SERVICE_BACKOFF_MAX_S,
    SERVICE_BACKOFF_S,
    SERVICE_BATCH,
    SERVICE_CONCURRENCY,
    SERVICE_RETRIES,
    SERVICE_VISIBILITY_TIMEOUT_S,
)
from tusk_events.errors import ConfigError, FujsenError

if TYPE_CHECKING:
    from tusk_events.config import TSK

Delivery = Literal["durable", "broadcast", "sync"]
DELIVERY_MODES: tuple[str, ...] = ("durable", "broadcast", "sync")
SERVICE_KEYS = frozenset(
    {"subscribe", "delivery", "retries", "backoff", "backoff_max", "timeout", "concurrency",
     "group", "handler", "visibility_timeout", "batch", "publishes"}
)


@dataclass(frozen=True)
class ServiceSpec:
    """One service as the config declares it (validated)."""

    name: str
    types: tuple[str, ...]
    handler: str
    delivery: Delivery = "durable"
    retries: int = SERVICE_RETRIES
    backoff_s: float = SERVICE_BACKOFF_S
    backoff_max_s: float = SERVICE_BACKOFF_MAX_S
    timeout_s: float | None = None
    concurrency: int = SERVICE_CONCURRENCY
    group: str = ""
    visibility_timeout_s: float = SERVICE_VISIBILITY_TIMEOUT_S
    batch: int = SERVICE_BATCH


def _number(section: str, values: dict[str, Any], key: str, default: float, *, integer: bool = False,
            minimum: float = 0) -> Any:
    value = values.get(key, default)
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or value < minimum:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"[{section}] {key} must be {kind} >= {minimum:g}, not {value!r}")
    return value


def parse_service(cfg: TSK, section: str, values: dict[str, Any]) -> ServiceSpec:
    """The :class:`ServiceSpec` of ``section``; ConfigError names what is wrong."""
    types = values.get("subscribe")
    if isinstance(types, str):
        types = [types]
    if not isinstance(types, list) or not types or not all(isinstance(t, str) and t for t in types):
        raise ConfigError(f"[{section}] subscribe must be an event type or a list of them, not {types!r}")
    delivery = values.get("delivery", "durable")
    if delivery not in DELIVERY_MODES:
        raise ConfigError(f"[{section}] delivery must be one of {', '.join(DELIVERY_MODES)}, not {delivery!r}")
    handler = values.get("handler", "handle")
    if not isinstance(handler, str):
        raise ConfigError(f"[{section}] handler must name a fujsen of the section, not {handler!r}")
    try:
        cfg.fujsen(section, handler)
    except FujsenError as err:
        raise ConfigError(f"[{section}] service handler: {err}") from None
    timeout = values.get("timeout")
    if timeout is not None:
        timeout = _number(section, values, "timeout", 0, minimum=0.001)
    group = values.get("group", section)
    if not isinstance(group, str) or not group:
        raise ConfigError(f"[{section}] group must be a non-empty string")
    return ServiceSpec(
        name=section,
        types=tuple(dict.fromkeys(types)),
        handler=handler,
        delivery=delivery,
        retries=_number(section, values, "retries", SERVICE_RETRIES, integer=True),
        backoff_s=float(_number(section, values, "backoff", SERVICE_BACKOFF_S)),
        backoff_max_s=float(_number(section, values, "backoff_max", SERVICE_BACKOFF_MAX_S)),
        timeout_s=None if timeout is None else float(timeout),
        concurrency=_number(section, values, "concurrency", SERVICE_CONCURRENCY, integer=True, minimum=1),
        group=group,
        visibility_timeout_s=float(_number(section, values, "visibility_timeout", SERVICE_VISIBILITY_TIMEOUT_S, minimum=0.01)),
        batch=_number(section, values, "batch", SERVICE_BATCH, integer=True, minimum=1),
    )


def services(cfg: TSK) -> list[ServiceSpec]:
    """Every service of the config, in document order; ConfigError on the first bad one."""
    return [parse_service(cfg, name, values) for name, values in cfg.sections().items() if "subscribe" in values]


def check_services(cfg: TSK) -> list[str]:
    """Problems with the config's service sections, as messages (empty when all is well)."""
    problems = []
    for name, values in cfg.sections().items():
        if "subscribe" not in values:
            continue
        try:
            parse_service(cfg, name, values)
        except ConfigError as err:
            problems.append(str(err))
    return problems


__all__ = ["DELIVERY_MODES", "ServiceSpec", "check_services", "parse_service", "services"]
