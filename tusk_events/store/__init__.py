"""Event stores, chosen by URL.

    >>> from tusk_events.store import open_store
    >>> with open_store("sqlite:///:memory:") as store:
    ...     store.count()
    0

Supported URLs::

    sqlite:///events.db          a file relative to the working directory (the default)
    sqlite:////var/lib/events.db an absolute path
    sqlite:///:memory:           private to this process
    postgresql://user@host/db    (or postgres://) needs: pip install 'tusk_events[postgres]'

SQLite options go in the query string: ``?synchronous=normal&busy_timeout=5``. PostgreSQL
takes ``pool_min_size`` / ``pool_max_size`` there; every other parameter goes to libpq (for
instance ``options=-csearch_path%3Dmy_schema`` to keep the store in ``my_schema``).

Backends are imported only when a URL asks for them, so this package imports without the
optional drivers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote

from tusk_events.defaults import DEFAULT_STORE_URL
from tusk_events.errors import StoreError
from tusk_events.store.base import EventStore, Replay, StoredEvent
from tusk_events.store.sqlguard import SqlRefused

Opener = Callable[..., EventStore]

_REGISTRY: dict[str, str | Opener] = {
    "sqlite": "tusk_events.store:_open_sqlite",
    "postgresql": "tusk_events.store.postgres:open_postgres",
    "postgres": "tusk_events.store.postgres:open_postgres",
}


def register_store(scheme: str, opener: str | Opener) -> None:
    """Make ``scheme://...`` URLs open with ``opener(url, **options)``.

    ``opener`` may be a callable or a ``"module:function"`` string, imported on first use.
    """
    _REGISTRY[scheme.lower()] = opener


def supported_schemes() -> list[str]:
    return sorted(_REGISTRY)


def open_store(url: str | None = None, **options: Any) -> EventStore:
    """Open (creating or migrating as needed) the event store at ``url``.

    ``url`` defaults to ``DEFAULT_STORE_URL``; ``options`` go to the backend.
    """
    url = url or DEFAULT_STORE_URL
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise StoreError(f"not a store URL: {url!r} (expected scheme://...)")
    opener = _REGISTRY.get(scheme.lower())
    if opener is None:
        raise StoreError(
            f"unknown event store scheme {scheme!r} in {url!r}; supported: "
            + ", ".join(f"{s}://" for s in supported_schemes())
        )
    if isinstance(opener, str):
        module_name, _, attr = opener.partition(":")
        opener = getattr(importlib.import_module(module_name), attr)
    return opener(url, **options)


def _open_sqlite(url: str, **options: Any) -> EventStore:
    from tusk_events.store.sqlite import SQLiteStore

    rest = url.split("://", 1)[1]
    target, _, query = rest.partition("?")
    if target and not target.startswith("/"):
        raise StoreError(
            f"bad SQLite URL {url!r}: use sqlite:///relative.db, sqlite:////absolute/path.db "
            "or sqlite:///:memory:"
        )
    path = unquote(target[1:])
    params = dict(parse_qsl(query, keep_blank_values=True))
    if "synchronous" in params:
        options.setdefault("synchronous", params.pop("synchronous"))
    if "busy_timeout" in params:
        try:
            options.setdefault("busy_timeout", float(params.pop("busy_timeout")))
        except ValueError as e:
            raise StoreError(f"bad busy_timeout in {url!r}: {e}") from e
    if params:
        raise StoreError(f"unknown SQLite store option(s) {sorted(params)} in {url!r}")
    return SQLiteStore(path or ":memory:", url=url, **options)


__all__ = [
    "EventStore",
    "Replay",
    "SqlRefused",
    "StoredEvent",
    "open_store",
    "register_store",
    "supported_schemes",
]
