"""The web console: how long each page takes with a large store, and what watching costs the runtime.

    python benchmarks/console.py [--events 100000] [--letters 1000] [--n 20000] [--rounds 5]

1. A store of ``--events`` events and ``--letters`` dead letters (memory:// bus, SQLite file in a
   temporary folder): the median time of each page's API call, and, when Playwright and Chromium
   are installed, each page loaded in a real browser until its content is shown.
2. Runtime throughput (``--n`` events through one sandboxed service on memory://) while a client
   polls the overview every 2 s like an open browser tab, against no console, in interleaved
   rounds; the median ratio is the console's cost.

Everything runs on private, temporary resources; no Redis database is touched.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tusk_events import TSK  # noqa: E402
from tusk_events.console import Console  # noqa: E402
from tusk_events.events import new_event  # noqa: E402
from tusk_events.runtime.core import Runtime  # noqa: E402

CONFIG = """
[app]
event_bus: @env("EVENT_BUS")
event_store: @env("EVENT_STORE")

[worker]
subscribe: "tick"
retries: 0
handle_fujsen = '''
def handle(event):
    n = event["payload"]["n"]
    if n < 0:
        raise ValueError("negative tick " + str(n))
    return n * 2
'''
"""


def runtime(tmp: Path, name: str) -> Runtime:
    path = tmp / f"{name}.tsk"
    path.write_text(CONFIG)
    env = {"EVENT_BUS": f"memory://bench-console-{uuid.uuid4().hex[:8]}",
           "EVENT_STORE": f"sqlite:///{tmp / (name + '.db')}"}
    return Runtime([TSK.from_file(str(path), env=env)])


def fetch(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        r.read()
    return time.perf_counter() - t0


def bench_pages(tmp: Path, events: int, letters: int, rounds: int) -> None:
    rt = runtime(tmp, "pages")
    chunk = 5000
    trace_id = None
    for start in range(0, events, chunk):
        batch = [new_event("tick", {"n": i, "note": "x" * 40}) for i in range(start, min(events, start + chunk))]
        rt.store.append_many(batch)
        trace_id = batch[-1].metadata["trace_id"]
    for i in range(letters):
        rt.publish("tick", {"n": -1 - i})
    rt.run_until_idle(startup=False)
    console = Console(rt, port=0).start()
    base = console.url
    with urllib.request.urlopen(base + f"api/dlq?service=worker&limit={max(1, letters - 50)}") as r:
        middle = json.loads(r.read())["next_after"]
    calls = {
        "overview": "api/overview",
        "events (latest 50)": "api/events",
        "events by type": "api/events?type=tick",
        "events by trace id": f"api/events?trace_id={trace_id}",
        "dead letters (page 1)": "api/dlq?service=worker",
        "dead letters (last page)": f"api/dlq?service=worker&after={middle}",
        "trace": f"api/trace/{trace_id}",
        "contracts": "contracts",
    }
    print(f"store: {rt.store.count()} events; dead letters: {rt.dlq.count('worker')}")
    for name, path in calls.items():
        fetch(base + path)  # warm
        times = [fetch(base + path) for _ in range(rounds)]
        print(f"  API {name:26s} median {statistics.median(times) * 1000:7.1f} ms")
    _browser_pages(base, trace_id, rounds)
    console.close()
    rt.close()


def _browser_pages(base: str, trace_id: str | None, rounds: int) -> None:
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("  (playwright not installed: browser timings skipped)")
        return
    if chromium is None:
        print("  (chromium not installed: browser timings skipped)")
        return
    pages = {
        "overview": ("#/overview", 'tr[data-service="worker"]'),
        "events": ("#/events", "tr[data-event]"),
        "dead letters": ("#/dlq", "tr[data-letter]"),
        "trace": (f"#/trace/{trace_id}", ".tree li"),
    }
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page()
        for name, (frag, selector) in pages.items():
            times = []
            for _ in range(rounds + 1):
                page.goto("about:blank")
                t0 = time.perf_counter()
                page.goto(base + frag)
                page.locator(selector).first.wait_for()
                times.append(time.perf_counter() - t0)
            print(f"  browser {name:22s} median {statistics.median(times[1:]) * 1000:7.1f} ms (load to content)")
        browser.close()


def throughput(tmp: Path, n: int, watched: bool, i: int) -> float:
    rt = runtime(tmp, f"tp{i}{'w' if watched else ''}")
    rt.bus.publish_many([("tick", {"n": k}) for k in range(n)])
    stop = threading.Event()
    poller = None
    console = None
    if watched:
        console = Console(rt, port=0).start()

        def poll() -> None:
            while not stop.wait(2.0):
                for path in ("api/overview", "api/graph"):
                    fetch(console.url + path)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        fetch(console.url + "api/overview")
    t0 = time.perf_counter()
    rt.run_until_idle(startup=False)
    elapsed = time.perf_counter() - t0
    stop.set()
    if poller:
        poller.join()
    if console:
        console.close()
    handled = rt.summary.handled
    rt.close()
    assert handled == n, f"handled {handled} of {n}"
    return n / elapsed


def bench_cost(tmp: Path, n: int, rounds: int) -> None:
    ratios, plain, watched = [], [], []
    for i in range(rounds):
        a = throughput(tmp, n, False, i)
        b = throughput(tmp, n, True, i)
        plain.append(a)
        watched.append(b)
        ratios.append(b / a)
    print(f"runtime alone      median {statistics.median(plain):9.0f} events/s")
    print(f"runtime + console  median {statistics.median(watched):9.0f} events/s (overview polled every 2 s)")
    print(f"ratio watched/alone: median {statistics.median(ratios):.3f} "
          f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--letters", type=int, default=1000)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    logging.getLogger("tusk_events").setLevel(logging.ERROR)  # the dead letters are on purpose
    with tempfile.TemporaryDirectory() as tmp:
        bench_pages(Path(tmp), args.events, args.letters, args.rounds)
        bench_cost(Path(tmp), args.n, args.rounds)


if __name__ == "__main__":
    main()
