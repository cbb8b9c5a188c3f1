"""What agents report: status changes, log lines, exits — and how a job ends.

Reports are idempotent: each event has a sequence number per (job, attempt, host) and only
numbers not stored yet are applied, so an agent may retry a report as often as it needs to.

A report must come from the instance and the attempt it names: its token is that agent's own
(``instances.token``, a new one per launch), bound to one job, attempt and host. A report naming
another job, host or attempt is refused (403) and logged. A job that has ended, and an instance
that has reported its exit, accept no new event at all — log lines included: only an agent the
control plane has given up on could still send any, and refusing tells it to stop; a retry of
events already stored is acknowledged as before. Metric samples arrive with the log lines they
were read from: the agent evaluates MetricDefinitions (``agent/metrics.py``), never the control
plane, so no job's regex runs here, let alone under the store's lock. A log line of trainforge's
own (``stream`` "trainforge", ``Reporter.notice``) is stored in the instance's trainforge stream,
every other in its algorithm stream (log_streams.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from trainforge.agent.sampler import INSTANCE_METRICS
from trainforge.api.errors import ServiceError
from trainforge.log_streams import PLATFORM_KIND, platform_stream
from trainforge.service import lifecycle
from trainforge.service.training_jobs import model_artifacts_uri
from trainforge.store.jobs import JobRow, JobStore
from trainforge.store.metrics import ALGORITHM, INSTANCE

log = logging.getLogger("trainforge.reports")

# Order of the running statuses: an instance never moves the job backwards.
_RANK = {"Starting": 0, "Pending": 0, "Restarting": 0, "Downloading": 1, "Training": 2, "Uploading": 3}


class Unauthorized(ServiceError):
    code = "UnrecognizedClientException"
    status = 401


class Refused(ServiceError):
    code = "AccessDeniedException"
    status = 403


def _unknown(host: str, attempt: int) -> Unauthorized:
    log.warning("refused a report from %s (attempt %d): unknown token", host, attempt)
    return Unauthorized("Unknown instance token.")


def _refuse(job: JobRow, host: str, attempt: int, why: str) -> Refused:
    log.warning("refused a report for %s from %s (attempt %d): %s", job.name, host, attempt, why)
    return Refused(f"This report is refused: {why}.")


def reported_metrics(event: dict[str, Any], names: set[str] | frozenset[str]) -> list[tuple[str, float]]:
    """The samples of an event (``[[name, value], ...]``): of the job's own metrics, read from a log
    line, or of the instance metrics, in a sample event."""
    out = []
    for name, value in event.get("metrics") or []:
        if name not in names or isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise ValueError(f"not a sample of the job's MetricDefinitions: {[name, value]!r}")
        out.append((str(name), float(value)))
    return out


# What an agent moved: {"type": "transfer", "direction": ..., "bytes": n, "seconds": s} after its
# staging and its upload, {"type": "image_pull", "result": ..., "seconds": s} after a container image
# was looked up (agent/main.py). Observed by /metrics (api/prometheus.py), never stored.
TRANSFER_LABELS = {"transfer": ("download", "upload"), "image_pull": ("pulled", "cached", "failed")}
Observation = tuple[str, str, int, float]  # event type, direction or result, bytes, seconds
_NOT_THE_JOBS = frozenset({"sample", *TRANSFER_LABELS})


def observation(event: dict[str, Any]) -> Observation:
    """The figures of a transfer or image_pull event, checked (a ValueError refuses the report)."""
    kind = str(event["type"])
    label = event.get("direction") if kind == "transfer" else event.get("result")
    nbytes, seconds = event.get("bytes", 0), event.get("seconds")
    if label not in TRANSFER_LABELS[kind] or isinstance(nbytes, bool) or not isinstance(nbytes, int) \
            or not 0 <= nbytes < 2**63 or isinstance(seconds, bool) or not isinstance(seconds, int | float) \
            or not 0 <= seconds < 10**9:
        raise ValueError(f"not a {kind} report: {event!r:.200}")
    return kind, str(label), nbytes, float(seconds)


class Reports:
    def __init__(self, store: JobStore, on_job_change: Callable[[int], None],
                 observe: Callable[[Observation], None] = lambda o: None) -> None:
        self.store = store
        self.on_job_change = on_job_change
        self.observe = observe

    def ingest(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        host, attempt, seq = str(body["host"]), int(body["attempt"]), int(body["seq"])
        events: list[dict[str, Any]] = body.get("events") or []
        owned = self.store.instances_by_token(token)
        if not owned:
            raise _unknown(host, attempt)
        mine = next((i for i in owned if i["host"] == host), None)
        ended = False
        observed: list[Observation] = []
        with self.store.locked(owned[0]["job_id"]) as (conn, locked):
            if locked is None:
                raise _unknown(host, attempt)
            if body.get("job", locked.arn) != locked.arn:
                raise _refuse(locked, host, attempt, f"it names another job ({str(body['job'])[:300]})")
            if mine is None:
                raise _refuse(locked, host, attempt, "the token is another instance's")
            if mine["attempt"] != attempt:
                raise _refuse(locked, host, attempt, f"the token is attempt {mine['attempt']}'s")
            insts = {i["host"]: i for i in self.store.instances_of(conn, locked.id)}
            inst = insts.get(host)
            if inst is None or inst["token"] != mine["token"]:
                raise Unauthorized("The token is no longer valid: the job is gone or was launched again.")
            if inst["attempt"] != locked.attempt:
                raise _refuse(locked, host, attempt, f"the job is at attempt {locked.attempt} now")
            fresh = events[max(0, inst["next_seq"] - seq):]
            if fresh and locked.status in lifecycle.FINISHED:
                raise _refuse(locked, host, attempt, f"the job has ended ({locked.status})")
            if fresh and inst["state"] == "exited":
                raise _refuse(locked, host, attempt, "the instance has reported its exit")
            if fresh:
                ended = self._apply(conn, locked, inst, insts, fresh, observed)
                self.store.update_instance(conn, locked.id, host, next_seq=seq + len(events),
                                           **{k: inst[k] for k in ("state", "exit_code", "outcome",
                                                                   "failure_reason", "ended_at")})
                self.store.save(conn, locked)
            next_seq = max(inst["next_seq"], seq + len(events))
            stop = _stop_for(locked, insts)
        for figures in observed:  # counted once stored: a report refused or rolled back counts nothing
            self.observe(figures)
        if ended or fresh and any(e["type"] == "exit" for e in fresh):
            self.on_job_change(locked.id)
        return {"next_seq": next_seq, "stop": stop}

    def _apply(self, conn: Any, job: JobRow, inst: dict[str, Any], insts: dict[str, dict[str, Any]],
               events: list[dict[str, Any]], observed: list[Observation]) -> bool:
        definitions = (job.request.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or []
        names = {str(d["Name"]) for d in definitions}
        logs: list[dict[str, Any]] = []
        metrics: list[dict[str, Any]] = []
        now_ms = int(time.time() * 1000)
        final = {m["MetricName"]: m for m in job.state.get("FinalMetricDataList", [])}
        for ev in events:
            kind = ev.get("type")
            t = float(ev.get("time") or time.time())
            if kind == "log":
                msg = str(ev.get("message", ""))
                own = ev.get("stream") == PLATFORM_KIND  # trainforge's line, not the algorithm's
                logs.append({"job_id": job.id, "stream": platform_stream(inst["log_stream"]) if own
                             else inst["log_stream"], "timestamp": int(t * 1000),
                             "ingestion_time": now_ms, "message": msg})
                for name, value in reported_metrics(ev, names):
                    metrics.append({"job_id": job.id, "name": name, "timestamp": t, "value": value,
                                    "host": inst["host"], "kind": ALGORITHM})
                    final[name] = {"MetricName": name, "Value": value, "Timestamp": t}
            elif kind == "sample":  # the instance's utilisation (agent/sampler.py)
                metrics.extend({"job_id": job.id, "name": name, "timestamp": t, "value": value,
                                "host": inst["host"], "kind": INSTANCE}
                               for name, value in reported_metrics(ev, INSTANCE_METRICS))
            elif kind == "status":
                status = ev["status"]
                if job.status in (lifecycle.IN_PROGRESS,) and _RANK.get(status, -1) >= _RANK.get(
                        job.secondary_status, 0):
                    lifecycle.set_secondary(job, status, ev.get("message"), now=t)
            elif kind in TRANSFER_LABELS:
                observed.append(observation(ev))
            elif kind == "exit":
                inst["state"] = "exited"
                inst["exit_code"] = ev.get("exit_code")
                inst["outcome"] = ev.get("outcome") or "platform"
                inst["failure_reason"] = ev.get("failure_reason")
                inst["ended_at"] = t
                if ev.get("model_artifacts"):  # uploaded: always to the job's own output location
                    job.state["ModelArtifacts"] = {"S3ModelArtifacts": model_artifacts_uri(job.request)}
                if ev.get("stop_reason") == "MaxRuntimeExceeded" and job.stop_reason is None:
                    # the agent's deadline: MaxRuntimeInSeconds, or MaxWaitTimeInSeconds for spot jobs
                    job.stop_reason = job.deadline_stop_reason
        if final:
            job.state["FinalMetricDataList"] = list(final.values())
        self.store.append_logs(conn, logs)
        self.store.append_metrics(conn, metrics)
        if any(ev.get("type") not in _NOT_THE_JOBS for ev in events):  # these alone do not modify the job
            job.last_modified_time = time.time()
        insts[inst["host"]] = inst
        if all(i["state"] == "exited" for i in insts.values()):
            conclude(job, list(insts.values()))
            return True
        return False


def _stop_for(job: JobRow, insts: dict[str, dict[str, Any]]) -> str | None:
    if job.stop_reason:
        return job.stop_reason
    if any(i["state"] == "exited" and i["outcome"] in ("algorithm", "platform") for i in insts.values()):
        return "Stopped"  # a peer failed: the job fails, the others stop
    return None


def conclude(job: JobRow, insts: list[dict[str, Any]], now: float | None = None) -> None:
    """Every instance has exited: decide how the job ends (or whether it is retried)."""
    now = time.time() if now is None else now
    insts = sorted(insts, key=lambda i: int(i["host"].split("-")[-1]))
    # the first instance to fail caused it: its peers' collectives fail after it (ended_at, then host)
    algorithm = sorted((i for i in insts if i["outcome"] == "algorithm"), key=lambda i: i.get("ended_at") or 0.0)
    platform = [i for i in insts if i["outcome"] == "platform"]
    if algorithm:
        lifecycle.finish(job, "Failed", failure_reason=algorithm_reason(algorithm[0], len(insts)), now=now)
    elif platform:
        reason = platform[0]["failure_reason"] or f"InternalServerError: the agent of {platform[0]['host']} failed"
        if not retry(job, reason, now):
            lifecycle.finish(job, "Failed", failure_reason=reason, now=now)
    elif job.stop_reason:
        lifecycle.finish(job, job.stop_reason if job.stop_reason in lifecycle.TERMINAL_SECONDARY else "Stopped",
                         now=now)
    else:
        lifecycle.finish(job, "Completed", now=now)


def algorithm_reason(inst: dict[str, Any], instance_count: int) -> str:
    """The failed instance's reason; in a job of several instances an AlgorithmError names the host:
    ``AlgorithmError: (algo-2) <the rest>`` (a reason of another kind, the same on every host, is kept)."""
    reason = str(inst["failure_reason"] or f"AlgorithmError: ExitCode {inst['exit_code']}")
    prefix = "AlgorithmError: "
    if instance_count < 2 or not reason.startswith(prefix):
        return reason
    return f"{prefix}({inst['host']}) {reason.removeprefix(prefix)}"


def retry(job: JobRow, reason: str, now: float) -> bool:
    """Start the job again after a failure of ours, when RetryStrategy allows; False if not."""
    attempts = int((job.request.get("RetryStrategy") or {}).get("MaximumRetryAttempts") or 0)
    if job.stop_reason or job.attempt > attempts:
        return False
    job.attempt += 1
    job.phase = "queued"
    lifecycle.set_secondary(job, "Restarting", f"Restarting the training job (attempt {job.attempt}) after: "
                            f"{reason[:400]}", now=now)
    lifecycle.set_secondary(job, "Starting", lifecycle.PREPARING, now=now)
    return True
