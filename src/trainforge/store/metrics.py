"""Reads of the metric samples for the CloudWatch API (service/cloudwatch.py), and the retention sweep.

A series is one (job, metric name, host, kind); ``kind`` is ``algorithm`` (MetricDefinitions) or
``instance`` (what agent/sampler.py measures). Samples are written with the agents' reports
(``JobStore.append_metrics``); nothing here writes but :meth:`MetricStore.prune`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, delete, select
from sqlalchemy.sql.elements import ColumnElement

from trainforge.store.db import Database
from trainforge.store.schema import jobs, metric_samples

ALGORITHM = "algorithm"
INSTANCE = "instance"


@dataclass(frozen=True, order=True)
class Series:
    """One stored series: the job's name, the metric, the host (``algo-N``) and the kind."""

    job: str
    name: str
    host: str
    kind: str


class MetricStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def points(self, account_id: str, region: str, job_name: str, name: str, *, host: str | None,
               kind: str | None, start: float, end: float) -> list[tuple[float, float]]:
        """``(timestamp, value)`` of one job's metric in ``[start, end)``: one host's, or (None) every
        host's; of one kind, or (None) of any."""
        conds: list[ColumnElement[bool]] = [
            jobs.c.account_id == account_id, jobs.c.region == region, jobs.c.name == job_name,
            metric_samples.c.name == name, metric_samples.c.timestamp >= start, metric_samples.c.timestamp < end]
        if host is not None:
            conds.append(metric_samples.c.host == host)
        if kind is not None:
            conds.append(metric_samples.c.kind == kind)
        stmt = (select(metric_samples.c.timestamp, metric_samples.c.value)
                .join(jobs, jobs.c.id == metric_samples.c.job_id).where(and_(*conds)))
        with self.db.read() as conn:
            return [(float(t), float(v)) for t, v in conn.execute(stmt)]

    def series(self, account_id: str, region: str, *, name: str | None = None, job_name: str | None = None,
               since: float | None = None) -> list[Series]:
        """Every series of the account with a sample at ``since`` or later, sorted."""
        conds: list[ColumnElement[bool]] = [jobs.c.account_id == account_id, jobs.c.region == region]
        if name is not None:
            conds.append(metric_samples.c.name == name)
        if job_name is not None:
            conds.append(jobs.c.name == job_name)
        if since is not None:
            conds.append(metric_samples.c.timestamp >= since)
        stmt = (select(jobs.c.name, metric_samples.c.name, metric_samples.c.host, metric_samples.c.kind)
                .distinct().join(jobs, jobs.c.id == metric_samples.c.job_id).where(and_(*conds)))
        with self.db.read() as conn:
            return sorted(Series(j, n, h or "", k) for j, n, h, k in conn.execute(stmt))

    def prune(self, before: float) -> int:
        """Delete every sample older than ``before``; returns how many."""
        with self.db.write() as conn:
            return conn.execute(delete(metric_samples).where(metric_samples.c.timestamp < before)).rowcount or 0
