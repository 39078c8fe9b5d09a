"""Random nesting of operators, calls and arithmetic: loading and reading raise nothing
but a TuskError (and the process is left as it was: no file read outside the folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tusk_events import TSK, TuskError

OPERATORS = ["@env", "env", "@env.required", "@env.secure", "@if", "if", "@json", "@date",
             "@date.now", "@file", "@file.read", "@file.exists", "@other.tsk.get", "@query",
             "@cache", "@metrics", "@request", "php", "@learn", "@Query", "file"]
ATOMS = ['"X"', '"5m"', "'Y-m-d'", "1", "-2", "3.5", "0", "true", "null", "word", "$g", "[]",
         "{}", '"../x"', '"/etc/passwd"', '"SELECT 1"', '"{\\"a\\": 1}"', "1e308"]
BINARY = ["+", "-", "*", "/", "%", "==", "!=", "<", ">=", "&&", "||"]


def expressions() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        call = st.tuples(st.sampled_from(OPERATORS), st.lists(inner, max_size=3)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})")
        binary = st.tuples(inner, st.sampled_from(BINARY), inner).map(
            lambda t: f"{t[0]} {t[1]} {t[2]}")
        return st.one_of(
            call,
            binary,
            st.tuples(inner, inner, inner).map(lambda t: f"{t[0]} ? {t[1]} : {t[2]}"),
            inner.map(lambda x: f"!{x}"),
            inner.map(lambda x: f"({x})"),
            st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
            st.tuples(inner, st.sampled_from(["split", "upper", "where"])).map(
                lambda t: f"{t[0]}.{t[1]}(\",\")"),
            st.sampled_from(OPERATORS).map(lambda op: op),
        )

    return st.recursive(st.sampled_from(ATOMS), extend, max_leaves=8)


def _read_everything(cfg: TSK) -> None:
    for section, values in cfg.sections().items():
        for key in values:
            try:
                cfg.get_value(section, key)
            except TuskError:
                pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(expr=expressions())
def test_random_operator_nesting_raises_only_tusk_errors(expr: str, tmp_path: Path) -> None:
    conf = tmp_path / "app.tsk"
    (tmp_path / "other.tsk").write_text("[a]\nb: 1\n", encoding="utf-8")
    text = f'$g: "G"\n[s]\nv: {expr}\nw: [{expr}, 1]\n'
    conf.write_text(text, encoding="utf-8")
    try:
        cfg = TSK.from_file(conf, env={"X": "x"})
    except TuskError:
        return
    cfg.operator_context.query = _no_store
    _read_everything(cfg)


def _no_store(sql: str, *params: Any) -> Any:
    raise TuskError("no store in this test")
