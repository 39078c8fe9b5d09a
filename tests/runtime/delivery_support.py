"""Helpers for the delivery fault tests: a private redis-server on ports 7400-7408, the CLI in a subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
PORTS = range(7400, 7409)
"""Private servers of these tests; 7409 is left for benchmarks."""
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def wait_until(pred: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server does: TIME_WAIT is free
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class PrivateRedis:
    """A redis-server without persistence on one of our ports: restart it to lose its data."""

    def __init__(self, workdir: Path) -> None:
        if shutil.which("redis-server") is None:
            if IN_CI:
                pytest.fail("redis-server is not on PATH; under CI=true integration tests must run")
            pytest.skip("redis-server is not on PATH")
        free = [p for p in PORTS if _port_free(p)]
        if not free:
            pytest.fail(f"no free port in {PORTS.start}-{PORTS.stop - 1} for a private redis-server")
        self.port = free[0]
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def start(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(self._up, 5, f"redis-server on port {self.port}")
        return self

    def _up(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.2).ping())
        except redis.ConnectionError:
            assert self.proc is not None and self.proc.poll() is None, "redis-server exited"
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None


def cli_env(bus: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(EVENT_BUS=bus, EVENT_STORE=f"sqlite:///{tmp_path / 'events.db'}", **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def start_cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tusk_events", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tusk_events", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


def pending(client: redis.Redis, stream: str, group: str) -> int:
    try:
        return int(client.xpending(stream, group)["pending"])
    except redis.ResponseError:
        return 0
