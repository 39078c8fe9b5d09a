"""Signs of life: the start line and progress line of ``run``, progress bars, one total for N processes."""

from __future__ import annotations

import argparse
import io
import json
import re
import uuid
from pathlib import Path

import pytest

from tusk_events import TSK
from tusk_events.cli import build_parser, main
from tusk_events.observe import progress
from tusk_events.observe.progress import (
    Bar,
    Progress,
    exit_code,
    parse_worker_output,
    redact,
    render_total,
    start_line,
    total_summary,
)
from tusk_events.runtime.core import Runtime

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "configs" / "app.tsk"

SLOW = """
[app]
startup_fujsen = '''
def startup():
    for i in range(40):
        publish("tick", {"n": i})
'''

[ticker]
subscribe: "tick"
group: "tickers"
handle_fujsen = '''
def handle(event):
    time.sleep(0.01)
'''

[inline]
subscribe: "tick"
delivery: "sync"
handle_fujsen = '''
def handle(event):
    pass
'''
"""

LINE = re.compile(r"^\d\d:\d\d:\d\d  [\d,]+ events/s  handled [\d,]+  retried 0  dead-lettered 0  pending [\d,]+$")


@pytest.fixture
def runtime(tmp_path):
    env = {"EVENT_BUS": "memory://p-" + uuid.uuid4().hex[:8], "EVENT_STORE": f"sqlite:///{tmp_path}/e.db"}
    with Runtime([TSK.from_string(SLOW, env=env, path=str(tmp_path / "slow.tsk"))]) as rt:
        yield rt


def test_the_start_line_says_what_runs_where(runtime):
    line = start_line(runtime)
    assert line.startswith(f"tusk-events: bus {runtime.bus_url} ($EVENT_BUS), store sqlite:///")
    assert "isolation inline; 2 services: ticker (durable, group tickers), inline (sync)" in line
    assert "\n" not in line


def test_urls_are_shown_without_secrets():
    assert redact("redis://app:s3cret@cache:6380/2") == "redis://app:***@cache:6380/2"
    assert redact("postgresql://u@db/x?sslmode=require&password=s3cret") == \
        "postgresql://u@db/x?sslmode=require&password=***"
    assert redact("memory://") == "memory://"


@pytest.mark.timeout(60)
def test_plain_progress_lines_when_not_a_terminal(runtime):
    out = io.StringIO()
    with Progress(runtime, interval=0.05, stream=out, tty=False):
        runtime.run_until_idle()
    lines = out.getvalue().splitlines()
    assert lines[0] == start_line(runtime)
    assert len(lines) >= 3, lines  # 40 events of >= 10 ms each: several ticks
    assert all(LINE.match(ln) for ln in lines[1:]), lines
    assert "\r" not in out.getvalue()
    handled = [int(re.search(r"handled ([\d,]+)", ln).group(1).replace(",", "")) for ln in lines[1:]]
    assert handled == sorted(handled) and handled[-1] <= 80


@pytest.mark.timeout(60)
def test_a_terminal_gets_one_line_rewritten_in_place_and_cleared(runtime, monkeypatch):
    monkeypatch.setattr(progress, "_rich_live", lambda stream: None)  # the plain-terminal path
    out = io.StringIO()
    with Progress(runtime, interval=0.05, stream=out, tty=True) as p:
        runtime.run_until_idle()
    text = out.getvalue()
    first, rest = text.split("\n", 1)
    assert first == start_line(runtime)
    assert "\n" not in rest and rest.count("\r") >= p.lines >= 2
    assert rest.endswith("\r\x1b[K")  # the summary printed next starts on a clean line


@pytest.mark.timeout(60)
def test_rich_live_line_on_a_terminal_is_transient(runtime):
    pytest.importorskip("rich")
    out = io.StringIO()
    with Progress(runtime, interval=0.05, stream=out, tty=True) as p:
        runtime.run_until_idle()
    assert p.lines >= 2
    assert "events/s" in out.getvalue()


@pytest.mark.timeout(60)
def test_run_prints_the_start_line_on_stderr_unless_quiet(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EVENT_BUS", "memory://cli-" + uuid.uuid4().hex[:8])
    monkeypatch.setenv("EVENT_STORE", f"sqlite:///{tmp_path}/e.db")
    assert main(["run", str(APP), "--until-idle", "--json"]) == 3  # one event is dead-lettered
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])["dead_lettered"] == 1  # stdout stays machine-readable
    assert err.splitlines()[0].startswith("tusk-events: bus memory://cli-")
    assert "welcome_email (durable, group welcome_email)" in err and "activity (sync)" in err
    assert main(["run", str(APP), "--until-idle", "--quiet", "--no-startup"]) == 0  # nothing dead-lettered
    out, err = capsys.readouterr()
    assert "tusk-events: bus" not in err and out.startswith("published 0, handled 0")


def test_bars_draw_on_a_terminal_and_clean_up():
    out = io.StringIO()
    bar = Bar(1000, "replaying", stream=out, tty=True)
    for _ in range(1000):
        bar.advance()
    bar.done()
    text = out.getvalue()
    assert "replaying [##############################] 1,000/1,000" in text
    assert text.endswith("\r\x1b[K") and "\n" not in text
    quiet = io.StringIO()
    piped = Bar(1000, "replaying", stream=quiet, tty=False)
    piped.advance(1000)
    piped.done()
    assert quiet.getvalue() == ""


def test_workers_add_up_to_one_summary():
    parts = [
        parse_worker_output('log line\n{"published": 0, "handled": 9, "duplicates_skipped": 0, "failed_attempts": 3, '
                            '"retried": 2, "dead_lettered": 1, "latency_ms_p50": 0.5, "latency_ms_p99": 2.0}\n'),
        parse_worker_output('{"published": 11, "handled": 5, "duplicates_skipped": 1, "failed_attempts": 0, '
                            '"retried": 0, "dead_lettered": 0, "latency_ms_p50": 0.7, "latency_ms_p99": 1.0}'),
    ]
    total = total_summary([p for p in parts if p])
    assert (total["published"], total["handled"], total["retried"], total["dead_lettered"]) == (11, 14, 2, 1)
    assert (total["latency_ms_p50"], total["latency_ms_p99"], total["workers"]) == (0.7, 2.0, 2)
    assert render_total(total).splitlines()[0] == (
        "published 11, handled 14, retried 2, dead-lettered 1, duplicates skipped 1 (total of 2 worker processes)")
    assert parse_worker_output("no json here") is None
    assert exit_code([0, 0]) == 0 and exit_code([0, 3]) == 3 and exit_code([3, 1]) == 1 and exit_code([143, 3]) == 143


def test_every_option_has_help_text():
    parser = build_parser()
    missing = []
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in [("", parser), *subparsers.choices.items()]:
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_version_and_exit_codes_in_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert re.match(r"tusk-events \d+\.\d+", capsys.readouterr().out)
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "3 run finished but\ndead-lettered events" in capsys.readouterr().out


def test_docs_default_to_json(capsys, monkeypatch):
    monkeypatch.delenv("EVENT_BUS", raising=False)
    assert main(["docs", str(APP)]) == 0
    assert json.loads(capsys.readouterr().out)["asyncapi"].startswith("3.")
