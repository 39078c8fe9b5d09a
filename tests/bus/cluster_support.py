"""A private local Redis Cluster (3 masters, 1 replica each) for the cluster tests and benchmarks.

``PrivateCluster.ensure()`` reuses a cluster already answering on the ports, else starts one
(no persistence, in a temporary directory) and remembers the PIDs it started: ``stop()`` ends
only those, so a cluster someone else runs on the ports is left alone.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

CLUSTER_PORTS = (7101, 7102, 7103, 7104, 7105, 7106)
"""Three masters and their replicas; never 6379 (the shared server)."""


def _cluster_ok(port: int) -> bool:
    import redis

    client = redis.Redis(port=port, socket_connect_timeout=0.3, socket_timeout=1)
    try:
        info = client.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text
    except Exception:  # noqa: BLE001 - down, or not a cluster node
        return False
    finally:
        client.close()


def _synced(port: int) -> bool:
    """A replica has its master's data (a master is synced by definition)."""
    import redis

    client = redis.Redis(port=port, socket_connect_timeout=0.3, socket_timeout=1)
    try:
        info = client.info("replication")
        return info.get("role") == "master" or info.get("master_link_status") == "up"
    except Exception:  # noqa: BLE001
        return False
    finally:
        client.close()


class PrivateCluster:
    def __init__(self, ports: tuple[int, ...] = CLUSTER_PORTS) -> None:
        self.ports = ports
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.workdir: Path | None = None

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]},127.0.0.1:{self.ports[1]}"

    @property
    def node_url(self) -> str:
        """A plain ``redis://`` URL of one node: the bus detects the cluster behind it."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start_node(self, port: int) -> None:
        assert self.workdir is not None
        d = self.workdir / str(port)
        d.mkdir(exist_ok=True)
        self.procs[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", str(d / "nodes.conf"), "--cluster-node-timeout", "1000",
             "--cluster-replica-validity-factor", "0",
             "--save", "", "--appendonly", "no", "--dir", str(d)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def ensure(self, timeout: float = 30.0) -> bool:
        """Make the cluster answer; True when this call started it."""
        if _cluster_ok(self.ports[0]):
            return False
        self.workdir = Path(tempfile.mkdtemp(prefix="tusk-cluster-"))
        for port in self.ports:
            self.start_node(port)
        import redis

        end = time.monotonic() + timeout
        for port in self.ports:
            while True:
                try:
                    redis.Redis(port=port, socket_connect_timeout=0.2).ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > end:
                        self.stop()
                        raise RuntimeError(f"redis-server on port {port} did not start") from None
                    time.sleep(0.05)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout,
        )
        while not all(_cluster_ok(p) and _synced(p) for p in self.ports):
            if time.monotonic() > end:
                self.stop()
                raise RuntimeError("the private Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        return True

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
