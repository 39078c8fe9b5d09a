"""``tusk-events ui FILE...``: serve the console over the bus and store the configs name."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from tusk_events.defaults import CONSOLE_HOST, CONSOLE_PORT, CONSOLE_TOKEN_ENV


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="the .tsk configs of the system to show")
    p.add_argument("--host", default=CONSOLE_HOST,
                   help=f"address to listen on (default {CONSOLE_HOST}; any other needs a token)")
    p.add_argument("--port", type=int, default=CONSOLE_PORT, help=f"port to listen on (default {CONSOLE_PORT})")
    p.add_argument("--token", default=None,
                   help=f"access token (default: ${CONSOLE_TOKEN_ENV}); required off 127.0.0.1")


def cmd_ui(args: argparse.Namespace) -> int:
    """Serve the console until Ctrl-C or SIGTERM."""
    from tusk_events.console.server import Console
    from tusk_events.runtime.core import Runtime

    token = args.token or os.environ.get(CONSOLE_TOKEN_ENV) or None
    runtime = Runtime.from_files(args.files)
    try:
        console = Console(runtime, host=args.host, port=args.port, token=token)
    except OSError as err:
        runtime.close()
        print(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console.start()
    shown = console.url + (f"?token={token}" if token and args.host in ("127.0.0.1", "localhost", "::1") else "")
    print(f"console on {shown} (Ctrl-C stops it)", file=sys.stderr, flush=True)
    try:
        stop.wait()
    finally:
        console.close()
        runtime.close()
    return 0


__all__ = ["add_arguments", "cmd_ui"]
