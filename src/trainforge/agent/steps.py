"""The agent's steps, phase by phase: lay out /opt/ml, report Downloading and stage the inputs,
start the training process, stream it to its end, decide how the instance ended, upload.

:class:`Steps` is the body of :class:`trainforge.agent.main.Agent` (which adds its start, its
signals and its exit: ``main.py``); the attributes it works on are set by ``Agent.__init__``.
"""

from __future__ import annotations

import enum
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from trainforge.agent import container, environment, gang, image, instance_files, isolation, layout, runner
from trainforge.agent.direct import Direct
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
from trainforge.agent.metrics import metric_reader
from trainforge.agent.outcome import Outcome, algorithm_failure, error_reason
from trainforge.agent.reporter import Reporter
from trainforge.agent.runner import Stopper
from trainforge.agent.sampler import start_sampler
from trainforge.agent.spec import Paths, leader, output_prefix

INVOKING = "Invoking script with the following command: "  # script_mode's line, same words
PREPARED_NOTICE = ("[trainforge] a prepared instance: its volume, network and container were made before the job "
                   "came, its process started with the job's own command and environment")
DEFAULT_GRACE = 120.0


class Phase(enum.IntEnum):
    """How far the instance has come; it only moves forward."""

    PREPARING = 0  # laying out /opt/ml, staging the inputs
    TRAINING = 1  # the training process runs (or is about to): a failing data worker fails it
    ENDED = 2  # the training process has ended
    EXITED = 3  # ``.exited`` is written (by this agent, or by the one a finishing agent replaces)
    REPORTED = 4  # the exit event is queued: a signal now only gives up a failing delivery


class Steps:
    """One instance's way from its spec to its outcome (see the module docstring)."""

    spec: dict[str, Any]
    finish: bool
    stopper: Stopper
    host_env: dict[str, str]
    reporter: Reporter
    data_error: BaseException | None
    timings: dict[str, float]
    _phase: Phase
    _phase_changed: threading.Condition
    network: Any  # the instance's network (sandbox), closed when the instance ends
    instance: isolation.Instance | None
    slot: Any  # the instance prepared before the job came (agent/prepared.py), or None

    def _advance(self, phase: Phase) -> None:
        with self._phase_changed:
            if phase > self._phase:
                self._phase = phase
                self._phase_changed.notify_all()


    def _mark_exited(self, exit_code: int | None) -> None:
        """``instance_dir/.exited``, once, whichever way the instance ended."""
        if self._phase >= Phase.EXITED or not os.path.isdir(self.spec.get("instance_dir") or ""):
            return
        self._advance(Phase.EXITED)
        try:
            instance_files.write_exited(self.spec["instance_dir"], exit_code)
        except (OSError, KeyError) as exc:
            print(f"trainforge agent: cannot write the .exited marker: {exc}", file=sys.stderr)


    def _notice(self, message: str) -> None:
        """One line of the agent's own: to the instance's trainforge stream, not the algorithm's."""
        self.reporter.notice(message)


    def _downloading(self, message: str) -> None:
        self.reporter.status("Downloading", message)


    @property
    def grace(self) -> float:
        value = self.spec.get("stop_grace_seconds")
        return float(DEFAULT_GRACE if value is None else value)


    @property
    def deadline(self) -> float | None:
        value = self.spec.get("deadline")
        return float(value) if value else None


    def _deadline_passed(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    # -- the instance, phase by phase -----------------------------------------------------------
    def _run_instance(self) -> tuple[Outcome, str | None]:
        paths = Paths.of(self.spec)
        inputs = self._prepare(paths)
        if isinstance(inputs, Outcome):
            return inputs, None
        started = self._start_training(paths, inputs)
        if isinstance(started, Outcome):
            return started, None
        result, sync_error = self._await_training(paths, inputs, *started)
        outcome = self._decide(paths, result, inputs, sync_error)
        if self.reporter.gone:
            return outcome, None
        self._record_outcome(paths, outcome)
        uploaded = self._upload(paths, outcome)
        self.timings["uploaded"] = time.time()
        return uploaded

    def _finish_instance(self) -> tuple[Outcome, str | None]:
        """Started again after the agent died between the end of training and its exit report."""
        paths = Paths.of(self.spec)
        self._advance(Phase.EXITED)  # the first agent wrote the marker when the training ended
        outcome = instance_files.read_outcome(paths.instance_dir)
        if outcome is None:
            return Outcome("platform", None, "InternalServerError: the trainforge agent of "
                           f"{self.spec['host']} died and its instance cannot be finished"), None
        self.reporter.notice(f"the agent of {self.spec['host']} exited before finishing; a new "
                             f"agent uploads and reports the instance's end (training ended: "
                             f"{outcome.outcome}, exit code {outcome.exit_code})")
        return self._upload(paths, outcome)

    def _prepare(self, paths: Paths) -> Inputs | Outcome:
        """Before the training process: the runtime and isolation must work, /opt/ml is laid out,
        the inputs are staged. An Outcome when the instance ends here."""
        spec, reporter = self.spec, self.reporter
        runtime = spec.get("runtime") or {}
        if runtime.get("error"):
            reporter.notice(str(runtime["error"]))
            return Outcome("algorithm", None, str(runtime["error"])[:1024])
        try:
            isolation.check_available(spec)
        except isolation.IsolationError as exc:
            reporter.notice(str(exc))
            return Outcome("algorithm", None, f"ClientError: {exc}"[:1024])
        # a container image comes while the volume and the network are made
        pulling = self._pull_image() if image.is_image(spec) else None
        if isolation.sandboxed(spec):
            from trainforge.data.owner import set_owner

            set_owner(container.uid(spec))  # what the data plane writes into /opt/ml while it trains
            try:
                self.network = self._prepared_network(paths) or container.prepare(spec, paths)
                self.timings["prepared"] = time.time()
            except (OSError, container.volume.VolumeError, RuntimeError) as exc:
                reporter.notice(f"{isolation.SETUP_FAILED}: {exc}")
                return Outcome("platform", None, f"InternalServerError: {isolation.SETUP_FAILED}: {exc}"[:1024])
        if pulling is not None:
            ended = self._await_worker(pulling)
            if ended is not None:
                return ended
            if isinstance(pulling[0], image.ImageError):
                reason = f"ClientError: {pulling[0]}"[:1024]
                reporter.notice(reason)
                return Outcome("algorithm", None, reason)
            if isinstance(pulling[0], BaseException):
                raise pulling[0]
            from trainforge.data.owner import set_owner

            set_owner(*container.owner(spec))  # the image's User owns /opt/ml
        layout.create(spec, paths)
        reporter.status("Downloading", "Downloading input data")
        if not needs_data_plane(spec["request"]):
            return Inputs()
        use_job_credentials(spec)
        return self._stage(paths)

    def _prepared_network(self, paths: Paths) -> Any:
        """The prepared instance's volume and network, adopted, when this agent has one that fits
        (agent/prepared.py); else None (one that does not fit goes, away from the job's way)."""
        slot = self.slot
        if slot is None:
            return None
        if slot.fits(self.spec):
            try:
                return slot.adopt(self.spec, paths)
            except OSError as exc:  # the job makes its own; the sweeps take what is left
                print(f"trainforge agent: the prepared instance cannot be adopted: {exc}", file=sys.stderr)
        self.slot = None
        threading.Thread(target=slot.close, name="slot-close", daemon=True).start()
        return None

    def _pull_image(self) -> list[Any]:
        """A container image into the cache, in a thread (SecondaryStatus Downloading while it
        comes): its box gets None, or the :class:`image.ImageError` naming the image and the cause."""
        self.reporter.status("Downloading", image.DOWNLOADING)
        started = time.monotonic()

        def pull() -> None:
            try:
                image.pull(self.spec, self._notice)
            finally:
                self.reporter.emit({"type": "image_pull", "time": time.time(),
                                    "result": self.spec["runtime"].get("pulled", "failed"),
                                    "seconds": time.monotonic() - started})

        box, _thread = run_staging(pull, self.stopper.wake)
        return box

    def _await_worker(self, box: list[Any]) -> Outcome | None:
        """Wait for a worker's box (:func:`run_staging`), or a stop, or the deadline (an Outcome)."""
        while not box:
            if self.stopper.reason is not None:
                return Outcome("stopped", None, None, self.stopper.reason)
            timeout = None if self.deadline is None else self.deadline - time.time()
            if timeout is not None and timeout <= 0:
                return Outcome("stopped", None, None, "MaxRuntimeExceeded")
            self.stopper.wake.wait(timeout)
            self.stopper.wake.clear()
        return None

    def _stage(self, paths: Paths) -> Inputs | Outcome:
        report = self._transfer_report("download")
        box, _thread = run_staging(lambda: stage(
            self.spec, paths, progress=self._downloading,
            log=self._notice, on_error=self._on_data_error), self.stopper.wake)
        ended = self._await_worker(box)
        if ended is not None:
            return ended
        staged = box[0]
        if isinstance(staged, BaseException):
            return self._data_failure(staged, "while staging the input data")
        report()
        return staged

    def _transfer_report(self, direction: str) -> Callable[[], None]:
        """Started now: called, reports what staging ("download") or the upload moved since, and how
        long it took (``/metrics``)."""
        from trainforge.objectstore.transfer import MOVED

        measure = MOVED.since(direction)

        def report() -> None:
            nbytes, seconds = measure()
            self.reporter.emit({"type": "transfer", "time": time.time(), "direction": direction,
                                "bytes": nbytes, "seconds": seconds})
        return report

    def _start_training(self, paths: Paths,
                        inputs: Inputs) -> tuple[isolation.Instance, Direct | None] | Outcome:
        """Start the training process (unless a stop, the deadline or a data error came first)."""
        spec, reporter = self.spec, self.reporter
        # from here on, a failing Pipe feeder / FastFile fetcher fails the instance
        self._advance(Phase.TRAINING)
        if self.data_error is not None:
            inputs.close()
            return self._data_failure(self.data_error, "while streaming the input data")
        if self.stopper.reason is not None or self._deadline_passed():
            inputs.close()
            reason = self.stopper.reason or "MaxRuntimeExceeded"
            return Outcome("stopped", None, None, reason)
        if isolation.sandboxed(spec) and isinstance(self.network, container.PendingNetwork):
            try:  # made while the inputs were staged: the environment names its addresses
                self.network = self.network.result()
            except (OSError, RuntimeError, ValueError) as exc:
                inputs.close()
                if inputs.sync is not None:
                    inputs.sync.stop(final=False)
                reporter.notice(f"{isolation.SETUP_FAILED}: {exc}")
                return Outcome("platform", None, f"InternalServerError: {isolation.SETUP_FAILED}: {exc}"[:1024])
        argv = environment.command(spec)
        env = environment.build(spec, paths, self.host_env)
        if spec.get("allowed_local_roots") is not None:
            env["TRAINFORGE_ALLOWED_LOCAL_ROOTS"] = json.dumps(spec["allowed_local_roots"])
        direct = plan_direct(spec, paths, argv, env)
        reporter.status("Training", "Training image download completed. Training in progress.")
        for line in isolation.describe(spec, paths):
            reporter.notice(line)
        if direct is not None:
            argv = direct.command
            reporter.log(INVOKING + " ".join(argv))
        # before the process starts: what is in LocalPath now (restored checkpoints) is the baseline
        start_sync(spec, paths, inputs, self._notice)
        local_paths = layout.local_paths(spec["request"], paths)
        instance: isolation.Instance | None = None
        try:
            if isolation.sandboxed(spec):
                container.hand_over(spec, paths)
                self.network.ready()
            slot = self.slot if self.slot is not None and self.slot.usable(spec, inputs.mounts, local_paths) else None
            if self.slot is not None and slot is None:
                self.slot.drop()  # the job needs what the created container lacks: its own is made
            if slot is not None:
                reporter.notice(PREPARED_NOTICE)
            instance = isolation.Instance(spec, paths, argv, env, inputs.mounts, local_paths, slot)
            instance.ready()
            ended = self._gang_start(instance)
            if ended is not None:
                instance.abandon()
                inputs.close()
                if inputs.sync is not None:
                    inputs.sync.stop(final=False)
                return ended
            instance.go()
        except OSError as exc:  # the entrypoint cannot be executed at all
            if instance is not None:  # its container's root, layer and image lock go
                instance.abandon()
            inputs.close()
            if inputs.sync is not None:
                inputs.sync.stop(final=False)
            reason = f"AlgorithmError: cannot run {argv[0]}: {exc.strerror or exc}"
            reporter.notice(reason)
            return Outcome("algorithm", 127, reason)
        self.timings["spawned"] = time.time()
        self.instance = instance
        self._write_state(paths, instance)
        if not isolation.sandboxed(self.spec):  # in the sandbox the volume is a real filesystem
            self._watch_volume(paths)
        return instance, direct

    def _gang_start(self, instance: isolation.Instance) -> Outcome | None:
        """A multi-instance job's instance waits here, ready (its container at its gate), for every
        other (agent/gang.py): an Outcome when a stop, the deadline or the gang's timeout comes first."""
        if not gang.applies(self.spec):
            return None

        def ready_then_wait() -> None:
            instance.wait_at_gate()
            gang.wait(self.spec)

        box, _thread = run_staging(ready_then_wait, self.stopper.wake)
        ended = self._await_worker(box)
        if ended is not None:
            return ended
        if isinstance(box[0], BaseException):
            reason = f"InternalServerError: gang start failed: {box[0]}"[:1024]
            self.reporter.notice(reason)
            return Outcome("platform", None, reason)
        return None

    def _await_training(self, paths: Paths, inputs: Inputs, instance: isolation.Instance,
                        direct: Direct | None) -> tuple[runner.RunResult, BaseException | None]:
        """Stream the training process to its end, then mark the instance exited and stop the
        data workers; returns how it ran and whether the final checkpoint upload failed."""
        metrics = metric_reader(self.spec, self._notice)  # while the process starts
        sampler = start_sampler(self.spec, instance.pid, paths.host_ml, self.reporter.emit)
        try:
            result = runner.run(instance, self.reporter, self.stopper, self.deadline, self.grace, metrics)
        finally:
            if sampler is not None:
                sampler.stop()
        self._advance(Phase.ENDED)
        self.timings["exited"] = time.time()
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
        return result, sync_error

    def _decide(self, paths: Paths, result: runner.RunResult, inputs: Inputs,
                sync_error: BaseException | None) -> Outcome:
        code = result.exit_code
        if self.data_error is not None:  # a Pipe feeder / FastFile fetcher failed: the data is incomplete
            return self._data_failure(self.data_error, "while streaming the input data", code)
        if result.stop_reason is not None:
            return Outcome("stopped", code, None, result.stop_reason)
        if result.setup_failed:
            detail = isolation.setup_failure(result.stderr_tail)
            return Outcome("platform", code, f"InternalServerError: {isolation.SETUP_FAILED}: {detail}")
        if code != 0:
            feeder_error = getattr(inputs.session, "error", None) if inputs.session is not None else None
            if feeder_error is not None:
                return self._data_failure(feeder_error, "while streaming the input data", code)
            failed = algorithm_failure(paths.host_ml, code, result.stderr_tail)
            full = container.volume_full_note(self.spec, paths) if isolation.sandboxed(self.spec) else ""
            if full and failed.failure_reason:
                failed.failure_reason = (failed.failure_reason + full)[:1024]
            return failed
        if sync_error is not None:
            return self._data_failure(sync_error, "while uploading checkpoints", code)
        return Outcome("ok", 0)

    def _record_outcome(self, paths: Paths, outcome: Outcome) -> None:
        try:
            instance_files.write_outcome(paths.instance_dir, outcome)
        except OSError as exc:
            print(f"trainforge agent: cannot write outcome.json: {exc}", file=sys.stderr)

    def _upload(self, paths: Paths, outcome: Outcome) -> tuple[Outcome, str | None]:
        from trainforge.agent import outputs

        spec, reporter = self.spec, self.reporter
        prefix = output_prefix(spec)
        if spec["host"] != leader(spec) or prefix is None:
            return outcome, None
        success = outcome.outcome in ("ok", "stopped")
        if success:
            reporter.status("Uploading", "Uploading generated training model")
        until = max(self.deadline or 0.0, time.time()) + self.grace + 60
        missing = outputs.wait_for_peers(spec, paths, until, give_up=lambda: reporter.gone)
        if missing:
            reporter.notice(f"uploading without {', '.join(missing)}: not exited in time")
        report = self._transfer_report("upload")
        try:
            use_job_credentials(spec)
            artifacts = outputs.upload(spec, paths, include_model=success,
                                       log=self._notice)
            report()
        except Exception as exc:  # noqa: BLE001
            if not success:  # best effort for a failed job's output data
                reporter.notice(f"could not upload the output data: {exc}")
                return outcome, None
            reason = error_reason(exc, "InternalServerError", f"(while uploading the outputs to {prefix})")
            reporter.notice(reason)
            return Outcome("platform", outcome.exit_code, reason), None
        return outcome, artifacts

    # -- beside the training process ------------------------------------------------------------
    def _write_state(self, paths: Paths, instance: isolation.Instance) -> None:
        """``instance.json``: who to kill if this agent dies (for reconciliation)."""
        try:
            instance_files.write_state(paths.instance_dir, os.getpid(), instance.pid,
                                       isolation.SANDBOX if instance.namespace else "none")
        except OSError:
            pass

    def _watch_volume(self, paths: Paths, interval: float = 3.0) -> None:
        """VolumeSizeInGB bounds what the instance writes too: past it, the instance fails."""
        if not (self.spec["request"].get("ResourceConfig") or {}).get("VolumeSizeInGB"):
            return

        def watch() -> None:
            from pathlib import Path

            from trainforge.data.volume import volume_error

            # The first walk after one interval, not while the user's code starts (nothing is
            # written yet then); the fork server has the module imported already.
            while not self._wait_for(Phase.ENDED, interval) and self.data_error is None:
                exc = volume_error(self.spec["request"], Path(paths.host_ml))
                if exc is not None:
                    self._on_data_error(exc)
                    return

        threading.Thread(target=watch, name="volume-watch", daemon=True).start()

    def _wait_for(self, phase: Phase, timeout: float) -> bool:
        """Whether the instance reached ``phase`` within ``timeout`` seconds."""
        with self._phase_changed:
            return self._phase_changed.wait_for(lambda: self._phase >= phase, timeout)

    def _on_data_error(self, exc: BaseException) -> None:
        """A background data worker failed mid-training: the instance cannot finish correctly."""
        if self.data_error is None and self._phase == Phase.TRAINING:
            self.data_error = exc
            self.reporter.notice(f"input data failed while training: {exc}")
            self.stopper.request("Stopped")

    def _data_failure(self, exc: BaseException, context: str, exit_code: int | None = None) -> Outcome:
        user = bool(getattr(exc, "user", False))
        reason = error_reason(exc, "ClientError" if user else "InternalServerError",
                              "" if getattr(exc, "user", None) is not None else context)
        self.reporter.notice(reason)
        if not hasattr(exc, "user"):
            import traceback

            traceback.print_exception(exc)
        return Outcome("algorithm" if user else "platform", exit_code, reason)
