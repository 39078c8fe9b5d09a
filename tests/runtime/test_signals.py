"""SIGINT/SIGTERM on ``tusk-events run``, driven in a subprocess: every delivery mode, memory:// and
a private Redis, with and without ``--processes``, inline and under process isolation."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from delivery_support import PrivateRedis, children, cli_env, pending, run_cli, start_cli, wait_until

from tusk_events.fujsen.helpers import shared_store

pytestmark = pytest.mark.slow

N = 8


def app(delivery: str = "durable", sleep: str = "0.5", n: int = N, vt: float = 30) -> str:
    return f"""
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///unused.db")

[producer]
startup_fujsen = '''
def startup():
    for i in range({n}):
        publish("job", {{"i": i}})
'''

[worker]
subscribe: "job"
delivery: "{delivery}"
retries: 0
timeout: 120
visibility_timeout: {vt}
handle_fujsen = '''
def handle(event):
    r = redis.from_url(event_bus)
    r.hincrby("applied", str(event["payload"]["i"]), 1)
    time.sleep(60 if r.get("stall") else {sleep})
    publish("job_done", {{"i": event["payload"]["i"]}})
'''
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    srv = PrivateRedis(tmp_path).start()
    yield srv
    srv.kill()


def _done(env: dict[str, str]) -> int:
    try:
        return shared_store(env["EVENT_STORE"]).count(type="job_done")
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def _summaries(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _stop(proc: Any, sig: int, env: dict[str, str], started: Any, grace: float) -> tuple[float, str, str]:
    wait_until(started, 60, "the first handler")
    t0 = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=grace + 30)
    return time.monotonic() - t0, out, err


CASES = [
    # bus, delivery, until_idle, signal, extra args
    ("memory", "durable", True, signal.SIGTERM, []),
    ("memory", "durable", False, signal.SIGINT, []),
    # broadcast under --until-idle may reach idle before the signal (what was published before
    # the listener started is not delivered), so the signal is tested on a plain run
    ("memory", "broadcast", False, signal.SIGINT, []),
    ("redis", "durable", True, signal.SIGINT, []),
    ("redis", "durable", False, signal.SIGTERM, []),
    ("redis", "durable", False, signal.SIGTERM, ["--processes", "2"]),
    ("redis", "durable", True, signal.SIGTERM, ["--isolation", "process"]),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("bus", "delivery", "until_idle", "sig", "extra"), CASES)
def test_first_signal_drains_in_flight_handlers_and_exits_128_plus_signal(
    bus: str, delivery: str, until_idle: bool, sig: int, extra: list[str], tmp_path: Path, request: Any
) -> None:
    srv = request.getfixturevalue("server") if bus == "redis" else None
    url = srv.url if srv is not None else f"memory://sig-{tmp_path.name}"
    env = cli_env(url, tmp_path)
    cfg = tmp_path / "app.tsk"
    cfg.write_text(app(delivery))
    args = ["run", str(cfg), "--json", "--grace", "8", *extra] + (["--until-idle"] if until_idle else [])
    proc = start_cli(*args, env=env)
    elapsed, out, err = _stop(proc, sig, env, lambda: _done(env) >= 1, 8)
    assert proc.returncode == 128 + sig, (out, err)
    assert elapsed < 5, f"took {elapsed:.1f}s to stop with 0.5 s handlers"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    summaries = _summaries(out)
    assert summaries, (out, err)
    for s in summaries:  # the signal failed, retried and dead-lettered nothing
        assert s["failed_attempts"] == 0 and s["retried"] == 0 and s["dead_lettered"] == 0, s
        assert s.get("abandoned", 0) == 0
    handled = sum(s["handled"] for s in summaries)
    assert 1 <= handled < N, "stopped neither too early nor after the end"
    if srv is None or delivery != "durable":
        return
    r = srv.client()
    assert pending(r, "tusk:stream:job", "worker") == 0  # nothing applied was left unacknowledged
    rerun = run_cli("run", str(cfg), "--until-idle", "--no-startup", "--json", env=env, timeout=90)
    assert rerun.returncode == 0, rerun.stderr
    applied = r.hgetall("applied")
    assert len(applied) == N and set(applied.values()) == {b"1"}, applied  # nothing ran twice


@pytest.mark.timeout(60)
def test_sync_services_stop_within_the_grace_period(tmp_path: Path) -> None:
    env = cli_env(f"memory://sync-{tmp_path.name}", tmp_path)
    cfg = tmp_path / "app.tsk"
    cfg.write_text(app("sync"))
    proc = start_cli("run", str(cfg), "--until-idle", "--json", "--grace", "1", env=env)
    elapsed, out, err = _stop(proc, signal.SIGTERM, env, lambda: _done(env) >= 1, 1)
    assert proc.returncode == 143, err
    assert elapsed < 4
    (summary,) = _summaries(out)
    assert summary["failed_attempts"] == 0 and summary["dead_lettered"] == 0


@pytest.mark.timeout(90)
def test_a_handler_past_the_grace_period_is_abandoned_unacknowledged(server: PrivateRedis, tmp_path: Path) -> None:
    r = server.client()
    r.set("stall", 1)
    env = cli_env(server.url, tmp_path)
    cfg = tmp_path / "app.tsk"
    cfg.write_text(app(n=1, vt=1))
    proc = start_cli("run", str(cfg), "--until-idle", "--json", "--grace", "1", env=env)
    elapsed, out, err = _stop(proc, signal.SIGTERM, env, lambda: r.hlen("applied") == 1, 1)
    assert proc.returncode == 143 and elapsed < 5, (elapsed, err)
    assert "abandoned" in err
    (summary,) = _summaries(out)
    assert summary["abandoned"] == 1 and summary["failed_attempts"] == 0 and summary["dead_lettered"] == 0
    assert pending(r, "tusk:stream:job", "worker") == 1  # not acknowledged: it was not handled
    assert r.xlen("tusk:dlq:worker") == 0
    r.delete("stall")
    rerun = run_cli("run", str(cfg), "--until-idle", "--no-startup", "--json", env=env, timeout=60)
    (again,) = _summaries(rerun.stdout)
    assert again["handled"] == 1 and again["dead_lettered"] == 0, rerun.stderr  # the abandoned attempt did not count
    assert pending(r, "tusk:stream:job", "worker") == 0


@pytest.mark.timeout(90)
def test_a_second_ctrl_c_exits_at_once(server: PrivateRedis, tmp_path: Path) -> None:
    r = server.client()
    r.set("stall", 1)
    env = cli_env(server.url, tmp_path)
    cfg = tmp_path / "app.tsk"
    cfg.write_text(app(n=1))
    proc = start_cli("run", str(cfg), "--grace", "60", env=env)
    wait_until(lambda: r.hlen("applied") == 1, 60)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None  # waiting for the handler, within its grace
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130 and time.monotonic() - t0 < 3
    assert "exiting now" in err
    assert r.xlen("tusk:dlq:worker") == 0


@pytest.mark.timeout(120)
def test_supervisor_restarts_a_killed_worker(server: PrivateRedis, tmp_path: Path) -> None:
    r = server.client()
    env = cli_env(server.url, tmp_path)
    cfg = tmp_path / "app.tsk"
    cfg.write_text(app(n=40, sleep="0.05"))
    proc = start_cli("run", str(cfg), "--processes", "2", "--json", env=env)
    wait_until(lambda: len(children(proc.pid)) == 2 and r.hlen("applied") >= 1, 60, "two workers at work")
    victim = children(proc.pid)[0]
    import os

    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(children(proc.pid)) == 2 and victim not in children(proc.pid), 30, "a new worker")
    wait_until(lambda: r.hlen("applied") == 40, 60, "every job handled")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert f"(pid {victim}) was killed by SIGKILL; restarting it" in err


def test_supervisor_gives_up_when_workers_keep_dying(monkeypatch: pytest.MonkeyPatch) -> None:
    from tusk_events.runtime import supervisor

    monkeypatch.setattr(supervisor, "SUPERVISOR_BACKOFF_S", 0.01)
    sup = supervisor._Supervisor([sys.executable, "-c", "raise SystemExit(3)"], 2, until_idle=False)
    t0 = time.monotonic()
    assert sup.run() == 1
    assert sup.gave_up and len(sup.deaths) == supervisor.SUPERVISOR_RESTARTS + 1
    assert time.monotonic() - t0 < 30
