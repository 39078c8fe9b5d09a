"""The pytest plugin, as a user meets it: examples/test_app.py on memory:// and on the real Redis,
``--tusk-bus`` parametrisation, and what pytest prints when a kit assertion fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tusk_events.testing.plugin import plugin_args

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "test_app.py"


def run_pytest(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("EVENT_BUS", None)
    env.pop("EVENT_STORE", None)
    env.pop("TUSK_TEST_BUS", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin_args(), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=240,
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_example_tests_pass_unchanged_on_memory_and_on_the_real_redis(redis_url):
    # one run, each test once per bus (the redis_url fixture empties the database around it)
    out = run_pytest(str(EXAMPLE), "--tusk-bus", "memory://", "--tusk-bus", redis_url, "-rA")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "8 passed" in out.stdout
    for test in ("a_registration_gets_a_welcome_email_and_a_profile", "a_bad_address_is_retried_then_dead_lettered",
                 "a_redelivered_registration_is_handled_once", "the_email_service_with_a_stubbed_handler"):
        for bus in ("memory", "redis"):
            assert f"PASSED examples/test_app.py::test_{test}[{bus}]" in out.stdout


FAILING = '''
def test_expects_an_email_for_mallory(tusk_app):
    app = tusk_app("configs/app.tsk").run_until_idle()
    app.assert_published("welcome_email_sent", payload={"user_id": 3})
'''


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_failing_test_prints_what_was_published(tmp_path):
    test_file = tmp_path / "test_failing.py"
    test_file.write_text(FAILING)
    # run from the project: the config path resolves against pytest's rootdir
    out = run_pytest(str(test_file), "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"))
    assert out.returncode == 1, out.stdout[-4000:] + out.stderr[-2000:]
    text = out.stdout
    assert "AssertionError: expected at least one 'welcome_email_sent' event" in text
    assert 'welcome_email_sent {"to": "ada@example.com", "user_id": 1}  <- welcome_email' in text
    assert 'user_registered {"email": "not-an-email", "name": "Mallory", "user_id": 3}' in text
    assert "ValueError: cannot send a welcome email to 'not-an-email'" in text
    assert "tusk_events/testing/" not in text  # the kit's frames are hidden from the report


def test_the_plugin_is_registered_by_an_entry_point():
    text = (ROOT / "pyproject.toml").read_text()
    assert '[project.entry-points.pytest11]\ntusk_events = "tusk_events.testing.plugin"' in text
