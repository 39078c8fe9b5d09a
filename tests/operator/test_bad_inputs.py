"""Every subcommand against bad input: one clear line on stderr and the right exit code, never a traceback.

Most rows call ``main()`` in this process (an escaping exception fails the row just as a
traceback would); the rows about the process itself (closed stdout, a reader that leaves,
``TUSK_DEBUG``) run ``python -m tusk_events``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tusk_events.cli import main

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "configs" / "app.tsk"
CLOSED_REDIS = "redis://127.0.0.1:7451/0"
"""A private port nothing listens on: an unreachable Redis."""
CLOSED_POSTGRES = "postgresql://postgres@127.0.0.1:7452/test?connect_timeout=2"
"""The same for PostgreSQL."""

SERVICE = """
[svc]
subscribe: "x"
handle_fujsen = '''
def handle(event):
    pass
'''
"""


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The bad inputs, by name; the environment points at a private bus and store."""
    monkeypatch.setenv("EVENT_BUS", f"memory://bad-{os.getpid()}")
    monkeypatch.setenv("EVENT_STORE", f"sqlite:///{tmp_path / 'events.db'}")
    monkeypatch.delenv("TUSK_DEBUG", raising=False)
    (tmp_path / "binary.tsk").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)))
    (tmp_path / "latin1.tsk").write_bytes('[app]\nname: "Café"\n'.encode("latin-1"))
    (tmp_path / "empty.tsk").write_text("")
    (tmp_path / "syntax.tsk").write_text("[app\nname: 1\n")
    (tmp_path / "dir.tsk").mkdir()
    (tmp_path / "noredis.tsk").write_text(f'[app]\nevent_bus: "{CLOSED_REDIS}"\n' + SERVICE)
    (tmp_path / "nopg.tsk").write_text(f'[app]\nevent_store: "{CLOSED_POSTGRES}"\n' + SERVICE)
    names = ["binary", "latin1", "empty", "syntax", "dir", "noredis", "nopg"]
    out = {n: str(tmp_path / f"{n}.tsk") for n in names}
    out["missing"] = str(tmp_path / "missing.tsk")
    return out


def _commands(f: str) -> dict[str, list[str]]:
    """Every subcommand that reads a config, applied to ``f``."""
    return {
        "check": ["check", f],
        "show": ["show", f],
        "exec": ["exec", f, "app", "startup"],
        "run": ["run", f, "--until-idle", "--quiet"],
        "dlq": ["dlq", "list", f],
        "replay": ["replay", f],
        "store": ["store", "stats", f],
        "stats": ["stats", f],
        "trace": ["trace", f, "0" * 32],
        "graph": ["graph", f],
        "docs": ["docs", f],
    }


UNREADABLE = ["binary", "latin1", "syntax", "dir", "missing"]
"""Inputs no command can load: every one of them is rc 1 for every command."""

ROWS = [(kind, command) for kind in UNREADABLE for command in _commands("F")]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return rc, captured.out, captured.err


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("kind", "command"), ROWS, ids=[f"{c}-{k}" for k, c in ROWS])
def test_unreadable_configs_are_one_line_errors(kind, command, files, capsys):
    path = files[kind]
    rc, _, err = _run(_commands(path)[command], capsys)
    assert rc == 1
    lines = [ln for ln in err.splitlines() if not ln.startswith("note: ")]
    assert lines, "an error must say what is wrong"
    expected = {"binary": "a binary file", "latin1": ":2:11: not UTF-8 text (byte 0xe9)",
                "syntax": "syntax.tsk:1:", "dir": "Is a directory", "missing": "No such file"}[kind]
    assert expected in lines[0]
    if kind != "syntax":  # a syntax error shows the line and a caret under it
        assert len(lines) == 1, err


def test_the_empty_document(files, capsys):
    assert _run(["check", files["empty"]], capsys)[2].endswith("empty document: no sections and no keys [empty]\n")
    rc, _, err = _run(["check", "--strict", files["empty"]], capsys)
    assert rc == 1 and "[empty]" in err
    assert _run(["show", files["empty"]], capsys)[0] == 0
    rc, _, err = _run(["graph", files["empty"]], capsys)
    assert rc == 1 and err.startswith("nothing to draw")


UNREACHABLE_REDIS = [
    ["run", "{f}", "--until-idle", "--quiet"],
    ["run", "{f}", "--quiet"],
    ["dlq", "list", "{f}"],
    ["dlq", "show", "{f}"],
    ["dlq", "redrive", "{f}"],
    ["dlq", "purge", "{f}", "--id", "1-0"],
    ["stats", "{f}"],
    ["replay", "{f}", "--to-bus"],
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv", UNREACHABLE_REDIS, ids=lambda a: "-".join(a[:2]))
def test_an_unreachable_redis_is_one_line(argv, files, capsys):
    rc, _, err = _run([a.format(f=files["noredis"]) for a in argv], capsys)
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "7451" in lines[0] and "onnection refused" in lines[0]


UNREACHABLE_POSTGRES = [
    ["run", "{f}", "--until-idle", "--quiet"],
    ["replay", "{f}"],
    ["store", "stats", "{f}"],
    ["trace", "{f}", "0" * 32],
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv", UNREACHABLE_POSTGRES, ids=lambda a: "-".join(a[:2]))
def test_an_unreachable_postgres_is_one_line(argv, files, capsys):
    pytest.importorskip("psycopg")
    rc, _, err = _run([a.format(f=files["nopg"]) for a in argv], capsys)
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cannot open the PostgreSQL store") and "7452" in lines[0]


BAD_IDS = [
    (["dlq", "show", str(APP), "--id", "bogus"], 1, "no dead letter with id bogus in any service"),
    (["dlq", "purge", str(APP), "--id", "bogus"], 1, "no dead letter with id bogus"),
    (["dlq", "redrive", str(APP), "--id", "bogus"], 1, "no dead letter with id bogus"),
    (["dlq", "list", str(APP), "--service", "nosuch"], 1, "no service [nosuch]"),
    (["dlq", "purge", str(APP), "--json"], 2, "dlq purge has no --json output"),
    (["exec", str(APP), "nosuch", "x"], 1, "no section [nosuch]"),
    (["exec", str(APP), "app", "nosuch"], 1, "no fujsen 'nosuch' in [app]"),
    (["exec", str(APP), "app", "startup", "{bad"], 2, "argument is not JSON"),
    (["run", str(APP), "--until-idle", "--progress", "0"], 2, "--progress needs a positive number"),
    (["run", str(APP), "--until-idle", "--processes", "2"], 1, "--processes needs a bus shared"),
    (["stats", str(APP), "--watch", "-1"], 1, "--watch needs a positive number"),
    (["docs", str(APP), "-o", "/nonexistent-dir/x.json"], 1, "No such file or directory"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("argv", "code", "message"), BAD_IDS, ids=lambda v: str(v)[:40])
def test_bad_ids_and_options(argv, code, message, files, capsys):
    rc, _, err = _run(argv, capsys)
    assert rc == code
    lines = [ln for ln in err.splitlines() if not ln.startswith("note: ")]
    assert len(lines) == 1 and message in lines[0], err


def test_a_usage_error_is_rc_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["dlq", "frobnicate", str(APP)])
    assert exit_.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_debug_lets_the_traceback_through(files):
    with pytest.raises(Exception, match="binary file"):
        main(["show", files["binary"], "--debug"])
    with pytest.raises(Exception, match="binary file"):
        main(["--debug", "show", files["binary"]])


# --- the process itself --------------------------------------------------------------------------


def _cli(*argv: str, **kwargs) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **kwargs.pop("env", {}))
    env.pop("TUSK_DEBUG", None)
    env.update(kwargs.pop("extra_env", {}))
    return subprocess.run([sys.executable, "-m", "tusk_events", *argv], capture_output=True, text=True,
                          env=env, timeout=60, **kwargs)


@pytest.mark.timeout(90)
def test_tusk_debug_shows_the_traceback_and_plain_runs_do_not(files):
    plain = _cli("show", files["latin1"])
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    debug = _cli("show", files["latin1"], extra_env={"TUSK_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "not UTF-8 text" in debug.stderr


@pytest.mark.timeout(90)
def test_closed_stdout_and_a_reader_that_leaves(tmp_path):
    closed = subprocess.run(f'"{sys.executable}" -m tusk_events show "{APP}" >&-', shell=True,
                            capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert closed.returncode == 1 and "Traceback" not in closed.stderr
    assert "standard output is closed" in closed.stderr
    # `show --json | head -c 0`: the reader is gone before the first write
    proc = subprocess.Popen([sys.executable, "-m", "tusk_events", "show", "--json", str(APP)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in err and "Exception ignored" not in err, err


def test_the_table_has_at_least_forty_rows():
    assert len(ROWS) + len(UNREACHABLE_REDIS) + len(UNREACHABLE_POSTGRES) + len(BAD_IDS) >= 40
