"""``tusk-events stats`` on the real Redis: what a second process sees of a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from obs_support import APP, ROOT

from tusk_events import TSK
from tusk_events.cli import main
from tusk_events.runtime.core import Runtime

pytestmark = pytest.mark.redis


@pytest.fixture
def ran(redis_url, tmp_path, monkeypatch):
    """The main example run on the real Redis, plus one event nobody has consumed yet."""
    monkeypatch.setenv("EVENT_BUS", redis_url)
    monkeypatch.setenv("EVENT_STORE", f"sqlite:///{tmp_path / 'events.db'}")
    with Runtime([TSK.from_file(APP)]) as rt:
        rt.run_until_idle()
        rt.bus.publish("user_registered", {"user_id": 5, "name": "Edsger", "email": "e@example.com"})
    return redis_url


def test_stats_table(ran, capsys):
    assert main(["stats", str(APP)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ran
    assert out[1].split() == ["STREAM", "LENGTH", "GROUP", "CONSUMERS", "PENDING", "LAG"]
    rows = [line.split() for line in out[2:6]]
    # streams in name order; a stream's groups under it (consumers left out: they linger after a run)
    assert [r[:2] for r in rows if len(r) in (3, 6)] == [
        ["profile_created", "4"], ["user_registered", "5"], ["welcome_email_sent", "3"]]
    groups = {r[-4]: r[-2:] for r in rows if len(r) in (4, 6)}
    assert groups == {"welcome_email": ["0", "1"], "user_profile": ["0", "1"]}  # pending 0, lag 1
    assert out[6] == ""
    assert out[-2].split() == ["DLQ", "SIZE"]
    assert out[-1].split() == ["welcome_email", "1"]


def test_stats_json(ran, capsys):
    assert main(["stats", str(APP), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["streams"]["user_registered"]["length"] == 5
    group = data["streams"]["user_registered"]["groups"]["user_profile"]
    assert (group["pending"], group["lag"]) == (0, 1)
    assert data["dlq"] == {"welcome_email": 1}


def test_stats_watch_from_another_process(ran, tmp_path):
    """--watch off a terminal: plain tables one after the other (rich only draws on a terminal)."""
    env = dict(os.environ, EVENT_BUS=ran, EVENT_STORE=f"sqlite:///{tmp_path / 'events.db'}",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    done = subprocess.run(
        [sys.executable, "-m", "tusk_events", "stats", str(APP), "--watch", "0.05", "--count", "2"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("STREAM  ") == 2
    assert done.stdout.count("(every 0.05s, Ctrl-C to stop)") == 2
    assert [line.split() for line in done.stdout.splitlines()].count(["welcome_email", "1"]) == 2


def test_stats_watch_json_lines(ran, capsys):
    assert main(["stats", str(APP), "--watch", "0.01", "--count", "3", "--json"]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(docs) == 3 and all(d["dlq"] == {"welcome_email": 1} for d in docs)


def test_stats_rejects_a_non_positive_interval(ran, capsys):
    assert main(["stats", str(APP), "--watch", "0"]) == 1
    assert "--watch needs a positive number" in capsys.readouterr().err
