"""A private local Redis Cluster (3 masters, 1 replica each) for the cluster tests and benchmarks.

``PrivateCluster.ensure()`` reuses a cluster already answering on the ports, else starts one
(no persistence, in a temporary directory) and remembers the PIDs it started: ``stop()`` ends
only those, so a cluster someone else runs on the ports is left alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

_FIRST_PORT = int(os.environ.get("TUSK_TEST_CLUSTER_PORT", "7101"))
CLUSTER_PORTS = tuple(range(_FIRST_PORT, _FIRST_PORT + 6))
"""Three masters and their replicas (7101-7106, or six ports from ``TUSK_TEST_CLUSTER_PORT``);
never 6379 (the shared server)."""


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
        try:
            self.wait_ok(max(1.0, end - time.monotonic()))
        except RuntimeError:
            self.stop()
            raise
        return True

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)

    def restart(self, port: int) -> None:
        """Kill the node on ``port`` and start it again in its directory (its ``nodes.conf``: same
        node id, same slots; no persistence, so it comes back without data)."""
        self.kill(port)
        self.start_node(port)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node of ours answers ``cluster_state:ok`` and every replica is synced."""
        end = time.monotonic() + timeout
        while not all(_cluster_ok(p) and _synced(p) for p in self.ports):
            if time.monotonic() > end:
                raise RuntimeError("the private Redis Cluster did not come back to cluster_state:ok")
            time.sleep(0.1)

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def cmd(port: int, *args: Any) -> Any:
    import redis

    client = redis.Redis(port=port, socket_timeout=10, decode_responses=True)
    try:
        return client.execute_command(*args)
    finally:
        client.close()


def node_id(port: int) -> str:
    return str(cmd(port, "CLUSTER", "MYID"))


def master_port_of(any_port: int, key: bytes) -> int:
    """The port of the master serving ``key``'s slot, as node ``any_port`` sees it."""
    from redis.crc import key_slot

    slot = key_slot(key)
    for start, end, master, *_ in cmd(any_port, "CLUSTER", "SLOTS"):
        if start <= slot <= end:
            return int(master[1])
    raise RuntimeError(f"no node serves slot {slot}")


def master_ports(any_port: int) -> list[int]:
    return sorted({int(master[1]) for _, _, master, *_ in cmd(any_port, "CLUSTER", "SLOTS")})


def replica_ports_of(master_port: int) -> list[int]:
    lines = cmd(master_port, "CLUSTER", "REPLICAS", node_id(master_port))
    return [int(line.split()[1].split("@")[0].rsplit(":", 1)[1]) for line in lines]


def migrate_slot(slot: int, src: int, dst: int, masters: list[int], batch: int = 50, pause_s: float = 0.0) -> int:
    """Move ``slot`` from the master on ``src`` to the one on ``dst`` as ``redis-cli --cluster
    reshard`` does (IMPORTING/MIGRATING, MIGRATE in batches, SETSLOT NODE on every master);
    returns the number of keys moved."""
    src_id, dst_id = node_id(src), node_id(dst)
    cmd(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    cmd(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    moved = 0
    while True:
        keys = cmd(src, "CLUSTER", "GETKEYSINSLOT", slot, batch)
        if not keys:
            break
        cmd(src, "MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)
        moved += len(keys)
        time.sleep(pause_s)
    cmd(dst, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    cmd(src, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    for port in masters:
        if port not in (src, dst):
            cmd(port, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    return moved
