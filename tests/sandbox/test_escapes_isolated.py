"""The escape corpus again, with every config built with ``isolation="process"``.

Same cases, same harness (a fresh child interpreter per case, canary file, canary TCP port,
secret environment variable), same expectations: process isolation adds a boundary, it must
not change what the sandbox reports. The child script is the sample harness's, with the two
``TSK.from_string`` calls given ``isolation="process"``; the workers it starts are in its
process group, so the harness's kill reaches them too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import test_escapes_more as more
import test_escapes_sample as sample

_CHILD = sample._CHILD
for _old, _new in (
    ('TSK.from_string(p["text"])', 'TSK.from_string(p["text"], isolation="process")'),
    ("TSK.from_string(text)", 'TSK.from_string(text, isolation="process")'),
):
    assert _CHILD.count(_old) == 1, _old
    _CHILD = _CHILD.replace(_old, _new)


class IsolatedBox(sample.Box):
    """The sample's Box, running the child script above."""

    def run(self, src, expect, *, raw=False, cpu_probe=False, extra_paths=()):
        text = sample._tsk(src if raw else sample._attack(src))
        text = text.replace("@@PWNED@@", repr(str(self.pwned)))
        payload = {
            "text": text, "section": sample.SECTION,
            "args": [str(self.canary), str(self.pwned), self.port, str(self.work)],
            "probe_text": sample._tsk(sample._attack("return 1")), "probe_expect": sample.OK_EXPECT,
            "mem_headroom": sample.MEM_HEADROOM, "fsize": 64 << 20, "cpu_probe": cpu_probe,
        }
        pfile, rfile = self.tmp / "payload.json", self.tmp / "result.json"
        pfile.write_text(json.dumps(payload))
        out, err = self.tmp / "child.out", self.tmp / "child.err"
        env = dict(os.environ)
        env["TUSK_CANARY_SECRET"] = self.env_secret
        env["PYTHONPATH"] = sample._pythonpath()
        env.pop("PYTHONBREAKPOINT", None)
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(pfile), str(rfile)], stdin=subprocess.DEVNULL,
                stdout=fo, stderr=fe, cwd=str(self.work), env=env, start_new_session=True,
            )
            try:
                proc.wait(sample.HARD_LIMIT_S)
                hung = False
            except subprocess.TimeoutExpired:
                hung = True
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
        self._check(expect, hung, rfile, out, err, cpu_probe, extra_paths)


@pytest.fixture
def ibox(tmp_path):
    b = IsolatedBox(tmp_path)
    yield b
    b.close()


def _cases(*tables):
    return [pytest.param(src, exp, id=f"{label}-{cid}") for label, table in tables for cid, src, exp in table]


PLAIN = _cases(
    ("sample_dunder", sample.DUNDER), ("sample_frames", sample.FRAMES), ("sample_format", sample.FORMAT),
    ("sample_builtins", sample.BUILTINS), ("sample_imports", sample.IMPORTS), ("sample_redis", sample.REDIS),
    ("sample_sql", sample.SQL), ("sample_tricks", sample.TRICKS), ("sample_unicode", sample.UNICODE),
    ("more_dunder", more.DUNDER), ("more_frames", more.FRAMES), ("more_format", more.FORMAT),
    ("more_builtins", more.BUILTINS), ("more_imports", more.IMPORTS), ("more_redis", more.REDIS),
    ("more_sql", more.SQL), ("more_tricks", more.TRICKS), ("more_unicode", more.UNICODE),
)
SLOW = _cases(
    ("sample_timeouts", sample.TIMEOUTS), ("sample_c_level", sample.C_LEVEL),
    ("sample_recursion", sample.RECURSION), ("sample_memory", sample.MEMORY),
    ("more_memory", more.MEMORY), ("more_recursion", more.RECURSION),
)


@pytest.mark.parametrize("src,expect", PLAIN)
def test_isolated_escape(ibox, src, expect):
    ibox.run(src, expect)


@pytest.mark.parametrize("src,expect", _cases(("more_load_time", more.LOAD_TIME)))
def test_isolated_nothing_runs_at_load(ibox, src, expect):
    ibox.run(src, expect, raw=True)


def test_isolated_top_level_side_effect_at_load_time(ibox):
    ibox.run('open(@@PWNED@@, "w").write("pwned at load time")\n' + sample._attack("return 1"),
             sample.VIOLATION, raw=True)


@sample._timeout_mark
@pytest.mark.parametrize("src,expect", SLOW)
def test_isolated_resource(ibox, src, expect):
    ibox.run(src, expect)


@sample._timeout_mark
@pytest.mark.parametrize("src,expect", _cases(("more_timeouts", more.TIMEOUTS)))
def test_isolated_timeout_and_cpu_released(ibox, src, expect):
    ibox.run(src, expect, cpu_probe=True)


@sample._timeout_mark
def test_isolated_while_true_and_cpu_released(ibox):
    ibox.run("while True:\n    pass", sample.TIMEOUT, cpu_probe=True)


@sample._timeout_mark
@pytest.mark.parametrize(
    "src,expect",
    [
        # one C call, for hours, that every guard allows: only the wall deadline stops it
        pytest.param("return pow(3, 2 ** 100000, 2 ** 200000 + 1)", sample.RESOURCE, id="modpow_in_c"),
        pytest.param("x = 3 ** 300000\nreturn pow(x, 2 ** 90000, x * x + 1)", sample.RESOURCE, id="modpow_big_base"),
    ],
)
def test_isolated_only_c_level(ibox, src, expect):
    ibox.run(src, expect, cpu_probe=True)
