"""What the console's pages show, read from the store for one caller (account and region).

The jobs page is ListTrainingJobs itself (its validation, filters, sort orders and paging tokens:
``TrainingJobs.list``) with what a person watching the queue wants beside each summary. The job
page is DescribeTrainingJob's document, the instances, the logs (by page, by position in the log
table) and the metric series (at most :data:`MAX_POINTS` per series per answer: larger series are
reduced to each bucket's first, minimum and maximum points, so a spike is never hidden).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.sql.elements import ColumnElement

from trainforge.api.errors import job_not_found
from trainforge.api.validation import validate
from trainforge.log_streams import PLATFORM_MARK
from trainforge.scheduler.capacity import CapacityModel, Resources, instance_groups
from trainforge.service.training_jobs import Caller, TrainingJobs, describe_document
from trainforge.store.jobs import JobRow, JobStore
from trainforge.store.schema import log_events, metric_samples

LOG_PAGE = 1000
MAX_LOG_PAGE = 5000
MAX_POINTS = 2000
_INSTANCE_FIELDS = ("host", "attempt", "state", "outcome", "failure_reason", "started_at", "ended_at",
                    "log_stream")


def capacity_in_use(store: JobStore, capacity: CapacityModel) -> Resources:
    """What the running jobs reserve (the scheduler's own sum)."""
    in_use = Resources()
    for job in store.jobs_in_phase("running"):
        in_use = in_use + capacity.reservation(job.request)
    return in_use


def resources_doc(res: Resources) -> dict[str, float]:
    return {"instances": res.instances, "cpus": res.cpus, "memory_mb": res.memory_mb, "gpus": res.gpus}


class ConsoleData:
    def __init__(self, store: JobStore, jobs: TrainingJobs, capacity: CapacityModel) -> None:
        self.store = store
        self.jobs = jobs
        self.capacity = capacity

    # --- the jobs page -------------------------------------------------------------------------
    def job_list(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        validate("ListTrainingJobs", params)
        page = self.jobs.list(caller, params)
        queued = self.store.jobs_in_phase("queued")  # creation order: the scheduler's admission order
        position = {j.id: i + 1 for i, j in enumerate(queued)}
        now = time.time()
        rows = []
        for summary in page["TrainingJobSummaries"]:
            job = self.store.get(caller.account_id, caller.region, summary["TrainingJobName"])
            if job is None:  # deleted meanwhile
                continue
            rows.append({**summary, **self._extras(job, position.get(job.id), now)})
        in_use = capacity_in_use(self.store, self.capacity)
        return {"jobs": rows, "next_token": page.get("NextToken"), "queue_length": len(queued),
                "capacity": {"in_use": resources_doc(in_use), "total": resources_doc(self.capacity.total)}}

    @staticmethod
    def _extras(job: JobRow, queue_position: int | None, now: float) -> dict[str, Any]:
        transitions = job.state.get("SecondaryStatusTransitions") or []
        start = job.state.get("TrainingStartTime") or job.creation_time
        end = job.training_end_time or (job.last_modified_time if job.status in ("Completed", "Failed", "Stopped")
                                        else now)
        return {
            "Instances": [f"{t} × {n}" for t, n in instance_groups(job.request)],
            "QueuePosition": queue_position,
            "PendingReason": transitions[-1].get("StatusMessage") if job.secondary_status == "Pending"
            and transitions else None,
            "DurationSeconds": max(0.0, end - start),
            "FinalMetrics": job.state.get("FinalMetricDataList") or [],
            "FailureReason": job.state.get("FailureReason"),
        }

    # --- the job page --------------------------------------------------------------------------
    def job(self, caller: Caller, name: str) -> JobRow:
        job = self.store.get(caller.account_id, caller.region, name)
        if job is None:
            raise job_not_found()
        return job

    def job_detail(self, caller: Caller, name: str) -> dict[str, Any]:
        job = self.job(caller, name)
        doc = describe_document(job)
        insts = [{k: row.get(k) for k in _INSTANCE_FIELDS} for row in self.store.read_instances(job.id)]
        queued = [j.id for j in self.store.jobs_in_phase("queued")]
        return {"describe": doc, "instances": insts,
                "queue_position": queued.index(job.id) + 1 if job.id in queued else None}

    def logs(self, caller: Caller, name: str, *, after: int | None = None, before: int | None = None,
             contains: str | None = None, kind: str | None = None, limit: int = LOG_PAGE) -> dict[str, Any]:
        """A page of the job's log lines, oldest first: the newest ``limit`` (or those before
        ``before``), or those after ``after`` (following). ``kind``: ``algorithm`` or ``trainforge``."""
        job = self.job(caller, name)
        limit = max(1, min(limit, MAX_LOG_PAGE))
        conds: list[ColumnElement[bool]] = [log_events.c.job_id == job.id]
        if after is not None:
            conds.append(log_events.c.id > after)
        if before is not None:
            conds.append(log_events.c.id < before)
        if contains:
            conds.append(log_events.c.message.contains(contains, autoescape=True))
        mark = f"{job.name}{PLATFORM_MARK}/"
        if kind == "trainforge":
            conds.append(log_events.c.stream.startswith(mark, autoescape=True))
        elif kind == "algorithm":
            conds.append(log_events.c.stream.startswith(f"{job.name}/", autoescape=True))
        order = log_events.c.id.asc() if after is not None else log_events.c.id.desc()
        stmt = (select(log_events.c.id, log_events.c.stream, log_events.c.timestamp, log_events.c.message)
                .where(and_(*conds)).order_by(order).limit(limit + 1))
        with self.store.db.read() as conn:
            rows = conn.execute(stmt).all()
        more = len(rows) > limit
        rows = rows[:limit]
        if after is None:
            rows.reverse()
        lines = [{"id": r.id, "host": _host(r.stream), "kind": "trainforge" if r.stream.startswith(mark)
                  else "algorithm", "t": r.timestamp, "m": r.message} for r in rows]
        return {"lines": lines, "more_before": more and after is None, "more_after": more and after is not None,
                "last_id": rows[-1].id if rows else after}

    def metrics(self, caller: Caller, name: str, *, after: int | None = None) -> dict[str, Any]:
        """The job's metric series: ``{name, host, kind, t: [...], v: [...]}`` by (kind, name, host);
        with ``after``, only the samples stored after that position (never reduced)."""
        job = self.job(caller, name)
        conds: list[ColumnElement[bool]] = [metric_samples.c.job_id == job.id]
        if after is not None:
            conds.append(metric_samples.c.id > after)
        stmt = (select(metric_samples.c.id, metric_samples.c.name, metric_samples.c.host, metric_samples.c.kind,
                       metric_samples.c.timestamp, metric_samples.c.value)
                .where(and_(*conds)).order_by(metric_samples.c.id))
        series: dict[tuple[str, str, str], dict[str, Any]] = {}
        last = after
        with self.store.db.read() as conn:
            for row in conn.execute(stmt):
                key = (row.kind, row.name, row.host or "")
                s = series.get(key)
                if s is None:
                    s = series[key] = {"kind": row.kind, "name": row.name, "host": row.host or "", "t": [], "v": []}
                s["t"].append(row.timestamp)
                s["v"].append(row.value)
                last = row.id
        out = [series[k] for k in sorted(series)]
        if after is None:
            for s in out:
                s["t"], s["v"], s["reduced"] = reduce_series(s["t"], s["v"], MAX_POINTS)
        return {"job": job.name, "series": out, "last_id": last}


def reduce_series(t: list[float], v: list[float], limit: int) -> tuple[list[float], list[float], bool]:
    """At most ``limit`` points: the series itself when it is that short, else per bucket of
    consecutive samples its first, lowest and highest (in time order)."""
    n = len(t)
    if n <= limit:
        return t, v, False
    per = -(-n * 3 // limit)  # samples per bucket, three points kept per bucket
    rt: list[float] = []
    rv: list[float] = []
    for start in range(0, n, per):
        idx = range(start, min(start + per, n))
        lo = min(idx, key=v.__getitem__)
        hi = max(idx, key=v.__getitem__)
        for i in sorted({start, lo, hi}):
            rt.append(t[i])
            rv.append(v[i])
    return rt, rv, True


def _host(stream: str) -> str:
    """``algo-N`` of a stream name ``<job>[.trainforge]/algo-N-<epoch>``."""
    rest = stream.partition("/")[2]
    return rest.rpartition("-")[0] or rest

