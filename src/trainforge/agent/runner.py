"""Runs the training process to its end: streams its lines, honours stop requests and the deadline.

Stopping (StopTrainingJob via a report answer, SIGTERM to the agent, or the spec's deadline):
SIGTERM once to the training process and every process of the instance, up to
``stop_grace_seconds`` for them to exit, then SIGKILL. The first stop reason wins. A stop that
arrives before the training process exists (the instance's namespaces still being set up) is
held until it does, within the grace (``Instance.terminate``): it is never lost, so the job
never waits out the grace for nothing. A stop before the instance is started at all (while
inputs are staged) ends the instance without starting it (``agent.main``).
"""

from __future__ import annotations

import collections
import signal
import threading
import time
from typing import IO

from trainforge.agent.isolation import RUNC_ERROR, Instance
from trainforge.agent.logtext import render
from trainforge.agent.metrics import MetricReader
from trainforge.agent.reporter import Reporter

MAX_LINE_BYTES = 256 * 1024  # a longer line is sent in pieces (CloudWatch's event limit)
STDERR_TAIL_LINES = 30
PUMP_JOIN_SECONDS = 5.0


class Stopper:
    """Collects the first stop request (``Stopped`` / ``MaxRuntimeExceeded``) from any thread."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.requested_at: float | None = None
        self.grace: float | None = None  # overrides stop_grace_seconds (a job that is gone)
        self.wake = threading.Event()
        self._lock = threading.Lock()

    def request(self, reason: str, grace: float | None = None) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
                self.requested_at = time.time()
            if grace is not None:
                self.grace = grace if self.grace is None else min(self.grace, grace)
        self.wake.set()


class RunResult:
    __slots__ = ("exit_code", "first_line_at", "setup_failed", "stderr_tail", "stop_reason")

    def __init__(self, exit_code: int, stop_reason: str | None = None, stderr_tail: list[str] | None = None,
                 setup_failed: bool = False, first_line_at: float | None = None):
        self.exit_code = exit_code
        self.stop_reason = stop_reason
        self.stderr_tail = stderr_tail or []
        self.setup_failed = setup_failed
        self.first_line_at = first_line_at


class _Pumps:
    def __init__(self, instance: Instance, reporter: Reporter, metrics: MetricReader | None):
        self.metrics = metrics
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.first_line_at: float | None = None
        self.threads = [
            threading.Thread(target=self._pump, args=(instance.popen.stdout, "stdout", reporter),
                             name="stdout", daemon=True),
            threading.Thread(target=self._pump, args=(instance.popen.stderr, "stderr", reporter),
                             name="stderr", daemon=True),
        ]
        for t in self.threads:
            t.start()

    def _pump(self, pipe: IO[bytes] | None, stream: str, reporter: Reporter) -> None:
        if pipe is None:
            return
        while True:
            raw = pipe.readline(MAX_LINE_BYTES)
            if not raw:
                break
            now = time.time()
            if self.first_line_at is None:
                self.first_line_at = now
            body = raw[:-1] if raw.endswith(b"\n") else raw
            text = render(body)  # the CloudWatch event's text: the metric regexes see it too
            if text:
                reporter.log(text, stream, now, self.metrics.samples(text) if self.metrics else None)
            if stream == "stderr":  # for the failure reason: the line as printed
                self.tail.append(body.decode("utf-8", "replace").removesuffix("\r"))

    def join(self, seconds: float) -> None:
        end = time.time() + seconds
        for t in self.threads:
            t.join(max(0.0, end - time.time()))


def run(instance: Instance, reporter: Reporter, stopper: Stopper, deadline: float | None,
        grace: float, metrics: MetricReader | None = None) -> RunResult:
    pumps = _Pumps(instance, reporter, metrics)
    exited = threading.Event()

    def watch() -> None:
        instance.popen.wait()
        exited.set()
        stopper.wake.set()

    threading.Thread(target=watch, name="wait", daemon=True).start()
    while not exited.is_set():
        timeout = None if deadline is None else deadline - time.time()
        if timeout is not None and timeout <= 0:
            stopper.request("MaxRuntimeExceeded")
        elif stopper.reason is None:
            stopper.wake.wait(timeout)
            stopper.wake.clear()
        if stopper.reason is not None and not exited.is_set():
            _stop(instance, exited, grace if stopper.grace is None else min(grace, stopper.grace))
            break
    exited.wait()
    instance.reap_leftovers()
    pumps.join(PUMP_JOIN_SECONDS)
    code = instance.exit_code()
    assert code is not None
    tail = list(pumps.tail)
    return RunResult(exit_code=code, stop_reason=stopper.reason, stderr_tail=tail,
                     setup_failed=_setup_failed(instance, code, tail),
                     first_line_at=pumps.first_line_at)


def _setup_failed(instance: Instance, code: int, tail: list[str]) -> bool:
    """The sandbox could not be set up (ours, not the algorithm's): runc refusing to start the
    container (exit 1, its error as the last line), before the command ever ran."""
    if not instance.namespace:
        return False
    return code == 1 and bool(tail) and RUNC_ERROR in tail[-1]


def _stop(instance: Instance, exited: threading.Event, grace: float) -> None:
    until = time.time() + max(0.0, grace)
    instance.terminate(signal.SIGTERM, until, exited)  # waits for the command to exist, within the grace
    if not exited.wait(max(0.0, until - time.time())):
        instance.kill_all()
        exited.wait(30)
