"""``tusk-events``: check, show and run configs.

``main(argv)`` returns the exit code, so the CLI is tested by calling it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from tusk_events.errors import TuskError


def _load(path: str, args: argparse.Namespace | None = None) -> Any:
    from tusk_events.config import TSK

    return TSK.from_file(path, **_trust_options(args))


def _trust_options(args: argparse.Namespace | None) -> dict[str, Any]:
    """``trust`` and ``env_allow`` for TSK from ``--untrusted`` and ``--env-allow``."""
    if args is None or not getattr(args, "untrusted", False):
        return {}
    return {"trust": "untrusted", "env_allow": tuple(args.env_allow or ())}


def _add_trust_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--untrusted", action="store_true",
                   help="the config comes from elsewhere: worker processes, the operator's URLs and limits only")
    p.add_argument("--env-allow", action="append", metavar="NAME",
                   help="with --untrusted: an environment variable @env may read (repeatable; default none)")


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def cmd_check(args: argparse.Namespace) -> int:
    """Parse every file and compile every fujsen; one line per file."""
    failed = 0
    for path in args.files:
        try:
            cfg = _load(path, args)
        except TuskError as err:
            print(str(err), file=sys.stderr)
            failed += 1
            continue
        sections = cfg.sections()
        n_fujsen = sum(len(cfg.fujsen_names(s)) for s in sections)
        from tusk_events.config import TSK
        from tusk_events.contracts.compat import check_contracts

        against = getattr(args, "against", None)
        old_problems: list[str] = []
        old = None
        if against is not None:
            try:
                old = TSK.from_file(against, env=cfg.env, **_trust_options(args))
            except TuskError as err:
                old_problems = [f"--against {against}: {err}"]
        problems = (_check_services(cfg) + check_contracts(cfg, against=against, old=old)
                    + old_problems)
        if problems:
            for p in problems:
                print(f"{path}: {p}", file=sys.stderr)
            failed += 1
            continue
        print(f"{path}: ok ({len(sections)} section{'s' * (len(sections) != 1)}, {n_fujsen} fujsen)")
    return 1 if failed else 0


def _check_services(cfg: Any) -> list[str]:
    from tusk_events.runtime.services import check_services

    return check_services(cfg)


def cmd_show(args: argparse.Namespace) -> int:
    try:
        cfg = _load(args.file)
    except TuskError as err:
        print(str(err), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(cfg.data, indent=2, ensure_ascii=False))
    else:
        print(cfg.to_string(), end="")
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    """Run one fujsen with JSON arguments and print its result as JSON."""
    try:
        fn_args = [json.loads(a) for a in args.args]
    except json.JSONDecodeError as err:
        print(f"argument is not JSON: {err}", file=sys.stderr)
        return 2
    try:
        from tusk_events.config import TSK

        cfg = TSK.from_file(args.file, isolation=args.isolation, **_trust_options(args))
        result = cfg.execute_fujsen(args.section, args.name, *fn_args)
    except TuskError as err:
        print(str(err), file=sys.stderr)
        return 1
    print(json.dumps(result, default=_json_default, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tusk-events", description="Check, inspect and run TuskLang event configs."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="parse configs and compile their fujsen")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--against", metavar="OLD",
                   help="also report contract changes since OLD.tsk that break existing consumers")
    _add_trust_flags(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("show", help="print the parsed values of a config")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print JSON instead of .tsk")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("exec", help="run one fujsen and print its result as JSON")
    p.add_argument("file", metavar="FILE")
    p.add_argument("section")
    p.add_argument("name")
    p.add_argument("args", nargs="*", metavar="JSON_ARG")
    p.add_argument("--isolation", choices=["inline", "process"],
                   help="run the fujsen in this process (inline) or in a worker process with OS limits")
    _add_trust_flags(p)
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("run", help="run the services of one or more configs")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--until-idle", action="store_true",
                   help="run the startup fujsen, handle until every queue is drained, print a summary, exit")
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="worker processes sharing the consumer groups (needs a redis:// bus)")
    p.add_argument("--no-startup", action="store_true", help="do not run the startup fujsen")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--log-level", default="WARNING")
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument("--metrics-port", type=int, metavar="P", help="serve Prometheus metrics on this port")
    p.add_argument("--isolation", choices=["inline", "process"],
                   help="run fujsen in this process (inline) or in worker processes with OS limits")
    _add_trust_flags(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("dlq", help="inspect and redrive dead-lettered events")
    p.add_argument("action", choices=["list", "show", "redrive", "purge"])
    p.add_argument("file", metavar="FILE")
    p.add_argument("--service", help="only this service")
    p.add_argument("--id", action="append", dest="ids", metavar="ID", help="only this entry (repeatable)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_dlq)

    p = sub.add_parser("replay", help="stream stored events, or publish them again")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--type", help="only events of this type")
    p.add_argument("--since", metavar="ISO", help="only events after this time (UTC)")
    p.add_argument("--to-bus", action="store_true", help="publish them to the bus instead of printing")
    p.add_argument("--json", action="store_true", help="one JSON envelope per line")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("store", help="event store information")
    p.add_argument("action", choices=["stats"])
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_store)

    _add_observability_commands(sub)
    _add_contract_commands(sub)
    return parser


def _add_observability_commands(sub: Any) -> None:
    """``stats``, ``trace`` and ``graph``: what the running system looks like."""

    def lazy(module: str, name: str) -> Any:
        """The command function ``module.name``, imported only when that command runs."""

        def run(args: argparse.Namespace) -> int:
            import importlib

            return int(getattr(importlib.import_module(module), name)(args))

        return run

    p = sub.add_parser("stats", help="stream lengths, consumer lag and pending, dead-letter queue sizes")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until Ctrl-C")
    p.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N refreshes")
    p.add_argument("--json", action="store_true", help="one JSON object (per refresh)")
    p.set_defaults(func=lazy("tusk_events.observe.metrics", "cmd_stats"))

    p = sub.add_parser("trace", help="one flow from the event store, as a causation tree")
    p.add_argument("file", metavar="FILE")
    p.add_argument("trace_id", metavar="TRACE_ID", help="a trace id (or the id of one of its events)")
    p.add_argument("--format", choices=["text", "mermaid", "json"], default="text")
    p.add_argument("--since", metavar="ISO", help="only look at events after this time (UTC)")
    p.set_defaults(func=lazy("tusk_events.observe.tracing", "cmd_trace"))

    p = sub.add_parser("graph", help="draw the services, event types and DLQs the configs declare")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    p.set_defaults(func=lazy("tusk_events.observe.graph", "cmd_graph"))


def _add_contract_commands(sub: Any) -> None:
    """``docs``: the AsyncAPI document of a config's event contracts."""

    def cmd_docs(args: argparse.Namespace) -> int:
        from pathlib import Path

        from tusk_events.config import TSK
        from tusk_events.contracts.asyncapi import document, format_for, render

        configs = [TSK.from_file(path) for path in args.files]
        fmt = args.format or format_for(args.output)
        doc = document(configs, title=args.title)
        text = render(doc, fmt)
        if args.output is None or args.output == "-":
            sys.stdout.write(text)
            return 0
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"{args.output}: AsyncAPI {doc['asyncapi']} ({fmt}), {len(doc['channels'])} channels, "
              f"{len(doc['components']['messages'])} messages, {len(doc['operations'])} operations",
              file=sys.stderr)
        return 0

    p = sub.add_parser("docs", help="write the AsyncAPI 3.0 document of the configs' events")
    p.add_argument("files", nargs="+", metavar="FILE", help="configs run together (one or more)")
    p.add_argument("--format", choices=["yaml", "json", "html"],
                   help="yaml (needs PyYAML), json, or one self-contained html page; "
                        "default: from -o's extension, else yaml")
    p.add_argument("-o", "--output", metavar="OUT", help="write here instead of to stdout")
    p.add_argument("--title", help="the document's title (default: [contracts] title)")
    p.set_defaults(func=cmd_docs)


# --- the runtime ----------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from tusk_events.observe.logs import setup_logging
    from tusk_events.runtime.core import Runtime

    setup_logging(args.log_level, args.log_format)
    if args.processes > 1:
        return _run_processes(args)
    runtime = Runtime.from_files(args.files, **({"isolation": args.isolation} if args.isolation else {}),
                                 **_trust_options(args))
    with runtime:
        if args.metrics_port:
            from tusk_events.observe.metrics import serve_metrics

            serve_metrics(args.metrics_port, runtime)
        if args.until_idle:
            summary = runtime.run_until_idle(startup=not args.no_startup)
        else:
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            summary = runtime.run(stop, startup=not args.no_startup)
    if args.json:
        print(json.dumps(summary.to_dict()))
    else:
        print(summary.render())
    return 0


def _run_processes(args: argparse.Namespace) -> int:
    """A supervisor: the startup fujsen once here, then N workers sharing the consumer groups."""
    import signal
    import subprocess

    from tusk_events.config import TSK
    from tusk_events.errors import ConfigError

    first = TSK.from_file(args.files[0], **_trust_options(args))
    if first.bus_url.startswith("memory://"):
        raise ConfigError("--processes needs a bus shared between processes (redis://...); "
                          f"this config uses {first.bus_url}")
    if args.metrics_port:
        # one endpoint here, summing what the workers write to a multiprocess dir they inherit
        from tusk_events.observe.metrics import supervise_metrics

        supervise_metrics(args.metrics_port, args.files)
    if not args.no_startup:
        from tusk_events.runtime.core import Runtime

        with Runtime.from_files(args.files, **_trust_options(args)) as rt:
            rt.run_startup()
    cmd = [sys.executable, "-m", "tusk_events", "run", *args.files, "--no-startup",
           "--log-level", args.log_level, "--log-format", args.log_format]
    if args.isolation:
        cmd += ["--isolation", args.isolation]
    if args.untrusted:
        cmd += ["--untrusted", *(f"--env-allow={name}" for name in args.env_allow or ())]
    if args.until_idle:
        cmd.append("--until-idle")
    if args.json:
        cmd.append("--json")
    if args.metrics_port:
        cmd += ["--metrics-port", str(args.metrics_port)]
    workers = [subprocess.Popen(cmd) for _ in range(args.processes)]

    def forward(signum: int, _frame: Any) -> None:
        for w in workers:
            w.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    codes = [w.wait() for w in workers]
    return max(codes)


def _runtime_for(path: str) -> Any:
    from tusk_events.runtime.core import Runtime

    return Runtime.from_files([path])


def cmd_dlq(args: argparse.Namespace) -> int:
    runtime = _runtime_for(args.file)
    with runtime:
        if runtime.bus_url.startswith("memory://"):
            print(f"note: {runtime.bus_url} lives inside one process; dead letters of a finished run "
                  "are gone (use a redis:// bus to keep them)", file=sys.stderr)
        if args.action == "redrive":
            services = [args.service] if args.service else runtime.dlq.services()
            total = sum(runtime.redrive(s, args.ids) for s in services)
            print(f"redriven {total}")
            return 0
        if args.action == "purge":
            removed = runtime.dlq.purge(args.service, args.ids)
            print(f"purged {removed}")
            return 0
        letters = runtime.dlq.list(args.service)
        if args.ids:
            letters = [d for d in letters if d.id in set(args.ids)]
        if args.action == "show" or args.json:
            for d in letters:
                print(json.dumps(d.to_dict(), indent=None if args.json else 2, ensure_ascii=False))
            return 0
        for d in letters:
            print(f"{d.id}  {d.service}  {d.event.type}  attempts={d.attempts}  {d.reason}")
        print(f"{len(letters)} dead-lettered")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from tusk_events.config import TSK
    from tusk_events.fujsen.helpers import shared_store

    cfg = TSK.from_file(args.file)
    store = shared_store(cfg.store_url)
    bus = None
    if args.to_bus:
        from tusk_events.bus import connect

        bus = connect(cfg.bus_url)
    n = 0
    progress = _progress(store.count(type=args.type, since=args.since)) if args.to_bus else None
    for stored in store.replay(type=args.type, since=args.since):
        if bus is not None:
            bus.publish_event(stored.to_event())
            if progress:
                progress(n + 1)
        elif args.json:
            print(json.dumps(stored.to_dict(), ensure_ascii=False, default=_json_default))
        else:
            print(f"{stored.to_dict().get('timestamp')}  {stored.to_event().type}  "
                  f"{json.dumps(stored.to_event().payload, ensure_ascii=False, default=_json_default)}")
        n += 1
    if bus is not None:
        bus.close()
        print(f"\rreplayed {n} events to {cfg.bus_url}", file=sys.stderr)
    return 0


def _progress(total: int) -> Any:
    """A one-line progress counter on a terminal; nothing when output is redirected."""
    if not sys.stderr.isatty() or total == 0:
        return None

    def show(done: int) -> None:
        if done == total or done % 500 == 0:
            width = 30
            filled = int(width * done / total)
            print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr)

    return show


def cmd_store(args: argparse.Namespace) -> int:
    from tusk_events.config import TSK
    from tusk_events.fujsen.helpers import shared_store

    cfg = TSK.from_file(args.file)
    stats = shared_store(cfg.store_url).stats()
    if args.json:
        print(json.dumps(stats, default=_json_default))
    else:
        for key, value in stats.items():
            print(f"{key}: {value}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except TuskError as err:
        print(str(err), file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
