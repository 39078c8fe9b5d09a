"""Process isolation: fujsen in worker processes with OS limits, the parent in charge.

Most tests here could not pass in-process: a C-level operation cut off by the wall deadline,
memory stopped by RLIMIT_AS, a worker without the parent's secrets or network, a worker
killed mid-call. The rest check that isolated fujsen behave like inline ones.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import secrets
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
from test_legit_sample import CASES, tsk_text

from tusk_events import TSK, ConfigError, FujsenError, FujsenTimeout, SandboxViolation
from tusk_events.cli import main as cli_main
from tusk_events.fujsen.isolation import (
    PlainUnpickler,
    ProtocolError,
    WorkerPool,
    dumps_plain,
    loads_plain,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"


def iso(text: str, **env: str) -> TSK:
    return TSK.from_string(text, env=env, isolation="process")


CALC = """[calc]
factor: 3
tags: ["a"]
scale_fujsen = '''
def scale(x):
    tags.append("x")
    return x * factor, len(tags)
'''
fails_fujsen = '''
def fails(x):
    if x < 0:
        raise ValueError("negative amount: " + str(x))
    return x
'''
spin_fujsen = '''
def spin():
    while True:
        pass
'''
nap_fujsen = '''
def nap(seconds):
    time.sleep(seconds)
    return seconds
'''
gen_fujsen = '''
def gen():
    return (i for i in range(3))
'''
apply_fujsen = '''
def apply(fn, value, *, then=None):
    out = fn(value)
    return then(out) if then else out
'''
format_fujsen = '''
def format():
    try:
        "{0.__class__}".format(1)
    except Exception:
        pass
    return 1
'''
"""


@pytest.fixture(scope="module")
def calc() -> TSK:
    return iso(CALC)


def _pool(cfg: TSK, section: str, name: str) -> WorkerPool:
    return cfg.fujsen(section, name).pool  # type: ignore[attr-defined]


# --- choosing the level ---------------------------------------------------------------------


def test_level_comes_from_the_argument_then_the_config():
    text = '[s]\nisolation: "process"\nf_fujsen = \'\'\'\ndef f():\n    return 1\n\'\'\'\n'
    assert TSK.from_string(text, env={}).isolation == "process"
    assert TSK.from_string('isolation: "process"\n' + text.replace('isolation: "process"\n', ""), env={}).isolation == "process"
    assert TSK.from_string(text, env={}, isolation="inline").isolation == "inline"
    assert TSK.from_string(text.replace("process", "inline"), env={}, isolation="process").isolation == "process"
    assert TSK.from_string("[s]\nx: 1\n", env={}).isolation == "inline"
    cfg = TSK.from_string(text, env={})
    assert type(cfg.fujsen("s", "f")).__name__ == "IsolatedRunner"
    assert cfg.execute_fujsen("s", "f") == 1


@pytest.mark.parametrize(
    "text",
    ['isolation: "thread"\n', 'isolation: "process"\nisolation_workers: 0\n', 'isolation: "process"\nisolation_memory_mb: "big"\n'],
)
def test_bad_settings_are_config_errors_at_load(text):
    with pytest.raises(ConfigError):
        TSK.from_string(text, env={})
    with pytest.raises(ConfigError):
        TSK.from_string("[s]\nx: 1\n", env={}, isolation="sandboxed")


# --- same behaviour as inline ------------------------------------------------------------------


@pytest.mark.parametrize("name,src,args,kwargs,expected", [pytest.param(*c, id=c[0]) for c in CASES])
def test_legit_fujsen_return_the_same_values(name, src, args, kwargs, expected):
    inline = TSK.from_string(tsk_text({name: src})).execute_fujsen("event_system", name, *args, **kwargs)
    isolated = TSK.from_string(tsk_text({name: src}), isolation="process").execute_fujsen(
        "event_system", name, *args, **kwargs
    )
    if name == "build_event_like_seed":
        inline.pop("timestamp")
        isolated.pop("timestamp")
    assert isolated == inline


def test_fresh_globals_per_call_and_config_untouched(calc):
    assert calc.execute_fujsen("calc", "scale", 2) == (6, 2)
    assert calc.execute_fujsen("calc", "scale", 2) == (6, 2)
    assert calc.data["calc"]["tags"] == ["a"]


def test_errors_point_into_the_tsk_with_the_remote_traceback(calc):
    with pytest.raises(FujsenError) as ei:
        calc.execute_fujsen("calc", "fails", -3)
    assert not isinstance(ei.value, (SandboxViolation, FujsenTimeout))
    assert str(ei.value) == f"{calc._filename}:12 in fails: ValueError: negative amount: -3"
    with pytest.raises(FujsenError) as inline:
        TSK.from_string(CALC, env={}).execute_fujsen("calc", "fails", -3)
    assert str(inline.value).replace(inline.value.args[0].split(":")[0], "") == str(ei.value).replace(calc._filename, "")
    cause = ei.value.__cause__
    assert cause is not None and "line 12, in fails" in str(cause) and "raise ValueError" in str(cause)


def test_violations_still_at_load_time_in_the_parent():
    """Checked by the parent at load (listed), raised when run, before any worker is asked."""
    cfg = iso("[s]\nf_fujsen = '''\ndef f():\n    return open('x')\n'''\n")
    assert ["'open' is not available" in str(e) for e in cfg.refused_fujsen] == [True]
    with pytest.raises(SandboxViolation, match="'open' is not available"):
        cfg.execute_fujsen("s", "f")


def test_run_time_violation_is_sticky(calc):
    with pytest.raises(SandboxViolation, match="forbidden attribute"):
        calc.execute_fujsen("calc", "format")


def test_timeout_by_the_worker_watchdog_keeps_the_worker(calc):
    f = calc.fujsen("calc", "spin")
    calc.execute_fujsen("calc", "fails", 1)
    before = set(f.pool.worker_pids())
    with pytest.raises(FujsenTimeout, match=r":\d+ in spin: still running after its 1 s budget$"):
        f()
    assert set(f.pool.worker_pids()) == before  # interrupted in Python: no kill needed
    assert calc.execute_fujsen("calc", "fails", 1) == 1


def test_results_and_arguments_must_be_plain_data(calc):
    with pytest.raises(FujsenError, match="result is not plain data.*generator"):
        calc.execute_fujsen("calc", "gen")
    with pytest.raises(FujsenError, match="arguments of an isolated fujsen must be plain data.*object"):
        calc.execute_fujsen("calc", "fails", object())
    assert calc.execute_fujsen("calc", "fails", 2) == 2


def test_callable_arguments_are_called_back_in_the_parent(calc):
    seen = []

    def double(x):
        seen.append(threading.get_ident())
        return x * 2

    assert calc.execute_fujsen("calc", "apply", double, 21) == 42
    assert calc.execute_fujsen("calc", "apply", double, 2, then=lambda v: [v, "done"]) == [4, "done"]
    assert seen == [threading.get_ident()] * 2  # in the calling thread

    def broken(x):
        raise KeyError("nope")

    with pytest.raises(FujsenError, match="KeyError: 'nope'"):
        calc.execute_fujsen("calc", "apply", broken, 1)


def test_bound_helpers_are_proxied_and_their_replies_must_be_plain():
    cfg = iso("[s]\nuse_fujsen = '''\ndef use(x):\n    return lookup(x)\n'''\n")
    cfg.bind_helpers(lookup=lambda x: {"x": x, "pid": os.getpid()})
    assert cfg.execute_fujsen("s", "use", 5) == {"x": 5, "pid": os.getpid()}  # ran in the parent
    cfg.bind_helpers(lookup=lambda x: object())
    with pytest.raises(FujsenError, match="TypeError: the helper's reply is not plain data"):
        cfg.execute_fujsen("s", "use", 5)
    cfg.bind_helpers(lookup=lambda x: [][x])
    with pytest.raises(FujsenError, match="IndexError: list index out of range"):
        cfg.execute_fujsen("s", "use", 5)


def test_time_in_the_parent_serving_a_helper_does_not_count():
    cfg = iso("[s]\nfujsen_timeout: 0.3\nwait_fujsen = '''\ndef wait(s):\n    return slow(s)\n'''\n")
    cfg.bind_helpers(slow=lambda s: time.sleep(s) or s)
    assert cfg.execute_fujsen("s", "wait", 0.8) == 0.8  # past budget + grace, all of it in the parent


def test_network_fallback_is_one_log_line(caplog):
    pool = WorkerPool(workers=1)
    with caplog.at_level(logging.WARNING, logger="tusk_events.fujsen.isolation"):
        for _ in range(3):
            pool.report({"network": "host", "network_error": "unshare(CLONE_NEWNET): Operation not permitted"})
    assert [r.getMessage() for r in caplog.records] == [
        "isolation workers share the host's network (unshare(CLONE_NEWNET): Operation not permitted)"
    ]


def test_nested_calls_reuse_the_held_worker():
    """A helper that runs another isolated fujsen, with one worker: no deadlock."""
    cfg = iso(
        "isolation_workers: 1\n[s]\n"
        "outer_fujsen = '''\ndef outer(x):\n    return relay(x) + 1\n'''\n"
        "inner_fujsen = '''\ndef inner(x):\n    return x * 10\n'''\n"
    )
    cfg.bind_helpers(relay=lambda x: cfg.execute_fujsen("s", "inner", x))
    assert cfg.execute_fujsen("s", "outer", 4) == 41
    assert _pool(cfg, "s", "outer").size == 1


def test_threads_share_the_pool(calc):
    f = calc.fujsen("calc", "fails")
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(40):
                assert f(k * 100 + i) == k * 100 + i
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(f.pool.worker_pids()) <= f.pool.size


def test_cli_exec_option(tmp_path, capsys):
    path = tmp_path / "calc.tsk"
    path.write_text(CALC)
    assert cli_main(["exec", str(path), "calc", "fails", "5", "--isolation", "process"]) == 0
    assert capsys.readouterr().out.strip() == "5"


def test_cli_run_option_goes_through_runtime_from_files(tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.setenv("EVENT_BUS", "memory://cli-" + uuid.uuid4().hex[:8])
    monkeypatch.setenv("EVENT_STORE", f"sqlite:///{tmp_path}/cli.db")
    code = cli_main(["run", str(CONFIGS / "app.tsk"), "--until-idle", "--json", "--isolation", "process"])
    assert code == 3  # ran to the end, one event dead-lettered
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["published"], summary["handled"], summary["retried"], summary["dead_lettered"]) == (11, 14, 2, 1)


def test_a_worker_that_cannot_start_is_a_fujsen_error(monkeypatch):
    from tusk_events.fujsen import pool as isolation

    cfg = iso("isolation_workers: 5\n[s]\nf_fujsen = '''\ndef f():\n    return 1\n'''\n")
    pool = _pool(cfg, "s", "f")
    pool.close()
    monkeypatch.setattr(isolation, "_BOOT", "raise SystemExit('no interpreter today')")
    with pytest.raises(FujsenError, match=r"cannot start an isolation worker \(exit status 1\): no interpreter today"):
        cfg.execute_fujsen("s", "f")
    monkeypatch.undo()
    pool.close()
    assert cfg.execute_fujsen("s", "f") == 1


# --- what only process isolation can do -----------------------------------------------------------

LONG_C = """[c]
fujsen_timeout: 0.3
csort_fujsen = '''
def csort():
    return sorted(map(str, range(10 ** 7)), reverse=True)[0]
'''
strmax_fujsen = '''
def strmax():
    return max(map(str, range(10 ** 7)))
'''
ok_fujsen = '''
def ok():
    return "ok"
'''
"""


def test_long_operation_inside_c_is_killed_at_the_wall_deadline():
    """Sorting ten million strings passes every size guard and runs for seconds in one C
    call: in-process nothing can stop it. The parent kills the worker at budget + grace."""
    cfg = iso(LONG_C)
    assert cfg.execute_fujsen("c", "ok") == "ok"
    pool = _pool(cfg, "c", "ok")
    t0 = time.monotonic()
    # stopped by the worker's own watchdog or, if C holds on, killed by the parent
    with pytest.raises(FujsenTimeout, match="still running after its 0.3 s budget"):
        cfg.execute_fujsen("c", "csort")
    assert time.monotonic() - t0 < 1.5
    t0 = time.monotonic()
    assert cfg.execute_fujsen("c", "ok") == "ok"  # on a fresh worker
    assert len(pool.worker_pids()) <= pool.size


def test_c_loop_stops_at_the_budget_not_when_c_returns():
    """Isolated, a long C-heavy loop ends at budget + grace whatever C does (in-process the
    watchdog can only stop it between C calls: ``map`` is now a generator, so it can here)."""
    inline = TSK.from_string(LONG_C, env={})
    t0 = time.monotonic()
    try:
        inline.execute_fujsen("c", "strmax")
    except FujsenTimeout:
        pass
    inline_s = time.monotonic() - t0
    t0 = time.monotonic()
    with pytest.raises(FujsenTimeout):
        iso(LONG_C).execute_fujsen("c", "strmax")
    isolated_s = time.monotonic() - t0
    assert isolated_s < 0.3 + 0.25 + 0.5
    assert inline_s < 30  # it ended (by the watchdog, or when C returned)


MEMORY = """isolation_memory_mb: 160
[m]
fujsen_timeout: 5
hog_fujsen = '''
def hog():
    keep = []
    for i in range(40):
        keep.append([i] * 5000000)
    return len(keep)
'''
ok_fujsen = '''
def ok():
    return 1
'''
"""


def test_memory_growth_is_stopped_by_rlimit_as_and_the_pool_recovers():
    cfg = iso(MEMORY)
    assert cfg.execute_fujsen("m", "ok") == 1
    info = _pool(cfg, "m", "ok").info()
    assert info and isinstance(info[0]["limits"]["RLIMIT_AS"], int)
    with pytest.raises(FujsenError, match=r":8 in hog: out of memory"):
        cfg.execute_fujsen("m", "hog")
    assert cfg.execute_fujsen("m", "ok") == 1  # the pool goes on (recycling the worker if it grew)


def _worker_pid(cfg: TSK, section: str, name: str) -> int:
    cfg.execute_fujsen(section, name)
    pids = _pool(cfg, section, name).worker_pids()
    assert pids
    return pids[0]


def test_worker_holds_no_secret_no_fds_and_an_empty_directory(monkeypatch):
    secret = "WORKER-SECRET-" + secrets.token_hex(8)
    monkeypatch.setenv("TUSK_ISOLATION_TEST_SECRET", secret)
    cfg = iso(LONG_C)
    pool = _pool(cfg, "c", "ok")
    pool.close()  # workers started from now on see the secret in our environment
    pid = _worker_pid(cfg, "c", "ok")
    assert os.environ["TUSK_ISOLATION_TEST_SECRET"] == secret
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert secret.encode() not in environ
    names = {e.split(b"=", 1)[0] for e in environ.split(b"\0") if e}
    assert names <= {b"PATH", b"LANG", b"LANGUAGE", b"LC_ALL", b"LC_CTYPE", b"TZ"}
    cwd = os.readlink(f"/proc/{pid}/cwd")
    assert os.path.basename(cwd).startswith("tusk-worker-") and os.listdir(cwd) == []
    fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert sorted(fds) == [0, 1, 2, 3, 4], fds
    assert [fds[0], fds[1], fds[2]] == ["/dev/null"] * 3
    assert fds[3].startswith("pipe:") and fds[4].startswith("pipe:")
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert _limit(limits, "Max file size") == "0"
    assert _limit(limits, "Max open files") == "16"
    assert _limit(limits, "Max core file size") == "0"
    assert _limit(limits, "Max processes") == "0"  # root ignores it: see isolation.py
    assert _limit(limits, "Max address space") != "unlimited"
    assert _limit(limits, "Max cpu time") != "unlimited"
    pool.close()


def _limit(table: str, name: str) -> str:
    for line in table.splitlines():
        if line.startswith(name):
            return line[len(name):].split()[0]
    raise AssertionError(f"no {name} in /proc/PID/limits")


def test_worker_has_no_network_when_the_kernel_allows():
    cfg = iso(LONG_C)
    pid = _worker_pid(cfg, "c", "ok")
    info = {i["pid"]: i for i in _pool(cfg, "c", "ok").info()}[pid]
    if info["network"] != "isolated":
        pytest.skip(f"no network namespace here: {info.get('network_error')}")
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    interfaces = [line.split(":")[0].strip() for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]]
    assert interfaces == ["lo"]


def _kill_busy(pool: WorkerPool, stop: threading.Event, after: float = 0.2) -> list[int]:
    killed: list[int] = []

    def loop() -> None:
        seen: dict[int, float] = {}
        while not stop.is_set():
            now = time.monotonic()
            for pid in pool.busy_pids():
                if now - seen.setdefault(pid, now) >= after and pid not in killed:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.01)

    threading.Thread(target=loop, daemon=True).start()
    return killed


def test_worker_killed_mid_call_is_a_fujsen_error_and_the_next_call_works(calc):
    f = calc.fujsen("calc", "nap")
    assert f(0) == 0
    stop = threading.Event()
    killed = _kill_busy(f.pool, stop)
    try:
        with pytest.raises(FujsenError) as ei:
            f(0.9)
    finally:
        stop.set()
    assert not isinstance(ei.value, FujsenTimeout)
    assert "isolation worker died during the call (SIGKILL" in str(ei.value)
    assert killed and killed[0] not in f.pool.worker_pids()
    assert f(0) == 0


SLEEPY = """[sleepy]
subscribe: "nap"
retries: 1
backoff: 0.01
timeout: 5
handle_fujsen = '''
def handle(event):
    time.sleep(event["payload"]["seconds"])
'''
"""


def test_runtime_retries_and_dead_letters_a_killed_worker(tmp_path, memory_url):
    from tusk_events.runtime.core import Runtime

    env = {"EVENT_BUS": memory_url, "EVENT_STORE": f"sqlite:///{tmp_path}/events.db"}
    cfg = TSK.from_string(SLEEPY, env=env, isolation="process")
    with Runtime([cfg]) as rt:
        stop = threading.Event()
        killed = _kill_busy(cfg.fujsen("sleepy", "handle").pool, stop)
        try:
            rt.publish("nap", {"seconds": 0.8})
            summary = rt.run_until_idle(startup=False, timeout=30)
        finally:
            stop.set()
        assert len(killed) == 2
        assert (summary.handled, summary.failed, summary.retried, summary.dead_lettered) == (0, 2, 1, 1)
        (service, event_type, reason), = summary.dead_letters
        assert (service, event_type) == ("sleepy", "nap")
        assert "isolation worker died during the call (SIGKILL" in reason
        letter, = rt.dlq.list("sleepy")
        assert letter.attempts == 2
        rt.publish("nap", {"seconds": 0})
        assert rt.run_until_idle(startup=False, timeout=30).handled == 1


# --- the docs' configs, unchanged ---------------------------------------------------------------------


def test_event_system_publish_and_subscribe(memory_url):
    from tusk_events.bus import redis_client

    cfg = TSK.from_file(CONFIGS / "event_system.tsk", env={"EVENT_BUS": memory_url}, isolation="process")
    listener = redis_client(memory_url).pubsub()
    listener.subscribe("tusk_events")
    assert listener.get_message(timeout=1)["type"] == "subscribe"
    event = cfg.execute_fujsen("event_system", "publish_event", "user_registered", {"user_id": 123})
    assert event["type"] == "user_registered" and event["payload"] == {"user_id": 123}
    message = listener.get_message(timeout=2)
    assert message["type"] == "message"
    assert message["data"] == pickle.loads(pickle.dumps(message["data"]))
    import json

    assert json.loads(message["data"])["payload"] == {"user_id": 123}

    # subscribe_events(handler, types) with a host function as the handler, proxied back
    received: list[dict] = []
    errors: list[BaseException] = []

    class Enough(Exception):
        pass

    def handler(evt: dict) -> None:
        received.append(evt)
        raise Enough("got one")

    def subscriber() -> None:
        try:
            cfg.execute_fujsen("event_system", "subscribe_events", handler, ["order_placed"])
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    t = threading.Thread(target=subscriber)
    t.start()
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        cfg.execute_fujsen("event_system", "publish_event", "ignored_type", {})
        cfg.execute_fujsen("event_system", "publish_event", "order_placed", {"order": 7})
        time.sleep(0.05)
    t.join(10)
    assert received and received[0]["type"] == "order_placed" and received[0]["payload"] == {"order": 7}
    assert len(errors) == 1 and isinstance(errors[0], FujsenError) and "Enough: got one" in str(errors[0])


def test_event_sourcing_store_and_replay(tmp_path):
    env = {"EVENT_STORE": f"sqlite:///{tmp_path}/es.db"}
    cfg = TSK.from_file(CONFIGS / "event_sourcing.tsk", env=env, isolation="process")
    inline = TSK.from_file(CONFIGS / "event_sourcing.tsk", env=env)
    assert cfg.execute_fujsen("event_sourcing", "store_event", "user_registered", {"user_id": 1}) is True
    assert inline.execute_fujsen("event_sourcing", "store_event", "order_placed", {"n": 2}) is True
    events = cfg.execute_fujsen("event_sourcing", "replay_events", "user_registered")
    assert [e["payload"] for e in events] == [{"user_id": 1}]
    assert cfg.execute_fujsen("event_sourcing", "replay_events") == inline.execute_fujsen(
        "event_sourcing", "replay_events"
    )
    assert cfg.execute_fujsen("event_sourcing", "replay_events", "x", "'; DROP TABLE event_store; --") == []
    assert len(cfg.execute_fujsen("event_sourcing", "replay_events")) == 2


def test_dead_letter_queue_publish(memory_url):
    from tusk_events.bus import redis_client

    cfg = TSK.from_file(CONFIGS / "dead_letter_queue.tsk", env={"EVENT_BUS": memory_url}, isolation="process")
    listener = redis_client(memory_url).pubsub()
    listener.subscribe("tusk_dlq")
    listener.get_message(timeout=1)
    out = cfg.execute_fujsen("dead_letter_queue", "publish_dlq", {"type": "x", "payload": {}}, "handler failed")
    assert out["reason"] == "handler failed" and out["original_event"] == {"type": "x", "payload": {}}
    assert listener.get_message(timeout=2)["type"] == "message"


def _app_summary(tmp_path: Path, isolation: str) -> tuple[int, int, int, int]:
    from tusk_events.runtime.core import Runtime

    env = {
        "EVENT_BUS": "memory://app-" + uuid.uuid4().hex[:8],
        "EVENT_STORE": f"sqlite:///{tmp_path}/app-{isolation}.db",
    }
    cfg = TSK.from_file(CONFIGS / "app.tsk", env=env, isolation=isolation)
    with Runtime([cfg]) as rt:
        s = rt.run_until_idle(timeout=60)
    return s.published, s.handled, s.retried, s.dead_lettered


def test_app_runs_unchanged_with_the_same_summary(tmp_path):
    inline = _app_summary(tmp_path, "inline")
    isolated = _app_summary(tmp_path, "process")
    assert isolated == inline == (11, 14, 2, 1)


# --- the wire ------------------------------------------------------------------------------------


def test_parent_never_unpickles_a_class_or_function():
    evil = pickle.dumps(os.system)  # a reference to a callable
    with pytest.raises(ProtocolError):
        loads_plain(evil)
    reduce_call = b"cos\nsystem\n(S'true'\ntR."  # protocol 0: os.system("true")
    with pytest.raises(ProtocolError):
        loads_plain(reduce_call)
    with pytest.raises(pickle.UnpicklingError):
        PlainUnpickler(io.BytesIO(pickle.dumps(complex(1, 2)))).load()
    plain = {"a": [1, 2.5, None, True, b"x", bytearray(b"y")], "t": (1, "two"), "s": {3}, "f": frozenset([4])}
    assert loads_plain(dumps_plain(plain)) == plain


@pytest.mark.parametrize("value", [object(), len, complex(1, 2), range(3), type, Path(".")])
def test_worker_side_encoder_refuses_what_is_not_plain(value):
    with pytest.raises(TypeError, match="is not plain data"):
        dumps_plain({"x": [value]})


# --- the parent's end of the pipe ---------------------------------------------------------------


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "little") + payload


def test_an_eager_channel_reads_what_is_there_and_waits_for_the_rest():
    from tusk_events.fujsen.wire import Channel

    r, w = os.pipe()
    try:
        ch = Channel(r, w, eager=True)
        assert not os.get_blocking(r)
        os.write(w, _frame(b"ready") + _frame(b"next")[:3])
        assert ch.recv(time.monotonic() + 30) == b"ready"
        # half a frame: the rest comes later, the reader waits for it instead of failing
        threading.Timer(0.2, os.write, (w, _frame(b"next")[3:])).start()
        assert ch.recv(time.monotonic() + 30) == b"next"
        threading.Timer(0.2, os.write, (w, _frame(b"no deadline"))).start()
        assert ch.recv() == b"no deadline"
        # nothing comes: None at the deadline; past it, a frame that came late is not read
        t0 = time.monotonic()
        assert ch.recv(t0 + 0.3) is None
        assert time.monotonic() - t0 >= 0.29
        os.write(w, _frame(b"late"))
        assert ch.recv(time.monotonic() - 1) is None
        assert ch.recv(time.monotonic() + 30) == b"late"
    finally:
        os.close(w)
    with pytest.raises(EOFError):
        ch.recv(time.monotonic() + 30)
    os.close(r)


def test_a_short_calls_worker_runs_on_the_callers_cpu_and_a_long_ones_anywhere(calc):
    from tusk_events.fujsen import pool as pool_module

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if pool_module._current_cpu is None or len(cpus) < 2:
        pytest.skip("needs sched_getcpu and two CPUs")
    scale, nap = calc.fujsen("calc", "scale"), calc.fujsen("calc", "nap")
    pool = scale.pool
    pool.start()  # workers inherit the mask of the thread that starts them: start them unpinned
    try:
        for cpu in (cpus[0], cpus[-1]):
            os.sched_setaffinity(0, {cpu})  # this thread only
            assert scale(2)[0] == 6
            worker = pool._idle[-1]  # the worker that ran it: the pool reuses the last one freed
            assert os.sched_getaffinity(worker.pid) == {cpu}
        assert nap(0.1) == 0.1  # longer than ISOLATION_FOLLOW_S: free to run anywhere again
        worker = pool._idle[-1]
        assert os.sched_getaffinity(worker.pid) == set(cpus)
        assert scale(2)[0] == 6  # and pinned again by the next call
        assert os.sched_getaffinity(pool._idle[-1].pid) == {cpus[-1]}
    finally:
        os.sched_setaffinity(0, set(cpus))
