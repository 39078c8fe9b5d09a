"""How ``tusk-events run`` runs and stops: one worker with signal handling, or N supervised workers.

One worker (:func:`run_worker`): the runtime runs in a thread; the main thread only waits
and takes the signals. The first SIGINT or SIGTERM stops reading new events; in-flight
handlers get ``grace`` seconds to finish (they are then acknowledged); a handler still running
after that is *abandoned*: the process exits without acknowledging it, so it is delivered
again (never failed, retried or dead-lettered because of the signal). The exit code is
128 + the signal (130 for SIGINT, 143 for SIGTERM). A second Ctrl-C exits at once. No
``KeyboardInterrupt`` is ever raised inside a handler.

N workers (:func:`run_processes`): each worker is ``run --no-startup`` in a process of
its own session (a terminal's Ctrl-C reaches the supervisor only, which forwards it once,
so a single Ctrl-C is not taken for a second one). A worker that dies (killed, crashed,
exited non-zero) is logged and restarted after a backoff; when workers keep dying
(``SUPERVISOR_RESTARTS`` in ``RUNTIME_RESTART_WINDOW_S``) the supervisor stops the rest
and exits 1.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tusk_events.defaults import (
    EXIT_DEAD_LETTERED,
    RUNTIME_RESTART_WINDOW_S,
    SUPERVISOR_BACKOFF_MAX_S,
    SUPERVISOR_BACKOFF_S,
    SUPERVISOR_RESTARTS,
)

if TYPE_CHECKING:
    from tusk_events.runtime.core import Runtime, Summary

log = logging.getLogger(__name__)

_POLL_S = 0.05
"""How often the waiting main thread looks at the runtime (signals are handled in between)."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    """The shell's convention for "ended by signal N": 128 + N."""
    return 128 + int(signum)


@dataclass
class WorkerResult:
    """How one worker run ended."""

    summary: Summary
    code: int
    signal: int | None = None
    abandoned: int = 0
    error: BaseException | None = None
    lines: list[str] = field(default_factory=list)


def run_worker(runtime: Runtime, *, until_idle: bool, startup: bool, grace: float) -> WorkerResult:
    """Run ``runtime`` until idle (or until stopped), handling SIGINT/SIGTERM; see the module doc.

    Raises what the run raised (BusError...) when it ended on an error and not on a signal.
    When handlers were abandoned the caller must exit without cleaning up (``os._exit``), or
    the interpreter would wait for them.
    """
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            if until_idle:
                runtime.run_until_idle(startup=startup)
            else:
                runtime.run(stop, startup=startup)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            outcome["error"] = exc

    got: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if got:
            if signum == signal.SIGINT:
                sys.stderr.write("interrupted again: exiting now, in-flight events stay unacknowledged\n")
                sys.stderr.flush()
                try:
                    runtime.stop(0)  # uncounts and releases what is in hand: one round trip per consumer
                finally:
                    os._exit(exit_code(signum))
            return
        got.append(signum)
        sys.stderr.write(f"{signal.Signals(signum).name}: stopping; in-flight handlers have {grace:g}s to finish "
                         "(Ctrl-C again to exit at once)\n")
        sys.stderr.flush()
        stop.set()
        runtime.request_stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    thread = threading.Thread(target=target, name="tusk-run", daemon=True)
    try:
        thread.start()
        deadline: float | None = None
        while thread.is_alive():
            thread.join(_POLL_S)
            if got and deadline is None:
                deadline = time.monotonic() + grace
            if got:
                runtime.request_stop()  # again: the run may have started after the signal
            if deadline is not None and time.monotonic() >= deadline and thread.is_alive():
                runtime.stop(0)  # marks what is still running as abandoned
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sig_got = got[0] if got else None
    error = outcome.get("error")
    if error is not None and sig_got is None:
        raise error
    abandoned = runtime.abandoned if thread.is_alive() else 0
    result = WorkerResult(runtime.summary, exit_code(sig_got) if sig_got else 0, sig_got, abandoned)
    if sig_got is not None:
        name = signal.Signals(sig_got).name
        result.lines.append(f"stopped by {name}" + (
            f"; {abandoned} in-flight event(s) abandoned unacknowledged after {grace:g}s (delivered again later)"
            if abandoned else ""))
    return result


# --- several worker processes ----------------------------------------------------------------


def run_processes(
    files: Sequence[str],
    *,
    processes: int,
    worker_args: Sequence[str],
    until_idle: bool,
    startup: Callable[[], None] | None = None,
    outputs: list[str] | None = None,
) -> int:
    """Start ``processes`` workers (``run FILES --no-startup WORKER_ARGS``) and supervise them.

    With ``outputs``, what each worker process (restarted ones included) printed on stdout is
    appended to it when the run ends, for the caller to add up their summaries.
    """
    if startup is not None:
        startup()
    cmd = [sys.executable, "-m", "tusk_events", "run", *files, "--no-startup", *worker_args]
    if until_idle:
        cmd.append("--until-idle")
    sup = _Supervisor(cmd, processes, until_idle, capture=outputs is not None)
    try:
        return sup.run()
    finally:
        if outputs is not None:
            outputs.extend(sup.collect())


class _Supervisor:
    def __init__(self, cmd: list[str], n: int, until_idle: bool, *, capture: bool = False) -> None:
        self.cmd = cmd
        self.capture = capture
        self.stdouts: list[Any] = []
        self.until_idle = until_idle
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * n
        self.restart_at: list[float | None] = [None] * n
        self.deaths: list[float] = []
        self.signals: list[int] = []
        self.gave_up = False

    def _spawn(self, i: int) -> None:
        # a session of its own: the terminal's Ctrl-C reaches the supervisor only, which forwards it
        out = None
        if self.capture:  # a file, not a pipe: nothing to drain while the worker runs
            out = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
            self.stdouts.append(out)
        self.workers[i] = subprocess.Popen(self.cmd, start_new_session=True, stdout=out)
        self.restart_at[i] = None

    def _forward(self, signum: int, _frame: Any) -> None:
        self.signals.append(signum)
        for w in self.workers:
            if w is not None and w.poll() is None:
                try:
                    w.send_signal(signum)
                except ProcessLookupError:
                    pass

    def _died(self, i: int, code: int) -> None:
        now = time.monotonic()
        self.deaths = [t for t in self.deaths if now - t < RUNTIME_RESTART_WINDOW_S] + [now]
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        worker = self.workers[i]
        pid = worker.pid if worker is not None else "?"
        if len(self.deaths) > SUPERVISOR_RESTARTS:
            log.error("worker %d (pid %s) %s; workers died %d times in %gs: giving up",
                      i, pid, how, len(self.deaths), RUNTIME_RESTART_WINDOW_S)
            print(f"error: workers keep dying ({len(self.deaths)} times in {RUNTIME_RESTART_WINDOW_S:g}s, "
                  f"last: worker {i} {how}); stopping", file=sys.stderr)
            self.gave_up = True
            return
        delay = min(SUPERVISOR_BACKOFF_S * 2 ** (len(self.deaths) - 1), SUPERVISOR_BACKOFF_MAX_S)
        log.error("worker %d (pid %s) %s; restarting it in %.1fs", i, pid, how, delay)
        print(f"worker {i} (pid {pid}) {how}; restarting it in {delay:.1f}s", file=sys.stderr)
        self.restart_at[i] = now + delay

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._forward) for sig in STOP_SIGNALS}
        codes: dict[int, int] = {}
        try:
            for i in range(len(self.workers)):
                self._spawn(i)
            while True:
                busy = False
                for i, w in enumerate(self.workers):
                    if w is None:
                        continue
                    code = w.poll()
                    if code is None:
                        busy = True
                        continue
                    if self.restart_at[i] is not None:
                        at = self.restart_at[i]
                        if self.signals or self.gave_up:
                            self.restart_at[i] = None
                        elif at is not None and time.monotonic() >= at:
                            self._spawn(i)
                            busy = True
                        else:
                            busy = True
                        continue
                    if i in codes:
                        continue
                    finished = code in (0, EXIT_DEAD_LETTERED) and self.until_idle
                    if self.signals or self.gave_up or finished:
                        codes[i] = code
                        continue
                    self._died(i, code)
                    if self.gave_up:
                        self._stop_all()
                    busy = busy or not self.gave_up
                if not busy:
                    break
                time.sleep(_POLL_S)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.gave_up:
            return 1
        if self.signals:
            return exit_code(self.signals[0])
        return max(codes.values(), default=0)

    def collect(self) -> list[str]:
        """What the workers printed (captured runs only); closes the files."""
        texts = []
        for f in self.stdouts:
            f.seek(0)
            texts.append(f.read())
            f.close()
        self.stdouts.clear()
        return texts

    def _stop_all(self) -> None:
        for w in self.workers:
            if w is not None and w.poll() is None:
                w.send_signal(signal.SIGTERM)


__all__ = ["WorkerResult", "exit_code", "run_processes", "run_worker"]
