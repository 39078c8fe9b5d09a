"""In-process, a config cannot take the host down: C-level work, single allocations, C recursion
and interrupts landing in host code.

Each escape case runs in a fresh child interpreter (the escape harness: canaries, address-space
cap, hard kill) and must end in the documented error within the time limit, with the sandbox
and the host still usable afterwards. A second group runs small host programs in a child and
checks the host thread is usable after fujsen calls that end badly.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from test_escapes_sample import RESOURCE, _params, _pythonpath, _timeout_mark

C_LEVEL = [
    ("bigint_floordiv", "x = 1 << 1000000\ny = (1 << 600000) + 1\nreturn x // y", RESOURCE),
    ("bigint_mod", "x = 1 << 1000000\ny = (1 << 600000) + 1\nreturn x % y", RESOURCE),
    ("bigint_divmod", "x = 1 << 1000000\ny = (1 << 600000) + 1\nreturn divmod(x, y)", RESOURCE),
    ("bigint_from_bytes", 'x = int.from_bytes(b"\\xff" * 4000000, "big")\nreturn x // (x >> 100)', RESOURCE),
    ("isqrt_huge", "return math.isqrt(1 << 1000000)", RESOURCE),
    ("range_variable_product",
     "for i in range(2 ** 100, 2 ** 100 + 1):\n    for j in range(2 ** 100, 2 ** 100 + 1):\n        return i * j",
     RESOURCE),
    ("list_count_long_strings",
     's = "a" * 10 ** 7\nitems = [s[:-1] + "a"] * 10 ** 7\nreturn items.count("a" * 10 ** 7)', RESOURCE),
    ("str_count_quadratic", 's = "a" * 6 * 10 ** 7\nreturn s.count("a" * 99 + "b")', RESOURCE),
]

ALLOCATIONS = [
    ("unbound_ljust", 'return str.ljust("a", 10 ** 10)', RESOURCE),
    ("unbound_zfill", 'return str.zfill("1", 10 ** 10)', RESOURCE),
    ("unbound_center", 'return str.center("a", 10 ** 10)', RESOURCE),
    ("unbound_join", 'return str.join("x" * 1000000, ["a"] * 1000)', RESOURCE),
    ("unbound_replace", 'return str.replace("a" * 10000, "a", "a" * 100000)', RESOURCE),
    ("bytes_unbound_ljust", 'return bytes.ljust(b"a", 10 ** 10)', RESOURCE),
    ("to_bytes_length", 'return (1).to_bytes(10 ** 10, "big")', RESOURCE),
    ("translate_amplify", 'return ("a" * 10 ** 6).translate({97: "b" * 1000})', RESOURCE),
    ("json_separators", 'return json.dumps([1] * 10 ** 6, separators=("," * 10 ** 4, ":"))', RESOURCE),
    ("ascii_escapes", 'return ascii("\\U000e0001" * 2 ** 25)', RESOURCE),
    ("repr_escapes", 'return repr("\\U000e0001" * 2 ** 25)', RESOURCE),
    ("fstring_repr_escapes", 's = "\\U000e0001" * 2 ** 23\nreturn f"{s!r}"', RESOURCE),
    ("printf_repr_escapes", 's = "\\U000e0001" * 2 ** 23\nreturn "%r" % (s,)', RESOURCE),
    ("format_ascii_escapes", 's = "\\U000e0001" * 2 ** 23\nreturn "{!a}".format(s)', RESOURCE),
    ("deque_repeat", "from collections import deque\nreturn deque([0] * 1000) * 10 ** 9", RESOURCE),
    ("counter_elements", "from collections import Counter\nreturn len(list(Counter(a=10 ** 12).elements()))", RESOURCE),
    ("re_sub_amplify", 'import re\nreturn re.sub("", "x" * 10 ** 6, "a" * 10 ** 4)', RESOURCE),
]

C_RECURSION = [
    ("nested_maps", "it = [1]\nfor i in range(300000):\n    it = map(abs, it)\nreturn next(it)", RESOURCE),
    ("nested_zips", "it = [1]\nfor i in range(300000):\n    it = zip(it)\nreturn next(it)", RESOURCE),
    ("nested_filters", "it = [1]\nfor i in range(300000):\n    it = filter(None, it)\nreturn next(it)", RESOURCE),
    ("nested_enumerates", "it = [1]\nfor i in range(300000):\n    it = enumerate(it)\nreturn next(it)", RESOURCE),
    ("hash_deep_tuple", "t = ()\nfor i in range(300000):\n    t = (t,)\nreturn hash(t)", RESOURCE),
]

CALLBACKS = [
    # host code (redis-py, publish) must never run fujsen code without the clock
    ("publish_metadata_object",
     "class M:\n    def keys(self):\n        while True:\n            pass\nreturn publish('t.x', {}, M())", RESOURCE),
    ("redis_kwargs_callback",
     "r = redis.from_url(event_bus)\nreturn r.zrange('k', 0, -1, withscores=True, score_cast_func=len)", RESOURCE),
    ("generator_finally_at_host_gc",
     "def g():\n    try:\n        yield 1\n    finally:\n        while True:\n            pass\n"
     "x = g()\nnext(x)\nraise ValueError('done')", RESOURCE),
    ("redis_infinite_generator",
     "def g():\n    while True:\n        yield 'k'\nreturn redis.from_url(event_bus).mget(g())", RESOURCE),
]


@_timeout_mark
@pytest.mark.parametrize("src,expect", _params(C_LEVEL))
def test_c_level_work_is_refused(box, src, expect):
    box.run(src, expect)


@_timeout_mark
@pytest.mark.parametrize("src,expect", _params(ALLOCATIONS))
def test_single_allocations_are_refused(box, src, expect):
    box.run(src, expect)


@_timeout_mark
@pytest.mark.parametrize("src,expect", _params(C_RECURSION))
def test_c_recursion_is_bounded(box, src, expect):
    box.run(src, expect)


@_timeout_mark
@pytest.mark.parametrize("src,expect", _params(CALLBACKS))
def test_host_callables_get_plain_data(box, src, expect):
    box.run(src, expect)


_HOST_PROGRAM = r'''
import logging, sys, threading, time
from tusk_events import TSK, TuskError

logging.basicConfig(level=logging.INFO, stream=open("/dev/null", "w"))
stop = False
def chatter():
    log = logging.getLogger("busy")
    while not stop:
        log.info("tick")
threading.Thread(target=chatter, daemon=True).start()

Q = "'" * 3
TEXT = "\n".join([
    "[s]",
    "fujsen_timeout: 0.3",
    "printer_fujsen = " + Q,
    "def printer():",
    "    while True:",
    "        print('x')",
    Q,
    "crosser_fujsen = " + Q,
    "def crosser(n):",
    "    data = list(range(n)) + ['end']",
    "    return max(data)",
    Q,
    "ok_fujsen = " + Q,
    "def ok(a):",
    "    return a + 1",
    Q,
    "",
])
cfg = TSK.from_string(TEXT, env={})
outcomes = []
for name, args in [("printer", ()), ("crosser", (3_000_000,))] * 3:
    t0 = time.monotonic()
    try:
        cfg.execute_fujsen("s", name, *args)
        outcomes.append("returned")
    except TuskError as e:
        outcomes.append(type(e).__name__)
    assert time.monotonic() - t0 < 2 * 0.3 + 1.5, (name, time.monotonic() - t0)
    # the host thread is usable: no interrupt pending, the logging lock is free
    handler = logging.getLogger().handlers[0]
    assert handler.lock.acquire(timeout=2), "logging handler lock left held"
    handler.lock.release()
    time.sleep(0.2)  # a stray interrupt would land here
    assert cfg.execute_fujsen("s", "ok", 1) == 2
stop = True
print(outcomes)
'''


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_host_thread_usable_after_interrupts():
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_HOST_PROGRAM)],
        capture_output=True, text=True, timeout=100, env={"PYTHONPATH": _pythonpath(), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes = eval(proc.stdout.strip().splitlines()[-1])  # noqa: S307 - our own child's list
    assert outcomes[0::2] == ["FujsenTimeout"] * 3
    assert all(o in ("FujsenTimeout", "FujsenError") for o in outcomes[1::2])


def test_round_with_huge_ndigits_is_quick():
    from tusk_events import TSK

    cfg = TSK.from_string("[s]\nf_fujsen = '''\ndef f(x):\n    return round(x, -10 ** 6), round(x, -2)\n'''\n", env={})
    assert cfg.execute_fujsen("s", "f", 123456) == (0, 123500)


def test_budget_end_is_idempotent():
    from tusk_events.fujsen import budget

    st = budget.state()
    saved = st.begin(1.0)
    depth = st.depth
    assert st.finish(saved, depth) == (False, False, None)
    # a retry after an interrupt that landed just after end() returned changes nothing
    assert st.finish(saved, depth) == (False, False, None)
    assert st.depth == depth - 1 and not st.active
