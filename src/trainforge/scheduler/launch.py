"""Launching admitted jobs: instance specs on disk, one store transaction, agents started together.

The scheduler admits every queued job that fits in one pass and hands them here as a batch: the
files (job directories, ``spec.json`` per instance) are written outside any transaction, then ONE
write transaction moves all of them to ``running`` with their instance rows (the rows must exist
before an agent's first report), then every agent is started through the backend in one call
(the fork server takes the requests back to back), then ONE transaction records the handles.
Until then an instance's handle says "launching" (``handles.py``): a server that dies before it
stores the handles finds the agents after its restart through what each one recorded itself.
If the batched transaction fails, each job is tried in a transaction of its own, so that one bad
job fails alone.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from trainforge.agent import instance_files
from trainforge.backends.base import AgentLaunch, Backend
from trainforge.log_streams import algorithm_stream
from trainforge.scheduler import faults, handles
from trainforge.scheduler.capacity import CapacityModel, host_names
from trainforge.scheduler.gpu_slots import GpuSlots
from trainforge.service import lifecycle
from trainforge.store.jobs import JobRow, JobStore, new_token, token_digest

log = logging.getLogger("trainforge.scheduler")


@dataclass
class Prepared:
    """A job whose files are written, ready for its transaction."""

    job: JobRow
    now: float
    deadline: float
    deadline_reason: str
    agents: list[tuple[str, Path]] = field(default_factory=list)  # (host, spec path)
    rows: list[dict[str, Any]] = field(default_factory=list)


def max_wait(request: dict[str, Any]) -> float | None:
    if not request.get("EnableManagedSpotTraining"):
        return None
    wait = (request.get("StoppingCondition") or {}).get("MaxWaitTimeInSeconds")
    return float(wait) if wait else None


def wait_cap(job: JobRow) -> float | None:
    """When MaxWaitTimeInSeconds, counted from the job's creation, ends a managed spot job; None without."""
    wait = max_wait(job.request)
    return None if wait is None else job.creation_time + wait


def deadline_of(job: JobRow, now: float) -> tuple[float, str]:
    """MaxRuntimeInSeconds bounds all attempts together (the first attempt fixes it); with managed
    spot training, MaxWaitTimeInSeconds bounds the whole job from its creation, whichever ends first."""
    if job.deadline is not None:
        return job.deadline, job.deadline_stop_reason
    request = job.request
    max_runtime = float((request.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds") or 86400)
    cap = wait_cap(job)
    if cap is not None and cap < now + max_runtime:
        return cap, "MaxWaitTimeExceeded"
    return now + max_runtime, "MaxRuntimeExceeded"


class Launcher:
    def __init__(self, store: JobStore, backend: Backend, capacity: CapacityModel, config: Any, isolation: str,
                 job_dir: Callable[[JobRow], Path], gpu_slots: GpuSlots,
                 sandbox: dict[str, Any] | None = None) -> None:
        self.store = store
        self.sandbox = sandbox
        self.backend = backend
        self.capacity = capacity
        self.config = config
        self.isolation = isolation
        self.job_dir = job_dir
        self.gpu_slots = gpu_slots

    def launch(self, jobs: list[JobRow], now: float,
               fail: Callable[[JobRow, Exception, float], None]) -> list[JobRow]:
        """Start ``jobs`` (each admitted at ``max(now, its creation)``); the ones that started."""
        prepared = []
        for job in jobs:
            at = max(now, job.creation_time)  # never before the job was created
            try:
                prepared.append(self.prepare(job, at))
            except Exception as exc:
                log.exception("launching %s failed", job.name)
                fail(job, exc, at)
        if not prepared:
            return []
        try:
            with self.store.db.write() as conn:
                started = [p for p in prepared if self._commit(conn, p)]
        except Exception:
            log.exception("launching %d jobs in one transaction failed: one at a time", len(prepared))
            started = []
            for p in prepared:
                try:
                    with self.store.db.write() as conn:
                        if self._commit(conn, p):
                            started.append(p)
                except Exception as exc:
                    log.exception("launching %s failed", p.job.name)
                    fail(p.job, exc, p.now)
        faults.crash_point("launch-committed")
        self.start_agents([(p.job, host, spec_path, False) for p in started for host, spec_path in p.agents])
        return [p.job for p in started]

    # -- files --------------------------------------------------------------------------------------
    def prepare(self, job: JobRow, now: float) -> Prepared:
        from trainforge.images.catalog import resolve

        request = job.request
        spec_algo = request.get("AlgorithmSpecification") or {}
        runtime = resolve(spec_algo.get("TrainingImage") or spec_algo.get("AlgorithmName") or "",
                          self.config.images).as_spec()
        hosts = host_names(request)
        job_dir = self.job_dir(job)
        if job_dir.exists():
            if self.sandbox is not None:  # a former attempt's volumes: unmounted, never walked into
                from trainforge.sandbox.volume import release_under

                release_under(str(job_dir))
            shutil.rmtree(job_dir, ignore_errors=True)
        deadline, reason = deadline_of(job, now)
        prepared = Prepared(job, now, deadline, reason)
        epoch = int(now)
        common = {
            "job_name": job.name, "job_arn": job.arn, "region": job.region, "account_id": job.account_id,
            "attempt": job.attempt, "hosts": [h for h, _, _ in hosts], "instance_groups": _groups(hosts),
            "job_dir": str(job_dir), "request": request, "runtime": runtime,
            "control_url": self.backend.control_url or self.config.endpoint_url, "isolation": self.isolation,
            "stop_grace_seconds": self.config.stop_grace_seconds, "deadline": deadline,
            "s3_endpoint_url": _s3_endpoint(),
            "allowed_local_roots": [str(p) for p in self.config.effective_local_roots],
            "file_systems": self.config.file_systems,
        }
        if self.backend.queues:  # the engine may queue the gang: the run time counts from its start
            common.update(launched_at=now, deadline_cap=wait_cap(job))
        if len(hosts) > 1:  # the instances start their user code together (service/gang.py)
            common["gang"] = {"timeout_seconds": self.config.gang_timeout_seconds}
        for host, itype, group in hosts:
            inst_dir = job_dir / host
            inst_dir.mkdir(parents=True, exist_ok=True)
            shape = self.capacity.shape(itype)
            gpus = self.gpu_slots.take(job, host, shape.gpus)  # freed when this attempt stops running
            # Each agent's own token binds job, attempt and host; the store keeps only its digest.
            token = new_token()
            spec = {**common, "token": token, "host": host, "instance_type": itype, "instance_group": group,
                    "instance_dir": str(inst_dir), "num_cpus": max(1, int(shape.cpus)), "num_gpus": len(gpus),
                    "gpus": gpus}
            if self.sandbox is not None:
                spec["sandbox"] = {**self.sandbox, "cpus": shape.cpus, "memory_mb": shape.memory_mb}
            spec_path = inst_dir / instance_files.SPEC
            instance_files.write_spec(inst_dir, spec)
            prepared.agents.append((host, spec_path))
            prepared.rows.append({"job_id": job.id, "host": host, "attempt": job.attempt,
                                  "backend": self.backend.name, "next_seq": 0, "state": "running",
                                  "handle": handles.launching(inst_dir, now, self.config.agent_start_grace_seconds),
                                  "started_at": now, "log_stream": algorithm_stream(job.name, host, epoch),
                                  "token": token_digest(token)})
        return prepared

    # -- the store ----------------------------------------------------------------------------------
    def _commit(self, conn: Any, p: Prepared) -> bool:
        """In the caller's transaction: the job runs, with its instance rows. False if it changed
        meanwhile (stopped, deleted, another attempt, another deadline): it is not started."""
        locked = self.store.lock_row(conn, p.job.id)
        if locked is None or locked.phase != "queued" or locked.attempt != p.job.attempt:
            return False
        if locked.deadline is not None and locked.deadline != p.deadline:
            return False
        locked.deadline, locked.deadline_reason = p.deadline, p.deadline_reason
        locked.phase = "running"
        lifecycle.set_secondary(locked, "Starting", lifecycle.PREPARING, now=p.now)
        self.store.replace_instances(conn, locked.id, p.rows)  # an earlier attempt's tokens go with its rows
        self.store.save(conn, locked)
        return True

    def start_agents(self, agents: list[tuple[JobRow, str, Path, bool]]) -> None:
        """Start one agent per ``(job, host, spec path, finish)`` and record its handle. Outside any
        transaction: starting agents must not hold the store's write lock."""
        if not agents:
            return
        gangs: dict[int, list[tuple[JobRow, str, Path, bool]]] = {}  # one gang per job, started together
        for agent in agents:
            gangs.setdefault(agent[0].id, []).append(agent)
        answers = self.backend.launch([[AgentLaunch(spec_path, spec_path.parent / instance_files.AGENT_LOG, finish)
                                        for _, _, spec_path, finish in gang] for gang in gangs.values()])
        agents = [agent for gang in gangs.values() for agent in gang]
        results = [result for answer in answers for result in answer]
        faults.crash_point("launch-window")
        stored = []
        for (job, host, spec_path, _), result in zip(agents, results):
            if isinstance(result, BaseException):
                # the liveness check ends the instance as a platform failure (unless its agent did start)
                log.error("could not start the agent of %s/%s: %s", job.name, host, result)
                stored.append((job.id, host, handles.failed(spec_path.parent, result)))
            else:
                stored.append((job.id, host, orjson.dumps(result).decode()))
        with self.store.db.write() as conn:
            for job_id, host, handle in stored:
                self.store.update_instance(conn, job_id, host, handle=handle)


def _groups(hosts: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for host, itype, group in hosts:
        groups.setdefault(group, {"instance_group_name": group, "instance_type": itype, "hosts": []})
        groups[group]["hosts"].append(host)
    return list(groups.values())


def _s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
