"""``tusk-events``: check, show and run configs.

``main(argv)`` returns the exit code, so the CLI is tested by calling it. Every user mistake
or unreachable service ends as one line on stderr (``--debug`` shows the traceback).

Longer than most modules because it is the option table of every command; commands with
logic of their own live with it (``observe.lint``, ``observe.progress``, ``observe.metrics``...).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from tusk_events.defaults import RUN_GRACE_S
from tusk_events.errors import TskSyntaxError, TuskError


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
    """Parse every file and compile every fujsen; one line per file, then the lint warnings."""
    failed = 0
    loaded = []
    for path in args.files:
        try:
            cfg = _load(path, args)
        except TuskError as err:
            if _debug(args):
                raise
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
                    + old_problems + _language_problems(cfg, path, strict=args.strict))
        if problems:
            for p in problems:
                print(f"{path}: {p}", file=sys.stderr)
            failed += 1
            continue
        loaded.append(cfg)
        print(f"{path}: ok ({len(sections)} section{'s' * (len(sections) != 1)}, {n_fujsen} fujsen)")
    warnings = _lint(loaded)
    if failed:
        return 1
    return 1 if warnings and args.strict else 0


def _lint(configs: Sequence[Any]) -> int:
    """Print the lint warnings of ``configs`` (run together) on stderr; returns how many."""
    from tusk_events.observe.lint import lint

    findings = lint(configs)
    for finding in findings:
        print(str(finding), file=sys.stderr)
    return len(findings)


def _language_problems(cfg: Any, path: str, *, strict: bool) -> list[str]:
    """Print a warning per operator that loads inert; every refused fujsen (and, with
    ``--strict``, those operators) is a problem."""
    problems = [str(err) for err in cfg.refused_fujsen]
    for name, line, column in cfg.unsupported_operators:
        message = f"{path}:{line}:{column}: operator {name} is not supported (it loads as an inert value)"
        if strict:
            problems.append(message)
        else:
            print(f"warning: {message}", file=sys.stderr)
    return problems


def _refused_fujsen(files: list[str]) -> int:
    """``run``: report every fujsen the sandbox refused, in every file; how many."""
    count = 0
    for path in files:
        for err in _load(path).refused_fujsen:
            print(str(err), file=sys.stderr)
            count += 1
    return count


def _check_services(cfg: Any) -> list[str]:
    from tusk_events.runtime.services import check_services

    return check_services(cfg)


def cmd_show(args: argparse.Namespace) -> int:
    from tusk_events.lang.operators import redact

    cfg = _load(args.file)
    if args.json:
        print(json.dumps(redact(cfg.data), indent=2, ensure_ascii=False))
    else:
        print(cfg.to_string(redacted=True), end="")
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    """Run one fujsen with JSON arguments and print its result as JSON."""
    try:
        fn_args = [json.loads(a) for a in args.args]
    except json.JSONDecodeError as err:
        print(f"argument is not JSON: {err}", file=sys.stderr)
        return 2
    from tusk_events.config import TSK

    cfg = TSK.from_file(args.file, isolation=args.isolation, **_trust_options(args))
    result = cfg.execute_fujsen(args.section, args.name, *fn_args)
    print(json.dumps(result, default=_json_default, ensure_ascii=False))
    return 0


EPILOG = """exit codes: 0 ok; 1 an error (one line on stderr; --debug or TUSK_DEBUG=1 shows the
traceback), or check/run --strict found warnings; 2 a usage error; 3 run finished but
dead-lettered events; 130/143 run stopped by SIGINT/SIGTERM."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tusk_events")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tusk-events", description="Check, inspect and run TuskLang event configs.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print the version and exit")
    parser.add_argument("--debug", action="store_true",
                        help="show Python tracebacks instead of one-line errors (also: TUSK_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check", help="parse configs, compile their fujsen, warn about likely mistakes")
    p.add_argument("files", nargs="+", metavar="FILE", help="configs run together (warnings look across all)")
    p.add_argument("--against", metavar="OLD",
                   help="also report contract changes since OLD.tsk that break existing consumers")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when there are warnings (operators this runtime cannot evaluate included)")
    _add_trust_flags(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("show", help="print the parsed values of a config")
    p.add_argument("file", metavar="FILE", help="the config")
    p.add_argument("--json", action="store_true", help="print JSON instead of .tsk")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("exec", help="run one fujsen and print its result as JSON")
    p.add_argument("file", metavar="FILE", help="the config")
    p.add_argument("section", help="the section holding the fujsen")
    p.add_argument("name", help="the fujsen's name")
    p.add_argument("args", nargs="*", metavar="JSON_ARG", help="its arguments, each a JSON value")
    p.add_argument("--isolation", choices=["inline", "process"],
                   help="run the fujsen in this process (inline) or in a worker process with OS limits")
    _add_trust_flags(p)
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("run", help="run the services of one or more configs", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE", help="configs run together on one bus and store")
    p.add_argument("--until-idle", action="store_true",
                   help="run the startup fujsen, handle until every queue is drained, print a summary, exit")
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="worker processes sharing the consumer groups (needs a redis:// bus)")
    p.add_argument("--no-startup", action="store_true", help="do not run the startup fujsen")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--log-level", default="WARNING", metavar="LEVEL",
                   help="DEBUG, INFO, WARNING (default) or ERROR")
    p.add_argument("--log-format", choices=["text", "json"], default="text", help="log lines as text or JSON")
    p.add_argument("--metrics-port", type=int, metavar="P", help="serve Prometheus metrics on this port")
    p.add_argument("--ui-port", type=int, metavar="P",
                   help="also serve the web console on 127.0.0.1:P (one process; see `ui` for more)")
    p.add_argument("--isolation", choices=["inline", "process"],
                   help="run fujsen in this process (inline) or in worker processes with OS limits")
    p.add_argument("--strict", action="store_true", help="refuse to run when check would warn")
    p.add_argument("-q", "--quiet", action="store_true", help="no start line and no progress line")
    p.add_argument("--progress", type=float, metavar="SECONDS",
                   help="seconds between progress lines (default: 2 on a terminal, 10 otherwise)")
    p.add_argument("--grace", type=float, default=RUN_GRACE_S, metavar="SECONDS",
                   help="after SIGINT/SIGTERM, how long in-flight handlers may finish before they are "
                        f"abandoned unacknowledged (default {RUN_GRACE_S:g}); exit code 130/143")
    _add_trust_flags(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("dlq", help="inspect and redrive dead-lettered events")
    p.add_argument("action", choices=["list", "show", "redrive", "purge"], help="what to do")
    p.add_argument("file", metavar="FILE", help="the config (its bus holds the queues)")
    p.add_argument("--service", help="only this service")
    p.add_argument("--id", action="append", dest="ids", metavar="ID", help="only this entry (repeatable)")
    p.add_argument("--json", action="store_true", help="one JSON object per entry")
    p.set_defaults(func=cmd_dlq)

    p = sub.add_parser("replay", help="stream stored events, or publish them again")
    p.add_argument("file", metavar="FILE", help="the config (its event store is read)")
    p.add_argument("--type", help="only events of this type")
    p.add_argument("--since", metavar="ISO", help="only events after this time (UTC)")
    p.add_argument("--to-bus", action="store_true", help="publish them to the bus instead of printing")
    p.add_argument("--json", action="store_true", help="one JSON envelope per line")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("store", help="event store information")
    p.add_argument("action", choices=["stats"], help="what to show")
    p.add_argument("file", metavar="FILE", help="the config (its event store is read)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_store)

    _add_observability_commands(sub)
    _add_contract_commands(sub)
    for command in sub.choices.values():  # --debug after the command works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show Python tracebacks instead of one-line errors (also: TUSK_DEBUG=1)")
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
    p.add_argument("file", metavar="FILE", help="the config (its bus is read)")
    p.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until Ctrl-C")
    p.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N refreshes")
    p.add_argument("--json", action="store_true", help="one JSON object (per refresh)")
    p.set_defaults(func=lazy("tusk_events.observe.metrics", "cmd_stats"))

    p = sub.add_parser("trace", help="one flow from the event store, as a causation tree")
    p.add_argument("file", metavar="FILE", help="the config (its event store is read)")
    p.add_argument("trace_id", metavar="TRACE_ID", help="a trace id (or the id of one of its events)")
    p.add_argument("--format", choices=["text", "mermaid", "json"], default="text",
                   help="an indented tree (default), a mermaid diagram, or JSON")
    p.add_argument("--since", metavar="ISO", help="only look at events after this time (UTC)")
    p.set_defaults(func=lazy("tusk_events.observe.tracing", "cmd_trace"))

    p = sub.add_parser("graph", help="draw the services, event types and DLQs the configs declare")
    p.add_argument("files", nargs="+", metavar="FILE", help="configs run together")
    p.add_argument("--format", choices=["mermaid", "dot"], default="mermaid",
                   help="mermaid (default) or Graphviz dot")
    p.set_defaults(func=lazy("tusk_events.observe.graph", "cmd_graph"))

    from tusk_events.console.command import add_arguments as ui_arguments

    p = sub.add_parser("ui", help="serve the web console: services, events, dead letters, traces")
    ui_arguments(p)
    p.set_defaults(func=lazy("tusk_events.console.command", "cmd_ui"))


_DOCS_SUFFIXES = (".json", ".html", ".htm", ".yaml", ".yml")


def _add_contract_commands(sub: Any) -> None:
    """``docs``: the AsyncAPI document of a config's event contracts."""

    def cmd_docs(args: argparse.Namespace) -> int:
        from pathlib import Path

        from tusk_events.config import TSK
        from tusk_events.contracts.asyncapi import document, format_for, render

        configs = [TSK.from_file(path) for path in args.files]
        # json unless asked: a base install has no PyYAML
        suffix = Path(args.output).suffix.lower() if args.output else ""
        fmt = args.format or (format_for(args.output) if suffix in _DOCS_SUFFIXES else "json")
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
                   help="json, yaml (needs PyYAML) or one self-contained html page; "
                        "default: from -o's extension, else json")
    p.add_argument("-o", "--output", metavar="OUT", help="write here instead of to stdout")
    p.add_argument("--title", help="the document's title (default: [contracts] title)")
    p.set_defaults(func=cmd_docs)


# --- the runtime ----------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """Run the services; SIGINT/SIGTERM stop them gracefully (see tusk_events.runtime.supervisor)."""
    import os

    from tusk_events.observe.logs import setup_logging
    from tusk_events.runtime.core import Runtime
    from tusk_events.runtime.supervisor import run_worker

    setup_logging(args.log_level, args.log_format)
    if args.strict and _strict_refusal(args.files):
        return 1
    if _refused_fujsen(args.files):
        return 1
    if args.processes > 1:
        return _run_processes(args)
    runtime = Runtime.from_files(args.files, grace=args.grace,
                                 **({"isolation": args.isolation} if args.isolation else {}),
                                 **_trust_options(args))
    with runtime:
        runtime.client.ping()  # an unreachable bus is an error now, not a consumer reconnecting forever
        if args.metrics_port:
            from tusk_events.observe.metrics import serve_metrics

            serve_metrics(args.metrics_port, runtime)
        console = None
        if args.ui_port is not None:
            from tusk_events.console.server import Console

            console = Console(runtime, port=args.ui_port).start()
            print(f"console on {console.url}", file=sys.stderr, flush=True)
        with _progress(args, runtime):
            result = run_worker(runtime, until_idle=args.until_idle, startup=not args.no_startup,
                                grace=args.grace)
        if console is not None:
            console.close()
        summary = result.summary
        if args.json:
            print(json.dumps({**summary.to_dict(), "signal": result.signal, "abandoned": result.abandoned}))
        else:
            print(summary.render())
        for line in result.lines:
            print(line, file=sys.stderr)
        code = result.code or _run_exit_code(summary.dead_lettered)
        if result.abandoned:  # a handler thread is still running: leave without waiting for it
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return code


def _run_exit_code(dead_lettered: int) -> int:
    """0, or 3 when this run dead-lettered anything (a scripted run can tell)."""
    from tusk_events.defaults import EXIT_DEAD_LETTERED

    return EXIT_DEAD_LETTERED if dead_lettered else 0


def _strict_refusal(paths: Sequence[str]) -> bool:
    """``run --strict``: print check's warnings; True when there are any (the run is refused)."""
    from tusk_events.config import TSK

    found = _lint([TSK.from_file(p) for p in paths])
    if found:
        print(f"run --strict: {found} warning{'s' * (found != 1)}; not running", file=sys.stderr)
    return bool(found)


def _progress(args: argparse.Namespace, runtime: Any) -> Any:
    """The start line and progress line of ``run`` (nothing with ``--quiet``)."""
    import contextlib

    if args.quiet:
        return contextlib.nullcontext()
    from tusk_events.observe.progress import Progress

    if args.progress is not None and args.progress <= 0:
        raise UsageError(f"--progress needs a positive number of seconds, not {args.progress:g}")
    return Progress(runtime, interval=args.progress)


def _run_processes(args: argparse.Namespace) -> int:
    """A supervisor: the startup fujsen once here, then N workers sharing the consumer groups."""
    from tusk_events.config import TSK
    from tusk_events.errors import ConfigError
    from tusk_events.runtime.supervisor import run_processes

    first = TSK.from_file(args.files[0], **_trust_options(args))
    if first.bus_url.startswith("memory://"):
        raise ConfigError("--processes needs a bus shared between processes (redis://...); "
                          f"this config uses {first.bus_url}")

    def startup() -> None:
        if args.metrics_port:
            # one endpoint here, summing what the workers write to a multiprocess dir they inherit
            from tusk_events.observe.metrics import supervise_metrics

            supervise_metrics(args.metrics_port, args.files)
        if not args.no_startup:
            from tusk_events.runtime.core import Runtime

            with Runtime.from_files(args.files, **_trust_options(args)) as rt:
                rt.run_startup()

    # workers print their summaries as JSON; the supervisor adds them up into one
    worker_args = ["--quiet", "--json", "--log-level", args.log_level, "--log-format", args.log_format,
                   "--grace", str(args.grace)]
    if args.isolation:
        worker_args += ["--isolation", args.isolation]
    if args.untrusted:
        worker_args += ["--untrusted", *(f"--env-allow={name}" for name in args.env_allow or ())]
    if args.metrics_port:
        worker_args += ["--metrics-port", str(args.metrics_port)]
    outputs: list[str] = []
    code = run_processes(args.files, processes=args.processes, worker_args=worker_args,
                         until_idle=args.until_idle, startup=startup, outputs=outputs)
    return _print_total(args, outputs, code)


def _print_total(args: argparse.Namespace, outputs: Sequence[str], code: int) -> int:
    """One summary for the run, the workers' JSON summaries added up; the run's exit code."""
    from tusk_events.observe.progress import parse_worker_output, render_total, total_summary

    parts = [s for s in (parse_worker_output(o) for o in outputs) if s is not None]
    total = total_summary(parts)
    print(json.dumps(total) if args.json else render_total(total))
    if code == 0 and total["dead_lettered"]:
        return _run_exit_code(total["dead_lettered"])
    return code


def _runtime_for(path: str) -> Any:
    from tusk_events.runtime.core import Runtime

    return Runtime.from_files([path])


def cmd_dlq(args: argparse.Namespace) -> int:
    if args.action in ("redrive", "purge") and args.json:
        raise UsageError(f"dlq {args.action} has no --json output")
    runtime = _runtime_for(args.file)
    with runtime:
        if runtime.bus_url.startswith("memory://"):
            print(f"note: {runtime.bus_url} lives inside one process; dead letters of a finished run "
                  "are gone (use a redis:// bus to keep them)", file=sys.stderr)
        if args.service is not None:
            runtime._service(args.service)  # ConfigError naming the services there are
        wanted = set(args.ids or ())
        letters = runtime.dlq.list(args.service)
        if wanted:
            letters = [d for d in letters if d.id in wanted]
        missing = sorted(wanted - {d.id for d in letters})
        if args.action == "redrive":
            _redrive(runtime, letters)
        elif args.action == "purge":
            removed = 0
            services = [args.service] if args.service else runtime.dlq.services()
            for service in services:
                removed += runtime.dlq.purge(service, args.ids)
            print(f"purged {removed}")
        elif args.action == "show" or args.json:
            for d in letters:
                print(json.dumps(d.to_dict(), indent=None if args.json else 2, ensure_ascii=False))
        else:
            for d in letters:
                print(f"{d.id}  {d.service}  {d.event.type}  attempts={d.attempts}  {d.reason}")
            print(f"{len(letters)} dead-lettered")
    if missing:
        where = f"service [{args.service}]" if args.service else "any service"
        print(f"no dead letter with id {', '.join(missing)} in {where}", file=sys.stderr)
        return 1
    return 0


def _redrive(runtime: Any, letters: Sequence[Any]) -> None:
    """Put ``letters`` back, service by service, with a progress bar on a terminal."""
    from tusk_events.observe.progress import Bar

    by_service: dict[str, list[str]] = {}
    for d in letters:
        by_service.setdefault(d.service, []).append(d.id)
    bar = Bar(len(letters), "redriving")
    total = 0
    try:
        for service, ids in by_service.items():
            for i in range(0, len(ids), _REDRIVE_CHUNK):
                chunk = ids[i : i + _REDRIVE_CHUNK]
                total += runtime.redrive(service, chunk)
                bar.advance(len(chunk))
    finally:
        bar.done()
    print(f"redriven {total}")


_REDRIVE_CHUNK = 500
"""Dead letters redriven per call (the bar moves between calls)."""


def cmd_replay(args: argparse.Namespace) -> int:
    from tusk_events.config import TSK
    from tusk_events.fujsen.helpers import shared_store
    from tusk_events.observe.progress import Bar

    cfg = TSK.from_file(args.file)
    store = shared_store(cfg.store_url)
    bus = None
    if args.to_bus:
        from tusk_events.bus import connect, redis_client

        redis_client(cfg.bus_url).ping()  # unreachable: say so before reading the store
        bus = connect(cfg.bus_url)
    n = 0
    bar = Bar(store.count(type=args.type, since=args.since) if args.to_bus else 0, "replaying")
    try:
        for stored in store.replay(type=args.type, since=args.since):
            if bus is not None:
                bus.publish_event(stored.to_event())
                bar.advance()
            elif args.json:
                print(json.dumps(stored.to_dict(), ensure_ascii=False, default=_json_default))
            else:
                print(f"{stored.to_dict().get('timestamp')}  {stored.to_event().type}  "
                      f"{json.dumps(stored.to_event().payload, ensure_ascii=False, default=_json_default)}")
            n += 1
    finally:
        bar.done()
        if bus is not None:
            bus.close()
    if bus is not None:
        from tusk_events.observe.progress import redact

        print(f"replayed {n} events to {redact(cfg.bus_url)}", file=sys.stderr)
    return 0


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


class UsageError(TuskError):
    """A command line that asks for something impossible: exit code 2, like argparse's errors."""


def _debug(args: argparse.Namespace) -> bool:
    """``--debug`` or ``TUSK_DEBUG=1``: let tracebacks through."""
    import os

    from tusk_events.defaults import DEBUG_ENV_VAR

    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV_VAR, "") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = _debug(args)
    if sys.stdout is None:  # started with stdout closed (>&-)
        print("tusk-events: standard output is closed", file=sys.stderr)
        return 1
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _discard_stdout()  # `... | head`: the reader left; nothing more to say
        return 1
    except Exception as err:
        if debug:
            raise
        print(_one_line(err, args.command), file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1


def _one_line(err: BaseException, command: str) -> str:
    """What went wrong, for an operator: the message, never a traceback."""
    module = type(err).__module__.split(".")[0]
    if isinstance(err, UsageError):
        return f"tusk-events {command}: error: {err}"
    if isinstance(err, TskSyntaxError):
        return str(err)  # path:line:col, the line and a caret
    if isinstance(err, TuskError):
        return " ".join(part.strip() for part in str(err).splitlines() if part.strip())
    if module == "redis":
        name = type(err).__name__
        what = "cannot reach Redis" if name in ("ConnectionError", "TimeoutError") else f"Redis {name}"
        return f"{what}: {err}"
    if module in ("psycopg", "psycopg_pool"):
        text = str(err).strip()
        return f"PostgreSQL: {text.splitlines()[0] if text else type(err).__name__}"
    if isinstance(err, OSError):
        where = f": {err.filename}" if err.filename else ""
        return f"{err.strerror or err}{where}"
    return (f"tusk-events {command}: unexpected {type(err).__name__}: {err} "
            "(--debug or TUSK_DEBUG=1 shows the traceback)")


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
