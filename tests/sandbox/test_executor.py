"""execute_fujsen: name resolution, globals, budgets, errors, helpers (in-process)."""

from __future__ import annotations

import threading
import time

import pytest

from tusk_events import TSK, FujsenError, FujsenTimeout, SandboxViolation, TuskError


def tsk(body: str, **kw) -> TSK:
    return TSK.from_string(body, env=kw.pop("env", {}), **kw)


# --- name resolution ------------------------------------------------------------------------


MULTI = """[calc]
factor: 3
scale_fujsen = '''
def helper(x):
    return x + 1

def scale(x):
    return helper(x) * factor
'''
double = '''
def double(x):
    return x * 2
'''
fujsen = '''
def inc(x):
    return x + 1

def dec(x):
    return x - 1
'''
"""


def test_resolves_key_then_name_fujsen_then_fujsen_key():
    cfg = tsk(MULTI)
    assert cfg.execute_fujsen("calc", "scale", 4) == 15  # entry named like the key, not the first def
    assert cfg.execute_fujsen("calc", "double", 4) == 8  # the key itself holds code
    assert cfg.execute_fujsen("calc", "inc", 4) == 5  # a function of the `fujsen` key
    assert cfg.execute_fujsen("calc", "dec", 4) == 3


def test_missing_fujsen_lists_the_available_ones():
    cfg = tsk(MULTI)
    with pytest.raises(FujsenError) as ei:
        cfg.execute_fujsen("calc", "nope")
    msg = str(ei.value)
    assert "nope" in msg and "scale" in msg and "double" in msg and "inc" in msg
    with pytest.raises(FujsenError, match=r"no section \[other\]"):
        cfg.execute_fujsen("other", "scale")


def test_several_functions_and_none_named_like_the_key_is_an_error():
    cfg = tsk("[s]\nrun_fujsen = '''\ndef a():\n    return 1\n\ndef b():\n    return 2\n'''\n")
    with pytest.raises(FujsenError, match="none named 'run'"):
        cfg.execute_fujsen("s", "run")


def test_fujsen_returns_callable_for_hot_paths():
    cfg = tsk(MULTI)
    f = cfg.fujsen("calc", "scale")
    assert [f(i) for i in range(3)] == [3, 6, 9]
    assert cfg.fujsen("calc", "scale") is f


# --- globals -------------------------------------------------------------------------------


def test_globals_come_from_section_then_other_sections_then_defaults():
    cfg = tsk(
        """$app: "shop"
[event_system]
event_bus: "memory://shared-a"
event_channel: "tusk_events"
[dead_letter_queue]
dlq_channel: "tusk_dlq"
where_fujsen = '''
def where():
    return [event_bus, dlq_channel, event_channel, app]
'''
"""
    )
    assert cfg.execute_fujsen("dead_letter_queue", "where") == [
        "memory://shared-a", "tusk_dlq", "tusk_events", "shop"
    ]


def test_event_bus_default_comes_from_env_then_memory():
    src = "[s]\nbus_fujsen = '''\ndef bus():\n    return event_bus\n'''\n"
    assert tsk(src).execute_fujsen("s", "bus") == "memory://"
    assert tsk(src, env={"EVENT_BUS": "memory://from-env"}).execute_fujsen("s", "bus") == "memory://from-env"


def test_each_call_gets_fresh_globals_and_fresh_mutable_values():
    cfg = tsk(
        """[s]
tags: ["a"]
limits: {"n": 1}
grow_fujsen = '''
def grow(acc=[]):
    tags.append("x")
    limits["n"] = limits["n"] + 1
    acc.append(1)
    return len(tags), limits["n"], len(acc)
'''
"""
    )
    assert cfg.execute_fujsen("s", "grow") == (2, 2, 1)
    assert cfg.execute_fujsen("s", "grow") == (2, 2, 1)
    assert cfg.data["s"]["tags"] == ["a"]  # the config itself is untouched


def test_helpers_cannot_be_shadowed_by_config_keys():
    cfg = tsk("[s]\njson: 1\nf_fujsen = '''\ndef f():\n    return json.dumps([1])\n'''\n")
    assert cfg.execute_fujsen("s", "f") == "[1]"


# --- budgets -------------------------------------------------------------------------------


def test_timeout_is_configurable_per_section_and_per_tsk():
    src = "[s]\nfujsen_timeout: 0.2\nspin_fujsen = '''\ndef spin():\n    while True:\n        pass\n'''\n"
    t0 = time.monotonic()
    with pytest.raises(FujsenTimeout):
        tsk(src).execute_fujsen("s", "spin")
    assert time.monotonic() - t0 < 0.9
    src2 = "[s]\nspin_fujsen = '''\ndef spin():\n    while True:\n        pass\n'''\n"
    t0 = time.monotonic()
    with pytest.raises(FujsenTimeout):
        tsk(src2, fujsen_timeout=0.1).execute_fujsen("s", "spin")
    assert time.monotonic() - t0 < 0.8


def test_timeout_error_is_sticky_even_when_swallowed():
    src = """[s]
fujsen_timeout: 0.2
f_fujsen = '''
def f():
    n = 0
    while n < 3:
        try:
            while True:
                pass
        except Exception:
            n += 1
    return "escaped"
'''
"""
    with pytest.raises(FujsenTimeout):
        tsk(src).execute_fujsen("s", "f")


def test_time_blocked_in_helpers_does_not_count():
    # a pub/sub wait longer than the budget is not a timeout
    src = """[s]
event_bus: "memory://wait-test"
fujsen_timeout: 0.3
wait_fujsen = '''
def wait():
    ps = redis.from_url(event_bus).pubsub()
    ps.subscribe("nothing")
    ps.get_message(timeout=0.1)
    seen = ps.get_message(timeout=0.6)
    return seen
'''
"""
    assert tsk(src).execute_fujsen("s", "wait") is None


def test_sleep_counts_and_is_capped_by_the_budget():
    src = "[s]\nfujsen_timeout: 0.3\nnap_fujsen = '''\ndef nap(s):\n    time.sleep(s)\n    return s\n'''\n"
    cfg = tsk(src)
    assert cfg.execute_fujsen("s", "nap", 0.01) == 0.01
    t0 = time.monotonic()
    with pytest.raises(FujsenTimeout):
        cfg.execute_fujsen("s", "nap", 60)
    assert time.monotonic() - t0 < 1.0


def test_budget_is_per_thread():
    src = "[s]\nfujsen_timeout: 0.5\nwork_fujsen = '''\ndef work(n):\n    t = 0\n    for i in range(n):\n        t += i\n    return t\n'''\n"
    cfg = tsk(src)
    results: list[int] = []

    def run() -> None:
        results.append(cfg.execute_fujsen("s", "work", 1000))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [499500] * 4


# --- errors --------------------------------------------------------------------------------


def test_fujsen_exception_points_at_the_tsk_file_and_line(tmp_path):
    path = tmp_path / "svc.tsk"
    path.write_text(
        "[svc]\n"
        "# a comment\n"
        "charge_fujsen = '''\n"
        "def charge(amount):\n"
        "    if amount < 0:\n"
        "        raise ValueError('negative amount: ' + str(amount))\n"
        "    return amount\n"
        "'''\n"
    )
    cfg = TSK.from_file(path, env={})
    with pytest.raises(FujsenError) as ei:
        cfg.execute_fujsen("svc", "charge", -3)
    err = ei.value
    assert not isinstance(err, (SandboxViolation, FujsenTimeout))
    assert str(err).startswith(f"{path}:6 in charge: ValueError: negative amount: -3")
    assert isinstance(err.__cause__, ValueError)
    import traceback

    tb = "".join(traceback.format_exception(err.__cause__))
    assert f'File "{path}", line 6, in charge' in tb
    assert "raise ValueError('negative amount: ' + str(amount))" in tb


def test_violation_at_load_names_construct_file_and_line(tmp_path):
    """The document loads; the refusal is listed and raised when that fujsen is run."""
    path = tmp_path / "bad.tsk"
    path.write_text("[svc]\nx: 1\n\nbad_fujsen = '''\ndef bad():\n    import os\n    return os\n'''\n")
    cfg = TSK.from_file(path, env={})
    assert [f"{path}:6: import of 'os' is not allowed" in str(e) for e in cfg.refused_fujsen] == [True]
    with pytest.raises(SandboxViolation) as ei:
        cfg.execute_fujsen("svc", "bad")
    assert f"{path}:6: import of 'os' is not allowed" in str(ei.value)


def test_invalid_python_in_fujsen_is_reported_with_its_line():
    cfg = tsk("[s]\n\nf_fujsen = '''\ndef f(:\n    return 1\n'''\n")
    with pytest.raises(SandboxViolation, match=r":4: fujsen 'f_fujsen' is not valid Python"):
        cfg.execute_fujsen("s", "f")


def test_system_exit_and_recursion_never_reach_the_caller_raw():
    cfg = tsk(
        "[s]\nr_fujsen = '''\ndef r(n):\n    return r(n + 1)\n'''\n"
        "m_fujsen = '''\ndef m():\n    return [0] * (10 ** 9)\n'''\n"
    )
    with pytest.raises(FujsenError, match="recursion too deep"):
        cfg.execute_fujsen("s", "r", 0)
    with pytest.raises(SandboxViolation, match="repetition"):
        cfg.execute_fujsen("s", "m")
    assert isinstance(SandboxViolation("x"), TuskError)


def test_error_text_does_not_leak_unreadable_values():
    secret = "SECRET-" + "x" * 8
    cfg = tsk("[s]\nf_fujsen = '''\ndef f():\n    return redis.from_url('redis://10.0.0.1:6379').get('k')\n'''\n",
              env={"OTHER": secret})
    with pytest.raises(SandboxViolation) as ei:
        cfg.execute_fujsen("s", "f")
    assert secret not in str(ei.value)


# --- helpers -------------------------------------------------------------------------------


def test_helpers_offer_functions():
    cfg = tsk(
        """[s]
f_fujsen = '''
def f():
    import json
    d = datetime.datetime(2024, 1, 2, 3, 4, 5)
    return [
        json.loads(json.dumps({"a": [1, 2]})),
        math.sqrt(16), math.floor(2.7), math.prod([2, 3, 4]),
        d.isoformat(), (d + datetime.timedelta(days=1)).day,
        len(str(uuid.uuid4())), hashlib.sha256(b"abc").hexdigest()[:8],
        time.time() > 0, time.monotonic() > 0,
        "%s-%05d" % ("id", 42), "{:,}".format(1234567),
    ]
'''
"""
    )
    assert cfg.execute_fujsen("s", "f") == [
        {"a": [1, 2]}, 4.0, 2, 24, "2024-01-02T03:04:05", 3, 36, "ba7816bf", True, True,
        "id-00042", "1,234,567",
    ]


def test_unknown_helper_attribute_is_a_violation_that_names_what_is_offered():
    cfg = tsk("[s]\nf_fujsen = '''\ndef f():\n    return json.codecs\n'''\n")
    with pytest.raises(SandboxViolation, match="offers no 'codecs'.*dumps, loads"):
        cfg.execute_fujsen("s", "f")


def test_user_classes_without_special_methods_work():
    cfg = tsk(
        """[s]
f_fujsen = '''
class Counter:
    count = 0

    def bump(self):
        self.count = self.count + 1
        return self.count

def f():
    c = Counter()
    c.bump()
    return c.bump()
'''
"""
    )
    assert cfg.execute_fujsen("s", "f") == 2


def test_print_is_captured_not_written_to_stdout(capsys):
    cfg = tsk("[s]\nf_fujsen = '''\ndef f():\n    print('hello from fujsen')\n    return 1\n'''\n")
    assert cfg.execute_fujsen("s", "f") == 1
    out = capsys.readouterr()
    assert "hello from fujsen" not in out.out + out.err


def test_redis_facade_on_memory_bus_round_trips():
    cfg = tsk(
        """[s]
event_bus: "memory://facade-test"
f_fujsen = '''
def f():
    r = redis.from_url(event_bus)
    r.set("k", "v")
    r.hset("h", "a", 1)
    r.rpush("l", 1, 2, 3)
    sid = r.xadd("stream", {"x": "1"})
    p = r.pipeline()
    p.incr("n").incr("n")
    return [r.get("k"), r.hgetall("h"), r.lrange("l", 0, -1), r.xlen("stream"), p.execute(),
            r is redis.from_url(event_bus)]
'''
"""
    )
    assert cfg.execute_fujsen("s", "f") == [
        b"v", {b"a": b"1"}, [b"1", b"2", b"3"], 1, [1, 2], True
    ]
