"""Structured logs: every line logged while handling an event names it; levels per component."""

from __future__ import annotations

import io
import json
import logging

import pytest

from tusk_events import TSK
from tusk_events.errors import ConfigError
from tusk_events.events import new_event
from tusk_events.observe import logs
from tusk_events.observe.logs import disconnect_flow_logging, parse_levels, setup_logging
from tusk_events.runtime import signals
from tusk_events.runtime.core import Runtime

PRINTING = """
[app]
event_bus: @env("EVENT_BUS", "memory://")
event_store: @env("EVENT_STORE", "sqlite:///unused.db")

[greeter]
subscribe: "user_registered"
delivery: "{delivery}"
retries: 1
backoff: 0.001
handle_fujsen = '''
def handle(event):
    print("hello " + event["payload"]["name"])
    if event["payload"]["name"] == "Mallory":
        raise ValueError("not Mallory")
    publish("greeted", {{"name": event["payload"]["name"]}})
'''
"""


@pytest.fixture
def logged():
    """Restore the logging configuration and the signal receivers that setup_logging changes."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    yield stream
    root.handlers[:], level = saved
    root.setLevel(level)
    logs._configured.clear()
    for name in ("tusk_events.fujsen", "tusk_events.flow", "tusk_events.bus"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    disconnect_flow_logging()


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize("delivery", ["durable", "sync", "broadcast"])
def test_json_lines_logged_in_a_handler_carry_the_event(env, logged, delivery):
    setup_logging("tusk_events.fujsen=INFO,WARNING", "json", stream=logged)
    with Runtime([TSK.from_string(PRINTING.format(delivery=delivery), env=env)]) as rt:
        if delivery == "broadcast":
            rt._subscribe_all()  # broadcast subscribers must be listening before the publish
            sent = rt.publish("user_registered", {"name": "Ada"})
            rt.run_until_idle()
        else:
            sent = rt.publish("user_registered", {"name": "Ada"})
            rt.run_until_idle()
    (line,) = [d for d in lines(logged) if d["message"] == "fujsen print: hello Ada"]
    assert line["logger"] == "tusk_events.fujsen" and line["level"] == "INFO"
    assert line["trace_id"] == sent.trace_id
    assert line["event_id"] == sent.id
    assert line["event_type"] == "user_registered"
    assert line["service"] == "greeter"


def test_failed_attempts_and_retries_are_logged_with_their_event(env, logged):
    setup_logging("tusk_events.flow=INFO,WARNING", "json", stream=logged)
    with Runtime([TSK.from_string(PRINTING.format(delivery="durable"), env=env)]) as rt:
        sent = rt.publish("user_registered", {"name": "Mallory"})
        rt.run_until_idle()
    flow = [d for d in lines(logged) if d["logger"] == "tusk_events.flow"]
    assert [d["message"].split(" ")[0] for d in flow] == ["attempt", "retrying", "attempt"]
    assert all(d["event_id"] == sent.id and d["trace_id"] == sent.trace_id and d["service"] == "greeter"
               for d in flow)
    (dead,) = [d for d in lines(logged) if d["logger"] == "tusk_events.runtime.core"]
    assert dead["level"] == "WARNING" and dead["event_id"] == sent.id and dead["trace_id"] == sent.trace_id


def test_published_and_handled_are_logged_only_at_debug(env, logged):
    setup_logging("WARNING", "json", stream=logged)
    assert not any(getattr(r, "__name__", "") == "_on_handled" for r in signals.handled.receivers)
    setup_logging("tusk_events.flow=DEBUG,WARNING", "json", stream=logged)
    with Runtime([TSK.from_string(PRINTING.format(delivery="sync"), env=env)]) as rt:
        sent = rt.publish("user_registered", {"name": "Ada"})
        rt.run_until_idle()
    flow = [d["message"].split(" ")[0] for d in lines(logged) if d["logger"] == "tusk_events.flow"]
    assert flow == ["published", "published", "handled"]
    (published_follow_up,) = [d for d in lines(logged) if d["message"] == "published greeted"]
    assert published_follow_up["service"] == "greeter" and published_follow_up["trace_id"] == sent.trace_id


def test_text_lines_show_the_event_context(env, logged):
    setup_logging("tusk_events.fujsen=INFO,WARNING", "text", stream=logged)
    with Runtime([TSK.from_string(PRINTING.format(delivery="sync"), env=env)]) as rt:
        sent = rt.publish("user_registered", {"name": "Ada"})
    (line,) = [x for x in logged.getvalue().splitlines() if "fujsen print" in x]
    assert line.endswith(
        f"INFO tusk_events.fujsen: fujsen print: hello Ada "
        f"[service=greeter event_type=user_registered event_id={sent.id} trace_id={sent.trace_id}]"
    )


def test_lines_outside_a_handler_have_no_event_fields(logged):
    setup_logging("INFO", "json", stream=logged)
    logging.getLogger("tusk_events.test").info("plain")
    (line,) = lines(logged)
    assert line["message"] == "plain"
    assert not {"trace_id", "event_id", "service"} & set(line)


def test_explicit_fields_win_over_the_current_event(logged):
    from tusk_events.events import handling

    setup_logging("INFO", "json", stream=logged)
    with handling(new_event("outer", {})):
        logging.getLogger("tusk_events.test").info("about another", extra={"event_id": "E", "trace_id": "T"})
    (line,) = lines(logged)
    assert (line["event_id"], line["trace_id"]) == ("E", "T")


def test_levels_per_component(logged):
    assert parse_levels("WARNING") == (logging.WARNING, {})
    assert parse_levels("tusk_events.bus=DEBUG,WARNING") == (logging.WARNING, {"tusk_events.bus": logging.DEBUG})
    assert parse_levels("info, tusk_events.runtime.core=error") == (logging.INFO, {"tusk_events.runtime.core": logging.ERROR})
    assert parse_levels("tusk_events.bus=10") == (logging.WARNING, {"tusk_events.bus": 10})
    for bad in ("LOUD", "tusk_events.bus=LOUD", "=DEBUG"):
        with pytest.raises(ConfigError):
            parse_levels(bad)
    setup_logging("tusk_events.bus=DEBUG,ERROR", "json", stream=logged)
    logging.getLogger("tusk_events.bus.redis_bus").debug("bus detail")
    logging.getLogger("tusk_events.runtime.core").warning("hidden")
    logging.getLogger("tusk_events.runtime.core").error("shown")
    assert [d["message"] for d in lines(logged)] == ["bus detail", "shown"]
    # configuring again resets the loggers the previous call named
    setup_logging("ERROR", "json", stream=logged)
    assert logging.getLogger("tusk_events.bus").level == logging.NOTSET


def test_cli_run_rejects_a_bad_level(env, capsys, logged):
    from obs_support import APP

    from tusk_events.cli import main

    assert main(["run", str(APP), "--until-idle", "--log-level", "tusk_events.bus=LOUD"]) == 1
    assert "unknown log level 'LOUD'" in capsys.readouterr().err
