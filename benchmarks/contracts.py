"""What checking event contracts adds to publishing, with fastjsonschema and with jsonschema.

    python benchmarks/contracts.py [--rounds 7] [--bus memory://] [--quick]

The seed's event, ``user_registered`` with ``{"user_id": 123}``, under the contract
``{"type": "object", "required": ["user_id"], "properties": {"user_id": {"type": "integer"}}}``.
Each path runs three ways in the same run, rounds interleaved so all see the same machine
state: without contracts, with the contracts as the runtime checks them (fastjsonschema,
compiled at load), and with the same check done by jsonschema (a Draft 7 validator built once,
``is_valid`` on the way out). Figures are medians of the rounds, in microseconds per event;
ratios are the medians of each round's ratio to "no contracts", timed back to back (target:
<= 1.15 on the publish paths). The garbage collector is paused while a round is timed.

* validate one payload: the check alone (``ContractVersion.violation``);
* refuse a bad payload: the check and its message, for ``{"user_id": "abc"}``;
* bus.publish / bus.publish_many (250 a call): the bus alone, raw vs ``contracts.guard(bus)``;
* Runtime.publish: the whole publish path, event store (SQLite in a temp dir) + bus.

``--bus`` takes a redis:// URL to publish to a real server instead of the embedded one.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fastjsonschema
import jsonschema

from tusk_events import TSK
from tusk_events.bus import connect
from tusk_events.contracts.model import Contract, Contracts
from tusk_events.events import Event
from tusk_events.runtime.core import Runtime

TYPE = "user_registered"
PAYLOAD = {"user_id": 123}
BAD = {"user_id": "abc"}
CONTRACT = """
[contracts]
user_registered {
    description: "A person signed up"
    schema: {type: "object", required: ["user_id"], properties: {user_id: {type: "integer"}}}
}
"""
APP = """
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///unused.db")
"""
VARIANTS = ("none", "fastjsonschema", "jsonschema")


def with_jsonschema(contracts: Contracts) -> Contracts:
    """The same contracts, each version checked by a jsonschema Draft 7 validator instead."""

    def validator(schema: Any) -> Callable[..., None]:
        checker = jsonschema.Draft7Validator(schema)

        def validate(payload: Any, custom_formats: Any = None, name_prefix: str | None = None) -> None:
            if not checker.is_valid(payload):
                error = jsonschema.exceptions.best_match(checker.iter_errors(payload))
                path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
                raise fastjsonschema.JsonSchemaValueException(
                    error.message, value=error.instance, name=(name_prefix or "data") + path,
                    definition=error.schema, rule=str(error.validator))

        return validate

    swapped = {
        c.type: Contract(c.type, c.description, {
            n: dataclasses.replace(cv, validator=validator(cv.schema)) for n, cv in c.versions.items()})
        for c in contracts
    }
    return Contracts(swapped, unknown_events=contracts.unknown_events)


def contracts_for(variant: str) -> Contracts:
    if variant == "none":
        return Contracts()
    loaded = TSK.from_string(CONTRACT, env={}).contracts
    return loaded if variant == "fastjsonschema" else with_jsonschema(loaded)


def interleave(rounds: int, jobs: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Median seconds per event of each job, the jobs run back to back, round after round.

    The order rotates from round to round. With a "none" job, ``<job>/ratio`` is the median of
    the per-round ratios to it: pairs timed moments apart, so load that comes and goes on a
    shared machine cancels out.
    """
    times: dict[str, list[float]] = {k: [] for k in jobs}
    names = list(jobs)
    for r in range(rounds + 1):
        shift = r % len(names)  # each job takes each place in the order equally often
        for key in names[shift:] + names[:shift]:
            gc.collect()
            gc.disable()
            try:
                t = jobs[key]()
            finally:
                gc.enable()
            if r:  # the first round warms up
                times[key].append(t)
    out = {k: statistics.median(v) for k, v in times.items()}
    if "none" in times:
        for k, v in times.items():
            out[f"{k}/ratio"] = statistics.median(x / base for x, base in zip(v, times["none"]))
    return out


def bench_validate(n: int, rounds: int) -> dict[str, float]:
    event, bad = Event(TYPE, PAYLOAD), Event(TYPE, BAD)
    out: dict[str, float] = {}
    for label, sample in (("validate", event), ("refuse", bad)):
        checks = {v: contracts_for(v) for v in VARIANTS[1:]}

        def job(contracts: Contracts, e: Event = sample) -> Callable[[], float]:
            def run() -> float:
                violation = contracts.violation
                t = time.perf_counter()
                for _ in range(n):
                    violation(e)
                return (time.perf_counter() - t) / n
            return run

        medians = interleave(rounds, {v: job(c) for v, c in checks.items()})
        out.update({f"{label}:{v}": m for v, m in medians.items()})
    sample_messages = {v: contracts_for(v).violation(bad) for v in VARIANTS[1:]}
    out["messages"] = sample_messages  # type: ignore[assignment]
    return out


def bench_bus(url: str, n: int, batch: int, rounds: int) -> dict[str, float]:
    raw = connect(url)
    buses = {v: contracts_for(v).guard(raw) for v in VARIANTS}

    def single(bus: Any) -> Callable[[], float]:
        def run() -> float:
            t = time.perf_counter()
            for _ in range(n):
                bus.publish(TYPE, PAYLOAD)
            return (time.perf_counter() - t) / n
        return run

    def many(bus: Any) -> Callable[[], float]:
        def run() -> float:
            specs = [(TYPE, PAYLOAD)] * batch
            t = time.perf_counter()
            for _ in range(max(1, n // batch)):
                bus.publish_many(specs)
            return (time.perf_counter() - t) / (max(1, n // batch) * batch)
        return run

    out = {f"publish:{k}": v for k, v in interleave(rounds, {v: single(b) for v, b in buses.items()}).items()}
    out |= {f"many:{k}": v for k, v in interleave(rounds, {v: many(b) for v, b in buses.items()}).items()}
    raw.close()
    return out


def bench_runtime(url: str, n: int, rounds: int, tmp: Path) -> dict[str, float]:
    runtimes: dict[str, Runtime] = {}
    for v in VARIANTS:
        env = {"EVENT_BUS": url, "EVENT_STORE": f"sqlite:///{tmp / f'{v}.db'}"}
        rt = Runtime([TSK.from_string(APP, env=env)])
        rt.contracts = contracts_for(v)
        runtimes[v] = rt

    def job(rt: Runtime) -> Callable[[], float]:
        def run() -> float:
            t = time.perf_counter()
            for _ in range(n):
                rt.publish(TYPE, PAYLOAD)
            return (time.perf_counter() - t) / n
        return run

    out = {f"runtime:{k}": v for k, v in interleave(rounds, {v: job(rt) for v, rt in runtimes.items()}).items()}
    for rt in runtimes.values():
        rt.close()
    return out


def table(results: dict[str, Any]) -> list[str]:
    rows = [
        ("validate one payload", "validate", False),
        ("refuse a bad payload (with message)", "refuse", False),
        ("bus.publish", "publish", True),
        ("bus.publish_many, per event", "many", True),
        ("Runtime.publish (store + bus)", "runtime", True),
    ]
    head = f"{'path':38} {'no contracts':>13} {'fastjsonschema':>15} {'ratio':>7} {'jsonschema':>12} {'ratio':>7}"
    lines = [head, "-" * len(head)]
    for label, key, has_base in rows:
        base = results.get(f"{key}:none") if has_base else None
        fast, slow = results[f"{key}:fastjsonschema"], results[f"{key}:jsonschema"]

        fast_ratio = results.get(f"{key}:fastjsonschema/ratio")
        slow_ratio = results.get(f"{key}:jsonschema/ratio")
        lines.append(f"{label:38} {_us(base):>13} {_us(fast):>15} {_ratio(fast_ratio):>7} "
                     f"{_us(slow):>12} {_ratio(slow_ratio):>7}")
    return lines


def _us(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e6:.2f} us"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}x"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--bus", default=None, help="bus URL (default: a private memory:// bus)")
    parser.add_argument("--quick", action="store_true", help="fewer events per round (a smoke run)")
    args = parser.parse_args(argv)
    url = args.bus or f"memory://bench-{uuid.uuid4().hex[:8]}"
    scale = 10 if args.quick else 1
    print(f"python {sys.version.split()[0]}, fastjsonschema {fastjsonschema.VERSION}, "
          f"jsonschema {_version('jsonschema')}, bus {url}, {args.rounds} rounds (medians)")
    results: dict[str, Any] = {}
    results |= bench_validate(10_000 // scale, args.rounds)
    results |= bench_bus(url, 1_000 // scale, 250 // scale, args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        results |= bench_runtime(url, 300 // scale, args.rounds, Path(tmp))
    print()
    for line in table(results):
        print(line)
    print()
    for v, message in results["messages"].items():
        print(f"message ({v}): {message}")
    # the timed paths are noisy on a shared machine; the check alone over each path's median is not
    for v in VARIANTS[1:]:
        check = results[f"validate:{v}"]
        shares = ", ".join(f"{label} +{check / results[f'{k}:none'] * 100:.1f}%"
                           for label, k in (("bus.publish", "publish"), ("publish_many", "many"),
                                            ("Runtime.publish", "runtime")))
        worst = max(results[f"{k}:{v}/ratio"] for k in ("publish", "many", "runtime"))
        print(f"{v}: check alone adds {shares}; worst measured ratio {worst:.3f}x "
              f"({'within' if worst <= 1.15 else 'ABOVE'} the 1.15x target)")
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    sys.exit(main())
