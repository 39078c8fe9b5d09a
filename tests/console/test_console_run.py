"""``tusk-events run --ui-port P``: the console of a running worker, stopped with it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(120)
def test_run_serves_the_console_while_it_runs(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "EVENT_STORE": f"sqlite:///{tmp_path / 'app.db'}",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env.pop("EVENT_BUS", None)
    proc = subprocess.Popen([sys.executable, "-m", "tusk_events", "run", str(ROOT / "configs" / "app.tsk"),
                             "--ui-port", str(port), "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        overview = None
        while time.monotonic() < deadline and overview is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/overview", timeout=5) as r:
                    body = json.loads(r.read())
                if sum(s["processed"] for s in body["services"]) >= 8:  # 4 users x 2 durable services
                    overview = body
            except OSError:
                pass
            time.sleep(0.2)
        assert overview is not None, "the console did not show the handled events"
        assert {s["name"] for s in overview["services"]} == {"welcome_email", "user_profile", "activity"}
        assert {s["name"]: s["dead_letters"] for s in overview["services"]}["welcome_email"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/overview", timeout=2)
