"""Golden cases for each operator: what it evaluates to, when, and how it fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tusk_events import TSK, ConfigError, TskSyntaxError, TuskError
from tusk_events.lang.operators import Deferred, Secret, register_gauge_sink

# 2024-02-29 13:05:09 UTC, a Thursday in a leap year
STAMP = 1709211909


def value(text: str, env: dict[str, str] | None = None, key: str = "v") -> Any:
    cfg = TSK.from_string(f"[s]\n{key}: {text}\n", env=env or {})
    return cfg.get_value("s", key)


# --------------------------------------------------------------------------- @env


@pytest.mark.parametrize(("text", "env", "expected"), [
    ('@env("X")', {"X": "1"}, "1"),
    ('@env("X")', {}, ""),
    ('@env("X", 8000)', {}, 8000),
    ('@env("X", true)', {}, True),
    ('env("X", "d")', {}, "d"),
    ('env("X", "d")', {"X": "set"}, "set"),
    ('@env("A", "B", "fallback")', {"B": "b"}, "b"),
    ('@env("A", "B", "fallback")', {}, "fallback"),
    ('@env.required("X")', {"X": "here"}, "here"),
    ('@env.required(["X", "Y"])', {"X": "1", "Y": "2"}, ["1", "2"]),
    ('env("PORT", 8000) + 1', {}, 8001),
    ('env("PORT", 8000) + 1', {"PORT": "9000"}, 9001),
    ('@env("NAME") || "anonymous"', {}, "anonymous"),
])
def test_env(text: str, env: dict[str, str], expected: Any) -> None:
    assert value(text, env) == expected


def test_env_required_fails_at_load_with_file_and_line() -> None:
    with pytest.raises(TskSyntaxError) as info:
        TSK.from_string('[s]\na: 1\nkey: @env.required("API_KEY")\n', env={}, path="app.tsk")
    assert (info.value.path, info.value.line, info.value.column) == ("app.tsk", 3, 6)
    assert "API_KEY is required" in info.value.reason


def test_env_secure_is_a_string_that_show_redacts(tmp_path: Path) -> None:
    cfg = TSK.from_string('[db]\npassword: @env.secure("PW")\n', env={"PW": "hunter2"})
    assert cfg.get_value("db", "password") == "hunter2"
    assert isinstance(cfg.data["db"]["password"], Secret)
    assert "hunter2" not in cfg.to_string(redacted=True)
    assert '"***"' in cfg.to_string(redacted=True)
    assert "hunter2" in cfg.to_string()


# --------------------------------------------------------------------------- @date


@pytest.mark.parametrize(("fmt", "expected"), [
    ("Y-m-d H:i:s", "2024-02-29 13:05:09"),
    ("c", "2024-02-29T13:05:09+00:00"),
    ("U", str(STAMP)),
    ("l, F jS", "Thursday, February 29th"),
    ("D M y g:i A", "Thu Feb 24 1:05 PM"),
    ("L t N z", "1 29 4 59"),
    ("%Y/%m/%d", "2024/02/29"),
    ("\\Y Y", "Y 2024"),
])
def test_date_formats(fmt: str, expected: str) -> None:
    assert value(f"@date('{fmt}', {STAMP})") == expected


def test_date_is_lazy_and_reads_the_injected_clock() -> None:
    cfg = TSK.from_string('[s]\nyear: @date("Y")\nnow: @date.now()\n', env={})
    assert isinstance(cfg.data["s"]["year"], Deferred)
    assert cfg.data["s"]["year"] == '@date("Y")'
    cfg.operator_context.now = lambda: STAMP
    assert cfg.get_value("s", "year") == "2024"
    assert cfg.get_value("s", "now") == "2024-02-29T13:05:09+00:00"


@pytest.mark.parametrize("stamp", ['"yesterday"', "1e308", "-1e20"])
def test_date_with_a_bad_timestamp_is_a_tusk_error(stamp: str) -> None:
    with pytest.raises(ConfigError, match="@date"):
        value(f'@date("Y", {stamp})')


# --------------------------------------------------------------------------- @if, logic


@pytest.mark.parametrize(("text", "env", "expected"), [
    ('@if(true, "a", "b")', {}, "a"),
    ('if(@env("MODE") == "prod", 10, 3)', {"MODE": "prod"}, 10),
    ('if(@env("MODE") == "prod", 10, 3)', {}, 3),
    ('@if(1 > 2, "x")', {}, None),
    ('!false && (1 < 2 || 0)', {}, True),
    ('@env("A", 5) >= 5 ? "big" : "small"', {}, "big"),
    ('2 + 3 * 4 - 6 / 2', {}, 11),
    ('(2 + 3) * 4 % 7', {}, 6),
    ('7 / 2', {}, 3.5),
    ('"v" + 1 + "." + 2', {}, "v1.2"),
    ('[1, 2] + [3]', {}, [1, 2, 3]),
    ('-(2 + 3)', {}, -5),
    ('@env("HOSTS", "a,b").split(",")', {}, ["a", "b"]),
    ('@env("X", [10, 20, 30])[1]', {}, 20),
])
def test_conditions_and_arithmetic(text: str, env: dict[str, str], expected: Any) -> None:
    assert value(text, env) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("1 / 0", "division by zero"),
    ('"a" - 1', "cannot apply '-'"),
    ("{a: 1} + 1", "cannot"),
    ('@if(1, 2, 3, 4)', "two or three arguments"),
])
def test_evaluation_errors_point_at_the_operator(text: str, message: str) -> None:
    with pytest.raises(TskSyntaxError, match=message) as info:
        TSK.from_string(f"[s]\nv: {text}\n", env={})
    assert info.value.line == 2


# --------------------------------------------------------------------------- @json


def test_json() -> None:
    assert value('@json({"b": 1, "a": [true, null]})') == '{"a": [true, null], "b": 1}'
    assert value("@json('{\"x\": [1, 2]}')") == {"x": [1, 2]}
    with pytest.raises(TskSyntaxError, match="not valid JSON"):
        value('@json("{oops")')


# --------------------------------------------------------------------------- @file


def test_file_reads_next_to_the_config_and_nowhere_else(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "key.pem").write_text("KEY", encoding="utf-8")
    conf = tmp_path / "app.tsk"
    conf.write_text(
        '[s]\nkey: @file("certs/key.pem")\nread: @file.read("certs/key.pem")\n'
        'there: @file.exists("certs/key.pem")\nmissing: @file.exists("nope")\n'
        'passwd: @file("/etc/passwd")\nescape: @file("../outside.txt")\n'
        'deeper: @file("certs/../../outside.txt")\n',
        encoding="utf-8",
    )
    (tmp_path.parent / "outside.txt").write_text("secret", encoding="utf-8")
    cfg = TSK.from_file(conf, env={})
    assert isinstance(cfg.data["s"]["key"], Deferred)  # loading read nothing
    assert cfg.get_value("s", "key") == "KEY"
    assert cfg.get_value("s", "read") == "KEY"
    assert cfg.get_value("s", "there") is True
    assert cfg.get_value("s", "missing") is False
    for key, line in (("passwd", 6), ("escape", 7), ("deeper", 8)):
        with pytest.raises(ConfigError, match="outside the config's folder") as info:
            cfg.get_value("s", key)
        assert str(info.value).startswith(f"{conf}:{line}:")


def test_file_needs_a_folder() -> None:
    cfg = TSK.from_string('[s]\nv: @file("x.txt")\n', env={})
    with pytest.raises(ConfigError, match="no folder"):
        cfg.get_value("s", "v")


def test_cross_file_get_reads_a_sibling_tsk(tmp_path: Path) -> None:
    (tmp_path / "secrets.tsk").write_text(
        '[api]\nkey: "k-123"\nport: @env("PORT", 80)\n', encoding="utf-8")
    conf = tmp_path / "app.tsk"
    conf.write_text(
        '[s]\nkey: @secrets.tsk.get("api.key")\nport: @secrets.tsk.get("api.port")\n'
        'none: @secrets.tsk.get("api.nothing")\nloop: @app.tsk.get("s.loop")\n',
        encoding="utf-8",
    )
    cfg = TSK.from_file(conf, env={"PORT": "8443"})
    assert cfg.get_value("s", "key") == "k-123"
    assert cfg.get_value("s", "port") == "8443"
    with pytest.raises(ConfigError, match="no key 'api.nothing'"):
        cfg.get_value("s", "none")
    with pytest.raises(ConfigError, match="deep"):
        cfg.get_value("s", "loop")


def test_untrusted_configs_refuse_file_and_query(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("x", encoding="utf-8")
    conf = tmp_path / "app.tsk"
    conf.write_text('[s]\nf: @file("x.txt")\nq: @query("SELECT 1")\n', encoding="utf-8")
    cfg = TSK.from_file(conf, env={})
    cfg.trust = "untrusted"  # type: ignore[attr-defined]  # set by the loader of untrusted configs
    for key in ("f", "q"):
        with pytest.raises(ConfigError, match="untrusted"):
            cfg.get_value("s", key)


# --------------------------------------------------------------------------- @query, @cache


@pytest.fixture
def store_config(tmp_path: Path) -> TSK:
    store = tmp_path / "events.db"
    text = (
        f'[s]\nevent_store: "sqlite:///{store}"\n'
        'count: @query("SELECT COUNT(*) FROM event_store")\n'
        'typed: @query("SELECT COUNT(*) FROM event_store WHERE event_type = ?", "a")\n'
        'cached: @cache("5m", @query("SELECT COUNT(*) FROM event_store"))\n'
        'write: @query("DELETE FROM event_store")\n'
    )
    return TSK.from_string(text, env={})


def _append(cfg: TSK, event_type: str) -> None:
    from tusk_events.events import new_event
    from tusk_events.fujsen.helpers import shared_store

    shared_store(cfg.store_url).append(new_event(event_type, {}))


def test_query_runs_when_read_not_at_load(store_config: TSK) -> None:
    cfg = store_config
    assert cfg.data["s"]["count"] == '@query("SELECT COUNT(*) FROM event_store")'
    assert cfg.get_value("s", "count") == 0
    _append(cfg, "a")
    _append(cfg, "b")
    assert cfg.get_value("s", "count") == 2
    assert cfg.get_value("s", "typed") == 1
    with pytest.raises(ConfigError, match="read-only"):
        cfg.get_value("s", "write")


def test_cache_memoises_for_its_ttl(store_config: TSK) -> None:
    cfg = store_config
    clock = [1000.0]
    cfg.operator_context.now = lambda: clock[0]
    assert cfg.get_value("s", "cached") == 0
    _append(cfg, "a")
    assert cfg.get_value("s", "cached") == 0  # still cached
    clock[0] += 301
    assert cfg.get_value("s", "cached") == 1


@pytest.mark.parametrize(("ttl", "ok"), [('"30s"', True), ('"5m"', True), ('"1h"', True),
                                          ("10", True), ('"soon"', False)])
def test_cache_ttls(ttl: str, ok: bool) -> None:
    cfg = TSK.from_string(f'[s]\nv: @cache({ttl}, 42)\n', env={})
    if ok:
        assert cfg.get_value("s", "v") == 42
    else:
        with pytest.raises(ConfigError, match="TTL"):
            cfg.get_value("s", "v")


# --------------------------------------------------------------------------- @metrics


def test_metrics_reports_a_gauge() -> None:
    seen: list[tuple[str, float]] = []
    register_gauge_sink(lambda name, v: seen.append((name, v)))
    cfg = TSK.from_string('[s]\nv: @metrics("api_requests", 3)\n', env={})
    assert seen == []  # read later, not at load
    assert cfg.get_value("s", "v") == 3
    assert ("api_requests", 3.0) in seen


def test_metrics_gauge_is_exported_by_the_prometheus_collector() -> None:
    pytest.importorskip("prometheus_client")
    from tusk_events.observe.metrics import ConfigGauges

    cfg = TSK.from_string('[s]\nv: @metrics("queue_depth", 17)\n', env={})
    cfg.get_value("s", "v")
    samples = {s.labels["name"]: s.value for f in ConfigGauges().collect() for s in f.samples}
    assert samples["queue_depth"] == 17


# --------------------------------------------------------------------------- unknown operators


def test_unknown_operators_load_inert_and_are_listed() -> None:
    text = ('[s]\na: @request("GET", "/x")\nb: php("echo 1")\n'
            'c: @Query("Users").where("x", 1)\nd: 1\n')
    cfg = TSK.from_string(text, env={}, path="app.tsk")
    assert cfg.data["s"]["a"] == '@request("GET", "/x")'
    assert cfg.unsupported_operators == [
        ("@request", 2, 4), ("php", 3, 4), ("@Query", 4, 4), (".where", 4, 19)]
    with pytest.raises(ConfigError) as info:
        cfg.get_value("s", "a")
    assert str(info.value).startswith("app.tsk:2:4: operator @request is not supported")
    with pytest.raises(ConfigError, match="php"):
        cfg.get_value("s", "b")
    assert cfg.get_value("s", "d") == 1


def test_data_stays_json_safe() -> None:
    text = ('[s]\nq: @query("SELECT 1")\nr: @learn("m", 1)\nn: [1, @date("Y")]\n'
            'm: "year ${y}"\n$y: @date("Y")\n')
    cfg = TSK.from_string(text.replace('m: "year ${y}"\n$y: @date("Y")\n',
                                       '$y: @date("Y")\nm: "year ${y}"\n'), env={})
    loaded = json.loads(json.dumps(cfg.data))
    assert loaded["s"]["q"] == '@query("SELECT 1")'
    assert loaded["s"]["n"] == [1, '@date("Y")']
    cfg.operator_context.now = lambda: STAMP
    assert cfg.get_value("s", "m") == "year 2024"
    assert cfg.get_value("s", "n") == [1, "2024"]


def test_fujsen_globals_see_evaluated_values() -> None:
    text = ('[s]\nyear: @date("Y", 0)\nport: env("PORT", 80) + 1\nbad: @request("x")\n'
            "f_fujsen = '''\ndef f():\n    return [year, port]\n'''\n"
            "g_fujsen = '''\ndef g():\n    return bad\n'''\n")
    cfg = TSK.from_string(text, env={})
    assert cfg.execute_fujsen("s", "f") == ["1970", 81]
    with pytest.raises(TuskError, match="bad"):
        cfg.execute_fujsen("s", "g")
