"""The dialect of the guides and the other SDKs, and the two bugs the corpus showed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tusk_events import TSK, SandboxViolation, TskSyntaxError
from tusk_events.lang import load

ROOT = Path(__file__).resolve().parents[2]


def data(text: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return load(text, env=env or {}).data


@pytest.mark.parametrize(("text", "expected"), [
    # ';' terminators
    ('a: 1;\nb: "x";  # note\n', {"a": 1, "b": "x"}),
    # '+' for strings and numbers, arithmetic with precedence
    ('$base: "/api"\nurl: $base + "/v" + 2\n', {"base": "/api", "url": "/api/v2"}),
    ("n: 1 + 2 * 3\nm: (1 + 2) * 3\n", {"n": 7, "m": 9}),
    # dotted keys nest; quoted ones do not
    ('a.b.c: 1\na.b.d: 2\n"x.y": 3\n', {"a": {"b": {"c": 1, "d": 2}}, "x.y": 3}),
    ("[s]\nlimits.cpu: 2\n", {"s": {"limits": {"cpu": 2}}}),
    # ${a.b.c} and $a.b paths, references to plain keys
    ('[db]\nhost: "h"\nport: 5432\n[app]\nurl: "pg://${db.host}:${db.port}"\np: $db.port\n',
     {"db": {"host": "h", "port": 5432}, "app": {"url": "pg://h:5432", "p": 5432}}),
    ('name: "svc"\nlabel: "${name}-1"\n', {"name": "svc", "label": "svc-1"}),
    ("[s]\nlimit: 10\ndouble: limit * 2\n", {"s": {"limit": 10, "double": 20}}),
    # a bare word in an expression reads a key of the block being read
    ("scaling {\n  load: 90\n  n: load > 80 ? 10 : 5\n}\n", {"scaling": {"load": 90, "n": 10}}),
    # YAML-style indented nesting and '- item' lists
    ("server:\n  host: x\n  ports:\n    - 80\n    - 443  # tls\ndone: true\n",
     {"server": {"host": "x", "ports": [80, 443]}, "done": True}),
    ("features:\n  - auth\n  - \"log\"\n", {"features": ["auth", "log"]}),
    # '#!' first line
    ("#!/usr/bin/env tusk\na: 1\n", {"a": 1}),
    # a JSON document
    ('{"server": {"port": 8080}}', {"server": {"port": 8080}}),
    # guides' function-call forms
    ('debug: if(env("MODE", "dev") == "dev", true, false)\n', {"debug": True}),
    # /* */ comments starting a line; items split by line breaks inside expressions
    ("a: 1\n/* a\n   comment */\nb: 2\n", {"a": 1, "b": 2}),
    ('db: if(true, {\n  host: "h"  # primary\n  pool: [1\n 2]\n}, null)\n',
     {"db": {"host": "h", "pool": [1, 2]}}),
    # [child:parent] starts with the parent's keys, which the child may override
    ("[base]\nt: 30\nr: 3\n[api:base]\nt: 60\n[api.users:api]\ne: 1\n",
     {"base": {"t": 30, "r": 3},
      "api": {"t": 60, "r": 3, "users": {"t": 60, "r": 3, "e": 1}}}),
])
def test_dialect(text: str, expected: dict[str, Any]) -> None:
    assert data(text) == expected


def test_inheriting_from_a_missing_section_is_an_error() -> None:
    with pytest.raises(TskSyntaxError, match=r"no section \[nope\]") as info:
        load("[api:nope]\nx: 1\n", env={})
    assert info.value.line == 1


def test_yaml_nesting_keeps_lines_for_errors() -> None:
    with pytest.raises(TskSyntaxError) as info:
        load("server:\n  host: x\n  port: 80 80\n", env={})
    assert (info.value.line, info.value.column) == (3, 12)


# --------------------------------------------------------------------------- the two bugs


def test_a_global_and_a_plain_key_of_the_same_name_coexist() -> None:
    text = ('$app_name: "Global"\napp_name: "Plain"\ntitle: "${app_name}"\n'
            '$server: "g"\n[server]\nport: 1\nfrom_global: $server\n')
    assert data(text) == {"app_name": "Plain", "title": "Global",
                          "server": {"port": 1, "from_global": "g"}}


def test_a_plain_key_before_the_global_keeps_its_place() -> None:
    assert data('env: "plain"\n$env: "global"\nx: $env\n') == {"env": "plain", "x": "global"}


def test_a_global_set_twice_is_still_an_error() -> None:
    with pytest.raises(TskSyntaxError, match="duplicate key 'a'"):
        load("$a: 1\n$a: 2\n", env={})


@pytest.mark.parametrize(("text", "line", "column"), [
    ('server {\n    port: env("PORT" 8000)\n}\n', 2, 22),
    ("server {\n    host: a b\n}\n", 2, 13),
    ("cache >\n  ttl: 1 2\n<\n", 2, 10),
    ("limits: {\n  cpu: 1,\n  mem: [1 2]\n}\n", 3, 11),
])
def test_errors_inside_blocks_point_at_the_offending_token(text: str, line: int,
                                                           column: int) -> None:
    with pytest.raises(TskSyntaxError) as info:
        load(text, env={})
    assert (info.value.line, info.value.column) == (line, column), info.value
    assert "never closed" not in info.value.reason


def test_a_block_left_open_is_still_reported_where_it_opens() -> None:
    with pytest.raises(TskSyntaxError) as info:
        load("server {\n    host: a\n[next]\n", env={})
    assert (info.value.line, info.value.reason) == (1, "'{' block 'server' is never closed")


# --------------------------------------------------------------------------- refused fujsen

REFUSED = """[ok]
add_fujsen = '''
def add(a, b):
    return a + b
'''

[bad]
peek_fujsen = '''
def peek():
    return open("/etc/passwd").read()
'''
js_fujsen = '''
function js(x) { return x * 2; }
'''
"""


def test_a_refused_fujsen_does_not_refuse_the_document() -> None:
    cfg = TSK.from_string(REFUSED, env={}, path="app.tsk")
    assert cfg.execute_fujsen("ok", "add", 2, 3) == 5
    assert len(cfg.refused_fujsen) == 2
    with pytest.raises(SandboxViolation) as info:
        cfg.execute_fujsen("bad", "peek")
    assert "app.tsk:10" in str(info.value)
    with pytest.raises(SandboxViolation, match="JavaScript fujsen are not supported") as info:
        cfg.execute_fujsen("bad", "js")
    assert "app.tsk:13" in str(info.value)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tusk_events", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


@pytest.mark.timeout(300)
def test_check_and_run_report_every_refused_fujsen(tmp_path: Path) -> None:
    (tmp_path / "app.tsk").write_text(REFUSED, encoding="utf-8")
    for command in (["check", "app.tsk"], ["run", "app.tsk", "--until-idle"]):
        out = _cli(*command, cwd=tmp_path)
        assert out.returncode != 0, out
        assert "peek_fujsen" in out.stderr and "js_fujsen" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


@pytest.mark.timeout(300)
def test_check_warns_on_inert_operators_and_strict_fails(tmp_path: Path) -> None:
    (tmp_path / "app.tsk").write_text('[s]\na: 1\nb: @request("GET", "/x")\n', encoding="utf-8")
    out = _cli("check", "app.tsk", cwd=tmp_path)
    assert out.returncode == 0, out
    assert "app.tsk:3:4: operator @request is not supported" in out.stderr
    strict = _cli("check", "--strict", "app.tsk", cwd=tmp_path)
    assert strict.returncode == 1
    assert "app.tsk:3:4: operator @request" in strict.stderr


# --------------------------------------------------------------------------- from tsk import TSK


def test_the_docs_python_runs_verbatim() -> None:
    code = (
        "from tsk import TSK\n"
        "tsk = TSK.from_string('''\n$app_name: \"TestApp\"\n[test]\n"
        "hello_fujsen = \\'\\'\\'\ndef hello(name):\n    return f\"Hello, {name}!\"\n\\'\\'\\'\n''')\n"
        "print(tsk.execute_fujsen('test', 'hello', 'World'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "Hello, World!", out.stderr
    import tsk
    import tusk_events

    assert tsk.TSK is tusk_events.TSK and tsk.TuskError is tusk_events.TuskError
