"""The event store contract: what every backend provides, and the schema they share.

Schema (the same columns and meaning on SQLite and PostgreSQL; created and migrated by the
store, version recorded in the ``tusk_schema`` table)::

    event_store
      id          integer, auto-increment primary key: the store position and replay cursor
      event_type  text, not null
      payload     JSON text (the docs' replay does ``json.loads(row[1])``)
      timestamp   text, canonical UTC (see tusk_events.store.timestamps), not null,
                  defaults to datetime('now'), CHECKed to be canonical
      event_id    text, UNIQUE, nullable: the envelope id; storing an id twice is a no-op
      metadata    JSON text, nullable (NULL reads back as {})
    indexes: (timestamp), (event_type, timestamp), (event_type, id)

    tusk_tracking (version 2): one row per (service, event_id) handled, written in the same
      transaction as the handling's effects (see tusk_events.store.unit); outcome is
      'handled' or 'dead-lettered'; at is epoch seconds
    tusk_outbox (version 2): (seq, event_id, created) of stored events the bus has not
      confirmed yet; the relay publishes and deletes them
    tusk_meta (version 2): (key, value, until) small records: relay leases, the bus epoch

Fujsen cannot read or write the three tusk_* tables.

Ids are handed out in commit order (writers are serialised: SQLite's write lock, an advisory
lock on PostgreSQL), so ``replay(after_id=last_seen)`` never skips an event committed later
with a smaller id.

Fujsen reach the store through :meth:`EventStore.query` and :meth:`EventStore.execute`, which
apply the rules of :mod:`tusk_events.store.sqlguard` and then run the statement on a separate,
restricted connection (see the backends for the database-side rules).
"""

from __future__ import annotations

import abc
import json
import math
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from itertools import chain
from types import TracebackType
from typing import Any, ClassVar, Self

from tusk_events.defaults import FUJSEN_SQL_MAX_ROWS, STORE_REPLAY_BATCH
from tusk_events.errors import StoreError
from tusk_events.events import ENVELOPE_VERSION, Event
from tusk_events.store import sqlguard, timestamps
from tusk_events.store.unit import Unit

SCHEMA_VERSION = 3
"""Version of the store schema this code writes; recorded in ``tusk_schema``.

1: event_store; 2: tusk_tracking, tusk_outbox, tusk_meta (exactly-once handling, the relay).
"""

COLUMNS = "id, event_id, event_type, payload, metadata, timestamp"
"""The column order every backend selects, which is the order of :class:`StoredEvent`'s fields."""


def _not_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _c_encoder() -> Callable[[Any], str] | None:
    """The C encoder, built once: ``json.dumps()`` would rebuild it for every call.

    No markers dict (it would be state shared by threads): a circular value hits the recursion
    limit instead.
    """
    try:
        from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - interpreters without the C accelerator
        return None
    if c_make_encoder is None or encode_basestring_ascii is None:  # pragma: no cover
        return None
    iterencode = c_make_encoder(
        None, _not_json, encode_basestring_ascii, None, ":", ",", False, False, True
    )
    escape = encode_basestring_ascii

    def encode(value: Any) -> str:
        if value.__class__ is str:
            return escape(value)
        return "".join(iterencode(value, 0))

    return encode


_encode: Callable[[Any], str] = _c_encoder() or json.JSONEncoder(separators=(",", ":")).encode
"""Compact, ASCII-only JSON text: what ``json.dumps`` writes, without the spaces."""

_PARAM_TYPES = (str, int, float, bytes, type(None))


def event_row(event: Event) -> tuple[str, str, str, str | None, str]:
    """The values of one event as the store writes them: (event_id, type, payload, metadata, ts)."""
    try:
        payload = _encode(event.payload)
        metadata = _encode(event.metadata) if event.metadata else None
    except (TypeError, ValueError, RecursionError) as e:
        raise StoreError(f"event {event.id} ({event.type}) is not JSON-serialisable: {e}") from e
    except AttributeError as e:
        raise TypeError(f"expected an Event, got {type(event).__name__}") from e
    return (event.id, event.type, payload, metadata, timestamps.from_epoch(event.timestamp))


def derived_id(seq: int, timestamp: float) -> str:
    """A UUIDv7 for a row stored without an envelope id (written by raw SQL).

    Built from the row's timestamp and store position, so replaying twice gives the same id.
    """
    ms = max(0, int(timestamp * 1000)) & ((1 << 48) - 1)
    value = (ms << 80) | (0x7 << 76) | (0b10 << 62) | (seq & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class StoredEvent:
    """An event as read back from the store: the :class:`Event` fields plus its position ``seq``.

    Replay builds one per row, so construction only keeps the stored text; ``payload``,
    ``metadata`` and ``timestamp`` are decoded on first access. ``id`` is None for rows written
    by raw SQL (the docs' ``store_event``); :meth:`to_event` then derives a stable one.
    """

    __slots__ = (
        "_metadata",
        "_payload",
        "_timestamp",
        "id",
        "metadata_json",
        "payload_json",
        "seq",
        "timestamp_text",
        "type",
    )

    _payload: Any
    _metadata: dict[str, Any]
    _timestamp: float

    def __init__(
        self,
        seq: int,
        id: str | None,
        type: str,
        payload_json: str | None,
        metadata_json: str | None,
        timestamp_text: str,
    ) -> None:
        self.seq = seq
        self.id = id
        self.type = type
        self.payload_json = payload_json
        self.metadata_json = metadata_json
        self.timestamp_text = timestamp_text

    @property
    def payload(self) -> Any:
        try:
            return self._payload
        except AttributeError:
            raw = self.payload_json
            try:
                self._payload = None if raw is None else json.loads(raw)
            except ValueError as e:
                raise StoreError(f"stored event #{self.seq} has a payload that is not JSON") from e
            return self._payload

    @property
    def metadata(self) -> dict[str, Any]:
        try:
            return self._metadata
        except AttributeError:
            raw = self.metadata_json
            try:
                value = json.loads(raw) if raw else {}
            except ValueError as e:
                raise StoreError(f"stored event #{self.seq} has metadata that is not JSON") from e
            self._metadata = value if isinstance(value, dict) else {"value": value}
            return self._metadata

    @property
    def timestamp(self) -> float:
        try:
            return self._timestamp
        except AttributeError:
            self._timestamp = timestamps.to_epoch(self.timestamp_text)
            return self._timestamp

    def to_event(self) -> Event:
        """The envelope, as it was appended (timestamp to the microsecond)."""
        return Event(
            type=self.type,
            payload=self.payload,
            metadata=dict(self.metadata),
            id=self.id or derived_id(self.seq, self.timestamp),
            timestamp=self.timestamp,
        )

    def to_dict(self) -> dict[str, Any]:
        """The envelope's wire form plus ``seq`` and the stored timestamp text."""
        return {
            "v": ENVELOPE_VERSION,
            "seq": self.seq,
            "id": self.id or derived_id(self.seq, self.timestamp),
            "type": self.type,
            "payload": self.payload,
            "metadata": self.metadata,
            "timestamp": self.timestamp,
            "timestamp_text": self.timestamp_text,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StoredEvent):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[Any, ...]:
        return (
            self.seq,
            self.id,
            self.type,
            self.payload_json,
            self.metadata_json,
            self.timestamp_text,
        )

    def __repr__(self) -> str:
        return (
            f"StoredEvent(seq={self.seq}, id={self.id!r}, type={self.type!r}, "
            f"timestamp={self.timestamp_text!r})"
        )


class Replay:
    """What :meth:`EventStore.replay` returns: stored events, fetched batch by batch.

    Iterate it (``for``) or call ``next()``. A ``for`` loop runs over a chain of per-batch
    iterators, so Python code runs once per batch, not once per event. :meth:`close` (or leaving
    a ``with`` block) ends an unfinished replay and releases its connection at once.
    """

    __slots__ = ("_batches", "_events")

    def __init__(self, batches: Generator[Iterable[StoredEvent], None, None]) -> None:
        self._batches = batches
        self._events = chain.from_iterable(batches)

    def __iter__(self) -> Iterator[StoredEvent]:
        return self._events

    def __next__(self) -> StoredEvent:
        return next(self._events)

    def close(self) -> None:
        self._batches.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventStore(abc.ABC):
    """An append-only log of events with a replay cursor, and a guarded SQL door for fujsen.

    Thread-safe: the runtime calls it from worker threads. Use as a context manager or call
    :meth:`close`.
    """

    backend: ClassVar[str]
    """Short backend name: ``"sqlite"`` or ``"postgresql"``."""
    dialect: ClassVar[sqlguard.Dialect]

    url: str
    """The store URL with any password removed."""

    # --- the Python API ------------------------------------------------------------------

    @abc.abstractmethod
    def append(self, event: Event) -> bool:
        """Store one event; False when an event with this id was already stored."""

    @abc.abstractmethod
    def append_many(self, events: Iterable[Event]) -> int:
        """Store events in one transaction (all or none); return how many were new."""

    def replay(
        self,
        type: str | None = None,
        since: Any = None,
        after_id: int | None = None,
        batch: int = STORE_REPLAY_BATCH,
    ) -> Replay:
        """Stream stored events in store order (``seq``), in batches, in constant memory.

        ``type`` keeps one event type; ``since`` keeps events strictly after a point in time
        (epoch seconds, datetime, or ISO-8601 text; see :mod:`~tusk_events.store.timestamps`);
        ``after_id`` resumes after a ``seq`` seen before. The replay covers the events
        committed when iteration starts (the first ``next()``); later ones are left for the
        next replay from the last ``seq`` seen.
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        since_text = None if since is None else timestamps.canonical(since)
        return Replay(self._replay(type, since_text, int(after_id or 0), int(batch)))

    @abc.abstractmethod
    def _replay(
        self, type: str | None, since: str | None, after_id: int, batch: int
    ) -> Generator[Iterable[StoredEvent], None, None]:
        """Yield one iterable of events per batch fetched."""

    def count(self, type: str | None = None, since: Any = None) -> int:
        """How many events match (same filters as :meth:`replay`)."""
        return self._count(type, None if since is None else timestamps.canonical(since))

    @abc.abstractmethod
    def _count(self, type: str | None, since: str | None) -> int: ...

    @abc.abstractmethod
    def explain_replay(self, type: str | None = None, since: Any = None) -> list[str]:
        """The database's query plan lines for a replay with these filters (diagnostics)."""

    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """Totals for a ``store stats`` report.

        Keys: ``backend``, ``url``, ``schema_version``, ``total``, ``types`` ({type: count},
        sorted by type), ``first_timestamp`` / ``last_timestamp`` (canonical text or None),
        ``last_seq``.
        """

    def _stats(self, types: dict[str, int], first: Any, last: Any, last_seq: Any) -> dict[str, Any]:
        """The ``stats()`` report from what a backend counted."""
        return {
            "backend": self.backend,
            "url": self.url,
            "schema_version": self.schema_version,
            "total": sum(types.values()),
            "types": types,
            "first_timestamp": first,
            "last_timestamp": last,
            "last_seq": last_seq,
        }

    @property
    @abc.abstractmethod
    def schema_version(self) -> int:
        """The store schema version recorded in ``tusk_schema``."""

    @abc.abstractmethod
    def get(self, event_id: str) -> StoredEvent | None:
        """The stored event with this envelope id, or None."""

    @abc.abstractmethod
    def by_trace(self, trace_id: str) -> list[StoredEvent]:
        """Every stored event whose metadata names ``trace_id``, in store order (an index
        on the metadata's ``trace_id``, schema version 3, keeps this a lookup, not a scan)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; idempotent. The store cannot be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- exactly-once handling: tracking, outbox, leases ------------------------------------

    @abc.abstractmethod
    def unit(self, service: str, event_id: str) -> Unit:
        """A transaction for one handling of ``event_id`` by ``service`` (not yet begun)."""

    @abc.abstractmethod
    def tracked(self, service: str, event_id: str) -> str | None:
        """The tracking outcome of this (service, event id), or None when there is no row."""

    @abc.abstractmethod
    def track(self, service: str, event_id: str, outcome: str) -> bool:
        """Record an outcome outside a handling (e.g. dead-lettered); never replaces
        'handled'. True when written."""

    @abc.abstractmethod
    def track_many(self, rows: Iterable[tuple[str, str]], outcome: str) -> None:
        """Record (service, event id) rows in one transaction (like :meth:`track`)."""

    @abc.abstractmethod
    def untrack(self, service: str, event_ids: Iterable[str]) -> int:
        """Forget non-'handled' outcomes (a redrive); returns how many rows went."""

    @abc.abstractmethod
    def append_outbox(self, event: Event) -> bool:
        """Store one event and its outbox row in one transaction; False when already stored."""

    @abc.abstractmethod
    def outbox(self, older_than: float, limit: int) -> list[StoredEvent]:
        """Stored events the bus has not confirmed, outbox rows created before ``older_than``
        (epoch seconds), oldest first."""

    @abc.abstractmethod
    def confirm(self, event_ids: Iterable[str]) -> int:
        """Delete the outbox rows of events the bus has accepted; returns how many."""

    @abc.abstractmethod
    def outbox_count(self) -> int:
        """How many outbox rows wait for the relay."""

    @abc.abstractmethod
    def untracked(
        self, service: str, types: Sequence[str] | None, since: Any, after_id: int, limit: int
    ) -> list[StoredEvent]:
        """Stored events of ``types`` (None: of every type) after ``since`` and store position
        ``after_id`` that ``service`` has no tracking row for (rows without an envelope id
        excluded)."""

    @abc.abstractmethod
    def lease(self, name: str, owner: str, ttl_s: float, now: float) -> bool:
        """Take or renew the lease ``name`` for ``owner`` until ``now + ttl_s``; False when
        another owner holds an unexpired one."""

    @abc.abstractmethod
    def meta(self, key: str) -> str | None:
        """A small record of the store (e.g. the bus epoch last seen), or None."""

    @abc.abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...

    # --- the fujsen door -----------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one guarded statement for a fujsen and return its rows as tuples.

        At most ``FUJSEN_SQL_MAX_ROWS`` rows; a statement without result rows returns [].
        Parameters may be str, int, float, bytes or None; bools are sent as 0/1 (as SQLite
        stores them) and ISO-8601 date-time strings in their canonical timestamp form. A
        statement the rules refuse raises :class:`~tusk_events.store.sqlguard.SqlRefused`
        (a StoreError with ``refused = True``).
        """
        checked, values = self._prepare(sql, params)
        rows, _ = self._run_fujsen(checked, values, want_rows=True)
        return rows

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Like :meth:`query`, but return the number of rows changed (-1 for a SELECT)."""
        checked, values = self._prepare(sql, params)
        _, rowcount = self._run_fujsen(checked, values, want_rows=False)
        return -1 if checked.verb == "select" else rowcount

    def _prepare(self, sql: str, params: Sequence[Any]) -> tuple[sqlguard.Checked, tuple[Any, ...]]:
        if isinstance(params, (str, bytes)) or not isinstance(params, Sequence):
            raise StoreError("fujsen SQL parameters must be a sequence of values")
        values = []
        for p in params:
            if isinstance(p, bool):
                p = int(p)
            elif isinstance(p, str):
                p = timestamps.canonical_param(p)
            elif isinstance(p, float) and not math.isfinite(p):
                raise StoreError(f"fujsen SQL parameter {p!r} is not a finite number")
            elif not isinstance(p, _PARAM_TYPES):
                raise StoreError(
                    f"fujsen SQL parameter of type {type(p).__name__} is not supported "
                    "(pass str, int, float, bytes or None; json.dumps() structures)"
                )
            values.append(p)
        return sqlguard.check(sql, len(values), self.dialect), tuple(values)

    @abc.abstractmethod
    def _run_fujsen(
        self, checked: sqlguard.Checked, params: tuple[Any, ...], *, want_rows: bool
    ) -> tuple[list[tuple[Any, ...]], int]:
        """Run checked SQL on the restricted connection: (rows, rowcount)."""

    @staticmethod
    def _limit_rows(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        if len(rows) > FUJSEN_SQL_MAX_ROWS:
            raise StoreError(
                f"fujsen SQL returned more than {FUJSEN_SQL_MAX_ROWS} rows; add a LIMIT or filter"
            )
        return rows


__all__ = [
    "COLUMNS",
    "SCHEMA_VERSION",
    "EventStore",
    "Replay",
    "StoredEvent",
    "derived_id",
    "event_row",
]
