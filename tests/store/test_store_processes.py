"""Several processes on one store: nothing lost, nothing skipped, no partial batch after a kill."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tusk_events.events import new_event
from tusk_events.store import open_store

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

pytestmark = pytest.mark.slow


def spawn(url: str, mode: str, tag: str, n: int) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, str(HERE / "store_writer.py"), url, mode, tag, str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_concurrent_writers_lose_nothing_and_a_tailing_reader_skips_nothing(store_url: str) -> None:
    writers, per_writer = 4, 150
    with open_store(store_url) as store:
        procs = [
            spawn(store_url, "single" if w % 2 else "batch", f"w{w}", per_writer)
            for w in range(writers)
        ]
        seen: list[tuple[int, str, int]] = []
        cursor = 0

        def tail() -> None:
            nonlocal cursor
            for e in store.replay(after_id=cursor, batch=40):
                seen.append((e.seq, e.payload["writer"], e.payload["i"]))
                cursor = e.seq

        deadline = time.monotonic() + 120
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            tail()
            time.sleep(0.002)
        tail()
        total = writers * per_writer
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            assert out.strip() == "done"

        assert store.count() == total
        stored = [(e.seq, e.payload["writer"], e.payload["i"]) for e in store.replay()]
        assert sorted({(w, i) for _, w, i in stored}) == sorted(
            (f"w{w}", i) for w in range(writers) for i in range(per_writer)
        )
        # The tailing reader, resuming after the last id it saw, got every event exactly once.
        assert seen == stored
        # Each writer's events were stored in the order it wrote them.
        for w in range(writers):
            assert [i for _, ww, i in stored if ww == f"w{w}"] == list(range(per_writer))


def test_killed_writer_leaves_no_partial_batch(store_url: str) -> None:
    backend = "sqlite" if store_url.startswith("sqlite") else "postgresql"
    victim_url = store_url + ("&application_name=tusk_kill_test" if backend == "postgresql" else "")
    with open_store(store_url) as store:
        store.append(new_event("before", {"i": 0}))
        proc = spawn(victim_url, "hang", "victim", 5000)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip() == "inside", proc.stderr.read() if proc.stderr else ""
            assert_inside_a_write_transaction(store, backend)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if backend == "postgresql":
            wait_for_backend_gone(store)
        assert store.count() == 1
        assert [e.type for e in store.replay()] == ["before"]
        assert store.append(new_event("after", {"i": 1}))
        assert store.count() == 2
        if backend == "sqlite":
            assert store._execute("PRAGMA integrity_check")[0][0] == "ok"  # type: ignore[attr-defined]


def assert_inside_a_write_transaction(store: object, backend: str) -> None:
    """The victim has written rows it has not committed: the kill lands mid-batch."""
    if backend == "sqlite":
        conn = sqlite3.connect(store.path, timeout=0, isolation_level=None)  # type: ignore[attr-defined]
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                conn.execute("BEGIN IMMEDIATE")
        finally:
            conn.close()
        wal = Path(store.path + "-wal")  # type: ignore[attr-defined]
        assert wal.exists() and wal.stat().st_size > 100_000  # the batch's pages are in the WAL
    else:
        import psycopg

        with psycopg.connect(store.url, autocommit=True) as conn:  # type: ignore[attr-defined]
            states = conn.execute(
                "SELECT state FROM pg_stat_activity WHERE application_name = 'tusk_kill_test' "
                "AND backend_xid IS NOT NULL"  # an xid: the transaction has written rows
            ).fetchall()
            assert states == [("idle in transaction",)]


def wait_for_backend_gone(store: object) -> None:
    import psycopg

    deadline = time.monotonic() + 30
    with psycopg.connect(store.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        while time.monotonic() < deadline:
            n = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tusk_kill_test' "
                "AND backend_xid IS NOT NULL"
            ).fetchone()[0]
            if n == 0:
                return
            time.sleep(0.05)
    raise AssertionError("the killed writer's transaction is still open")
