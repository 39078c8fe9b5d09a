"""``tusk-events graph``: the architecture a config declares, drawn without running it."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from obs_support import APP

from tusk_events import TSK
from tusk_events.cli import main
from tusk_events.observe.graph import architecture, to_dot, to_mermaid

APP_MERMAID = """\
flowchart LR
    src_app_startup[/"app: startup"/]:::source
    evt_user_registered(["user_registered"]):::event
    evt_welcome_email_sent(["welcome_email_sent"]):::event
    evt_profile_created(["profile_created"]):::event
    svc_welcome_email["welcome_email<br/>durable, retries 2"]:::service
    dlq_welcome_email[("tusk:dlq:welcome_email")]:::dlq
    svc_user_profile["user_profile<br/>durable, retries 3"]:::service
    dlq_user_profile[("tusk:dlq:user_profile")]:::dlq
    svc_activity["activity<br/>sync, retries 3"]:::service
    dlq_activity[("tusk:dlq:activity")]:::dlq
    src_app_startup --> evt_user_registered
    evt_user_registered --> svc_welcome_email
    svc_welcome_email --> evt_welcome_email_sent
    svc_welcome_email -.->|dead letters| dlq_welcome_email
    evt_user_registered --> svc_user_profile
    svc_user_profile --> evt_profile_created
    svc_user_profile -.->|dead letters| dlq_user_profile
    evt_welcome_email_sent --> svc_activity
    evt_profile_created --> svc_activity
    svc_activity -.->|dead letters| dlq_activity
    classDef source fill:#f3f4f6,stroke:#6b7280
    classDef event fill:#fef9c3,stroke:#a16207
    classDef service fill:#dbeafe,stroke:#1d4ed8
    classDef dlq fill:#fee2e2,stroke:#b91c1c
"""


def test_the_main_example_as_mermaid(capsys):
    assert main(["graph", str(APP)]) == 0
    assert capsys.readouterr().out == APP_MERMAID


def test_what_the_graph_reads_from_the_main_example():
    arch = architecture([TSK.from_file(APP, env={})])
    assert [(s.name, s.delivery, s.consumes, s.publishes) for s in arch.services] == [
        ("welcome_email", "durable", ("user_registered",), ["welcome_email_sent"]),
        ("user_profile", "durable", ("user_registered",), ["profile_created"]),
        ("activity", "sync", ("welcome_email_sent", "profile_created"), []),
    ]
    assert [(s.section, s.fujsen, s.publishes) for s in arch.sources] == [("app", "startup", ["user_registered"])]
    assert arch.event_types == ["user_registered", "welcome_email_sent", "profile_created"]


def test_dot_output_names_every_node_and_edge(capsys):
    assert main(["graph", str(APP), "--format", "dot"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("digraph tusk_events {\n") and out.endswith("}\n")
    for edge in (
        "src_app_startup -> evt_user_registered;",
        "evt_user_registered -> svc_welcome_email;",
        "svc_welcome_email -> evt_welcome_email_sent;",
        "evt_profile_created -> svc_activity;",
        'svc_welcome_email -> dlq_welcome_email [style=dashed, color="#b91c1c", label="dead letters"];',
    ):
        assert edge in out


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz is not installed")
def test_graphviz_accepts_the_dot_output():
    dot = to_dot(architecture([TSK.from_file(APP, env={})]))
    done = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "welcome_email_sent" in done.stdout


HELPERS = """
[app]
event_bus: "memory://"

[orders]
subscribe: "order_placed"
delivery: "broadcast"
fujsen = \'\'\'
def handle(event):
    if event["payload"]["total"] > 100:
        flag(event)
    publish("order_accepted", {"id": event["id"]})
    publish("order_" + event["payload"]["kind"], {})

def flag(event):
    publish(type="order_flagged", payload={"id": event["id"]})

def report():
    publish("orders_reported", {})
\'\'\'

[flag-audit]
subscribe: ["order_flagged"]
handle_fujsen = \'\'\'
def handle(event):
    pass
\'\'\'
"""


def test_helpers_keywords_dynamic_types_and_odd_names():
    arch = architecture([TSK.from_string(HELPERS, env={})])
    orders = arch.services[0]
    # the handler's own calls and those of the functions it calls; keyword form too
    assert orders.publishes == ["order_accepted", "order_flagged"]
    assert orders.dynamic is True
    # a function of the same block the handler does not call is a source of its own
    assert [(s.section, s.fujsen, s.publishes) for s in arch.sources] == [("orders", "report", ["orders_reported"])]
    text = to_mermaid(arch)
    assert "    %% orders also publishes event types computed at run time" in text
    # a name that is not an identifier gets a safe node id and keeps its label
    assert '    svc_flag_audit["flag-audit<br/>durable, retries 3"]:::service' in text
    assert "    evt_order_flagged --> svc_flag_audit" in text
