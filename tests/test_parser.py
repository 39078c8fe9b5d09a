"""The .tsk parser: the documented corpus, golden files, value lines, dumps round trips.

Golden files live in tests/data/golden: ``name.tsk`` next to ``name.json`` (the data it
must parse to, with GOLDEN_ENV as the environment). Adding a case is adding two files.
Each golden file is also parsed with CRLF line ends and a BOM, and round-tripped
through dumps(); crlf_bom.tsk is stored with both.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tusk_events.errors import TskSyntaxError
from tusk_events.lang.parser import Parsed, dumps, load

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
GOLDEN_ENV = {"TSK_GOLDEN_MODE": "golden", "TSK_GOLDEN_PORT": "9090", "TSK_GOLDEN_EMPTY": ""}
CONFORMANCE = json.loads((DATA / "conformance.json").read_text(encoding="utf-8"))
GOLDEN_FILES = sorted(GOLDEN.glob("*.tsk"))


def read_tsk(path: Path) -> str:
    """The file's text exactly as stored: no newline translation, BOM kept."""
    return path.read_bytes().decode("utf-8")


def typed(value: Any) -> Any:
    """``value`` with every scalar tagged by its type, so 1, 1.0 and True differ."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def assert_same(actual: Any, expected: Any) -> None:
    assert typed(actual) == typed(expected)


# --------------------------------------------------------------------------- corpus


@pytest.mark.parametrize("case", CONFORMANCE, ids=[c["name"] for c in CONFORMANCE])
def test_conformance(case: dict[str, Any]) -> None:
    parsed = load(case["tsk"], env=case["env"])
    assert_same(parsed.data, case["expected"])


def test_golden_files_have_twins() -> None:
    assert GOLDEN_FILES, "no golden files found"
    for tsk in GOLDEN_FILES:
        assert tsk.with_suffix(".json").exists(), f"{tsk.name} has no .json twin"


@pytest.mark.parametrize("tsk", GOLDEN_FILES, ids=[p.stem for p in GOLDEN_FILES])
def test_golden(tsk: Path) -> None:
    text = read_tsk(tsk)
    expected = json.loads(tsk.with_suffix(".json").read_text(encoding="utf-8"))
    assert_same(load(text, env=GOLDEN_ENV, path=str(tsk)).data, expected)


@pytest.mark.parametrize("tsk", GOLDEN_FILES, ids=[p.stem for p in GOLDEN_FILES])
def test_golden_with_crlf_and_bom(tsk: Path) -> None:
    text = read_tsk(tsk).lstrip("\ufeff").replace("\r\n", "\n")
    expected = json.loads(tsk.with_suffix(".json").read_text(encoding="utf-8"))
    windows = "\ufeff" + text.replace("\n", "\r\n")
    parsed = load(windows, env=GOLDEN_ENV)
    assert_same(parsed.data, expected)
    assert parsed.value_lines == load(text, env=GOLDEN_ENV).value_lines


@pytest.mark.parametrize("tsk", GOLDEN_FILES, ids=[p.stem for p in GOLDEN_FILES])
def test_golden_round_trips_through_dumps(tsk: Path) -> None:
    data = load(read_tsk(tsk), env=GOLDEN_ENV).data
    assert_same(load(dumps(data), env={}).data, data)


def test_shipped_configs_parse() -> None:
    for config in sorted((Path(__file__).parent.parent / "configs").glob("*.tsk")):
        parsed = load(config.read_text(encoding="utf-8"), env={}, path=str(config))
        assert parsed.data, config.name


@pytest.fixture(scope="module")
def larks_own_lexer() -> Any:
    """The same grammar and transformer, lexed by lark's stock contextual lexer."""
    from lark import Lark

    import tusk_events.lang.parser as parser_module

    parser_module._parser()
    return Lark(
        parser_module._GRAMMAR.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        transformer=parser_module._builder,
        maybe_placeholders=False,
    )


ALL_DOCUMENTS = (
    [c["tsk"] for c in CONFORMANCE]
    + [read_tsk(p) for p in GOLDEN_FILES]
    + [c["tsk"] for c in json.loads((DATA / "malformed.json").read_text(encoding="utf-8"))]
)


def outcome(text: str) -> Any:
    try:
        parsed = load(text, env=GOLDEN_ENV)
    except TskSyntaxError as err:
        return ("error", err.line, err.column, err.reason)
    return ("ok", typed(parsed.data), parsed.value_lines)


def test_own_lexer_agrees_with_larks_contextual_lexer(
    larks_own_lexer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """parser._ContextualLexer is lark's algorithm in a faster loop: same tokens, same results."""
    import tusk_events.lang.parser as parser_module

    ours = [outcome(text) for text in ALL_DOCUMENTS]
    monkeypatch.setattr(parser_module, "_lark", larks_own_lexer)
    theirs = [outcome(text) for text in ALL_DOCUMENTS]
    assert ours == theirs


# --------------------------------------------------------------------------- API


def test_parsed_is_frozen_and_plain() -> None:
    parsed = load('[a]\nx: {"k": [1, 2]}\n', env={})
    assert isinstance(parsed, Parsed)
    with pytest.raises(AttributeError):
        parsed.data = {}  # type: ignore[misc]
    assert type(parsed.data) is dict
    assert type(parsed.data["a"]["x"]) is dict
    assert type(parsed.data["a"]["x"]["k"]) is list


def test_env_none_reads_os_environ() -> None:
    names = [n for n in os.environ if n.isidentifier()]
    if not names:
        pytest.skip("no environment variable to read")
    assert load(f'v: @env("{names[0]}")\n').data["v"] == os.environ[names[0]]
    assert load('v: @env("TSK_SURELY_UNSET_VARIABLE_42", 7)\n').data["v"] == 7


def test_env_values_are_strings() -> None:
    data = load('a: @env("N", 1)\nb: @env("M", 1)\n', env={"N": "2"}).data
    assert data == {"a": "2", "b": 1}


def test_no_trailing_newline_and_empty_inputs() -> None:
    assert load("", env={}).data == {}
    assert load("\n\n", env={}).data == {}
    assert load("\ufeff", env={}).data == {}
    assert load("a: 1", env={}).data == {"a": 1}
    assert load("a: '''\nx\n'''", env={}).data == {"a": "x"}


def test_globals_are_copied_where_referenced() -> None:
    data = load("$base: {a: [1]}\nx: $base\ny: $base\n", env={}).data
    data["x"]["a"].append(2)
    assert data["y"] == {"a": [1]}
    assert data["base"] == {"a": [1]}


def test_parsing_is_thread_safe() -> None:
    docs = [f"[s{i}]\nv: {i}\nw: @env(\"E\", {i})\n" for i in range(8)]
    results: dict[int, Any] = {}

    def work(i: int) -> None:
        for _ in range(50):
            results[i] = load(docs[i], env={}).data

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: {f"s{i}": {"v": i, "w": i}} for i in range(8)}


# --------------------------------------------------------------------------- value lines

VALUE_LINES_DOC = """\
$app_name: "demo"
top: 1

[event_system]
event_bus: @env("EVENT_BUS", "redis://localhost:6379/0")
publish_event_fujsen = '''
def publish_event(event_type, payload):
    return event_type
'''
one_liner: '''inline'''

[server.security]
ssl: true
limits: {cpu: 2,
    memory: "1Gi"}

[server]
tls {
    cert_fujsen: \"\"\"
    def cert():
        return 1
    \"\"\"
}
cache >
    ttl: "5m"
<
"""


def test_value_lines() -> None:
    lines = load(VALUE_LINES_DOC, env={}).value_lines
    assert lines == {
        ("app_name",): 1,
        ("top",): 2,
        ("event_system",): 4,
        ("event_system", "event_bus"): 5,
        ("event_system", "publish_event_fujsen"): 7,
        ("event_system", "one_liner"): 10,
        ("server",): 12,
        ("server", "security"): 12,
        ("server", "security", "ssl"): 13,
        ("server", "security", "limits"): 14,
        ("server", "security", "limits", "cpu"): 14,
        ("server", "security", "limits", "memory"): 15,
        ("server", "tls"): 18,
        ("server", "tls", "cert_fujsen"): 20,
        ("server", "cache"): 24,
        ("server", "cache", "ttl"): 25,
    }


def test_value_line_is_first_content_line_of_the_fujsen() -> None:
    doc = (Path(__file__).parent.parent / "configs" / "event_system.tsk").read_text()
    parsed = load(doc, env={})
    for key in ("publish_event_fujsen", "subscribe_events_fujsen"):
        line = parsed.value_lines[("event_system", key)]
        first = parsed.data["event_system"][key].split("\n")[0]
        assert doc.split("\n")[line - 1] == first


# --------------------------------------------------------------------------- choices


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: '''one line'''\n", "one line"),
        ('a: """one line"""\n', "one line"),
        ("a: ''''''\n", ""),
        ("a: '''\n'''\n", ""),
        ("a: '''\n\n'''\n", ""),
        ("a: '''\n\n\n'''\n", "\n"),
        ("a: '''\n  x  \n  '''  \n", "  x  "),
        ("a: '''\n'''x\n'''\n", "'''x"),
    ],
)
def test_triple_quoted_edges(text: str, expected: str) -> None:
    assert load(text, env={}).data == {"a": expected}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("42", 42), ("-7", -7), ("+7", 7), ("0", 0), ("3.5", 3.5), ("1.5e6", 1.5e6),
        ("-2E-3", -2e-3), ("1e3", 1000.0), ("007", "007"), ("1.2.3", "1.2.3"),
        ("0x1F", "0x1F"), ("512Mi", "512Mi"), ("inf", "inf"), ("true", True),
        ("false", False), ("null", None), ("True", "True"), ("/var/log", "/var/log"),
        ("v1.2", "v1.2"), ("info", "info"),
    ],
)
def test_scalar_reading(value: str, expected: Any) -> None:
    assert_same(load(f"x: {value}\n", env={}).data["x"], expected)
    # Inside an inline object the same text takes the general grammar path.
    assert_same(load(f"o: {{x: {value}}}\n", env={}).data["o"]["x"], expected)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('"8080" == 8080', True), ('"8080" != 8080', False), ('"abc" == "abc"', True),
        ("1 == 1.0", True), ('"TRUE" == true', True), ('"yes" == true', False),
        ("null == null", True), ('"null" == null', False), ("[1] == [1]", True),
        ('"10" > 9', True), ('"b" > "a"', True), ("2 <= 2", True), ("2 >= 3", False),
        ('"false" ? 1 : 2', 2), ('"0" ? 1 : 2', 2), ('"off" ? 1 : 2', 2), ('"" ? 1 : 2', 2),
        ("[] ? 1 : 2", 2), ("{} ? 1 : 2", 2), ("0 ? 1 : 2", 2), ("null ? 1 : 2", 2),
        ('"x" ? 1 : 2', 1), ("[0] ? 1 : 2", 1), ("1 ? 2 ? 3 : 4 : 5", 3),
    ],
)
def test_comparisons_and_truthiness(expr: str, expected: Any) -> None:
    assert_same(load(f"x: {expr}\n", env={}).data["x"], expected)


def test_repeated_sections_merge_but_keys_do_not_repeat() -> None:
    assert load("[a]\nx: 1\n[b]\n[a]\ny: 2\n", env={}).data == {"a": {"x": 1, "y": 2}, "b": {}}
    with pytest.raises(TskSyntaxError, match="duplicate key 'x'"):
        load("[a]\nx: 1\n[a]\nx: 2\n", env={})


# --------------------------------------------------------------------------- dumps

# Keys of the key grammar: letters (any script), digits, '_' and '-'.
KEYS = st.text(st.sampled_from("abcxyzABCXYZ0189_-éßж"), min_size=1, max_size=10)
TRICKY_LINES = st.sampled_from(
    ["'''", '"""', "  '''  ", '\t"""', "x = 1", "key: value", "# comment", "", "   ",
     "${app}", "\\n", "\\", '"', "'", "[section]", "}", "<", "@env(\"X\")", "$var", "é ü 世界"]
)
MULTILINE = st.lists(st.one_of(TRICKY_LINES, st.text(max_size=12)), min_size=2, max_size=6).map(
    "\n".join
)
STRINGS = st.one_of(
    st.text(max_size=30),
    MULTILINE,
    st.sampled_from(["", "true", "null", "42", "1.5", "'''", '"""', "#", "${x}", "a\r\nb", " x "]),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    STRINGS,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(KEYS, st.text(max_size=6)), inner, max_size=3),
    ),
    max_leaves=8,
)
SECTIONS = st.dictionaries(
    KEYS, st.one_of(VALUES, st.dictionaries(KEYS, VALUES, max_size=3)), max_size=4
)
DOCUMENTS = st.dictionaries(KEYS, st.one_of(VALUES, SECTIONS), max_size=5)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS)
def test_dumps_round_trips(data: dict[str, Any]) -> None:
    text = dumps(data)
    assert_same(load(text, env={}).data, data)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=10), VALUES, max_size=5))
def test_dumps_round_trips_any_keys(data: dict[str, Any]) -> None:
    assert_same(load(dumps(data), env={}).data, data)


def test_dumps_uses_blocks_and_falls_back_to_escapes() -> None:
    fujsen = "def f():\n    return '''x'''"
    single_line_inside = "a\n'''\nb"
    both = "a\n'''\n\"\"\"\nb"
    data = {"s": {"f_fujsen": fujsen, "inner": single_line_inside, "both": both, "crlf": "a\r\nb"}}
    text = dumps(data)
    assert "f_fujsen = '''\ndef f():\n    return '''x'''\n'''\n" in text
    assert 'inner = """\na\n\'\'\'\nb\n"""\n' in text
    assert 'both: "a\\n\'\'\'\\n\\"\\"\\"\\nb"' in text
    assert 'crlf: "a\\r\\nb"' in text
    assert load(text, env={}).data == data


def test_dumps_rejects_what_tsk_cannot_hold() -> None:
    with pytest.raises(ValueError):
        dumps({"x": float("nan")})
    with pytest.raises(TypeError):
        dumps({"x": object()})


@settings(max_examples=100, deadline=None)
@given(st.one_of(
    SCALARS, st.lists(SCALARS, max_size=4), st.dictionaries(KEYS, SCALARS, max_size=4)
))
def test_one_line_fast_path_matches_the_general_grammar(value: Any) -> None:
    """`key: value` lines take a one-token path; inside `{...}` the same text does not."""
    literal = json.dumps(value, ensure_ascii=False).replace("${", "\\${")
    if "\u2028" in literal or "\u2029" in literal:
        literal = json.dumps(value).replace("${", "\\${")
    fast = load(f"x: {literal}\n", env={}).data["x"]
    general = load(f"o: {{x: {literal}}}\n", env={}).data["o"]["x"]
    assert_same(fast, value)
    assert_same(general, value)
