"""The README's Python example of the bus and the store runs as written; its exit codes are the CLI's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tusk_events.defaults import EXIT_DEAD_LETTERED

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def _block_after(marker: str) -> str:
    at = README.index(marker)
    match = re.compile(r"```python\n(.*?)```", re.S).search(README, at)
    assert match is not None
    return match.group(1)


@pytest.mark.timeout(60)
def test_the_bus_and_store_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = _block_after("From Python, without a config")
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own example
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "user_registered {'user_id': 1}",
        "user_registered {'user_id': 2}",
        "user_registered {'user_id': 3}",
        "{'user_id': 1}",
    ]
    assert (tmp_path / "demo_events.db").exists()


def test_the_exit_codes_table_matches_the_cli():
    table = README[README.index("**Exit codes**"):]
    assert f"| {EXIT_DEAD_LETTERED} | `run` finished but dead-lettered" in table
    assert "| 2 | a usage error" in table and "| 1 | an error" in table
