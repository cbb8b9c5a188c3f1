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

import json
import os
import signal
import sys
import threading
import time
from typing import Any

from trainforge.agent import environment, instance_files, isolation, layout, runner
from trainforge.agent import spec as spec_mod
from trainforge.agent.direct import finish as finish_direct
from trainforge.agent.direct import plan as plan_direct
from trainforge.agent.inputs import (
    Inputs,
    needs_data_plane,
    run_staging,
    stage,
    start_sync,
    use_job_credentials,
)
from trainforge.agent.outcome import Outcome, algorithm_failure, error_reason
from trainforge.agent.reporter import Reporter
from trainforge.agent.runner import Stopper
from trainforge.agent.spec import Paths, leader, output_prefix

INVOKING = "Invoking script with the following command: "  # script_mode's line, same words
DEFAULT_GRACE = 120.0
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
    return Agent(spec, finish=finish).run()


class Agent:
    """One instance. With ``finish``, the instance's training has already ended under an agent
    that died before it reported (its ``outcome.json`` says how): upload and report only."""

    def __init__(self, spec: dict[str, Any], finish: bool = False):
        self.spec = spec
        self.finish = finish
        self.started = time.time()
        self.stopper = Stopper()
        self.gone = threading.Event()
        self.host_env = dict(os.environ)
        self.reporter: Reporter | None = None
        self._reporter_started = False
        self._exited_marked = False
        self._exit_emitted = False
        self.data_error: BaseException | None = None
        self._training = threading.Event()  # data errors count only while the process runs
        self._training_ended = threading.Event()
        self.timings: dict[str, float] = {}

    # -- top level ------------------------------------------------------------------------------
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            self.reporter = Reporter(self.spec, self._outbox_path(), on_stop=self.stopper.request,
                                     on_gone=self._on_gone)
        except Exception as exc:  # noqa: BLE001 - no way to report at all
            print(f"trainforge agent: cannot report to the control plane: {exc!r}", file=sys.stderr)
            return 1
        artifacts = None
        # The sender thread starts at once (it needs only ``socket``): it connects while the main
        # thread prepares the instance, so Training reaches the control plane right away.
        self._start_reporter()
        try:
            spec_mod.check(self.spec)
            outcome, artifacts = self._finish_instance() if self.finish else self._run_instance()
        except Exception as exc:  # noqa: BLE001 - the agent must never die silently
            import traceback

            traceback.print_exc()
            outcome = Outcome("platform", None, error_reason(exc, "InternalServerError",
                                                             "(in the trainforge agent)"))
        self._mark_exited(outcome.exit_code)  # early ends too: a waiting leader must not hang
        reporter = self.reporter
        self._exit_emitted = True
        if not self.gone.is_set():
            reporter.emit(outcome.event(artifacts))
        delivered = reporter.close(self._final_deadline())
        self._log_summary(outcome, delivered)
        return 0

    def _on_signal(self, *_: object) -> None:
        """SIGTERM/SIGINT: stop the instance; once the exit event is queued and the control plane
        is unreachable, "exit now" (the outbox keeps whatever it has not acknowledged)."""
        if self._exit_emitted and self.reporter is not None:
            self.reporter.abandon_if_failing()
        self.stopper.request("Stopped")

    def _mark_exited(self, exit_code: int | None) -> None:
        """``instance_dir/.exited``, once, whichever way the instance ended."""
        if self._exited_marked or not os.path.isdir(self.spec.get("instance_dir") or ""):
            return
        self._exited_marked = True
        try:
            instance_files.write_exited(self.spec["instance_dir"], exit_code)
        except (OSError, KeyError) as exc:
            print(f"trainforge agent: cannot write the .exited marker: {exc}", file=sys.stderr)

    def _outbox_path(self) -> str | None:
        instance_dir = self.spec.get("instance_dir")
        if not instance_dir or not os.path.isdir(instance_dir):
            return None
        return instance_files.outbox_path(instance_dir)

    def _stderr_line(self, message: str) -> None:
        """One line of the agent's own in the job's log (stream stderr)."""
        if self.reporter is not None:
            self.reporter.log(message, "stderr")

    def _downloading(self, message: str) -> None:
        if self.reporter is not None:
            self.reporter.status("Downloading", message)

    def _on_gone(self) -> None:
        self.gone.set()
        self.stopper.request("Stopped", grace=GONE_GRACE)

    def _start_reporter(self) -> None:
        if not self._reporter_started and self.reporter is not None:
            self._reporter_started = True
            self.reporter.start()

    @property
    def grace(self) -> float:
        value = self.spec.get("stop_grace_seconds")
        return float(DEFAULT_GRACE if value is None else value)

    @property
    def deadline(self) -> float | None:
        value = self.spec.get("deadline")
        return float(value) if value else None

    def _final_deadline(self) -> float:
        return max(self.deadline or 0.0, time.time()) + self.grace + FINAL_FLUSH_EXTRA

    # -- the instance ---------------------------------------------------------------------------
    def _run_instance(self) -> tuple[Outcome, str | None]:
        spec, reporter = self.spec, self.reporter
        assert reporter is not None
        paths = Paths.of(spec)
        runtime = spec.get("runtime") or {}
        if runtime.get("error"):
            reporter.log(f"[trainforge] {runtime['error']}", "stderr")
            return Outcome("algorithm", None, str(runtime["error"])[:1024]), None
        try:
            isolation.check_available(spec)
        except isolation.IsolationError as exc:
            reporter.log(f"[trainforge] {exc}", "stderr")
            return Outcome("algorithm", None, f"ClientError: {exc}"[:1024]), None
        layout.create(spec, paths)
        reporter.status("Downloading", "Downloading input data")
        inputs = Inputs()
        if needs_data_plane(spec["request"]):
            use_job_credentials(spec)
            staged = self._stage(paths)
            if isinstance(staged, Outcome):
                return staged, None
            inputs = staged
        self._training.set()  # from here on, a failing Pipe feeder / FastFile fetcher fails the instance
        if self.data_error is not None:
            inputs.close()
            return self._data_failure(self.data_error, "while streaming the input data"), None
        if self.stopper.reason is not None or self._deadline_passed():
            inputs.close()
            reason = self.stopper.reason or "MaxRuntimeExceeded"
            return Outcome("stopped", None, None, reason), None
        argv = environment.command(spec)
        env = environment.build(spec, paths, self.host_env)
        if spec.get("allowed_local_roots") is not None:
            env["TRAINFORGE_ALLOWED_LOCAL_ROOTS"] = json.dumps(spec["allowed_local_roots"])
        direct = plan_direct(spec, paths, argv, env)
        reporter.status("Training", "Training image download completed. Training in progress.")
        reporter.log(isolation.describe(spec, paths))
        if direct is not None:
            argv = direct.command
            reporter.log(INVOKING + " ".join(argv))
        # before the process starts: what is in LocalPath now (restored checkpoints) is the baseline
        start_sync(spec, paths, inputs, self._stderr_line)
        try:
            instance = isolation.Instance(spec, paths, argv, env, inputs.mounts)
        except OSError as exc:  # the entrypoint cannot be executed at all
            inputs.close()
            if inputs.sync is not None:
                inputs.sync.stop(final=False)
            reason = f"AlgorithmError: cannot run {argv[0]}: {exc.strerror or exc}"
            reporter.log(f"[trainforge] {reason}", "stderr")
            return Outcome("algorithm", 127, reason), None
        self.timings["spawned"] = time.time()
        self._write_state(paths, instance)
        self._watch_volume(paths)
        result = runner.run(instance, reporter, self.stopper, self.deadline, self.grace)
        self._training.clear()
        self._training_ended.set()

        if result.first_line_at:
            self.timings["first_line"] = result.first_line_at
        if direct is not None:
            finish_direct(paths, direct, result.exit_code, result.stderr_tail, result.stop_reason is not None)
        self._mark_exited(result.exit_code)
        inputs.close()
        sync_error = None
        if inputs.sync is not None:
            try:
                inputs.sync.stop(final=True)
            except Exception as exc:  # noqa: BLE001
                sync_error = exc
        outcome = self._outcome(paths, result, inputs, sync_error)
        if self.gone.is_set():
            return outcome, None
        self._record_outcome(paths, outcome)
        return self._upload(paths, outcome)

    def _record_outcome(self, paths: Paths, outcome: Outcome) -> None:
        try:
            instance_files.write_outcome(paths.instance_dir, outcome)
        except OSError as exc:
            print(f"trainforge agent: cannot write outcome.json: {exc}", file=sys.stderr)

    def _finish_instance(self) -> tuple[Outcome, str | None]:
        """Started again after the agent died between the end of training and its exit report."""
        reporter = self.reporter
        assert reporter is not None
        paths = Paths.of(self.spec)
        self._exited_marked = True  # the first agent wrote the marker when the training ended
        outcome = instance_files.read_outcome(paths.instance_dir)
        if outcome is None:
            return Outcome("platform", None, "InternalServerError: the trainforge agent of "
                           f"{self.spec['host']} died and its instance cannot be finished"), None
        self._write_state(paths, None)
        reporter.log(f"[trainforge] the agent of {self.spec['host']} exited before finishing; a new agent "
                     f"uploads and reports the instance's end (training ended: {outcome.outcome}, "
                     f"exit code {outcome.exit_code})", "stderr")
        return self._upload(paths, outcome)

    def _watch_volume(self, paths: Paths, interval: float = 3.0) -> None:
        """VolumeSizeInGB bounds what the instance writes too: past it, the instance fails."""
        if not (self.spec["request"].get("ResourceConfig") or {}).get("VolumeSizeInGB"):
            return

        def watch() -> None:
            from pathlib import Path

            from trainforge.data.volume import volume_error

            # The first walk after one interval, not while the user's code starts (nothing is
            # written yet then); the fork server has the module imported already.
            while (not self._training_ended.wait(interval) and self._training.is_set()
                   and self.data_error is None):
                exc = volume_error(self.spec["request"], Path(paths.host_ml))
                if exc is not None:
                    self._on_data_error(exc)
                    return

        threading.Thread(target=watch, name="volume-watch", daemon=True).start()

    def _deadline_passed(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def _stage(self, paths: Paths) -> Inputs | Outcome:
        reporter = self.reporter
        assert reporter is not None
        box, _thread = run_staging(lambda: stage(
            self.spec, paths, progress=self._downloading,
            log=self._stderr_line, on_error=self._on_data_error), self.stopper.wake)
        while not box:
            if self.stopper.reason is not None:
                return Outcome("stopped", None, None, self.stopper.reason)
            timeout = None if self.deadline is None else self.deadline - time.time()
            if timeout is not None and timeout <= 0:
                return Outcome("stopped", None, None, "MaxRuntimeExceeded")
            self.stopper.wake.wait(timeout)
            self.stopper.wake.clear()
        staged = box[0]
        if isinstance(staged, BaseException):
            return self._data_failure(staged, "while staging the input data")
        return staged

    def _on_data_error(self, exc: BaseException) -> None:
        """A background data worker failed mid-training: the instance cannot finish correctly."""
        if self.data_error is None and self._training.is_set():
            self.data_error = exc
            if self.reporter is not None:
                self.reporter.log(f"[trainforge] input data failed while training: {exc}", "stderr")
            self.stopper.request("Stopped")

    def _data_failure(self, exc: BaseException, context: str, exit_code: int | None = None) -> Outcome:
        user = bool(getattr(exc, "user", False))
        reason = error_reason(exc, "ClientError" if user else "InternalServerError",
                              "" if getattr(exc, "user", None) is not None else context)
        if self.reporter is not None:
            self.reporter.log(f"[trainforge] {reason}", "stderr")
        if not hasattr(exc, "user"):
            import traceback

            traceback.print_exception(exc)
        return Outcome("algorithm" if user else "platform", exit_code, reason)

    def _outcome(self, paths: Paths, result: runner.RunResult, inputs: Inputs,
                 sync_error: BaseException | None) -> Outcome:
        code = result.exit_code
        if self.data_error is not None:  # a Pipe feeder / FastFile fetcher failed: the data is incomplete
            return self._data_failure(self.data_error, "while streaming the input data", code)
        if result.stop_reason is not None:
            return Outcome("stopped", code, None, result.stop_reason)
        if result.setup_failed:
            detail = next((ln for ln in reversed(result.stderr_tail)
                           if ln.startswith((isolation.SETUP_FAILED, "unshare: "))), isolation.SETUP_FAILED)
            return Outcome("platform", code, f"InternalServerError: {detail.replace('[trainforge] ', '')}")
        if code != 0:
            feeder_error = getattr(inputs.session, "error", None) if inputs.session is not None else None
            if feeder_error is not None:
                return self._data_failure(feeder_error, "while streaming the input data", code)
            return algorithm_failure(paths.host_ml, code, result.stderr_tail)
        if sync_error is not None:
            return self._data_failure(sync_error, "while uploading checkpoints", code)
        return Outcome("ok", 0)

    def _upload(self, paths: Paths, outcome: Outcome) -> tuple[Outcome, str | None]:
        from trainforge.agent import outputs

        spec, reporter = self.spec, self.reporter
        assert reporter is not None
        prefix = output_prefix(spec)
        if spec["host"] != leader(spec) or prefix is None:
            return outcome, None
        success = outcome.outcome in ("ok", "stopped")
        if success:
            reporter.status("Uploading", "Uploading generated training model")
        until = max(self.deadline or 0.0, time.time()) + self.grace + 60
        missing = outputs.wait_for_peers(spec, paths, until, give_up=self.gone.is_set)
        if missing:
            reporter.log(f"[trainforge] uploading without {', '.join(missing)}: not exited in time", "stderr")
        try:
            use_job_credentials(spec)
            artifacts = outputs.upload(spec, paths, include_model=success,
                                       log=self._stderr_line)
        except Exception as exc:  # noqa: BLE001
            if not success:  # best effort for a failed job's output data
                reporter.log(f"[trainforge] could not upload the output data: {exc}", "stderr")
                return outcome, None
            reason = error_reason(exc, "InternalServerError", f"(while uploading the outputs to {prefix})")
            reporter.log(f"[trainforge] {reason}", "stderr")
            return Outcome("platform", outcome.exit_code, reason), None
        return outcome, artifacts

    def _write_state(self, paths: Paths, instance: isolation.Instance | None) -> None:
        """``instance.json``: who to kill if this agent dies (for reconciliation)."""
        try:
            if instance is None:
                instance_files.write_state(paths.instance_dir, os.getpid())
            else:
                instance_files.write_state(paths.instance_dir, os.getpid(), instance.pid,
                                           "namespace" if instance.namespace else "none")
        except OSError:
            pass

    def _log_summary(self, outcome: Outcome, delivered: bool) -> None:
        t = self.timings
        parts = [f"outcome={outcome.outcome}", f"exit_code={outcome.exit_code}",
                 f"reports_delivered={delivered}"]
        if "spawned" in t:
            parts.append(f"spawn_ms={1000 * (t['spawned'] - self.started):.1f}")
        if "first_line" in t:
            parts.append(f"first_line_ms={1000 * (t['first_line'] - self.started):.1f}")
        if self.reporter is not None and self.reporter.last_error and not delivered:
            parts.append(f"last_report_error={self.reporter.last_error!r}")
        print("trainforge agent: " + " ".join(parts), file=sys.stderr, flush=True)
