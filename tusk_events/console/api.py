"""What the console's pages show, as JSON-ready dicts, read from one runtime's bus and store.

Every read is bounded: events and dead letters come a page at a time (``CONSOLE_PAGE``), so
a page costs the same with 100 or 100,000 events stored. Nothing here mutates except
:meth:`ConsoleData.redrive` and :meth:`ConsoleData.purge`, which the server only calls for a
POST that carries the CSRF token.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tusk_events.bus.base import redact_url
from tusk_events.defaults import CONSOLE_PAGE, CONSOLE_PAGE_MAX
from tusk_events.errors import ConfigError, TuskError

if TYPE_CHECKING:
    from tusk_events.runtime.core import Runtime

_EVENT_COLUMNS = "id, event_id, event_type, payload, metadata, timestamp"


def _page(limit: Any) -> int:
    try:
        n = int(limit)
    except (TypeError, ValueError):
        return CONSOLE_PAGE
    return max(1, min(n, CONSOLE_PAGE_MAX))


def _split_cursor(after: str | None) -> tuple[str | None, str | None]:
    if not after or "/" not in after:
        return None, None
    service, _, entry = after.rpartition("/")
    return service, entry


def _json_or_text(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class ConsoleData:
    """The console's view of one :class:`Runtime` (running in this process or elsewhere)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._lock = threading.Lock()
        self._graph_svg: str | None = None
        self._contracts_html: str | None = None

    # -- overview ------------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        """Services with delivery mode, group, consumers, backlog and DLQ size."""
        rt = self.runtime
        types = sorted({t for svc in rt.services for t in svc.spec.types})
        try:
            streams = rt.bus.stream_info(types) if types else {}
            bus_error = None
        except TuskError as err:
            streams, bus_error = {}, str(err)
        services = []
        for svc in rt.services:
            spec = svc.spec
            consumers = pending = lag = 0
            processed = 0
            lag_known = True
            if spec.delivery == "durable":
                for t in spec.types:
                    info = streams.get(t)
                    group = info.groups.get(spec.group) if info else None
                    if group is None:
                        continue
                    consumers = max(consumers, group.consumers)
                    pending += group.pending
                    if group.lag is None:
                        lag_known = False
                    else:
                        lag += group.lag
                        processed += max(0, info.length - group.lag - group.pending) if info else 0
            try:
                dead = rt.dlq.count(spec.name)
            except Exception as err:  # a bus that went away: shown, not fatal for the page
                bus_error = bus_error or str(err)
                dead = None
            services.append({
                "name": spec.name,
                "delivery": spec.delivery,
                "group": spec.group if spec.delivery == "durable" else None,
                "types": list(spec.types),
                "consumers": consumers,
                "pending": pending,
                "lag": lag if lag_known else None,
                "processed": processed,
                "dead_letters": dead,
            })
        return {
            "bus": redact_url(rt.bus_url),
            "store": redact_url(rt.store_url),
            "time": time.time(),
            "bus_error": bus_error,
            "services": services,
            "streams": {t: {"length": s.length} for t, s in streams.items()},
        }

    def graph(self) -> dict[str, Any]:
        """The architecture graph: mermaid text, and an SVG when graphviz is installed."""
        from tusk_events.observe.graph import architecture, to_dot, to_mermaid

        arch = architecture(self.runtime.configs)
        with self._lock:
            if self._graph_svg is None:
                self._graph_svg = _dot_svg(to_dot(arch)) or ""
        return {"mermaid": to_mermaid(arch), "svg": self._graph_svg or None}

    # -- events --------------------------------------------------------------------------

    def events(self, *, type: str | None = None, since: str | None = None, until: str | None = None,
               trace_id: str | None = None, before: Any = None, limit: Any = None) -> dict[str, Any]:
        """The latest stored events, newest first, filtered; ``before`` pages back by store id."""
        store = self.runtime.store
        n = _page(limit)
        where: list[str] = []
        params: list[Any] = []
        if type:
            where.append("event_type = ?")
            params.append(type)
        if since:
            where.append("timestamp >= ?")
            params.append(since)
        if until:
            where.append("timestamp <= ?")
            params.append(until)
        if trace_id:  # the store's trace index answers this one
            if store.dialect == "postgresql":
                where.append("(metadata::json ->> 'trace_id') = ?")
            else:
                where.append("json_extract(metadata, '$.trace_id') = ?")
            params.append(trace_id)
        if before not in (None, ""):
            try:
                where.append("id < ?")
                params.append(int(before))
            except (TypeError, ValueError):
                raise ConfigError(f"'before' must be a store id, not {before!r}") from None
        sql = f"SELECT {_EVENT_COLUMNS} FROM event_store"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = store.query(sql, [*params, n + 1])
        more = len(rows) > n
        out = []
        for row in rows[:n]:
            meta = _json_or_text(row[4]) or {}
            out.append({
                "position": row[0],
                "id": row[1],
                "type": row[2],
                "payload": _json_or_text(row[3]),
                "metadata": meta,
                "trace_id": meta.get("trace_id") if isinstance(meta, dict) else None,
                "timestamp": str(row[5]),
            })
        return {"events": out, "more": more, "next_before": out[-1]["position"] if more and out else None}

    # -- dead letters --------------------------------------------------------------------

    def dead_letters(self, *, service: str | None = None, after: str | None = None,
                     limit: Any = None) -> dict[str, Any]:
        """Dead letters, oldest first, a page at a time: ``after`` is the last entry id seen, so a
        page reads only its own entries however many came before. Without ``service``, the
        services' queues follow one another; ``after`` is then ``service/entry id``."""
        rt = self.runtime
        n = _page(limit)
        names = [service] if service else [svc.spec.name for svc in rt.services]
        counts = {name: rt.dlq.count(name) for name in names}
        start_service, cursor = (service, after) if service else _split_cursor(after)
        letters: list[dict[str, Any]] = []
        started = start_service is None
        for name in names:
            if not started:
                if name != start_service:
                    continue
                started = True
            else:
                cursor = None
            if len(letters) > n or not counts[name]:
                continue
            page = rt.dlq.list(name, limit=n + 1 - len(letters), after=cursor)
            letters += [d.to_dict() for d in page]
        more = len(letters) > n
        letters = letters[:n]
        last = letters[-1] if letters and more else None
        next_after = None
        if last is not None:
            next_after = last["id"] if service else f"{last['service']}/{last['id']}"
        return {"counts": counts, "total": sum(counts.values()), "letters": letters, "next_after": next_after}

    def redrive(self, service: str, ids: Iterable[str] | None) -> int:
        self.runtime._service(service)  # a clear ConfigError for an unknown service
        return self.runtime.redrive(service, None if ids is None else list(ids))

    def purge(self, service: str, ids: Iterable[str] | None) -> int:
        self.runtime._service(service)
        return self.runtime.dlq.purge(service, None if ids is None else list(ids))

    # -- trace and contracts -------------------------------------------------------------

    def trace(self, trace_id: str) -> dict[str, Any]:
        from tusk_events.observe.tracing import load_trace, trace_to_dict

        rt = self.runtime
        return trace_to_dict(load_trace(rt.configs, trace_id, store=rt.store, client=rt.client, dlq=rt.dlq))

    def contracts_html(self) -> str:
        from tusk_events.contracts.asyncapi import document, render_html

        with self._lock:
            if self._contracts_html is None:
                self._contracts_html = render_html(document(self.runtime.configs))
            return self._contracts_html


def _dot_svg(dot_text: str) -> str | None:
    dot = shutil.which("dot")
    if dot is None:
        return None
    try:
        done = subprocess.run([dot, "-Tsvg"], input=dot_text, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    svg = done.stdout
    return svg[svg.find("<svg"):] if "<svg" in svg else None


__all__ = ["ConsoleData"]
