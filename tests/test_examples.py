"""Every example runs offline on memory:// and checks its own result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_there_are_examples():
    assert {p.stem for p in EXAMPLES} >= {
        "publish_subscribe", "event_sourcing", "choreography", "orchestration", "dlq_redrive"
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(path, tmp_path):
    text = path.read_text()
    assert text.startswith('"""'), "an example opens with a docstring saying what it shows"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("EVENT_BUS", None)
    env.pop("EVENT_STORE", None)
    out = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
