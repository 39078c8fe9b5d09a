"""Cost of bounding fujsen SQL results on the PostgreSQL server (what untrusted configs get).

    python benchmarks/fujsen_sql.py [--url postgresql://postgres@127.0.0.1:5432/test] [--rounds 9]

``store.query()`` with the same statement, plain (a trusted config) and wrapped by
``sqlguard.bounded_sql`` (an untrusted config: the server measures each row and refuses a
result past the byte cap), interleaved round by round in one process: the median time of
each and the median of the per-round ratios, for a one-row result and 10,000 small rows.
Reads only; the store's tables are created if missing and nothing is written.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tusk_events.store import open_store  # noqa: E402
from tusk_events.store.sqlguard import bound_results  # noqa: E402

SQL = "SELECT n, 'row ' || n FROM generate_series(1, ?) AS n"


def timed(store: object, n: int, reps: int, bounded: bool) -> float:
    saved = bound_results(bounded)
    try:
        t0 = time.perf_counter()
        for _ in range(reps):
            rows = store.query(SQL, (n,))  # type: ignore[attr-defined]
        elapsed = (time.perf_counter() - t0) / reps
    finally:
        bound_results(saved)
    assert len(rows) == n
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    store = open_store(args.url)
    try:
        for n, reps in ((1, 200), (10_000, 5)):
            timed(store, n, reps, False)
            timed(store, n, reps, True)
            plain, bounded, ratios = [], [], []
            for _ in range(args.rounds):
                p = timed(store, n, reps, False)
                b = timed(store, n, reps, True)
                plain.append(p)
                bounded.append(b)
                ratios.append(b / p)
            print(f"{n:>6} rows: plain {statistics.median(plain) * 1e3:7.2f} ms   bounded "
                  f"{statistics.median(bounded) * 1e3:7.2f} ms   ratio {statistics.median(ratios):.2f}x")
    finally:
        store.close()


if __name__ == "__main__":
    main()
