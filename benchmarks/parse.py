"""Parse speed of tusk_events.lang.parser.load against tomllib.loads on the same content.

Generates a ~1,000-line config (sections, strings, numbers, arrays, inline objects,
a few fujsen blocks) as .tsk and as TOML, checks both read to the same data, then
times both parsers in alternating rounds in this process and prints their medians and
the median ratio. Last, the cold start: the median wall time of fresh interpreters
that import the parser and parse configs/event_system.tsk, next to a bare interpreter
and one that only imports the tusk_events package, to show what the parser adds.

    python benchmarks/parse.py [--rounds N] [--cold M]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FUJSEN = '''def handle_{n}(event, context=None):
    # route the event to its handler
    kind = event.get("type", "unknown")
    if kind == "order":
        return {{"queue": "orders", "id": event["id"]}}
    return {{"queue": "default", "n": {n}}}'''


def generate(sections: int = 45) -> tuple[str, str]:
    """The same document as .tsk and as TOML (about 25 lines per section)."""
    tsk: list[str] = ["# generated benchmark config", 'app_name: "bench"', "version = 3", ""]
    toml: list[str] = ["# generated benchmark config", 'app_name = "bench"', "version = 3", ""]
    for s in range(sections):
        common = [
            f'name = "service-{s}"',
            f'host = "10.0.{s % 256}.1"',
            f"port = {8000 + s}",
            f"weight = {s / 7:.5f}",
            "scale = 1.5e6",
            "enabled = true",
            f"retries = {s % 5}",
            'tags = ["alpha", "beta", "gamma", "delta"]',
            f"ports = [{8000 + s}, {9000 + s}, {10000 + s}]",
            'url = "redis://localhost:6379/0"  # trailing comment',
            'path = "/var/log/app.log"',
        ]
        for k in range(6):
            common.append(f'label_{k} = "value number {k} of section {s}"')
        tsk.append(f"[section_{s}]")
        toml.append(f"[section_{s}]")
        tsk.extend(common)
        toml.extend(common)
        tsk.append('limits = {"cpu": 2, "memory": "512Mi", "burst": true}')
        toml.append('limits = {cpu = 2, memory = "512Mi", burst = true}')
        tsk.append('nested = [[1, 2], [3, 4], {"k": "v"}]')
        toml.append('nested = [[1, 2], [3, 4], {k = "v"}]')
        if s % 8 == 0:
            body = FUJSEN.format(n=s)
            tsk.append(f"handler_fujsen = '''\n{body}\n'''")
            toml.append(f"handler_fujsen = '''\n{body}'''")
        tsk.append("")
        toml.append("")
    return "\n".join(tsk), "\n".join(toml)


def timed_us(fn: Callable[[str], object], text: str, repeat: int) -> float:
    """Best of ``repeat`` back-to-back parses: the least disturbed by other processes."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - start)
    return best * 1e6


PARSE_CONFIG = (
    "from tusk_events.lang.parser import load; "
    "load(open('configs/event_system.tsk', encoding='utf-8').read(), env={})"
)


def cold_start(code: str, runs: int) -> float:
    """Median wall time of ``python -c code`` in a fresh interpreter, in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="alternating rounds")
    parser.add_argument("--cold", type=int, default=7, help="cold-start subprocess runs")
    args = parser.parse_args()

    from tusk_events.lang.parser import Parsed, load

    def load_(text: str) -> Parsed:
        return load(text, env={})

    tsk, toml = generate()
    # The two documents must say the same thing, or the comparison means nothing.
    assert load_(tsk).data == tomllib.loads(toml), "generated documents differ"
    load_(tsk)  # build the grammar before timing
    # Rounds alternate the two parsers so machine noise hits both alike; each round
    # keeps the best of 3 parses per parser, and the report takes medians over rounds.
    tsk_times: list[float] = []
    toml_times: list[float] = []
    ratios: list[float] = []
    for _ in range(args.rounds):
        t_tsk = timed_us(load_, tsk, 3)
        t_toml = timed_us(tomllib.loads, toml, 3)
        tsk_times.append(t_tsk)
        toml_times.append(t_toml)
        ratios.append(t_tsk / t_toml)
    t_tsk, t_toml = statistics.median(tsk_times), statistics.median(toml_times)
    print(f"document: {tsk.count(chr(10)) + 1} lines .tsk, {toml.count(chr(10)) + 1} lines TOML")
    print(f"tusk_events.lang.parser.load  median {t_tsk:9.0f} us")
    print(f"tomllib.loads            median {t_toml:9.0f} us")
    ratio = statistics.median(ratios)
    print(f"ratio load/tomllib       {ratio:.2f}x (median of {args.rounds} rounds)")
    cold_start(PARSE_CONFIG, 1)  # lark's grammar cache is written on the very first run
    for label, code in (
        ("cold start: python -c 'pass'", "pass"),
        ("cold start: import tusk_events", "import tusk_events"),
        ("cold start: import parser + parse configs/event_system.tsk", PARSE_CONFIG),
    ):
        print(f"{label:58} median {cold_start(code, args.cold) * 1e3:4.0f} ms")


if __name__ == "__main__":
    main()
