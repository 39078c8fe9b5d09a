"""Prometheus metrics: values after a known run of the main example, the endpoint, several processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from obs_support import APP, ROOT, require

require("prometheus_client", "metrics")

from prometheus_client.parser import text_string_to_metric_families

from tusk_events import TSK
from tusk_events.observe.metrics import BusCollector, Metrics, read_stats, serve_metrics
from tusk_events.runtime import signals
from tusk_events.runtime.core import Runtime


def value(registry, name: str, **labels: str) -> float:
    v = registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


@pytest.fixture
def app_run(env):
    rt = Runtime([TSK.from_file(APP, env=env)])
    metrics = Metrics(runtime=rt).connect()
    metrics.registry.register(BusCollector(rt.bus, rt.dlq))
    rt.run_until_idle()
    yield rt, metrics.registry
    metrics.disconnect()
    rt.close()


def test_counters_after_the_main_example(app_run):
    _, reg = app_run
    handled = {
        ("user_registered", "welcome_email"): 3,
        ("user_registered", "user_profile"): 4,
        ("welcome_email_sent", "activity"): 3,
        ("profile_created", "activity"): 4,
    }
    for (t, s), n in handled.items():
        assert value(reg, "tusk_events_handled_total", type=t, service=s) == n
    assert sum(handled.values()) == 14
    assert value(reg, "tusk_events_published_total", type="user_registered", service="") == 4
    assert value(reg, "tusk_events_published_total", type="welcome_email_sent", service="welcome_email") == 3
    assert value(reg, "tusk_events_published_total", type="profile_created", service="user_profile") == 4
    assert value(reg, "tusk_events_failed_total", type="user_registered", service="welcome_email") == 3
    assert value(reg, "tusk_events_retried_total", type="user_registered", service="welcome_email") == 2
    assert value(reg, "tusk_events_dead_lettered_total", type="user_registered", service="welcome_email") == 1
    assert value(reg, "tusk_events_dead_lettered_total", type="user_registered", service="user_profile") == 0


def test_histograms_count_every_attempt_and_every_handled_event(app_run):
    _, reg = app_run
    for (t, s), n in {("user_registered", "welcome_email"): 3, ("profile_created", "activity"): 4}.items():
        assert value(reg, "tusk_handling_seconds_count", type=t, service=s, outcome="handled") == n
        assert value(reg, "tusk_end_to_end_seconds_count", type=t, service=s) == n
        assert value(reg, "tusk_handling_seconds_sum", type=t, service=s, outcome="handled") > 0
        # end to end includes the handling: never shorter
        assert value(reg, "tusk_end_to_end_seconds_sum", type=t, service=s) >= value(
            reg, "tusk_handling_seconds_sum", type=t, service=s, outcome="handled")
    assert value(reg, "tusk_handling_seconds_count", type="user_registered", service="welcome_email",
                 outcome="failed") == 3
    # the dead-lettered event waited through two backoffs: its end-to-end is not observed
    assert value(reg, "tusk_end_to_end_seconds_count", type="user_registered", service="welcome_email") == 3


def test_histogram_buckets_are_cumulative_up_to_the_count(app_run):
    from prometheus_client.utils import floatToGoString

    from tusk_events.defaults import METRICS_HANDLING_BUCKETS

    _, reg = app_run
    labels = {"type": "user_registered", "service": "user_profile", "outcome": "handled"}
    counts = [value(reg, "tusk_handling_seconds_bucket", le=floatToGoString(b), **labels)
              for b in METRICS_HANDLING_BUCKETS]
    assert counts == sorted(counts)
    assert value(reg, "tusk_handling_seconds_bucket", le="+Inf", **labels) == 4


def test_bus_gauges_are_read_at_scrape_time(app_run):
    rt, reg = app_run
    assert value(reg, "tusk_bus_up") == 1
    assert value(reg, "tusk_stream_length", type="user_registered") == 4
    assert value(reg, "tusk_stream_length", type="profile_created") == 4
    for group in ("welcome_email", "user_profile"):
        assert value(reg, "tusk_consumer_group_pending", type="user_registered", group=group) == 0
        assert value(reg, "tusk_consumer_group_lag", type="user_registered", group=group) == 0
    assert value(reg, "tusk_dlq_size", service="welcome_email") == 1
    # a new event not yet consumed shows up as lag on the next scrape, with no run in between
    rt.bus.publish("user_registered", {"user_id": 5, "name": "Edsger", "email": "e@example.com"})
    assert value(reg, "tusk_consumer_group_lag", type="user_registered", group="user_profile") == 1
    assert value(reg, "tusk_stream_length", type="user_registered") == 5


def test_an_unreachable_bus_is_a_sample_not_a_failed_scrape(app_run):
    rt, _ = app_run

    class Down:
        def stream_info(self):
            raise ConnectionError("down")

    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry()
    reg.register(BusCollector(Down(), rt.dlq))  # type: ignore[arg-type]
    assert reg.get_sample_value("tusk_bus_up") == 0


def test_read_stats_matches_the_bus(app_run):
    rt, _ = app_run
    stats = read_stats(rt.bus, rt.dlq).to_dict()
    assert stats["streams"]["user_registered"]["length"] == 4
    assert stats["streams"]["user_registered"]["groups"]["welcome_email"] == {"consumers": 1, "pending": 0, "lag": 0}
    assert stats["dlq"] == {"welcome_email": 1}


def test_a_run_without_metrics_connects_no_receiver(env):
    before = {sig.name: sig.receivers for sig in signals.ALL}
    with Runtime([TSK.from_file(APP, env=env)]) as rt:
        during = {sig.name: len(sig.receivers) for sig in signals.ALL}
        rt.run_until_idle()
    # only the runtime's own summary receivers: one per signal
    assert during == {sig.name: len(before[sig.name]) + 1 for sig in signals.ALL}
    assert {sig.name: sig.receivers for sig in signals.ALL} == before


def test_metrics_count_only_their_runtime(env, tmp_path):
    other_env = dict(env, EVENT_BUS=env["EVENT_BUS"] + "x", EVENT_STORE=f"sqlite:///{tmp_path / 'other.db'}")
    with Runtime([TSK.from_file(APP, env=env)]) as rt, Runtime([TSK.from_file(APP, env=other_env)]) as other:
        metrics = Metrics(runtime=rt).connect()
        try:
            rt.run_until_idle()
            other.run_until_idle()
        finally:
            metrics.disconnect()
    assert value(metrics.registry, "tusk_events_handled_total", type="user_registered", service="user_profile") == 4


def test_serve_metrics_exposes_counters_and_gauges_over_http(env):
    with Runtime([TSK.from_file(APP, env=env)]) as rt:
        server = serve_metrics(0, rt, addr="127.0.0.1")
        try:
            rt.run_until_idle()
            samples = scrape(f"http://127.0.0.1:{server.port}/metrics")
        finally:
            server.close()
    assert samples[("tusk_events_handled_total", (("service", "user_profile"), ("type", "user_registered")))] == 4
    assert samples[("tusk_dlq_size", (("service", "welcome_email"),))] == 1
    assert samples[("tusk_bus_up", ())] == 1
    # closed: counting stopped too
    assert server.metrics._on_handled not in signals.handled.receivers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.redis
@pytest.mark.slow
def test_processes_share_one_endpoint_through_the_multiprocess_dir(redis_url, tmp_path):
    """``run --processes 2 --metrics-port P``: the supervisor serves the workers' sums."""
    port = _free_port()
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(EVENT_BUS=redis_url, EVENT_STORE=f"sqlite:///{tmp_path / 'events.db'}",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tusk_events", "run", str(APP), "--processes", "2", "--metrics-port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        key = ("tusk_events_handled_total", (("service", "activity"), ("type", "profile_created")))
        samples: dict = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                samples = scrape(f"http://127.0.0.1:{port}/metrics")
            except OSError:
                samples = {}
            total = sum(v for (n, _), v in samples.items() if n == "tusk_events_handled_total")
            dead = sum(v for (n, _), v in samples.items() if n == "tusk_events_dead_lettered_total")
            if total >= 14 and dead >= 1:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        assert samples.get(key) == 4, samples
        assert sum(v for (n, _), v in samples.items() if n == "tusk_events_handled_total") == 14
        assert samples[("tusk_events_dead_lettered_total", (("service", "welcome_email"), ("type", "user_registered")))] == 1
        # the startup fujsen ran in the supervisor: its publishes are counted too
        assert samples[("tusk_events_published_total", (("service", ""), ("type", "user_registered")))] == 4
        # bus gauges once, from the supervisor (not summed over workers)
        assert samples[("tusk_consumer_group_pending", (("group", "user_profile"), ("type", "user_registered")))] == 0
        assert samples[("tusk_stream_length", (("type", "user_registered"),))] == 4
        assert samples[("tusk_dlq_size", (("service", "welcome_email"),))] == 1
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_the_rich_table_shows_the_same_figures(app_run):
    pytest.importorskip("rich")
    from rich.console import Console

    from tusk_events.observe.metrics import _rich_table

    rt, _ = app_run
    console = Console(record=True, width=120)
    console.print(_rich_table(read_stats(rt.bus, rt.dlq), "memory bus"))
    rows = [line.split() for line in console.export_text().splitlines()]
    assert any(r[:2] == ["│", "user_registered"] and "welcome_email" in r for r in rows), rows
    assert any("welcome_email" in r and "1" in r and len(r) <= 5 for r in rows)
