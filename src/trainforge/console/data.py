"""What the console's pages show, read from the store for one caller (account and region).

The jobs page is ListTrainingJobs itself (its validation, filters, sort orders and paging tokens:
``TrainingJobs.list``) with what a person watching the queue wants beside each summary. The job
page is DescribeTrainingJob's document, the instances, the logs (by page, by position in the log
table) and the metric series (at most :data:`MAX_POINTS` per series per answer: the database reduces
a longer one to each time bucket's lowest and highest values, so a spike is never hidden).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Integer, and_, func, select
from sqlalchemy.sql.elements import ColumnElement

from trainforge.api.errors import job_not_found
from trainforge.api.validation import validate
from trainforge.log_streams import PLATFORM_MARK
from trainforge.scheduler.capacity import CapacityModel, Resources, instance_groups
from trainforge.service.training_jobs import Caller, TrainingJobs, describe_document
from trainforge.store.jobs import JobRow, JobStore
from trainforge.store.schema import jobs as job_table
from trainforge.store.schema import log_events, metric_samples

LOG_PAGE = 1000
MAX_LOG_PAGE = 5000
MAX_POINTS = 1000  # 500 buckets: about one per pixel of a chart's width (420-700 px)
_INSTANCE_FIELDS = ("host", "attempt", "state", "outcome", "failure_reason", "started_at", "ended_at",
                    "log_stream")


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
        queued = self._queue()
        position = {job_id: i + 1 for i, job_id in enumerate(queued)}
        now = time.time()
        summaries = page["TrainingJobSummaries"]
        found = self.store.get_many(caller.account_id, caller.region, [s["TrainingJobName"] for s in summaries])
        rows = []
        for summary in summaries:
            job = found.get(summary["TrainingJobName"])
            if job is None:  # deleted meanwhile
                continue
            rows.append({**summary, **self._extras(job, position.get(job.id), now)})
        in_use = self.capacity.in_use(self.store)
        return {"jobs": rows, "next_token": page.get("NextToken"), "queue_length": len(queued),
                "capacity": {"in_use": resources_doc(in_use), "total": resources_doc(self.capacity.total)}}

    def _queue(self) -> list[int]:
        """The queued jobs' ids in creation order, the scheduler's admission order (read from the index
        ix_jobs_phase alone: no job's documents)."""
        with self.store.db.read() as conn:
            stmt = select(job_table.c.id).where(job_table.c.phase == "queued").order_by(job_table.c.id)
            return list(conn.execute(stmt).scalars())

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
        queued = self._queue()
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
            rows = list(conn.execute(stmt).all())
        more = len(rows) > limit
        rows = rows[:limit]
        if after is None:
            rows.reverse()
        lines = [{"id": r.id, "host": _host(r.stream), "kind": "trainforge" if r.stream.startswith(mark)
                  else "algorithm", "t": r.timestamp, "m": r.message} for r in rows]
        return {"lines": lines, "more_before": more and after is None, "more_after": more and after is not None,
                "last_id": rows[-1].id if rows else after}

    def metrics(self, caller: Caller, name: str, *, after: int | None = None) -> dict[str, Any]:
        """The job's metric series: ``{name, host, kind, t: [...], v: [...]}`` in time order, by (kind,
        name, host); with ``after``, only the samples stored after that position (never reduced)."""
        job = self.job(caller, name)
        if after is not None:
            return {"job": job.name, **self._new_samples(job.id, after)}
        ms = metric_samples
        mine = ms.c.job_id == job.id
        out: list[dict[str, Any]] = []
        with self.store.db.read() as conn:
            # read from ix_metric_samples_series alone (a metric name is of one kind in a job)
            # (the index holds the row id too: the newest sample's position comes with the same read)
            found = conn.execute(select(ms.c.name, ms.c.host, func.count(), func.min(ms.c.timestamp),
                                        func.max(ms.c.timestamp), func.max(ms.c.id))
                                 .where(mine).group_by(ms.c.name, ms.c.host)).all()
            last_id = max((row[5] for row in found), default=None)
            for metric, host, count, first, last, _ in found:
                one = [mine, ms.c.name == metric, ms.c.host == host if host is not None else ms.c.host.is_(None)]
                kind = conn.execute(select(ms.c.kind).where(*one).limit(1)).scalar()
                if count > MAX_POINTS:
                    t, v = _reduced(conn, one, first, last)
                else:
                    rows = conn.execute(select(ms.c.timestamp, ms.c.value).where(*one)
                                        .order_by(ms.c.timestamp, ms.c.id)).all()
                    t, v = [r[0] for r in rows], [r[1] for r in rows]
                out.append({"kind": kind, "name": metric, "host": host or "", "t": t, "v": v,
                            "reduced": len(t) < count})
        out.sort(key=lambda s: (s["kind"], s["name"], s["host"]))
        return {"job": job.name, "series": out, "last_id": last_id}

    def _new_samples(self, job_id: int, after: int) -> dict[str, Any]:
        """The samples stored after position ``after``, by series. ``job_id + 0``: SQLite then reads
        them by the primary key from ``after`` on (the few newest rows), not every sample of the job."""
        ms = metric_samples
        stmt = (select(ms.c.id, ms.c.name, ms.c.host, ms.c.kind, ms.c.timestamp, ms.c.value)
                .where((ms.c.job_id + 0) == job_id, ms.c.id > after).order_by(ms.c.id))
        series: dict[tuple[str, str, str], dict[str, Any]] = {}
        last = after
        with self.store.db.read() as conn:
            for row in conn.execute(stmt):
                key = (row.kind, row.name, row.host or "")
                s = series.get(key)
                if s is None:
                    s = series[key] = {"kind": row.kind, "name": row.name, "host": row.host or "", "t": [], "v": [],
                                       "reduced": False}
                s["t"].append(row.timestamp)
                s["v"].append(row.value)
                last = row.id
        return {"series": [series[k] for k in sorted(series)], "last_id": last}


def _reduced(conn: Any, conds: list[ColumnElement[bool]], first: float, last: float) -> tuple[list[float], list[float]]:
    """A long series in at most MAX_POINTS points, computed by the database: per time bucket, its lowest
    and highest values, both at the bucket's middle time (the nearer to the previous point first, so the
    line runs on), as a chart narrower than MAX_POINTS / 2 pixels shows them anyway: no spike is lost."""
    ms = metric_samples
    buckets = MAX_POINTS // 2 - 1
    width = (last - first) / buckets or 1.0
    bucket = func.cast((ms.c.timestamp - first) / width, Integer).label("b")
    rows = conn.execute(select(bucket, func.min(ms.c.timestamp), func.max(ms.c.timestamp), func.min(ms.c.value),
                               func.max(ms.c.value)).where(and_(*conds)).group_by(bucket).order_by(bucket)).all()
    t: list[float] = []
    v: list[float] = []
    for _, t0, t1, lo, hi in rows:
        middle = (t0 + t1) / 2
        if lo == hi:
            t.append(middle)
            v.append(lo)
            continue
        t.extend((middle, middle))
        v.extend((hi, lo) if v and abs(v[-1] - hi) < abs(v[-1] - lo) else (lo, hi))
    return t, v


def _host(stream: str) -> str:
    """``algo-N`` of a stream name ``<job>[.trainforge]/algo-N-<epoch>``."""
    rest = stream.partition("/")[2]
    return rest.rpartition("-")[0] or rest

