"""Private Redis and PostgreSQL servers for fault tests: started, killed and restarted by PID.

Never the shared servers: each test gets its own port (Redis 7410-7419, PostgreSQL 7420-7425,
the several-hosts test 7540-7541) and data directory, and stops only the processes it started.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import IN_CI


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is not installed; under CI=true fault tests must run")
    pytest.skip(f"{what} is not installed")


def _wait_port(port: int, up: bool, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not go {'up' if up else 'down'} in {timeout} s")


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return False
    except OSError:
        return True


NO_PERSISTENCE = ("--save", "", "--appendonly", "no")
AOF_EVERYSEC = ("--save", "", "--appendonly", "yes", "--appendfsync", "everysec")
RDB_ONLY = ("--save", "3600 1", "--appendonly", "no")
"""Snapshots only when told (BGSAVE), so a test knows which writes a crash loses."""


class PrivateRedis:
    """redis-server on host:port; by default without persistence (a cache-configured Redis).

    ``persistence``: redis-server options such as :data:`AOF_EVERYSEC`; the data directory is
    kept across :meth:`restart`, so the server reloads what it persisted. ``host`` other than
    127.0.0.1 (an address network namespaces reach) turns protected mode off: it then accepts
    clients from other addresses.
    """

    def __init__(self, port: int, workdir: Path, persistence: tuple[str, ...] = NO_PERSISTENCE,
                 host: str = "127.0.0.1") -> None:
        if shutil.which("redis-server") is None:
            _missing("redis-server")
        if not _port_free(port, host):
            pytest.fail(f"port {port} is taken: a private Redis of an earlier run still up?")
        self.port = port
        self.host = host
        self.url = f"redis://{host}:{port}/0"
        self.workdir = workdir
        self.persistence = persistence
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", self.host, *self.persistence,
             "--dir", str(self.workdir),
             "--protected-mode", "yes" if self.host == "127.0.0.1" else "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, up=True, host=self.host)
        import redis

        client = redis.Redis(host=self.host, port=self.port)
        try:  # up once the persisted data is loaded
            end = time.monotonic() + 30
            while True:
                try:
                    if client.ping():
                        return
                except redis.BusyLoadingError:
                    if time.monotonic() > end:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def snapshot(self) -> None:
        """BGSAVE and wait until it is on disk (what a crash now would come back to)."""
        import redis

        client = redis.Redis(host=self.host, port=self.port)
        try:
            client.bgsave()  # the fork has happened when it replies
            end = time.monotonic() + 30
            while client.info("persistence")["rdb_bgsave_in_progress"]:
                if time.monotonic() > end:
                    raise TimeoutError("BGSAVE did not finish in 30 s")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: everything in memory is gone."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None
        _wait_port(self.port, up=False, host=self.host)

    def restart(self) -> None:
        self.kill()
        self.start()


class PrivatePostgres:
    """A throw-away cluster (initdb) run as the ``postgres`` OS user on host:port.

    ``clients`` (a CIDR such as 10.0.0.0/24) are let in without a password, like 127.0.0.1.
    """

    def __init__(self, port: int, workdir: Path, host: str = "127.0.0.1", clients: str | None = None) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
        if not bins:
            _missing("PostgreSQL server binaries")
        self.bin = Path(bins[-1]).parent
        if not _port_free(port, host):
            pytest.fail(f"port {port} is taken: a private PostgreSQL of an earlier run still up?")
        self.port = port
        self.host = host
        # its own directory under /tmp: pytest's tmp_path is not reachable for another user
        self.dir = Path(tempfile.mkdtemp(prefix="tusk-pg-"))
        self.data = self.dir / "data"
        self.url = f"postgresql://postgres@{host}:{port}/postgres"
        self.proc: subprocess.Popen[bytes] | None = None
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
             "--auth=trust", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, timeout=120, preexec_fn=self._drop,
        )
        if clients is not None:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {clients} trust\n")

    def _drop(self) -> None:
        """In the child: become the postgres user (the server refuses to run as root)."""
        if self._as_postgres:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-k", str(self.dir), "-c", f"listen_addresses={self.host}", "-c", "fsync=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=self._drop,
        )
        _wait_port(self.port, up=True, host=self.host)
        import psycopg

        end = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)

    def stop(self, sig: int = signal.SIGINT) -> None:
        """SIGINT: fast shutdown (clients are disconnected); SIGKILL kills the postmaster only."""
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
            self.proc = None
        _wait_port(self.port, up=False, host=self.host)

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        """Stop the server and delete its cluster."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
