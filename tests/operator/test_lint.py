"""``check`` warns about mistakes that parse; ``--strict`` (check and run) fails on them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tusk_events import TSK
from tusk_events.cli import main
from tusk_events.observe.lint import Finding, did_you_mean, lint

ROOT = Path(__file__).resolve().parents[2]

PUBLISHER = """
[app]
startup_fujsen = '''
def startup():
    publish("user_registered", {"user_id": 1})
'''
"""

TYPO = """
[welcome]
subscribe: "user_registerd"
handle_fujsen = '''
def handle(event):
    pass
'''
"""


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _lint(*paths: str, env: dict[str, str] | None = None) -> list[Finding]:
    return lint([TSK.from_file(p, env=env or {}) for p in paths])


def test_a_misspelled_subscription_is_found_across_files_with_a_suggestion(tmp_path):
    a = _write(tmp_path, "a.tsk", PUBLISHER)
    b = _write(tmp_path, "b.tsk", TYPO)
    found = {f.code: f for f in _lint(a, b)}
    unpublished = found["unpublished"]
    assert (unpublished.path, unpublished.line) == (b, 3)
    assert "'user_registerd', which nothing in these files publishes (did you mean 'user_registered'?)" in str(
        unpublished)
    unhandled = found["unhandled"]
    assert (unhandled.path, unhandled.line, unhandled.column) == (a, 5, 13)  # the publish("...") argument
    assert "'user_registered' is published but no service subscribes to it" in unhandled.message


def test_a_subscription_that_is_published_in_another_file_is_fine(tmp_path):
    a = _write(tmp_path, "a.tsk", PUBLISHER)
    b = _write(tmp_path, "b.tsk", TYPO.replace("registerd", "registered"))
    assert _lint(a, b) == []
    assert [f.code for f in _lint(b)] == ["unpublished"]  # alone, nothing publishes it


def test_published_types_declared_as_leaving_the_system_are_not_warned_about(tmp_path):
    a = _write(tmp_path, "a.tsk", PUBLISHER + '\n[outbox]\npublishes: "user_registered"\n')
    assert _lint(a) == []


def test_an_unknown_service_key_gets_a_suggestion(tmp_path):
    path = _write(tmp_path, "s.tsk", PUBLISHER + TYPO.replace("registerd", "registered")
                  + "retires: 3\nsmtp_host: \"mail\"\nunused_thing: 1\n")
    found = [f for f in _lint(path) if f.code == "service-key"]
    messages = [f.message for f in found]
    assert messages[0] == "[welcome] unknown service key 'retires' (did you mean 'retries'?)"
    assert any("'smtp_host'" in m and "no fujsen of the section reads it" in m for m in messages)
    assert found[0].line == 14


def test_a_setting_the_handler_reads_is_not_unknown(tmp_path):
    text = PUBLISHER + TYPO.replace("registerd", "registered").replace("    pass", "    return smtp_host") \
        + 'smtp_host: "mail"\n'
    assert _lint(_write(tmp_path, "s.tsk", text)) == []


def test_env_without_a_default_and_unset(tmp_path):
    path = _write(tmp_path, "e.tsk", '[app]\nname: @env("APP_NAME")\nport: @env("PORT", 8080)\n'
                  "# note: @env(\"IN_A_COMMENT\")\n")
    found = _lint(path, env={"APP_NAM": "x"})
    assert [(f.code, f.line, f.column) for f in found] == [("env", 2, 7)]
    assert "$APP_NAME is unset" in found[0].message and "did you mean 'APP_NAM'" in found[0].message
    assert _lint(path, env={"APP_NAME": "svc"}) == []


def test_a_bus_variable_with_a_typo_falls_back_and_says_so(tmp_path):
    path = _write(tmp_path, "b.tsk", '[app]\nevent_bus: @env("EVENT_BSU", "redis://127.0.0.1:6379/0")\n'
                  'event_store: @env("EVENT_STORE", "sqlite:///x.db")\n')
    found = _lint(path, env={"EVENT_BUS": "memory://"})
    assert [(f.code, f.line) for f in found] == [("fallback", 2)]
    assert "$EVENT_BSU is unset, so the default in the file is used (did you mean 'EVENT_BUS'?)" in found[0].message
    # the documented convention, @env("EVENT_BUS", default), is not a warning
    conventional = _write(tmp_path, "c.tsk", '[app]\nevent_bus: @env("EVENT_BUS", "memory://")\n')
    assert _lint(conventional) == []
    bare = _write(tmp_path, "d.tsk", '[app]\nevent_store: @env("STORE_URL")\n')
    assert "EVENT_STORE or else sqlite:///events.db is used" in _lint(bare)[0].message


def test_the_empty_document(tmp_path):
    assert [f.code for f in _lint(_write(tmp_path, "e.tsk", "# nothing\n"))] == ["empty"]


def test_unsupported_operators_reported_by_the_loader_become_warnings(tmp_path):
    cfg = TSK.from_file(_write(tmp_path, "o.tsk", '[app]\nx: 1\n'), env={})
    cfg.unsupported_operators = [("date", 2, 4)]  # type: ignore[attr-defined]
    [finding] = lint([cfg])
    assert (finding.code, finding.line, finding.column) == ("operator", 2, 4)
    assert "'@date' is not supported" in finding.message


def test_did_you_mean():
    assert did_you_mean("retires", ["retries", "timeout"]) == " (did you mean 'retries'?)"
    assert did_you_mean("zzz", ["retries"]) == ""


def test_the_shipped_configs_are_clean(monkeypatch):
    monkeypatch.delenv("EVENT_BUS", raising=False)
    monkeypatch.delenv("EVENT_STORE", raising=False)
    paths = sorted(str(p) for p in (ROOT / "configs").glob("*.tsk"))
    for path in paths:
        assert lint([TSK.from_file(path)]) == [], path


@pytest.mark.timeout(60)
def test_check_prints_warnings_and_strict_fails(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EVENT_BUS", "memory://lint")
    monkeypatch.setenv("EVENT_STORE", f"sqlite:///{tmp_path}/e.db")
    a = _write(tmp_path, "a.tsk", PUBLISHER)
    b = _write(tmp_path, "b.tsk", TYPO)
    assert main(["check", a, b]) == 0
    out, err = capsys.readouterr()
    assert out.count(": ok (") == 2
    assert f"{b}:3:1: warning: [welcome] subscribes to 'user_registerd'" in err
    assert main(["check", "--strict", a, b]) == 1
    capsys.readouterr()
    assert main(["run", "--strict", "--until-idle", a, b]) == 1
    err = capsys.readouterr().err
    assert "run --strict: 2 warnings; not running" in err
    assert main(["run", "--until-idle", "--quiet", "--json", a, b]) == 0  # without --strict it runs (0 handled)
