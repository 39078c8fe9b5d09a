"""Event store throughput against the plain driver, and replay memory.

    python benchmarks/store.py [--n 1000000] [--postgres URL|none] [--rounds 5]

For each backend (SQLite in a temp dir; PostgreSQL in a throw-away schema, skipped when the
server is unreachable) it times, in the same run and on the same schema:

* append one by one: ``store.append(e)`` vs the plain driver inserting the same row per
  statement (autocommit);
* batched append: ``store.append_many(1000 events)`` vs the plain driver doing ``executemany``
  of the same rows in one transaction;
* replay of N events: ``for e in store.replay()`` vs a plain ``SELECT ... ORDER BY id`` loop.

The plain code turns events into rows itself (``json.dumps`` and the store's timestamp text,
which the schema's CHECK requires); a third figure, "plain, rows prebuilt", leaves that work out
to show the driver alone. Ratios are speed of the store over speed of the plain code (higher
is better; the targets are >= 0.8). Memory: replays of N and of 10,000 events run in child
processes, which report their peak RSS (``resource.getrusage``, or ``VmHWM`` on Linux, where
``ru_maxrss`` keeps the parent's size across exec); the target is N within 1.5x of 10,000.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tusk_events.errors import StoreError
from tusk_events.events import Event, new_event
from tusk_events.store import open_store
from tusk_events.store.timestamps import from_epoch

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
SMALL = 10_000
BATCH = 1000
COLUMNS = "id, event_id, event_type, payload, metadata, timestamp"


def make_events(n: int, start: int = 0) -> list[Event]:
    return [
        new_event(
            f"type{i % 16}",
            {"i": i, "user": f"user-{i % 977}", "amount": i * 0.25, "tags": ["a", "b"]},
        )
        for i in range(start, start + n)
    ]


def event_chunks(n: int, size: int = 10_000) -> Iterator[list[Event]]:
    for start in range(0, n, size):
        yield make_events(min(size, n - start), start)


def plain_row(e: Event) -> tuple[Any, ...]:
    return (
        e.id,
        e.type,
        json.dumps(e.payload),
        json.dumps(e.metadata) if e.metadata else None,
        from_epoch(e.timestamp),
    )


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()  # start each run without the previous one's garbage
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_rounds(rounds: int, contenders: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """Median seconds per contender; contenders alternate within each round."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            times[name].append(timed(fn))
    return {name: statistics.median(ts) for name, ts in times.items()}


# --- backends -------------------------------------------------------------------------------


class Backend:
    name: str
    placeholder: str

    def url(self, tag: str) -> str: ...
    def plain(self, url: str) -> Any: ...
    def begin(self, conn: Any) -> None: ...
    def commit(self, conn: Any) -> None: ...
    def cleanup(self) -> None: ...

    def insert_sql(self) -> str:
        p = self.placeholder
        return (
            "INSERT INTO event_store (event_id, event_type, payload, metadata, timestamp) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT (event_id) DO NOTHING"
        )


class SQLite(Backend):
    name, placeholder = "sqlite", "?"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tusk-store-bench-"))

    def url(self, tag: str) -> str:
        return f"sqlite:///{self.dir}/{tag}.db"

    def plain(self, url: str) -> Any:
        conn = sqlite3.connect(url.split("///", 1)[1], isolation_level=None)
        conn.execute("PRAGMA synchronous = FULL")  # the store's default, on the same WAL file
        return conn

    def begin(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def commit(self, conn: Any) -> None:
        conn.execute("COMMIT")

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class Postgres(Backend):
    name, placeholder = "postgresql", "%s"

    def __init__(self, base: str) -> None:
        import psycopg

        self.psycopg = psycopg
        self.base = base
        self.admin = psycopg.connect(base, autocommit=True, connect_timeout=5)
        self.schemas: list[str] = []
        self.roles: list[str] = []

    def url(self, tag: str) -> str:
        schema = f"bench_{tag}_{uuid.uuid4().hex[:8]}"
        self.admin.execute(f"CREATE SCHEMA {schema}")
        self.schemas.append(schema)
        sep = "&" if "?" in self.base else "?"
        return f"{self.base}{sep}options=-csearch_path%3D{schema}"

    def plain(self, url: str) -> Any:
        return self.psycopg.connect(url, autocommit=True)

    def begin(self, conn: Any) -> None:
        conn.execute("BEGIN")

    def commit(self, conn: Any) -> None:
        conn.execute("COMMIT")

    def cleanup(self) -> None:
        from tusk_events.store.postgres import fujsen_role_name

        db = self.admin.execute("SELECT current_database()").fetchone()[0]
        for schema in self.schemas:
            self.admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            role = fujsen_role_name(db, schema)
            if self.admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                self.admin.execute(f'DROP OWNED BY "{role}"')
                self.admin.execute(f'DROP ROLE "{role}"')
        self.admin.close()


# --- measurements ---------------------------------------------------------------------------


def bench_append(backend: Backend, rounds: int, single: int, batched: int) -> dict[str, Any]:
    ours_url, plain_url = backend.url("ours"), backend.url("plain")
    store = open_store(ours_url)
    open_store(plain_url).close()  # same schema for the plain driver
    conn = backend.plain(plain_url)
    insert = backend.insert_sql()
    cur = conn.cursor()

    def fresh(n: int) -> Callable[[], list[Event]]:
        return lambda: make_events(n)

    def one_ours(events: list[Event]) -> None:
        for e in events:
            store.append(e)

    def one_plain(events: list[Event]) -> None:
        for e in events:
            cur.execute(insert, plain_row(e))

    def many_ours(events: list[Event]) -> None:
        for i in range(0, len(events), BATCH):
            store.append_many(events[i : i + BATCH])

    def many_plain(events: list[Event]) -> None:
        for i in range(0, len(events), BATCH):
            backend.begin(conn)
            cur.executemany(insert, [plain_row(e) for e in events[i : i + BATCH]])
            backend.commit(conn)

    def many_prebuilt(rows: list[tuple[Any, ...]]) -> None:
        for i in range(0, len(rows), BATCH):
            backend.begin(conn)
            cur.executemany(insert, rows[i : i + BATCH])
            backend.commit(conn)

    results: dict[str, Any] = {}
    for label, n, contenders in (
        ("append_one", single, {"ours": one_ours, "plain": one_plain}),
        (
            "append_batched",
            batched,
            {"ours": many_ours, "plain": many_plain, "plain_prebuilt": many_prebuilt},
        ),
    ):
        times: dict[str, list[float]] = {k: [] for k in contenders}
        for _ in range(rounds):
            for name, fn in contenders.items():
                events = fresh(n)()
                arg: Any = [plain_row(e) for e in events] if name == "plain_prebuilt" else events
                times[name].append(timed(lambda fn=fn, arg=arg: fn(arg)))
        med = {k: statistics.median(v) for k, v in times.items()}
        results[label] = {
            "events": n,
            "median_s": med,
            "events_per_s": {k: n / v for k, v in med.items()},
            "ratio": med["plain"] / med["ours"],
            **(
                {"ratio_vs_prebuilt": med["plain_prebuilt"] / med["ours"]}
                if "plain_prebuilt" in med
                else {}
            ),
        }
    store.close()
    conn.close()
    return results


def fill(url: str, n: int) -> None:
    with open_store(url) as store:
        for chunk in event_chunks(n):
            store.append_many(chunk)
        if store.backend == "postgresql":  # what autovacuum does soon after a bulk load
            with store._connection() as conn:  # type: ignore[attr-defined]
                conn.execute(f"VACUUM ANALYZE {store.schema}.event_store")  # type: ignore[attr-defined]


def bench_replay(backend: Backend, rounds: int, n: int) -> tuple[dict[str, Any], str]:
    url = backend.url("replay")
    t_fill = timed(lambda: fill(url, n))
    store = open_store(url)
    conn = backend.plain(url)

    def ours() -> int:
        count = 0
        for _ in store.replay():
            count += 1
        assert count == n
        return count

    def plain() -> int:
        count = 0
        for _ in conn.execute(f"SELECT {COLUMNS} FROM event_store ORDER BY id"):
            count += 1
        assert count == n
        return count

    med = median_rounds(rounds, {"ours": ours, "plain": plain})
    store.close()
    conn.close()
    return {
        "events": n,
        "fill_s": t_fill,
        "median_s": med,
        "events_per_s": {k: n / v for k, v in med.items()},
        "ratio": med["plain"] / med["ours"],
    }, url


def child_peak_rss(url: str, n: int) -> int:
    out = subprocess.run(
        [sys.executable, __file__, "--child-replay", url, "--n", str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[-1])


def bench_memory(backend: Backend, big_url: str, n: int) -> dict[str, Any]:
    small_url = backend.url("small")
    fill(small_url, SMALL)
    big = child_peak_rss(big_url, n)
    small = child_peak_rss(small_url, SMALL)
    return {"peak_rss_kb": {str(n): big, str(SMALL): small}, "ratio": big / small}


def peak_rss_kb() -> int:
    """This process's peak RSS in KiB.

    On Linux ``ru_maxrss`` survives exec: a child started from a big parent reports at least
    the parent's size at fork. The high-water mark of the process's own memory map
    (``VmHWM``) starts afresh at exec, so it is used where /proc has it.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_child_replay(url: str, n: int) -> None:
    with open_store(url) as store:
        count = sum(1 for _ in store.replay())
    assert count == n, (count, n)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, peak_rss_kb())


# --- report ---------------------------------------------------------------------------------


def report(name: str, r: dict[str, Any]) -> None:
    print(f"\n== {name} ==")
    for label in ("append_one", "append_batched"):
        a = r[label]
        eps = a["events_per_s"]
        line = (
            f"{label:15s} {a['events']:>8d} events  ours {eps['ours']:>9.0f}/s  "
            f"plain {eps['plain']:>9.0f}/s  ratio {a['ratio']:.2f}"
        )
        if "ratio_vs_prebuilt" in a:
            prebuilt, ratio = eps["plain_prebuilt"], a["ratio_vs_prebuilt"]
            line += f"  (plain, rows prebuilt {prebuilt:.0f}/s: ratio {ratio:.2f})"
        print(line)
    rp = r["replay"]
    eps = rp["events_per_s"]
    print(
        f"{'replay':15s} {rp['events']:>8d} events  ours {eps['ours']:>9.0f}/s  "
        f"plain {eps['plain']:>9.0f}/s  ratio {rp['ratio']:.2f}   (fill {rp['fill_s']:.1f} s)"
    )
    m = r["memory"]
    sizes = list(m["peak_rss_kb"].items())
    print(
        f"{'replay memory':15s} peak RSS {sizes[0][0]} events {sizes[0][1] / 1024:.1f} MiB, "
        f"{sizes[1][0]} events {sizes[1][1] / 1024:.1f} MiB: ratio {m['ratio']:.2f}"
    )


def run_backend(backend: Backend, args: argparse.Namespace) -> dict[str, Any]:
    result = bench_append(backend, args.rounds, args.single, args.batched)
    result["replay"], big_url = bench_replay(backend, args.rounds, args.n)
    result["memory"] = bench_memory(backend, big_url, args.n)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--n", type=int, default=1_000_000, help="events replayed (default 1,000,000)"
    )
    parser.add_argument(
        "--postgres", default=DEFAULT_POSTGRES, help="server URL, or 'none' to skip"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per measurement (median)")
    parser.add_argument(
        "--single", type=int, default=300, help="events appended one by one per round"
    )
    parser.add_argument(
        "--batched", type=int, default=20_000, help="events appended in batches per round"
    )
    parser.add_argument("--only", choices=("sqlite", "postgresql"), help="run one backend")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--child-replay", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_replay:
        run_child_replay(args.child_replay, args.n)
        return 0

    print(
        f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, "
        f"N={args.n}, rounds={args.rounds}, batch={BATCH}"
    )
    results: dict[str, Any] = {}
    backends: list[Callable[[], Backend]] = []
    if args.only in (None, "sqlite"):
        backends.append(SQLite)
    if args.only in (None, "postgresql") and args.postgres.lower() != "none":

        def pg() -> Backend:
            return Postgres(args.postgres)

        backends.append(pg)
    for make in backends:
        try:
            backend = make()
        except Exception as err:  # noqa: BLE001 - an unreachable server is skipped, not fatal
            print(f"\n== postgresql == skipped: {args.postgres} unreachable ({err})")
            continue
        try:
            results[backend.name] = run_backend(backend, args)
            report(backend.name, results[backend.name])
        except StoreError as err:
            print(f"\n== {backend.name} == failed: {err}")
        finally:
            backend.cleanup()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
