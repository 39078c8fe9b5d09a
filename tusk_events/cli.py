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


def _load(path: str) -> Any:
    from tusk_events.config import TSK

    return TSK.from_file(path)


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
            cfg = _load(path)
        except TuskError as err:
            print(str(err), file=sys.stderr)
            failed += 1
            continue
        sections = cfg.sections()
        n_fujsen = sum(len(cfg.fujsen_names(s)) for s in sections)
        problems = _check_services(cfg)
        if problems:
            for p in problems:
                print(f"{path}: {p}", file=sys.stderr)
            failed += 1
            continue
        print(f"{path}: ok ({len(sections)} section{'s' * (len(sections) != 1)}, {n_fujsen} fujsen)")
    return 1 if failed else 0


def _check_services(cfg: Any) -> list[str]:
    try:
        from tusk_events.services import check_services
    except ImportError:
        return []
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
        cfg = _load(args.file)
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
    p.set_defaults(func=cmd_exec)

    _add_more(sub)
    return parser


def _add_more(sub: Any) -> None:
    """Subcommands of the runtime, store and dead-letter queue, registered where present."""
    for module in ("tusk_events.runtime_cli",):
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError:
            continue
        mod.register(sub)


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
