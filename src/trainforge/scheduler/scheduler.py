"""Admission, launch, stop and liveness of training jobs.

One thread. It wakes on every create/stop/exit (``wake()``) and at least once a second:
admits queued jobs in creation order when the backend has capacity for all their instances,
launches one agent per instance, forwards stop requests to running agents, enforces the
pending and run-time limits, and fails (or retries) jobs whose agents died without reporting.
On start it reconciles what the store says runs with what really runs.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from trainforge.agent import instance_files
from trainforge.backends.base import Backend, create_backend, started_deadline
from trainforge.config import Config
from trainforge.scheduler import handles
from trainforge.scheduler.capacity import CapacityModel, Resources, host_names
from trainforge.scheduler.gpu_slots import GpuSlots
from trainforge.scheduler.launch import Launcher, max_wait, wait_cap
from trainforge.service import lifecycle
from trainforge.service.reports import conclude, retry
from trainforge.store.jobs import JobRow, JobStore

log = logging.getLogger("trainforge.scheduler")

LIVENESS_INTERVAL = 1.0


class Scheduler:
    def __init__(self, store: JobStore, config: Config, backend: Backend | None = None,
                 isolation: str = "none", sandbox: dict[str, Any] | None = None) -> None:
        self.store = store
        self.config = config
        self.backend = backend or create_backend(config)
        self.capacity = CapacityModel(config)
        self.isolation = isolation
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._signalled: dict[tuple[int, int], str] = {}  # (job, attempt) -> stop reason sent
        self._last_liveness = 0.0
        self._swept_with: set[str] | None = None  # the running jobs' directories at the last sandbox sweep
        self.gpu_slots = GpuSlots(self.capacity.total.gpus)
        self.launcher = Launcher(store, self.backend, self.capacity, config, isolation, self.job_dir,
                                 self.gpu_slots, sandbox)

    # --- control -----------------------------------------------------------------------------
    def start(self) -> None:
        self.backend.start()  # the agent fork server starts while the rest of the server does
        self.reconcile()
        self._thread = threading.Thread(target=self._run, name="trainforge-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        if self._thread is None or not self._thread.is_alive():
            # the volumes of jobs that ended since the last pass go now, not at the next start: a
            # server stopped right after its jobs ended left them mounted (every mount on the host
            # makes each container's start, and each read of the mount table, cost more CPU)
            try:
                self._swept_with = None
                self._sweep_sandbox(self.store.jobs_in_phase("running"))
            except Exception:
                log.exception("the last sweep of ended jobs' sandboxes failed")
        self.backend.close()

    def wake(self, *_: Any) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(timeout=LIVENESS_INTERVAL)
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed")

    # --- one pass ----------------------------------------------------------------------------
    def tick(self) -> None:
        running = self.store.jobs_in_phase("running")
        in_use = Resources()
        reserved: dict[int, Resources] = {}
        for job in running:
            reserved[job.id] = self.capacity.reservation(job.request)
            in_use = in_use + reserved[job.id]
        self.gpu_slots.sync(running, lambda job: reserved[job.id].gpus > 0,
                            lambda job: [self.job_dir(job) / host for host, _, _ in host_names(job.request)])
        for job in running:
            self._forward_stop(job)
        now = time.time()
        if now - self._last_liveness >= LIVENESS_INTERVAL:
            self._last_liveness = now
            self.backend.reap()
            for job in running:
                if not self._engine_queue(job, now):
                    self._check_liveness(job, now)
            self._sweep_sandbox(running)
        self._admit(in_use)

    def _sweep_sandbox(self, running: list[JobRow]) -> None:
        """Ended jobs' volumes and containers go (:mod:`trainforge.sandbox.cleanup`): after a
        (re)start, and whenever a job left the running set (not on every pass)."""
        if self.launcher.sandbox is None:
            return
        live = {str(self.job_dir(j)) for j in running}
        if self._swept_with is not None and live >= self._swept_with:
            self._swept_with = live
            return
        self._swept_with = live
        from trainforge.sandbox.cleanup import sweep

        for attempt in sweep(str(self.config.data_path / "jobs"), self.launcher.sandbox, sorted(live)):
            log.debug("released the sandbox volumes of %s", attempt)

    def _admit(self, in_use: Resources) -> None:
        """Every queued job that fits is launched in this pass, together (see ``launch.py``)."""
        blocked = False
        admitted: list[JobRow] = []
        for job in self.store.jobs_in_phase("queued"):
            if self.backend.queues:  # the engine's queue decides (the job waits there, see _engine_queue)
                admitted.append(job)
                continue
            need = self.capacity.reservation(job.request)
            if blocked or not (in_use + need).fits_in(self.capacity.total):
                # Strict creation order: once one job waits, every later job waits behind it.
                blocked = True
                self._pending(job, need, max(time.time(), job.creation_time))
                continue
            admitted.append(job)
            in_use = in_use + need
        if admitted:
            self.launcher.launch(admitted, time.time(), self._fail_launch)

    def _pending(self, job: JobRow, need: Resources, now: float) -> None:
        limit, expired = _pending_limit(job, now)
        wait = max_wait(job.request)
        if wait is not None and now - job.creation_time > wait:
            with self.store.locked(job.id) as (conn, locked):
                if locked is not None and locked.phase == "queued":
                    locked.stop_reason = "MaxWaitTimeExceeded"
                    lifecycle.finish(locked, "MaxWaitTimeExceeded", now=now)
                    self.store.save(conn, locked)
            return
        total = self.capacity.total
        msg = (f"Waiting for capacity: the job needs {need.instances} instance(s) with {need.describe()}; "
               f"this machine offers {total.describe()}"
               + (f" and {total.instances} instances" if total.instances < 1_000_000 else "")
               + " to all running jobs")
        if not expired and job.secondary_status == "Pending":
            return
        with self.store.locked(job.id) as (conn, locked):
            if locked is None or locked.phase != "queued":
                return
            if expired:
                locked.stop_reason = "Stopped"
                lifecycle.finish(locked, "Stopped", now=now, message=_pending_expired(limit, ""))
            elif not lifecycle.set_secondary(locked, "Pending", msg, now=now):
                return
            self.store.save(conn, locked)

    def _engine_queue(self, job: JobRow, now: float) -> bool:
        """A job whose gang waits in the engine's queue (Slurm): Pending with the engine's reason;
        cancelled when stopped or past MaxPendingTimeInSeconds. False once its gang got its resources."""
        if not self.backend.queues:
            return False
        insts = [i for i in self.store.read_instances(job.id) if i["attempt"] == job.attempt]
        handle = _handle(insts[0]) if insts else None
        reason = self.backend.waiting(handle)
        if reason is None:
            if job.secondary_status == "Pending":
                with self.store.locked(job.id) as (conn, locked):
                    if locked is not None and locked.phase == "running" and locked.secondary_status == "Pending":
                        lifecycle.set_secondary(locked, "Starting", lifecycle.PREPARING, now=now)
                        if locked.deadline is not None and insts:  # the run time counts from now
                            locked.deadline = started_deadline(locked.deadline, insts[0]["started_at"], now,
                                                               wait_cap(locked))
                        self.store.save(conn, locked)
            return False
        limit, expired = _pending_limit(job, now)
        with self.store.locked(job.id) as (conn, locked):
            if locked is None or locked.phase != "running" or locked.attempt != job.attempt:
                return True
            if expired or locked.stop_reason:
                self.backend.cancel(handle)
                for row in self.store.instances_of(conn, job.id):
                    self.store.update_instance(conn, job.id, row["host"], state="exited", outcome="stopped",
                                               ended_at=now)
                locked.stop_reason = locked.stop_reason or "Stopped"
                lifecycle.finish(locked, "Stopped", now=now, message=(
                    _pending_expired(limit, f": {reason}") if expired and not job.stop_reason else None))
            elif not lifecycle.set_secondary(locked, "Pending", f"Waiting for capacity: {reason}", now=now):
                return True
            self.store.save(conn, locked)
        return True

    # --- launch ------------------------------------------------------------------------------
    def job_dir(self, job: JobRow) -> Path:
        return self.config.data_path / "jobs" / job.account_id / job.region / job.name / f"attempt-{job.attempt}"

    def _fail_launch(self, job: JobRow, exc: Exception, now: float) -> None:
        with self.store.locked(job.id) as (conn, locked):
            if locked is None or locked.phase not in ("queued", "running"):
                return
            reason = f"InternalServerError: trainforge could not start the instances: {type(exc).__name__}: {exc}"
            for row in self.store.instances_of(conn, job.id):
                self.backend.kill_group(_handle(row))
            self.store.replace_instances(conn, job.id, [])
            if not retry(locked, reason, now):
                lifecycle.finish(locked, "Failed", failure_reason=reason, now=now)
            self.store.save(conn, locked)

    # --- stop and liveness -------------------------------------------------------------------
    def _forward_stop(self, job: JobRow) -> None:
        reason = job.stop_reason
        if not reason or self._signalled.get((job.id, job.attempt)) == reason:
            return
        launching = False
        for inst in self.store.read_instances(job.id):
            if inst["state"] == "running":
                handle = _handle(inst)
                # an agent whose handle is not stored yet cannot be signalled: the next pass does it
                launching = launching or handles.is_launching(handle)
                self.backend.signal(handle, signal.SIGTERM)
        if not launching:
            self._signalled[(job.id, job.attempt)] = reason

    def _check_liveness(self, job: JobRow, now: float) -> None:
        insts = self.store.read_instances(job.id)
        lost = [i for i in insts if i["state"] == "running" and i["attempt"] == job.attempt
                and not self.backend.alive(_handle(i))]
        dead = self._find_agents(job, lost, now)
        overdue = job.deadline is not None and now > job.deadline + self.config.stop_grace_seconds + 30
        if not dead and not overdue:
            return
        finishing: list[str] = []
        with self.store.locked(job.id) as (conn, locked):
            if locked is None or locked.phase != "running" or locked.attempt != job.attempt:
                return
            current = {i["host"]: i for i in self.store.instances_of(conn, job.id)}
            ended = False
            for host, why in dead.items():
                row = current.get(host)
                if row is None or row["state"] != "running":
                    continue
                self.backend.kill_group(_handle(row))
                if not overdue and self._can_finish(locked, row["host"]):
                    # Its training had ended (outcome.json): a new agent uploads and reports.
                    locked.finishing_hosts.append(row["host"])
                    finishing.append(row["host"])
                    self.store.update_instance(conn, job.id, host, handle=handles.launching(
                        self.job_dir(locked) / host, now, self.config.agent_start_grace_seconds))
                    continue
                ended = True
                _mark_exited(self.job_dir(locked) / row["host"], now)
                # An agent asked to stop may die of the signal before it could report: that is a stop.
                outcome = "stopped" if locked.stop_reason else "platform"
                reason = None if locked.stop_reason else why
                row.update(state="exited", outcome=outcome, ended_at=now, failure_reason=reason)
                self.store.update_instance(conn, job.id, row["host"], state="exited", outcome=outcome,
                                           ended_at=now, failure_reason=reason)
            if overdue:
                for row in current.values():
                    if row["state"] == "running":
                        self.backend.kill_group(_handle(row))
                        row.update(state="exited", outcome="stopped", ended_at=now)
                        self.store.update_instance(conn, job.id, row["host"], state="exited",
                                                   outcome="stopped", ended_at=now)
                locked.stop_reason = locked.stop_reason or locked.deadline_stop_reason
            if all(r["state"] == "exited" for r in current.values()):
                conclude(locked, list(current.values()), now)
            elif ended:  # a peer is gone: the others stop (their reports are answered "stop" too)
                for row in current.values():
                    if row["state"] == "running" and row["host"] not in finishing:
                        self.backend.signal(_handle(row), signal.SIGTERM)
            self.store.save(conn, locked)
        for host in finishing:
            log.warning("the agent of %s/%s died after its training ended: starting one to finish it",
                        job.name, host)
        # Without a new handle, the next tick ends the instance as a platform failure.
        self.launcher.start_agents([(job, host, self.job_dir(job) / host / instance_files.SPEC, True)
                                    for host in finishing])
        self.wake()

    def _find_agents(self, job: JobRow, lost: list[dict[str, Any]], now: float) -> dict[str, str]:
        """Instances whose stored handle names no living agent: adopt the agent each one's
        ``instance.json`` names if it lives (its handle was never stored: the server died in the
        launch window); the ones whose agent is gone, host -> why. An agent started a moment ago
        that has not recorded itself yet is waited for until its launch's ``start_by``."""
        dead: dict[str, str] = {}
        adopted: dict[str, dict[str, Any]] = {}
        for inst in lost:
            found = handles.find(self.backend, inst["host"], inst["handle"], self.job_dir(job) / inst["host"], now)
            if found.adopt is not None:
                adopted[inst["host"]] = found.adopt
            elif found.reason is not None:
                dead[inst["host"]] = found.reason
        if adopted:
            with self.store.locked(job.id) as (conn, locked):
                if locked is None or locked.phase != "running" or locked.attempt != job.attempt:
                    return {}
                for row in self.store.instances_of(conn, job.id):
                    if row["host"] in adopted and row["state"] == "running":
                        self.store.update_instance(conn, job.id, row["host"],
                                                   handle=orjson.dumps(adopted[row["host"]]).decode())
                        log.warning("adopted the running agent %s of %s/%s (its handle was not stored)",
                                    adopted[row["host"]].get("pid"), job.name, row["host"])
            self._signalled.pop((job.id, job.attempt), None)  # a stop it may have missed is sent again
        return dead

    def _can_finish(self, job: JobRow, host: str) -> bool:
        """A dead agent's instance can still be finished once: its training process had ended and
        the agent recorded how (``outcome.json``), so only the upload and the report are missing."""
        if host in job.finishing_hosts:
            return False
        return instance_files.read_outcome(self.job_dir(job) / host) is not None

    def reconcile(self) -> None:
        """After a (re)start: adopt living agents (also those whose handle was never stored), end
        the jobs whose agents are gone."""
        now = time.time()
        running = self.store.jobs_in_phase("running")
        for job in running:
            self._check_liveness(job, now)
        self._sweep_sandbox(running)


def _pending_limit(job: JobRow, now: float) -> tuple[Any, bool]:
    """MaxPendingTimeInSeconds (0: none), and whether ``job`` has waited past it at ``now``."""
    limit = (job.request.get("StoppingCondition") or {}).get("MaxPendingTimeInSeconds") or 0
    return limit, bool(limit) and now - job.creation_time > float(limit)


def _pending_expired(limit: Any, why: str) -> str:
    """The message of a job stopped for waiting past MaxPendingTimeInSeconds (``limit``)."""
    return f"Training job stopped: it waited longer than MaxPendingTimeInSeconds ({limit} s) for capacity{why}"


def _mark_exited(instance_dir: Path, now: float) -> None:
    """What the agent writes when its instance ends: the leader waits for every host's marker."""
    try:
        instance_files.write_exited(instance_dir, None, now)
    except OSError:
        pass


def _handle(inst: dict[str, Any]) -> dict[str, Any] | None:
    return handles.load(inst.get("handle"))
