"""Several "hosts" on one machine: network namespaces on a bridge, each with its own link.

``Hosts(n)`` makes a bridge ``tvhbr0`` (10.231.77.1/24, the address the servers listen on) and
namespaces ``tuskh-1``..``tuskh-n``, each joined to the bridge by a veth pair (``tvhNa`` on the
bridge, ``tvhNb`` inside, 10.231.77.(10+N)). :meth:`Hosts.cut` sets a host's bridge-side link
down (its cable unplugged: packets are dropped, no error reaches its processes) and
:meth:`Hosts.restore` plugs it back. :meth:`Hosts.close` stops every process started
through :meth:`Hosts.spawn` (and their children) by PID, then removes the namespaces, links
and bridge, whatever state they are in.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

GATEWAY = "10.231.77.1"
"""The root namespace's address on the bridge: the servers listen there."""

BRIDGE = "tvhbr0"
NETNS_PREFIX = "tuskh-"


def netns_unavailable() -> str | None:
    """Why namespaces cannot be made here (not root, no ``ip``), or None."""
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"{NETNS_PREFIX}probe"  # root without the capability (a container) cannot make one
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=30)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=30)
    if made.returncode != 0:
        return f"ip netns is unavailable: {made.stderr.strip()}"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), children first."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out.extend(kids)
        todo.extend(kids)
    return out


class Hosts:
    """``n`` network namespaces that reach :data:`GATEWAY` over a link each; see the module doc."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen[bytes]] = []
        self._remove()  # what a killed earlier run may have left
        try:
            _ip("link", "add", BRIDGE, "type", "bridge")
            _ip("addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
            _ip("link", "set", BRIDGE, "up")
            for i in range(1, n + 1):
                ns, outside, inside = self.netns(i), f"tvh{i}a", f"tvh{i}b"
                _ip("netns", "add", ns)
                _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
                _ip("link", "set", outside, "master", BRIDGE)
                _ip("link", "set", outside, "up")
                _ip("link", "set", inside, "netns", ns)
                _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", inside)
                _ip("-n", ns, "link", "set", inside, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self._remove()
            raise

    @staticmethod
    def netns(i: int) -> str:
        return f"{NETNS_PREFIX}{i}"

    @staticmethod
    def address(i: int) -> str:
        return f"10.231.77.{10 + i}"

    def cut(self, i: int) -> None:
        """Unplug host ``i``: its traffic is dropped silently (no reset, no error)."""
        _ip("link", "set", f"tvh{i}a", "down")

    def restore(self, i: int) -> None:
        _ip("link", "set", f"tvh{i}a", "up")

    def spawn(self, i: int, argv: list[str], *, env: dict[str, str], out: IO[bytes] | None = None,
              cwd: str | Path | None = None) -> subprocess.Popen[bytes]:
        """Run ``argv`` inside host ``i``, stdout and stderr to ``out`` (``ip netns exec`` execs
        the command: the PID is its own)."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns(i), *argv], env=env, cwd=cwd,
                                stdout=out, stderr=out)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` to it and what it started; its exit code."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            for pid in [*descendants(proc.pid), proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(10)
        return proc.returncode

    def close(self) -> None:
        for proc in self.procs:
            # workers run in sessions of their own: find them before their supervisor is gone
            orphans = descendants(proc.pid) if proc.poll() is None else []
            self.stop(proc, timeout=15.0)
            deadline = time.monotonic() + 10
            for pid in orphans:
                while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                    time.sleep(0.05)
                if Path(f"/proc/{pid}").exists():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        self.procs.clear()
        self._remove()

    def _remove(self) -> None:
        for i in range(1, self.n + 1):
            _ip("link", "del", f"tvh{i}a", check=False)  # takes its peer along
            _ip("netns", "del", self.netns(i), check=False)
        _ip("link", "del", BRIDGE, check=False)

    def __enter__(self) -> Hosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
