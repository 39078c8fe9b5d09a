"""The SQLite store's statements that its handling transactions (sqlite_unit) share with it."""

from __future__ import annotations

_INSERT = (
    "INSERT INTO event_store (event_id, event_type, payload, metadata, timestamp) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING"
)
_CLAIM = (
    "INSERT INTO tusk_tracking (service, event_id, outcome, at) VALUES (?, ?, 'handled', ?) "
    "ON CONFLICT (service, event_id) DO UPDATE SET outcome = 'handled', at = excluded.at "
    "WHERE tusk_tracking.outcome <> 'handled'"
)
_TRACK = (
    "INSERT INTO tusk_tracking (service, event_id, outcome, at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (service, event_id) DO UPDATE SET outcome = excluded.outcome, at = excluded.at "
    "WHERE tusk_tracking.outcome <> 'handled'"
)
_OUTBOX_ADD = "INSERT INTO tusk_outbox (seq, event_id, created) VALUES (?, ?, ?)"
_LEASE = (
    "INSERT INTO tusk_meta (key, value, until) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, until = excluded.until "
    "WHERE tusk_meta.value = excluded.value OR tusk_meta.until < ?"
)

__all__ = ["_CLAIM", "_INSERT", "_LEASE", "_OUTBOX_ADD", "_TRACK"]
