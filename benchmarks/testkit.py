"""The testing kit: how long examples/test_app.py takes, and what the virtual clock saves.

    python benchmarks/testkit.py [--rounds 7] [--redis redis://127.0.0.1:6379/13]

1. ``pytest examples/test_app.py`` (four tests of configs/app.tsk, whose bad email is
   retried with backoff) run in this process, after one warm-up run that pays the imports:
   wall time of the whole pytest session; and once in a fresh interpreter (imports included).
   With ``--redis``, the same tests on that Redis database too (emptied before and after
   each test: name a database nobody else uses).
2. configs/app.tsk until idle: through the kit (virtual clock, recording) vs a bare
   ``Runtime`` on the real clock: what the kit adds.
3. A service with ``retries: 3, backoff: 0.2``: the kit (backoffs on the virtual clock) vs a
   bare ``Runtime`` that sleeps them.

Medians of interleaved rounds; the machine is shared, so compare ratios.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

from tusk_events import TSK  # noqa: E402
from tusk_events.runtime import Runtime  # noqa: E402
from tusk_events.testing import TuskApp  # noqa: E402
from tusk_events.testing.plugin import plugin_args  # noqa: E402

EXAMPLE = ROOT / "examples" / "test_app.py"
APP = ROOT / "configs" / "app.tsk"

RETRYING = """
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///unused.db")

[mailer]
subscribe: "signed_up"
retries: 3
backoff: 0.2
handle_fujsen = '''
def handle(event):
    raise RuntimeError("the mail server is down")
'''
"""


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class TestTime:
    """Sums setup + call + teardown of every test: the session without pytest's own start-up."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds += report.duration


TEST_TIMES: dict[str, list[float]] = {}


def pytest_session(*extra: str, label: str = "warm-up") -> None:
    args = [str(EXAMPLE), "-q", "-p", "no:cacheprovider", "--no-header", "-o", "addopts=", *plugin_args(), *extra]
    clock = TestTime()
    rc = pytest.main(args, plugins=[clock])
    if rc != 0:
        raise SystemExit(f"pytest failed ({rc}): {' '.join(args)}")
    TEST_TIMES.setdefault(label, []).append(clock.seconds)


def bare_runtime(path: Path, publish: tuple[str, dict] | None = None) -> None:
    tmp = tempfile.mkdtemp()
    env = {"EVENT_BUS": "memory://bench-" + uuid.uuid4().hex[:10], "EVENT_STORE": f"sqlite:///{tmp}/e.db?synchronous=off"}
    with Runtime([TSK.from_file(path, env=env)]) as rt:
        if publish:
            rt.publish(*publish)
        rt.run_until_idle(startup=publish is None)


def kit(path: Path, publish: tuple[str, dict] | None = None) -> None:
    with TuskApp(path, startup=publish is None) as app:
        if publish:
            app.publish(*publish)
        app.run_until_idle()


def median_ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.0f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--redis", help="also run the example tests on this Redis database (emptied!)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # the dead-lettered bad email is expected
    os.chdir(ROOT)

    pytest_session()  # warm-up: imports, grammar, first store
    memory, redis_runs = [], []
    for _ in range(args.rounds):
        memory.append(timed(lambda: pytest_session(label="memory")))
        if args.redis:
            redis_runs.append(timed(lambda: pytest_session("--tusk-bus", args.redis, label="redis")))
    cold = timed(lambda: subprocess.run(
        [sys.executable, "-m", "pytest", str(EXAMPLE), "-q", "-p", "no:cacheprovider", *plugin_args()],
        check=True, capture_output=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    ))

    with tempfile.TemporaryDirectory() as d:
        retrying = Path(d) / "retrying.tsk"
        retrying.write_text(RETRYING)
        event = ("signed_up", {"user_id": 1})
        app_kit, app_bare, retry_kit, retry_bare = [], [], [], []
        for _ in range(args.rounds):
            app_kit.append(timed(lambda: kit(APP)))
            app_bare.append(timed(lambda: bare_runtime(APP)))
            retry_kit.append(timed(lambda: kit(retrying, event)))
            retry_bare.append(timed(lambda: bare_runtime(retrying, event)))

    print(f"\nexamples/test_app.py, 4 tests (median of {args.rounds}): tests {median_ms(TEST_TIMES['memory'])}, "
          f"whole pytest.main() in process {median_ms(memory)}")
    if redis_runs:
        print(f"examples/test_app.py on {args.redis}: tests {median_ms(TEST_TIMES['redis'])}, "
              f"whole pytest.main() {median_ms(redis_runs)}")
    print(f"examples/test_app.py in a fresh interpreter (imports included, 1 run): {cold * 1000:.0f} ms")
    ratio = statistics.median(app_kit) / statistics.median(app_bare)
    print(f"configs/app.tsk until idle: kit {median_ms(app_kit)} vs bare Runtime {median_ms(app_bare)} ({ratio:.2f}x)")
    ratio = statistics.median(retry_kit) / statistics.median(retry_bare)
    print(f"retries: 3, backoff: 0.2: kit {median_ms(retry_kit)} vs bare Runtime sleeping {median_ms(retry_bare)} "
          f"({ratio:.2f}x)")


if __name__ == "__main__":
    main()
