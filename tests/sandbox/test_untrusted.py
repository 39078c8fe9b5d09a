"""Untrusted configs: the operator holds the policy, the parent stays narrow, the worker is confined.

Each red-team class is asserted from outside the fujsen: a canary TCP listener counts
connections, a separate Redis client and a fresh store connection look at what is left, the
parent's own rusage measures what a call cost it, and /proc shows the worker's confinement.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from tusk_events import TSK, ConfigError, FujsenError, FujsenTimeout, SandboxViolation
from tusk_events.defaults import (
    FUJSEN_SQL_MAX_BYTES,
    ISOLATION_MEMORY_LIMIT,
    ISOLATION_WORKERS,
    UNTRUSTED_MAX_MESSAGE,
)
from tusk_events.errors import TuskError
from tusk_events.fujsen.isolation import pool_for

ROOT = Path(__file__).resolve().parents[2]
CANARY_PORTS = (7430, 7431)
SECRET = "hunter2-" + uuid.uuid4().hex
pytestmark = pytest.mark.timeout(120)


def redis_url() -> str | None:
    url = os.environ.get("TUSK_TEST_REDIS_URL")
    if url is None and os.environ.get("CI") == "true":
        pytest.fail("TUSK_TEST_REDIS_URL is required under CI")
    return url


def need_redis() -> str:
    url = redis_url()
    if url is None:
        pytest.skip("TUSK_TEST_REDIS_URL not set")
    return url


def fujsen(body: str, *, section: str = "s", extra: str = "") -> str:
    """A one-section config whose fujsen ``f`` has ``body`` (indented code)."""
    code = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
    return f"{extra}\n[{section}]\nf_fujsen = '''\ndef f(*args):\n{code}\n'''\n"


def untrusted(text: str, env: dict[str, str] | None = None, **kw: object) -> TSK:
    return TSK.from_string(text, env={"EVENT_BUS": "memory://", **(env or {})}, trust="untrusted", **kw)


class Canary:
    """A TCP listener that counts every connection made to it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = port
        self.hits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.hits += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def canary():
    c = Canary(CANARY_PORTS[0])
    yield c
    c.close()


def parent_usage() -> tuple[int, float]:
    """(peak RSS bytes, CPU seconds) of this process, all threads."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_maxrss * 1024, ru.ru_utime + ru.ru_stime


# --- the trust level ----------------------------------------------------------------------


def test_untrusted_forces_process_isolation_and_refuses_inline():
    cfg = untrusted(fujsen("return 1", extra='isolation: "inline"'))
    assert (cfg.trust, cfg.isolation) == ("untrusted", "process")
    assert cfg.execute_fujsen("s", "f") == 1
    with pytest.raises(ConfigError, match="not inline"):
        untrusted(fujsen("return 1"), isolation="inline")
    with pytest.raises(ConfigError, match="trust must be one of"):
        TSK.from_string("a: 1\n", trust="sometimes")


def test_runtime_refuses_a_trusted_config_under_untrusted():
    from tusk_events.runtime.core import Runtime

    cfg = TSK.from_string("a: 1\n", env={"EVENT_BUS": "memory://"})
    with pytest.raises(ConfigError, match="loaded trusted"):
        Runtime([cfg], trust="untrusted")


# --- host secrets -----------------------------------------------------------------------------


def test_env_reads_only_what_the_operator_allows():
    text = 'tok: @env("SECRET_TOKEN")\nhome: @env("HOME", "none")\n'
    env = {"SECRET_TOKEN": SECRET, "HOME": "/root"}
    cfg = TSK.from_string(text, env=env, trust="untrusted")
    assert cfg.data == {"tok": "", "home": "none"}
    assert SECRET not in cfg.to_string()
    allowed = TSK.from_string(text, env=env, trust="untrusted", env_allow=["SECRET_TOKEN"])
    assert allowed.data["tok"] == SECRET and allowed.data["home"] == "none"
    assert TSK.from_string(text, env=env).data["tok"] == SECRET  # trusted: unchanged


def test_injected_urls_carry_no_credentials_and_config_urls_are_ignored():
    env = {
        "EVENT_BUS": f"redis://:{SECRET}@127.0.0.1:6379/4",
        "EVENT_STORE": f"postgresql://admin:{SECRET}@127.0.0.1:5432/test?password={SECRET}&sslmode=disable",
    }
    text = fujsen("return [event_bus, event_store]", extra='event_bus: "redis://evil.example:6379/0"')
    cfg = untrusted(text, env)
    bus, store = cfg.execute_fujsen("s", "f")
    assert SECRET not in bus + store
    assert bus == "redis://127.0.0.1:6379/4"
    assert store == "postgresql://127.0.0.1:5432/test?sslmode=disable"
    assert cfg.bus_url == env["EVENT_BUS"]  # the runtime itself uses the operator's URL


def test_cli_exec_untrusted_reveals_no_secret_from_outside(tmp_path):
    cfg = tmp_path / "c.tsk"
    cfg.write_text('tok: @env("SECRET_TOKEN")\n' + fujsen("return [tok, event_bus]"))
    env = dict(os.environ, SECRET_TOKEN=SECRET, EVENT_BUS=f"redis://:{SECRET}@127.0.0.1:6379/4",
               PYTHONPATH=str(ROOT))
    run = [sys.executable, "-m", "tusk_events", "exec", str(cfg), "s", "f", "--untrusted"]
    out = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert SECRET not in out.stdout + out.stderr
    assert json.loads(out.stdout) == ["", "redis://127.0.0.1:6379/4"]
    out = subprocess.run([*run, "--env-allow", "SECRET_TOKEN"], env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout)[0] == SECRET  # the operator named it


# --- connections to addresses the operator did not name ----------------------------------------


def test_config_urls_never_reach_the_network(canary):
    target = f"redis://127.0.0.1:{canary.port}/0"
    extra = f'target: "{target}"\nevent_bus: "{target}"\n'
    cfg = untrusted(fujsen("return redis.from_url(target).set('k', 'v')", extra=extra),
                    {"EVENT_BUS": "redis://127.0.0.1:6379/4"})
    with pytest.raises(SandboxViolation, match="only the bus URLs"):
        cfg.execute_fujsen("s", "f")
    for url in (target, f"redis://127.0.0.1:{canary.port}"):
        probe = untrusted(fujsen(f'redis.from_url("{url}").ping()', extra=extra),
                          {"EVENT_BUS": "redis://127.0.0.1:6379/4"})
        with pytest.raises(SandboxViolation, match="only the bus URLs"):
            probe.execute_fujsen("s", "f")
    time.sleep(0.3)
    assert canary.hits == 0
    # the control: a trusted config's own URL does open a connection to the canary
    trusted = TSK.from_string(fujsen(f'redis.from_url("{target}").ping()', extra=f'target: "{target}"\n'),
                              env={"EVENT_BUS": "memory://"})
    with pytest.raises(FujsenError):
        trusted.execute_fujsen("s", "f")  # the canary is not Redis
    deadline = time.monotonic() + 5
    while canary.hits == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert canary.hits >= 1


# --- limits the config cannot raise -------------------------------------------------------------


def test_config_set_limits_only_lower_the_operators():
    text = fujsen("while True:\n    pass", extra="fujsen_timeout: 100000\nisolation_memory_mb: 1048576\nisolation_workers: 64\n")
    cfg = untrusted(text.replace("[s]", "[s]\nfujsen_timeout = 100000"), fujsen_timeout=0.3)
    pool = pool_for(cfg)
    assert pool.memory == ISOLATION_MEMORY_LIMIT and pool.size == ISOLATION_WORKERS
    t0 = time.monotonic()
    with pytest.raises(FujsenTimeout):
        cfg.execute_fujsen("s", "f")
    assert time.monotonic() - t0 < 5
    lower = untrusted(fujsen("return 1", extra="isolation_memory_mb: 128\nisolation_workers: 1\n"))
    assert (pool_for(lower).size, pool_for(lower).memory) == (1, 128 << 20)


def test_a_worker_cannot_allocate_past_the_operators_memory():
    body = "chunks = []\nfor i in range(48):\n    chunks.append('x' * (60 << 20))\nreturn len(chunks)"
    cfg = untrusted(fujsen(body, extra="isolation_memory_mb: 1048576\n"), fujsen_timeout=20)
    with pytest.raises(FujsenError, match="memory"):
        cfg.execute_fujsen("s", "f")


# --- what a call costs the parent -----------------------------------------------------------


def _cost(cfg: TSK, *args: object) -> tuple[int, float, BaseException | None, object]:
    cfg.execute_fujsen("s", "warm") if "warm" in cfg.fujsen_names("s") else None
    rss0, cpu0 = parent_usage()
    err: BaseException | None = None
    value = None
    try:
        value = cfg.execute_fujsen("s", "f", *args)
    except TuskError as e:
        err = e
    rss1, cpu1 = parent_usage()
    return rss1 - rss0, cpu1 - cpu0, err, value


WARM = "\nwarm_fujsen = '''\ndef warm():\n    return 1\n'''\n"


def test_a_huge_result_is_refused_at_the_frame_cap():
    cfg = untrusted(fujsen(f"return 'x' * {UNTRUSTED_MAX_MESSAGE * 4}") + WARM)
    grew, cpu, err, _ = _cost(cfg)
    assert isinstance(err, FujsenError) and "exceeds" in str(err)
    assert grew <= 64 << 20 and cpu <= 1.0


def test_colliding_hash_keys_cost_the_parent_little():
    # ints hash to themselves modulo 2**61 - 1: these all land in one slot chain
    cfg = untrusted(fujsen("m = 2 ** 61 - 1\nreturn {i * m: None for i in range(20000)}", ) + WARM)
    grew, cpu, err, _ = _cost(cfg)
    assert isinstance(err, FujsenError), err
    assert cpu <= 0.5, f"the parent spent {cpu:.2f} s decoding"


def test_plain_results_still_round_trip_through_the_strict_decoder():
    cfg = untrusted(fujsen("return {'t': (1, 2.5, None), 'b': b'x' * 9000, 3: {4, 5}, 's': 'y' * 9000}"))
    assert cfg.execute_fujsen("s", "f") == {"t": (1, 2.5, None), "b": b"x" * 9000, 3: {4, 5}, "s": "y" * 9000}


def test_sql_results_are_capped_in_bytes_while_fetched(tmp_path):
    env = {"EVENT_STORE": f"sqlite:///{tmp_path}/ev.db"}
    blob = 4 << 20
    body = ("return len(query('WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400) "
            f"SELECT zeroblob({blob}) FROM c'))")
    cfg = untrusted(fujsen(body) + WARM, env)
    grew, cpu, err, _ = _cost(cfg)
    assert err is not None and f"{FUJSEN_SQL_MAX_BYTES:,} bytes" in str(err)
    assert grew <= 64 << 20, f"the parent grew {grew >> 20} MiB"


def test_helper_time_counts_against_the_call(tmp_path):
    env = {"EVENT_STORE": f"sqlite:///{tmp_path}/ev.db"}
    slow = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000) "
            "SELECT count(*) FROM c")
    cfg = untrusted(fujsen(f"while True:\n    query('{slow}')") + WARM, env, fujsen_timeout=0.5)
    t0 = time.monotonic()
    grew, cpu, err, _ = _cost(cfg)
    elapsed = time.monotonic() - t0
    assert isinstance(err, (FujsenTimeout, FujsenError)), err
    assert elapsed < 3.0, f"a 0.5 s call held the parent for {elapsed:.1f} s"
    assert cpu <= 0.5 + 0.5, f"the parent spent {cpu:.2f} s of CPU on a 0.5 s call"


# --- the runtime's keys and the store ---------------------------------------------------------


@pytest.mark.parametrize("trust", ["trusted", "untrusted"])
def test_runtime_keys_are_refused_to_fujsen(trust):
    import redis as redis_py

    url = need_redis()
    outside = redis_py.Redis.from_url(url)
    tag = uuid.uuid4().hex[:8]
    dlq, dedup = f"tusk:dlq:{tag}", f"tusk:dedup:{tag}"
    outside.set(dlq, "dead letter")
    outside.xadd(f"tusk:stream:{tag}", {"k": "v"})
    outside.xgroup_create(f"tusk:stream:{tag}", "g", id="0")
    attempts = [
        f"r.delete('{dlq}')", f"r.set('{dedup}', '1')", f"r.xgroup_destroy('tusk:stream:{tag}', 'g')",
        f"r.rename('{dlq}', 'mine-{tag}')", f"r.mset({{'{dedup}': '1'}})", f"r.get('{dlq}')",
        f"r.pipeline().delete('{dlq}').execute()", f"r.lmove('x-{tag}', '{dlq}')",
    ]
    try:
        for attempt in attempts:
            text = fujsen(f"r = redis.from_url(event_bus)\nreturn {attempt}")
            cfg = TSK.from_string(text, env={"EVENT_BUS": url}, trust=trust)
            with pytest.raises(SandboxViolation, match="belong to the runtime"):
                cfg.execute_fujsen("s", "f")
        listed = TSK.from_string(fujsen(f"return redis.from_url(event_bus).keys('*{tag}*')"),
                                 env={"EVENT_BUS": url}, trust=trust).execute_fujsen("s", "f")
        assert listed == []  # the runtime's key names are hidden too
        assert outside.get(dlq) == b"dead letter"
        assert not outside.exists(dedup) and not outside.exists(f"mine-{tag}")
        assert [g["name"] for g in outside.xinfo_groups(f"tusk:stream:{tag}")] == [b"g"]
    finally:
        outside.delete(dlq, dedup, f"tusk:stream:{tag}", f"mine-{tag}")


def test_untrusted_redis_refuses_blocking_commands_glob_bombs_and_the_memory_bus():
    url = need_redis()
    cases = {
        "r.blpop(['q'], timeout=0)": "blocking",
        "r.keys('*a' * 24 + 'b')": "wildcards",
        "list(r.scan(0, match='*a*a*a*a*a'))": "wildcards",
    }
    for call, why in cases.items():
        cfg = untrusted(fujsen(f"r = redis.from_url(event_bus)\nreturn {call}"), {"EVENT_BUS": url})
        with pytest.raises(SandboxViolation, match=why):
            cfg.execute_fujsen("s", "f")
    mem = untrusted(fujsen("return redis.from_url(event_bus).set('k', 'v')"))
    with pytest.raises(SandboxViolation, match="memory://") as refused:
        mem.execute_fujsen("s", "f")
    assert "\n" not in str(refused.value) and "run them on a redis:// bus" in str(refused.value)


def test_cli_reports_the_closed_memory_bus_in_one_line(tmp_path):
    cfg = tmp_path / "c.tsk"
    cfg.write_text(fujsen("return redis.from_url(event_bus).set('k', 'v')"))
    env = dict(os.environ, EVENT_BUS="memory://", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "tusk_events", "exec", str(cfg), "s", "f", "--untrusted"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "memory:// bus is not open to untrusted configs" in lines[0], out.stderr


def _brick(store_url: str, trust: str) -> None:
    attempts = [
        "INSERT INTO event_store (id, event_id, event_type, payload, timestamp) VALUES (?, ?, ?, ?, ?)",
        "INSERT INTO event_store VALUES (?, ?, ?, ?, ?)",
        "UPDATE event_store SET id = ? WHERE event_type = ? AND event_id = ? AND payload = ? AND timestamp = ?",
    ]
    for sql in attempts:
        text = fujsen(f"return execute('{sql}', 9223372036854775807, 'x', 't', '{{}}', '2026-01-01T00:00:00Z')")
        # opening the store (and the fujsen role on PostgreSQL) is helper time of the first call
        cfg = TSK.from_string(text, env={"EVENT_BUS": "memory://", "EVENT_STORE": store_url}, trust=trust,
                              fujsen_timeout=30)
        with pytest.raises(SandboxViolation, match="statement refused"):
            cfg.execute_fujsen("s", "f")


@pytest.mark.parametrize("trust", ["trusted", "untrusted"])
def test_the_store_cannot_be_bricked_sqlite(tmp_path, trust):
    from tusk_events.events import new_event
    from tusk_events.store import open_store

    url = f"sqlite:///{tmp_path}/ev.db"
    _brick(url, trust)
    store = open_store(url)  # a fresh connection: appends still work
    try:
        store.append(new_event("after", {"n": 1}))
        assert store.count() == 1
    finally:
        store.close()


def test_the_store_cannot_be_bricked_postgres():
    pg = os.environ.get("TUSK_TEST_POSTGRES_URL")
    if pg is None:
        if os.environ.get("CI") == "true":
            pytest.fail("TUSK_TEST_POSTGRES_URL is required under CI")
        pytest.skip("TUSK_TEST_POSTGRES_URL not set")
    _brick(pg, "untrusted")


# --- the hardened worker, seen from outside ----------------------------------------------------


def _status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux confinement")
def test_worker_runs_unprivileged_filtered_and_not_dumpable():
    cfg = untrusted(fujsen("return 1"))
    assert cfg.execute_fujsen("s", "f") == 1
    pool = pool_for(cfg)
    pid = pool.worker_pids()[0]
    st = _status(pid)
    assert st["Seccomp"] == "2" and st["NoNewPrivs"] == "1"
    if os.geteuid() == 0:
        assert st["Uid"].split()[0] == "65534" and st["Gid"].split()[0] == "65534"
        # a process that is not dumpable has its /proc entries owned by root, not by its uid
        assert os.stat(f"/proc/{pid}/environ").st_uid == 0
    limits = open(f"/proc/{pid}/limits").read()
    assert [ln for ln in limits.splitlines() if ln.startswith("Max core file size")][0].split()[4:6] == ["0", "0"]
    hardening = pool.info()[0]["hardening"]
    assert hardening["landlock"]["applied"] and hardening["seccomp"]["applied"], hardening


ESCAPE = r"""
import json, os, socket, sys
sys.path.insert(0, sys.argv[1])
from tusk_events.fujsen import harden, worker
worker._no_new_privs()
report = harden.apply() if sys.argv[4] == "on" else {}
out = {"report": report}
def attempt(name, fn):
    try:
        fn()
        out[name] = "done"
    except BaseException as e:
        out[name] = type(e).__name__
attempt("parent_environ", lambda: open(f"/proc/{os.getppid()}/environ", "rb").read())
attempt("etc_passwd", lambda: open("/etc/passwd").read())
attempt("write_tmp", lambda: open(sys.argv[2], "w").write("x"))
attempt("connect", lambda: socket.create_connection(("127.0.0.1", int(sys.argv[3])), timeout=1))
attempt("fork", lambda: os.fork() or os._exit(0))
if sys.argv[4] == "on":  # in the control it would succeed and replace the process
    attempt("exec", lambda: os.execv("/bin/true", ["true"]))
sys.stdout.write(json.dumps(out))
sys.stdout.flush()
os._exit(0)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux confinement")
def test_an_escaped_fujsen_finds_nothing_to_reach(tmp_path):
    """The confinement itself, applied as the worker applies it, then probed by code that got out."""
    probes = ("parent_environ", "etc_passwd", "write_tmp", "connect", "fork", "exec")
    results = {}
    for mode in ("off", "on"):
        canary = Canary(CANARY_PORTS[1])
        target = tmp_path / f"written-{mode}"
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "-c", ESCAPE, str(ROOT), str(target), str(canary.port), mode],
                capture_output=True, text=True, timeout=60,
            )
            time.sleep(0.2)
        finally:
            canary.close()
        assert proc.returncode == 0, proc.stderr
        results[mode] = (json.loads(proc.stdout), canary.hits, target.exists())
    control, hits, written = results["off"]
    if os.geteuid() == 0:  # the control proves each probe can succeed here
        assert [control[p] for p in probes[:-1]] == ["done"] * (len(probes) - 1) and hits == 1 and written
    out, hits, written = results["on"]
    for probe in probes:
        assert out[probe] != "done", (probe, out)
    assert hits == 0 and not written
    if os.geteuid() == 0:
        assert out["report"]["user"]["uid"] == 65534


# --- the pieces, directly ------------------------------------------------------------------------


def test_strict_decoder_refuses_large_pickles_and_counts_non_text_keys():
    from tusk_events.fujsen.wire import PlainWriter, ProtocolError, dumps_plain, loads_strict

    big = {f"k{i}": i for i in range(5000)}
    with pytest.raises(ProtocolError, match="not tagged JSON"):
        loads_strict(dumps_plain(big))  # what a compromised worker would send
    writer = PlainWriter(strict=True)
    assert loads_strict(writer.dumps(big)) == big  # text keys: any number
    m = 2**61 - 1
    frame = writer.dumps({i * m: None for i in range(5000)})
    t0 = time.process_time()
    with pytest.raises(ProtocolError, match="1,000 dict keys"):
        loads_strict(frame)
    assert time.process_time() - t0 < 0.5
    with pytest.raises(ProtocolError):
        loads_strict(b"{" + b" " * 5000 + b'"\\u0000q": 1}')  # an unknown tag


@pytest.mark.parametrize(("sql", "refused"), [
    ("INSERT INTO event_store (id, event_type) VALUES (?, ?)", True),
    ("INSERT INTO event_store (rowid, event_type) VALUES (?, ?)", True),
    ("INSERT INTO event_store VALUES (?, ?)", True),
    ("UPDATE event_store SET id = ? WHERE event_type = ?", True),
    ('UPDATE event_store SET event_type = ?, "id" = ?', True),
    ("INSERT INTO event_store (event_type, payload) VALUES (?, ?)", False),
    ("UPDATE event_store SET payload = ? WHERE id = ?", False),
    ("INSERT INTO audit (id, what) VALUES (?, ?)", False),  # the config's own table
])
def test_fujsen_sql_never_writes_event_store_ids(sql, refused):
    from tusk_events.store.sqlguard import SqlRefused, check

    for dialect in ("sqlite", "postgresql"):
        if refused:
            with pytest.raises(SqlRefused, match="id|column list"):
                check(sql, 2, dialect)  # type: ignore[arg-type]
        else:
            check(sql, 2, dialect)  # type: ignore[arg-type]


def test_missing_confinement_is_reported():
    from tusk_events.fujsen.pool import _missing_confinement

    report = {"landlock": {"applied": False, "error": "Landlock unavailable"}, "seccomp": {"applied": True},
              "user": {"uid": 0, "error": "no unprivileged user"}}
    missing = _missing_confinement(report)
    assert missing == ["landlock (Landlock unavailable)", "an unprivileged user (no unprivileged user)"]
    assert _missing_confinement(None) == ["confinement (no report)"]


def test_postgres_results_are_capped_in_bytes_through_a_server_side_cursor():
    pg = os.environ.get("TUSK_TEST_POSTGRES_URL")
    if pg is None:
        if os.environ.get("CI") == "true":
            pytest.fail("TUSK_TEST_POSTGRES_URL is required under CI")
        pytest.skip("TUSK_TEST_POSTGRES_URL not set")
    env = {"EVENT_BUS": "memory://", "EVENT_STORE": pg}
    small = TSK.from_string(fujsen("return query('SELECT n FROM generate_series(1, 600) AS n')"),
                            env=env, trust="untrusted", fujsen_timeout=30)
    assert [r[0] for r in small.execute_fujsen("s", "f")] == list(range(1, 601))  # batches join up
    big = TSK.from_string(fujsen("return len(query('SELECT repeat(?, 200000) FROM generate_series(1, 400)', 'x'))"),
                          env=env, trust="untrusted", fujsen_timeout=30)
    rss0, _ = parent_usage()
    with pytest.raises(FujsenError, match=f"{FUJSEN_SQL_MAX_BYTES:,} bytes"):
        big.execute_fujsen("s", "f")
    assert parent_usage()[0] - rss0 <= 64 << 20


# --- the parent reads no more than one reply's cap ------------------------------------------------

PEAK = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
spec = json.loads(sys.argv[2])

def hwm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))

if spec.get("direct"):  # the control: the same value read with no cap on the way
    import psycopg, redis
    if spec["direct"] == "redis":
        client = redis.Redis.from_url(spec["url"])
        client.strlen(spec["key"])
        read = lambda: len(client.get(spec["key"]))
    else:
        conn = psycopg.connect(spec["url"])
        conn.execute("SELECT 1")
        read = lambda: len(conn.execute(spec["sql"]).fetchone()[0])
    h0 = hwm()
    outcome = read()
else:
    from tusk_events import TSK
    cfg = TSK.from_string(spec["text"], env=spec["env"], trust="untrusted", fujsen_timeout=60)
    for _ in range(spec.get("grow", 0)):
        cfg.execute_fujsen("s", "f", "grow")
    cfg.execute_fujsen("s", "f", "warm")  # the client or store is open, the worker started
    h0 = hwm()
    try:
        outcome = cfg.execute_fujsen("s", "f", "read")
    except Exception as e:
        outcome = f"{type(e).__name__}: {e}"
    after = cfg.execute_fujsen("s", "f", "warm")  # the helper still works after a refusal
    outcome = [outcome, after]
print(json.dumps({"grew": hwm() - h0, "outcome": outcome}))
"""


def _peak(spec: dict[str, object]) -> tuple[int, object]:
    """(growth of the peak RSS, outcome) of a scenario run in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", PEAK, str(ROOT), json.dumps(spec)],
                         capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["grew"], result["outcome"]


@pytest.mark.slow
def test_a_big_redis_value_is_refused_before_the_parent_reads_it():
    url = need_redis()
    key = f"big-{uuid.uuid4().hex[:8]}"
    # the fujsen grows the value itself, a frame's worth per call, to 64 MiB
    text = fujsen(f"""
        r = redis.from_url(event_bus)
        cmd = args[0]
        if cmd == "grow":
            return r.append("{key}", "x" * ((1 << 20) - 4096))
        if cmd == "warm":
            return r.strlen("{key}")
        return len(r.get("{key}"))
    """)
    size = 64 * ((1 << 20) - 4096)
    try:
        grew, (outcome, after) = _peak({"text": text, "env": {"EVENT_BUS": url}, "grow": 64})
        assert after == size  # the value is there, and the client works after the refusal
        assert outcome.startswith("FujsenError") and "exceeds the 1,048,576 bytes one helper call may read" in outcome
        assert f"{size + 2:,} bytes" in outcome
        assert grew <= 16 << 20, f"the parent grew {grew >> 20} MiB for a refused {size >> 20} MiB value"
        # the control: reading the same value with no cap grows a process by its size
        grew_direct, n = _peak({"direct": "redis", "url": url, "key": key})
        assert n == size and grew_direct >= size
    finally:
        import redis as redis_py

        redis_py.Redis.from_url(url).delete(key)


def test_a_pipeline_shares_one_reply_allowance():
    import redis as redis_py

    url = need_redis()
    key = f"mid-{uuid.uuid4().hex[:8]}"
    redis_py.Redis.from_url(url).set(key, b"y" * 400_000)
    text = fujsen(f"""
        r = redis.from_url(event_bus)
        p = r.pipeline()
        for _ in range(args[0]):
            p.get("{key}")
        return sum(len(v) for v in p.execute())
    """)
    try:
        cfg = untrusted(text, {"EVENT_BUS": url})
        assert cfg.execute_fujsen("s", "f", 2) == 800_000
        with pytest.raises(FujsenError, match="1,048,576 bytes one helper call may read"):
            cfg.execute_fujsen("s", "f", 3)
        assert cfg.execute_fujsen("s", "f", 1) == 400_000  # a fresh connection, a fresh allowance
    finally:
        redis_py.Redis.from_url(url).delete(key)


def _pg() -> str:
    pg = os.environ.get("TUSK_TEST_POSTGRES_URL")
    if pg is None:
        if os.environ.get("CI") == "true":
            pytest.fail("TUSK_TEST_POSTGRES_URL is required under CI")
        pytest.skip("TUSK_TEST_POSTGRES_URL not set")
    return pg


@pytest.mark.slow
def test_one_huge_postgres_value_is_refused_by_the_server():
    pg = _pg()
    size = 64 << 20
    text = fujsen(f"""
        if args[0] == "warm":
            return query("SELECT 1")[0][0]
        return len(query("SELECT repeat('x', {size})")[0][0])
    """)
    grew, (outcome, after) = _peak({"text": text, "env": {"EVENT_BUS": "memory://", "EVENT_STORE": pg}})
    assert after == 1
    assert f"more than {FUJSEN_SQL_MAX_BYTES:,} bytes" in outcome, outcome
    assert grew <= 16 << 20, f"the parent grew {grew >> 20} MiB for a refused {size >> 20} MiB value"
    # the control: libpq buffers the whole value when nothing bounds it
    grew_direct, n = _peak({"direct": "postgres", "url": pg, "sql": f"SELECT repeat('x', {size})"})
    assert n == size and grew_direct >= size


def test_postgres_writes_returning_rows_are_capped_and_rolled_back():
    pg = _pg()
    tag = f"big-{uuid.uuid4().hex[:8]}"
    env = {"EVENT_BUS": "memory://", "EVENT_STORE": pg}
    sql = ("INSERT INTO event_store (event_type, payload) SELECT ?, repeat(chr(122), 400000) "
           "FROM generate_series(1, {n}) RETURNING payload")
    body = f"return [len(r[0]) for r in query('{sql}', '{tag}')]"
    count = f"return query('SELECT count(*) FROM event_store WHERE event_type = ?', '{tag}')[0][0]"
    few = TSK.from_string(fujsen(body.format(n=2)), env=env, trust="untrusted", fujsen_timeout=30)
    many = TSK.from_string(fujsen(body.format(n=30)), env=env, trust="untrusted", fujsen_timeout=30)
    counter = TSK.from_string(fujsen(count), env=env, trust="untrusted", fujsen_timeout=30)
    try:
        assert few.execute_fujsen("s", "f") == [400_000, 400_000]
        with pytest.raises(FujsenError, match=f"more than {FUJSEN_SQL_MAX_BYTES:,} bytes"):
            many.execute_fujsen("s", "f")
        assert counter.execute_fujsen("s", "f") == 2  # the refused INSERT left nothing behind
    finally:
        import psycopg

        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute("DELETE FROM event_store WHERE event_type = %s", (tag,))


@pytest.mark.parametrize(("sql", "returning", "text"), [
    ("SELECT 1; -- done", False, "SELECT 1"),
    ("SELECT ? /* a */ ;;", False, "SELECT %s"),
    ("INSERT INTO t (a) VALUES (?) RETURNING a", True, "INSERT INTO t (a) VALUES (%s) RETURNING a"),
    ("UPDATE t SET a = 'returning'", False, "UPDATE t SET a = 'returning'"),
])
def test_postgres_statements_end_at_their_last_token(sql, returning, text):
    from tusk_events.store.sqlguard import bounded_sql, check

    checked = check(sql, sql.count("?"), "postgresql")
    assert (checked.sql, checked.returning) == (text, returning)
    wrapped = bounded_sql(checked)
    if checked.verb == "select" or returning:
        assert f"\n{text}\n" in wrapped and "record_send" in wrapped
    else:
        assert wrapped == text


def test_sqlite_rows_that_grow_late_in_a_result_are_capped_row_by_row(tmp_path):
    # a tiny first row would size the next fetch for tiny rows: 256 rows of 4 MiB in one batch
    big = 4 << 20
    text = fujsen(f"""
        if args[0] == "warm":
            return query("SELECT 1")[0][0]
        return len(query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300) "
                         "SELECT CASE WHEN x = 1 THEN 'a' ELSE zeroblob({big}) END FROM c"))
    """)
    env = {"EVENT_BUS": "memory://", "EVENT_STORE": f"sqlite:///{tmp_path}/ev.db"}
    grew, (outcome, after) = _peak({"text": text, "env": env})
    assert after == 1
    assert f"more than {FUJSEN_SQL_MAX_BYTES:,} bytes" in outcome, outcome
    assert grew <= 40 << 20, f"the parent grew {grew >> 20} MiB"


def test_postgres_bounded_statements_return_what_plain_ones_do():
    from tusk_events.store import open_store
    from tusk_events.store.sqlguard import bound_results

    store = open_store(_pg())
    tag = f"shape-{uuid.uuid4().hex[:8]}"
    statements = [
        ("SELECT 1 AS a, 'x' AS a, NULL, 2.5 -- a trailing comment", ()),
        ("SELECT n FROM generate_series(1, 5) AS n ORDER BY n DESC;", ()),
        ("WITH x AS (SELECT ? AS v) SELECT v, v FROM x", ("w",)),
        ("INSERT INTO event_store (event_type, payload) VALUES (?, ?) RETURNING event_type, payload", (tag, "p")),
        ("UPDATE event_store SET payload = ? WHERE event_type = ? RETURNING payload", ("q", tag)),
        ("SELECT event_type FROM event_store WHERE event_type = ? FOR UPDATE", (tag,)),
    ]
    try:
        for sql, params in statements:
            results = []
            for bounded in (False, True):
                saved = bound_results(bounded)
                try:
                    results.append(store.query(sql, params))
                finally:
                    bound_results(saved)
            assert results[0] == results[1], sql
            assert results[0], sql
        saved = bound_results(True)
        try:
            assert store.execute("UPDATE event_store SET payload = ? WHERE event_type = ?", ("r", tag)) == 2
            with pytest.raises(TuskError, match=f"more than {FUJSEN_SQL_MAX_BYTES:,} bytes"):
                store.query("SELECT repeat(?, 9000000)", ("x",))
        finally:
            bound_results(saved)
    finally:
        import psycopg

        with psycopg.connect(_pg(), autocommit=True) as conn:
            conn.execute("DELETE FROM event_store WHERE event_type = %s", (tag,))
        store.close()


def test_a_long_redis_list_is_refused_from_its_element_count():
    import redis as redis_py

    url = need_redis()
    key = f"long-{uuid.uuid4().hex[:8]}"
    outside = redis_py.Redis.from_url(url)
    pipe = outside.pipeline(transaction=False)
    for start in range(0, 400_000, 50_000):
        pipe.rpush(key, *([b"x"] * 50_000))
    pipe.execute()
    cfg = untrusted(fujsen(f"return len(redis.from_url(event_bus).lrange('{key}', 0, args[0]))"), {"EVENT_BUS": url})
    try:
        assert cfg.execute_fujsen("s", "f", 99_999) == 100_000  # 700 KB of replies: within the allowance
        with pytest.raises(FujsenError, match="a reply of 400,000 elements exceeds the 1,048,576 bytes"):
            cfg.execute_fujsen("s", "f", -1)
    finally:
        outside.delete(key)


def test_the_untrusted_redis_helper_refuses_a_client_it_cannot_bound(monkeypatch):
    import tusk_events.bus
    from tusk_events.fujsen import helpers
    from tusk_events.fujsen.guards import Violation

    class ClusterLike:  # redis-py's cluster client: no single pool, and the parser it was given is dropped
        closed = False

        def close(self) -> None:
            self.closed = True

    made = ClusterLike()
    monkeypatch.setattr(tusk_events.bus, "new_redis_client", lambda url, parser_class: made)
    with pytest.raises(Violation, match="single Redis server only"):
        helpers._open_capped_redis("redis+cluster://127.0.0.1:7000")
    assert made.closed


def test_a_violation_outside_any_call_does_not_fail_the_next_call():
    from tusk_events.fujsen.guards import Violation, violate

    with pytest.raises(Violation):
        violate("tripped by host code, outside any fujsen call")
    cfg = TSK.from_string('[s]\nf = """\ndef f(x):\n    return x + 1\n"""\n')
    assert cfg.execute_fujsen("s", "f", 1) == 2
