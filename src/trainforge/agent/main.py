"""The agent program: one training instance, from its spec to its exit event.

``python -m trainforge.agent SPEC.json`` (docs/INTERNALS.md). Steps: lay out /opt/ml, report
Downloading and stage the inputs, report Training and start the training process as early as
possible (reports travel asynchronously from a thread; nothing waits for the control plane
before the user's code runs), stream its lines, stop it on request or at the deadline, report
Uploading and upload the outputs (leader), report the exit, flush, exit 0.

Whatever happens, the control plane hears how the instance ended: a top-level handler turns
any exception of ours into a ``platform`` exit event.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

from trainforge.agent import instance_files, isolation
from trainforge.agent import spec as spec_mod
from trainforge.agent.outcome import Outcome, error_reason
from trainforge.agent.reporter import Reporter
from trainforge.agent.runner import Stopper
from trainforge.agent.steps import Phase, Steps

FINAL_FLUSH_EXTRA = 300.0  # how long after the deadline the last reports are still retried
GONE_GRACE = 5.0


def main(argv: list[str]) -> int:
    finish = argv[:1] == ["--finish"]
    if finish:
        argv = argv[1:]
    if len(argv) != 1:
        print("usage: python -m trainforge.agent [--finish] SPEC.json", file=sys.stderr)
        return 2
    try:
        spec = spec_mod.load(argv[0])
    except (OSError, ValueError) as exc:
        print(f"trainforge agent: cannot read the spec {argv[0]}: {exc}", file=sys.stderr)
        return 2
    record_self(spec)
    try:
        agent = Agent(spec, finish=finish)
    except Exception as exc:  # noqa: BLE001 - no way to report at all
        print(f"trainforge agent: cannot report to the control plane: {exc!r}", file=sys.stderr)
        return 1
    return agent.run()


def record_self(spec: dict[str, Any]) -> None:
    """``instance.json`` names this agent before it does anything else: a control plane that never
    stored the agent's handle (it crashed between starting the agent and storing it) finds the
    agent there after its restart, and adopts it rather than failing a living instance."""
    instance_dir = spec.get("instance_dir")
    if not isinstance(instance_dir, str) or not os.path.isdir(instance_dir):
        return
    try:
        instance_files.write_state(instance_dir, os.getpid())
    except OSError as exc:
        print(f"trainforge agent: cannot write instance.json: {exc}", file=sys.stderr)


class Agent(Steps):
    """One instance. With ``finish``, the instance's training has already ended under an agent
    that died before it reported (its ``outcome.json`` says how): upload and report only."""

    def __init__(self, spec: dict[str, Any], finish: bool = False):
        self.spec = spec
        self.finish = finish
        self.started = time.time()
        self.stopper = Stopper()
        self.host_env = dict(os.environ)
        self.reporter = Reporter(spec, self._outbox_path(), on_stop=self.stopper.request,
                                 on_gone=self._on_gone)
        self.data_error: BaseException | None = None
        self.timings: dict[str, float] = {}
        self._phase = Phase.PREPARING
        self._phase_changed = threading.Condition()
        self.network: Any = None  # the instance's network (sandbox), closed when the instance ends
        self.instance: isolation.Instance | None = None
        from trainforge.agent import prepared

        self.slot = None if finish else prepared.current()

    # -- top level ------------------------------------------------------------------------------
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        artifacts = None
        # The sender thread starts at once (it needs only ``socket``): it connects while the main
        # thread prepares the instance, so Training reaches the control plane right away.
        self.reporter.start()
        try:
            spec_mod.check(self.spec)
            outcome, artifacts = self._finish_instance() if self.finish else self._run_instance()
        except Exception as exc:  # noqa: BLE001 - the agent must never die silently
            import traceback

            traceback.print_exc()
            outcome = Outcome("platform", None, error_reason(exc, "InternalServerError",
                                                             "(in the trainforge agent)"))
        except BaseException:
            self._close_network()
            raise
        self._mark_exited(outcome.exit_code)  # early ends too: a waiting leader must not hang
        self._advance(Phase.REPORTED)
        if not self.reporter.gone:
            self.reporter.emit(outcome.event(artifacts))
            self.timings["reported"] = time.time()
        self._close_network()  # the instance has ended: while its exit event is on its way
        delivered = self.reporter.close(self._final_deadline())
        if self.instance is not None:  # after the exit is delivered: runc's own start takes CPU from it
            self.instance.remove()
        if self.slot is not None:  # what is left of the prepared instance (its container if unused)
            self.slot.finish()
        self._log_summary(outcome, delivered)
        return 0

    def _close_network(self) -> None:
        if self.network is not None:
            try:
                self.network.close()
            except Exception as exc:  # noqa: BLE001 - the scheduler's sweep removes what is left
                print(f"trainforge agent: cannot close the instance's network: {exc!r}", file=sys.stderr)
            self.network = None

    def _on_signal(self, *_: object) -> None:
        """SIGTERM/SIGINT: stop the instance; once the exit event is queued and the control plane
        is unreachable, "exit now" (the outbox keeps whatever it has not acknowledged)."""
        if self._phase >= Phase.REPORTED:
            self.reporter.abandon_if_failing()
        self.stopper.request("Stopped")

    def _outbox_path(self) -> str | None:
        instance_dir = self.spec.get("instance_dir")
        if not instance_dir or not os.path.isdir(instance_dir):
            return None
        return instance_files.outbox_path(instance_dir)

    def _on_gone(self) -> None:
        """The job is gone (``reporter.gone``): stop at once, report nothing more."""
        self.stopper.request("Stopped", grace=GONE_GRACE)

    def _final_deadline(self) -> float:
        return max(self.deadline or 0.0, time.time()) + self.grace + FINAL_FLUSH_EXTRA

    def _log_summary(self, outcome: Outcome, delivered: bool) -> None:
        t = self.timings
        parts = [f"outcome={outcome.outcome}", f"exit_code={outcome.exit_code}",
                 f"reports_delivered={delivered}", f"started={self.started:.3f}"]
        parts += [f"{mark}_ms={1000 * (t[mark] - self.started):.1f}"
                  for mark in ("prepared", "spawned", "first_line", "exited", "uploaded", "reported") if mark in t]
        if self.reporter.last_error and not delivered:
            parts.append(f"last_report_error={self.reporter.last_error!r}")
        print("trainforge agent: " + " ".join(parts), file=sys.stderr, flush=True)
