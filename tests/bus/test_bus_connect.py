"""Choosing a backend by URL, the per-URL client cache, connection options and error messages."""

from __future__ import annotations

import sys
import time

import pytest
import redis
from bus_support import wait_until

from tusk_events.bus import Bus, connect, memory, redis_client
from tusk_events.errors import BusError, TuskError
from tusk_events.events import Event

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("url", ["pulsar://broker:6650", "http://localhost", "memcached://x"])
def test_unknown_scheme_is_a_bus_error_listing_the_supported_ones(url: str) -> None:
    with pytest.raises(BusError) as err:
        connect(url)
    msg = str(err.value)
    assert url.split("://")[0] in msg
    for scheme in ("memory://", "redis://", "rediss://", "unix://"):
        assert scheme in msg
    assert isinstance(err.value, TuskError)


def test_url_without_scheme_is_a_bus_error() -> None:
    with pytest.raises(BusError, match="memory://"):
        connect("localhost:6379")
    with pytest.raises(BusError, match="redis://"):
        redis_client("localhost:6379")


def test_missing_driver_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "tusk_events.bus.memory")
    monkeypatch.setitem(sys.modules, "fakeredis", None)  # as if it were not installed
    with pytest.raises(BusError, match=r"pip install 'tusk_events'") as err:
        connect("memory://")
    assert "fakeredis" in str(err.value)


def test_hiredis_asked_for_but_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import redis.utils

    monkeypatch.setattr(redis.utils, "HIREDIS_AVAILABLE", False)
    with pytest.raises(BusError, match=r"pip install 'tusk_events\[hiredis\]'"):
        connect("redis://127.0.0.1:6379/9", parser="hiredis")


def test_default_url_is_the_embedded_bus() -> None:
    with connect() as b:
        assert b.url == "memory://"


def test_memory_urls_of_one_name_share_one_server(memory_url: str) -> None:
    try:
        with connect(memory_url) as a, connect(memory_url) as b:
            a.publish("x", 1)
            got: list[Event] = []
            assert b.subscribe(got.append, ["x"], group="g").run_until_idle(timeout=5) == 1
            assert redis_client(memory_url).xlen("tusk:stream:x") == 1
        with connect(memory_url + "-other") as c:
            assert c.stream_info(["x"])["x"].length == 0
        assert memory.server("memory://") is memory.server("memory://default")
    finally:
        memory.forget(memory_url)


def test_redis_client_is_cached_per_url_and_returns_bytes(memory_url: str) -> None:
    r = redis_client(memory_url)
    assert redis_client(memory_url) is r
    assert isinstance(r, redis.Redis)
    r.set("k", "v")
    assert r.get("k") == b"v"
    memory.forget(memory_url)


@pytest.mark.redis
def test_redis_client_for_a_real_server(redis_url: str) -> None:
    r = redis_client(redis_url)
    assert redis_client(redis_url) is r
    kwargs = r.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] and kwargs["socket_connect_timeout"]
    assert kwargs["health_check_interval"] > 0
    assert r.ping()


def test_connection_options_reach_the_pool() -> None:
    with connect("redis://127.0.0.1:6379/9", socket_timeout=1.5, health_check_interval=7, max_connections=3) as b:
        kwargs = b.client.connection_pool.connection_kwargs  # type: ignore[attr-defined]
        assert kwargs["socket_timeout"] == 1.5
        assert kwargs["health_check_interval"] == 7
        assert b.client.connection_pool.max_connections == 3  # type: ignore[attr-defined]
    with connect("redis://127.0.0.1:6379/9?socket_timeout=2.5") as b:
        assert b.client.connection_pool.connection_kwargs["socket_timeout"] == 2.5  # type: ignore[attr-defined]


def test_unreachable_server_is_a_bus_error_naming_the_url_without_password() -> None:
    url = "redis://:s3cret@127.0.0.1:1/0"  # nothing listens on port 1
    with connect(url, retries=2, retry_backoff_s=0.01) as b:
        t0 = time.monotonic()
        with pytest.raises(BusError) as err:
            b.publish("a", 1)
        assert time.monotonic() - t0 >= 0.01 + 0.02  # two backoffs: 10 ms, 20 ms
    msg = str(err.value)
    assert "redis://:***@127.0.0.1:1/0" in msg and "s3cret" not in msg
    assert "after 3 attempts" in msg and "running and reachable" in msg
    assert isinstance(err.value.__cause__, redis.ConnectionError)


def test_bad_options_are_bus_errors(memory_url: str) -> None:
    with pytest.raises(BusError, match="publish_to"):
        connect(memory_url, publish_to="nowhere")
    with connect(memory_url) as b:
        with pytest.raises(BusError, match="mode"):
            b.subscribe(print, mode="sometimes")  # type: ignore[arg-type]
        with pytest.raises(BusError, match="event type"):
            b.publish("", 1)
    memory.forget(memory_url)


def test_memory_outage_publish_fails_and_subscriber_resumes(memory_url: str) -> None:
    srv = memory.server(memory_url)
    try:
        with connect(memory_url, retries=1, retry_backoff_s=0.01, retry_backoff_max_s=0.02) as b:
            got: list[int] = []
            with b.subscribe(lambda e: got.append(e.payload), ["a"], group="g", block_ms=50):
                b.publish("a", 1)
                wait_until(lambda: got == [1])
                srv.connected = False
                with pytest.raises(BusError, match=memory_url):
                    b.publish("a", 2)
                time.sleep(0.1)
                srv.connected = True
                b.publish("a", 3)
                wait_until(lambda: got == [1, 3])
    finally:
        srv.connected = True
        memory.forget(memory_url)


def test_subscription_context_and_running_flag(memory_url: str) -> None:
    with connect(memory_url) as b:
        sub = b.subscribe(lambda e: None, ["a"], group="g", block_ms=50)
        assert not sub.running
        with sub:
            assert sub.running
        assert not sub.running
        with pytest.raises(RuntimeError):
            sub.start()
            sub.start()
        sub.stop()
    memory.forget(memory_url)


def test_close_stops_running_subscriptions(memory_url: str) -> None:
    b: Bus = connect(memory_url)
    sub = b.subscribe(lambda e: None, ["a"], group="g").start()
    bsub = b.subscribe(lambda e: None, mode="broadcast").start()
    b.close()
    assert not sub.running and not bsub.running
    memory.forget(memory_url)


def test_stop_from_inside_a_handler(memory_url: str) -> None:
    with connect(memory_url) as b:
        got: list[int] = []

        def handler(event: Event) -> None:
            got.append(event.payload)
            sub.stop()

        sub = b.subscribe(handler, ["a"], group="g", batch=1)
        b.publish_many([("a", 1), ("a", 2)])
        sub.run()
        assert got == [1]
        assert b.stream_info(["a"])["a"].groups["g"].pending == 0
    memory.forget(memory_url)
