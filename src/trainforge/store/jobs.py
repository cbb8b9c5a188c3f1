"""Reads and writes of training jobs, their instances, tags, logs and metrics."""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    column,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from trainforge.log_streams import platform_stream
from trainforge.store.db import Database
from trainforge.store.name_index import NameIndex
from trainforge.store.schema import instances, jobs, log_events, metric_samples, settings, tags


class DuplicateName(Exception):
    pass


# The statuses a job never leaves (service/lifecycle.py names them; save() enforces it).
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Stopped"})


class TerminalStatusChange(RuntimeError):
    """A write that would move a job out of its terminal status: refused, the transaction fails."""


# The writes of every report and launch, built once: building a statement costs more CPU than
# running it (expression objects, then its cache key on every execution).
_SAVE = (
    update(jobs)
    .where(jobs.c.id == bindparam("b_id"),
           or_(and_(*(jobs.c.status != s for s in sorted(TERMINAL_STATUSES))),
               and_(jobs.c.status == bindparam("b_status"),
                    jobs.c.secondary_status == bindparam("b_secondary_status"),
                    jobs.c.phase == bindparam("b_phase"))))
    .values({c: bindparam("v_" + c) for c in (
        "status", "secondary_status", "last_modified_time", "training_end_time", "warm_pool_status", "request",
        "state", "phase", "stop_reason", "attempt", "deadline", "deadline_reason", "finishing_hosts")})
)


_INSTANCES_OF = select(instances).where(instances.c.job_id == bindparam("b_job_id")).order_by(instances.c.host)


@functools.lru_cache(maxsize=64)
def _instance_update(columns: frozenset[str]) -> Any:
    """UPDATE of one instance row's ``columns`` (bound as ``v_<column>``)."""
    return (update(instances)
            .where(instances.c.job_id == bindparam("b_job_id"), instances.c.host == bindparam("b_host"))
            .values({c: bindparam("v_" + c) for c in sorted(columns)}))


def new_token() -> str:
    """A fresh agent token: 256 random bits."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the store keeps of an agent token: its SHA-256 (64 hex digits), never the token itself.
    A token is 256 random bits, so the digest needs no salt nor stretching to be irreversible."""
    return hashlib.sha256(token.encode()).hexdigest()


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(text: str | bytes | None) -> Any:
    return orjson.loads(text) if text else None


@dataclass
class JobRow:
    """One row of ``jobs`` with its JSON documents decoded."""

    id: int
    account_id: str
    region: str
    name: str
    arn: str
    status: str
    secondary_status: str
    creation_time: float
    last_modified_time: float
    training_end_time: float | None
    warm_pool_status: str | None
    training_plan_arn: str | None
    request: dict[str, Any]
    state: dict[str, Any]
    phase: str
    stop_reason: str | None
    attempt: int
    deadline: float | None = None
    deadline_reason: str | None = None
    finishing_hosts: list[str] = field(default_factory=list)

    @classmethod
    def from_db(cls, row: Any) -> JobRow:
        return cls.from_mapping(row._mapping)

    @classmethod
    def from_mapping(cls, m: Any) -> JobRow:
        return cls(
            **{k: m[k] for k in _SCALARS},
            request=loads(m["request"]) or {},
            state=loads(m["state"]) or {},
            finishing_hosts=loads(m["finishing_hosts"]) or [],
        )

    @property
    def deadline_stop_reason(self) -> str:
        """The stop reason when the deadline passes (MaxWaitTimeExceeded for a spot job whose wait
        ends before its run time)."""
        return self.deadline_reason or "MaxRuntimeExceeded"


_SCALARS = (
    "id", "account_id", "region", "name", "arn", "status", "secondary_status", "creation_time",
    "last_modified_time", "training_end_time", "warm_pool_status", "training_plan_arn", "phase",
    "stop_reason", "attempt", "deadline", "deadline_reason",
)

SORT_COLUMNS = {
    "Name": (jobs.c.name,),
    "CreationTime": (jobs.c.creation_time, jobs.c.name),
    "Status": (jobs.c.status, jobs.c.name),
}

SUMMARY_COLUMNS = (
    jobs.c.name, jobs.c.arn, jobs.c.creation_time, jobs.c.training_end_time,
    jobs.c.last_modified_time, jobs.c.status, jobs.c.secondary_status, jobs.c.warm_pool_status,
    jobs.c.training_plan_arn,
)


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # The reads of every describe, scheduler pass and agent report, compiled once.
        self._by_name = db.prepare(select(jobs).where(
            jobs.c.account_id == bindparam("account_id"), jobs.c.region == bindparam("region"),
            jobs.c.name == bindparam("name")))
        self._by_id = db.prepare(select(jobs).where(jobs.c.id == bindparam("id")))
        self._lock = db.for_update(select(jobs).where(jobs.c.id == bindparam("b_id")))  # in a transaction
        self.name_index = NameIndex(db)

    # --- settings ----------------------------------------------------------------------------
    def setting(self, key: str, factory: Any) -> str:
        """The value of a server-wide setting, created once with ``factory()`` if missing."""
        with self.db.read() as conn:
            value = conn.execute(select(settings.c.value).where(settings.c.key == key)).scalar()
        if value is not None:
            return str(value)
        try:
            with self.db.write() as conn:
                conn.execute(insert(settings).values(key=key, value=factory()))
        except IntegrityError:
            pass  # another replica created it first
        with self.db.read() as conn:
            return str(conn.execute(select(settings.c.value).where(settings.c.key == key)).scalar_one())

    # --- jobs --------------------------------------------------------------------------------
    def insert_job(self, values: dict[str, Any], tag_list: Sequence[dict[str, str]]) -> JobRow:
        row = dict(values)
        row["request"] = dumps(values["request"])
        row["state"] = dumps(values["state"])
        # A token nobody holds (the agents' tokens are per instance): the column is unique and required.
        row.setdefault("token", token_digest(new_token()))
        try:
            with self.db.write() as conn:
                key = conn.execute(insert(jobs).values(**row)).inserted_primary_key
                assert key is not None
                job_id = key[0]
                if tag_list:
                    put_tags(conn, row["account_id"], row["region"], row["arn"], tag_list)
        except IntegrityError as exc:
            raise DuplicateName(values["name"]) from exc
        scalars: dict[str, Any] = {k: row.get(k) for k in _SCALARS if k != "id"}
        return JobRow(id=job_id, **scalars, request=values["request"], state=values["state"])

    def get(self, account_id: str, region: str, name: str) -> JobRow | None:
        row = self._by_name.first(account_id=account_id, region=region, name=name)
        return JobRow.from_mapping(row) if row else None

    def get_many(self, account_id: str, region: str, names: Collection[str]) -> dict[str, JobRow]:
        """The jobs of ``names`` that exist, by name, in one query (the rows of a listed page)."""
        if not names:
            return {}
        with self.db.read() as conn:
            res = conn.execute(select(jobs).where(jobs.c.account_id == account_id, jobs.c.region == region,
                                                  jobs.c.name.in_(list(names))))
            return {r.name: JobRow.from_db(r) for r in res}

    def get_by_id(self, job_id: int) -> JobRow | None:
        row = self._by_id.first(id=job_id)
        return JobRow.from_mapping(row) if row else None

    @contextmanager
    def locked(self, job_id: int) -> Iterator[tuple[Connection, JobRow | None]]:
        """A write transaction holding the job's row; use :func:`save` to write it back."""
        with self.db.write() as conn:
            yield conn, self.lock_row(conn, job_id)

    def lock_row(self, conn: Connection, job_id: int) -> JobRow | None:
        """The job, its row held until the caller's transaction ends (None if it is gone)."""
        row = conn.execute(self._lock, {"b_id": job_id}).first()
        return JobRow.from_db(row) if row else None

    @staticmethod
    def save(conn: Connection, job: JobRow) -> None:
        """Write ``job`` back. A job whose stored status is terminal keeps it, with its secondary
        status and its phase: a write that would change them raises TerminalStatusChange (checked
        by the UPDATE itself, so no concurrent writer can slip between a read and the write)."""
        # A job is never modified before it was created, even if the clock stepped back: list_jobs
        # relies on it (a LastModifiedTimeBefore bound is a CreationTime bound too).
        job.last_modified_time = max(job.last_modified_time, job.creation_time)
        result = conn.execute(_SAVE, {
            "b_id": job.id, "b_status": job.status, "b_secondary_status": job.secondary_status,
            "b_phase": job.phase, "v_status": job.status, "v_secondary_status": job.secondary_status,
            "v_last_modified_time": job.last_modified_time, "v_training_end_time": job.training_end_time,
            "v_warm_pool_status": job.warm_pool_status, "v_request": dumps(job.request),
            "v_state": dumps(job.state), "v_phase": job.phase, "v_stop_reason": job.stop_reason,
            "v_attempt": job.attempt, "v_deadline": job.deadline, "v_deadline_reason": job.deadline_reason,
            "v_finishing_hosts": dumps(job.finishing_hosts) if job.finishing_hosts else None,
        })
        if result.rowcount == 0:
            stored = conn.execute(select(jobs.c.status, jobs.c.secondary_status, jobs.c.phase)
                                  .where(jobs.c.id == job.id)).first()
            if stored is not None:  # (a deleted job has nothing left to write)
                raise TerminalStatusChange(
                    f"training job {job.name} is {stored.status} ({stored.secondary_status}, {stored.phase}): "
                    f"it cannot become {job.status} ({job.secondary_status}, {job.phase})")

    def delete_job(self, conn: Connection, job: JobRow) -> None:
        conn.execute(delete(jobs).where(jobs.c.id == job.id))
        conn.execute(delete(instances).where(instances.c.job_id == job.id))
        conn.execute(delete(log_events).where(log_events.c.job_id == job.id))
        conn.execute(delete(metric_samples).where(metric_samples.c.job_id == job.id))
        conn.execute(delete(tags).where(tags.c.account_id == job.account_id, tags.c.region == job.region,
                                        tags.c.resource_arn == job.arn))

    def jobs_in_phase(self, *phases: str) -> list[JobRow]:
        with self.db.read() as conn:
            res = conn.execute(select(jobs).where(jobs.c.phase.in_(phases)).order_by(jobs.c.id))
            return [JobRow.from_db(r) for r in res]

    def list_jobs(
        self,
        account_id: str,
        region: str,
        *,
        name_contains: str | None = None,
        status: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        modified_after: float | None = None,
        modified_before: float | None = None,
        warm_pool_status: str | None = None,
        training_plan_arn: str | None = None,
        sort_by: str = "CreationTime",
        descending: bool = True,
        after: Sequence[Any] | None = None,
        limit: int = 10,
    ) -> list[Any]:
        """One page of summaries in keyset order; ``after`` is the sort key of the last row seen."""
        keys = SORT_COLUMNS[sort_by]
        if sort_by == "Status" and status:
            # The status is fixed by the filter: order and keyset on the name alone, which the index
            # serves as a range (a row-value range starting at the status makes SQLite sort the whole
            # remainder).
            keys, after = keys[1:], (after[1:] if after is not None else None)
        conds = [jobs.c.account_id == account_id, jobs.c.region == region]
        if after is not None and sort_by == "CreationTime":
            # The keyset bounds creation_time: say so as a plain range, so that SQLite seeks to it (a
            # row value beside another bound on the same column is only tested row by row, and each
            # page then rereads all the pages before it). The token's time is that of a row that
            # matched this very query, so it lies inside CreationTimeAfter / CreationTimeBefore:
            # that bound is implied, and dropped.
            if descending:
                created_before = None
                conds.append(jobs.c.creation_time <= after[0])
            else:
                created_after = None
                conds.append(jobs.c.creation_time >= after[0])
        if name_contains:
            if self.db.is_sqlite:  # SQLite's LIKE ignores ASCII case (names are ASCII): no lower() per row
                conds.append(jobs.c.name.like(contains_pattern(name_contains), escape="\\"))
            else:
                conds.append(jobs.c.name.ilike(contains_pattern(name_contains), escape="\\"))
        if status:
            conds.append(jobs.c.status == status)
        if created_after is not None:
            conds.append(jobs.c.creation_time > created_after)
        if created_before is not None:
            conds.append(jobs.c.creation_time < created_before)
        if modified_after is not None:
            conds.append(jobs.c.last_modified_time > modified_after)
        if modified_before is not None:
            conds.append(jobs.c.last_modified_time < modified_before)
            # Every job has creation_time <= last_modified_time (save() keeps it so; migration 0003
            # repaired older rows): the bound holds for the creation time too. Without it SQLite reads
            # every match through ix_jobs_modified and sorts them all for the first page (10,000 rows
            # for the oldest 10 % of 100,000 jobs; worst for CreationTime descending, where each row
            # read displaces one kept by the top-N sort); with it a CreationTime sort walks
            # ix_jobs_created from the first match.
            conds.append(jobs.c.creation_time < modified_before)
        if warm_pool_status:
            conds.append(jobs.c.warm_pool_status == warm_pool_status)
        if training_plan_arn:
            conds.append(jobs.c.training_plan_arn == training_plan_arn)
        if after is not None:
            conds.append(past(keys, after, descending))
        order = [k.desc() if descending else k.asc() for k in keys]
        with self.db.read() as conn:
            candidates = self.name_index.candidates(conn, name_contains) if name_contains else None
            hint = None  # SQLite has no statistics: the plans it needs are named
            if candidates is not None:
                # A rare substring (SQLite): read the few rows the trigram index names, by rowid, and
                # sort them; every other condition (the LIKE too) still applies. Without NOT INDEXED,
                # SQLite would walk a sort index and test each entry against the id list.
                conds.append(jobs.c.id.in_(text("SELECT value FROM json_each(:candidates)")
                                           .bindparams(candidates=dumps(candidates)).columns(column("value"))))
                hint = "NOT INDEXED"
            elif status and self.db.is_sqlite:
                # Left alone, SQLite walks ix_jobs_created and tests each row's status: a rare status
                # (InProgress among 100,000 finished jobs) costs a full scan, ~110 ms, against 0.1 ms
                # through ix_jobs_status (status, creation_time) and a sort of equal times by name.
                # Name order within a fixed status: ix_jobs_status_name yields the rows in that order,
                # where ix_jobs_status (SQLite's choice for a first page with a time filter) sorts
                # every row of the status (~17 ms for 16,000 rows) to return 100.
                hint = "INDEXED BY " + ("ix_jobs_status" if sort_by == "CreationTime" else "ix_jobs_status_name")
            stmt = select(*SUMMARY_COLUMNS).where(and_(*conds)).order_by(*order).limit(limit)
            return _sqlite_table_hint(conn, stmt, hint) if hint else list(conn.execute(stmt))

    # --- instances ---------------------------------------------------------------------------
    @staticmethod
    def replace_instances(conn: Connection, job_id: int, rows: list[dict[str, Any]]) -> None:
        conn.execute(delete(instances).where(instances.c.job_id == job_id))
        if rows:
            conn.execute(insert(instances), rows)

    @staticmethod
    def instances_of(conn: Connection, job_id: int) -> list[dict[str, Any]]:
        return [dict(r._mapping) for r in conn.execute(_INSTANCES_OF, {"b_job_id": job_id})]

    def instances_by_token(self, token: str) -> list[dict[str, Any]]:
        """The instance whose agent token is ``token`` (looked up by its digest): one row, or every
        host of a job launched before per-instance tokens (migration 0006), or none."""
        with self.db.read() as conn:
            found = conn.execute(select(instances).where(instances.c.token == token_digest(token)))
            return [dict(r._mapping) for r in found]

    def read_instances(self, job_id: int) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            return self.instances_of(conn, job_id)

    @staticmethod
    def update_instance(conn: Connection, job_id: int, host: str, **values: Any) -> None:
        conn.execute(_instance_update(frozenset(values)),
                     {"b_job_id": job_id, "b_host": host, **{"v_" + k: v for k, v in values.items()}})

    # --- logs and metrics --------------------------------------------------------------------
    @staticmethod
    def append_logs(conn: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            conn.execute(insert(log_events), rows)

    @staticmethod
    def append_metrics(conn: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            conn.execute(insert(metric_samples), rows)

    def log_streams(self, account_id: str, region: str, prefix: str | None) -> list[dict[str, Any]]:
        """Every instance log stream of the account whose name starts with ``prefix``: the algorithm's
        and trainforge's (log_streams.py), by name, with first/last event times."""
        stmt = (
            select(instances.c.log_stream, instances.c.started_at, jobs.c.id)
            .join(jobs, jobs.c.id == instances.c.job_id)
            .where(jobs.c.account_id == account_id, jobs.c.region == region,
                   instances.c.log_stream.is_not(None))
        )
        if prefix:  # both names of an instance start with its job's name, which has no "." and no "/"
            job_part = re.split(r"[./]", prefix, maxsplit=1)[0]
            stmt = stmt.where(instances.c.log_stream.startswith(job_part, autoescape=True))
        with self.db.read() as conn:
            streams = sorted(({**r._mapping, "log_stream": name} for r in conn.execute(stmt)
                              for name in (r.log_stream, platform_stream(r.log_stream))
                              if name.startswith(prefix or "")), key=lambda s: s["log_stream"])
            for s in streams:
                first_last = conn.execute(
                    select(func.min(log_events.c.timestamp), func.max(log_events.c.timestamp),
                           func.max(log_events.c.ingestion_time))
                    .where(log_events.c.stream == s["log_stream"])
                ).first()
                s["first"], s["last"], s["ingested"] = first_last if first_last else (None, None, None)
        return streams

    def log_page(self, streams: Sequence[str], *, after_id: int | None = None, before_id: int | None = None,
                 start_ms: int | None = None, end_ms: int | None = None, contains: str | None = None,
                 limit: int = 10000, newest_first: bool = False) -> list[dict[str, Any]]:
        conds: list[ColumnElement[bool]] = [log_events.c.stream.in_(list(streams))]
        if after_id is not None:
            conds.append(log_events.c.id > after_id)
        if before_id is not None:
            conds.append(log_events.c.id < before_id)
        if start_ms is not None:
            conds.append(log_events.c.timestamp >= start_ms)
        if end_ms is not None:
            conds.append(log_events.c.timestamp < end_ms)
        if contains:
            conds.append(log_events.c.message.contains(contains, autoescape=True))
        order = log_events.c.id.desc() if newest_first else log_events.c.id.asc()
        with self.db.read() as conn:
            res = conn.execute(select(log_events).where(and_(*conds)).order_by(order).limit(limit))
            return [dict(r._mapping) for r in res]

    def metric_samples(self, job_id: int) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            res = conn.execute(select(metric_samples).where(metric_samples.c.job_id == job_id)
                               .order_by(metric_samples.c.id))
            return [dict(r._mapping) for r in res]

    # --- tags --------------------------------------------------------------------------------
    def add_tags(self, account_id: str, region: str, arn: str, tag_list: Sequence[dict[str, str]]) -> None:
        with self.db.write() as conn:
            put_tags(conn, account_id, region, arn, tag_list)

    def list_tags(self, account_id: str, region: str, arn: str, after_key: str | None, limit: int) -> list[Any]:
        conds = [tags.c.account_id == account_id, tags.c.region == region, tags.c.resource_arn == arn]
        if after_key is not None:
            conds.append(tags.c.key > after_key)
        with self.db.read() as conn:
            return list(conn.execute(select(tags.c.key, tags.c.value).where(*conds)
                                     .order_by(tags.c.key).limit(limit)))

    def count_tags(self, conn: Connection, account_id: str, region: str, arn: str) -> int:
        return int(conn.execute(select(func.count()).select_from(tags).where(
            tags.c.account_id == account_id, tags.c.region == region, tags.c.resource_arn == arn)).scalar_one())

    def delete_tags(self, account_id: str, region: str, arn: str, keys: Sequence[str]) -> None:
        with self.db.write() as conn:
            conn.execute(delete(tags).where(tags.c.account_id == account_id, tags.c.region == region,
                                            tags.c.resource_arn == arn, tags.c.key.in_(list(keys))))


def contains_pattern(text: str) -> str:
    """A LIKE pattern (escape character backslash) matching names that contain ``text``."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def past(keys: Sequence[Any], after: Sequence[Any], descending: bool) -> ColumnElement[bool]:
    """The keyset condition: rows after ``after`` (the sort key of the last row seen) in this order."""
    cols = tuple_(*keys) if len(keys) > 1 else keys[0]
    vals = tuple_(*after) if len(keys) > 1 else after[0]
    return cols < vals if descending else cols > vals  # type: ignore[no-any-return]


def _sqlite_table_hint(conn: Connection, stmt: Any, hint: str) -> list[Any]:
    """Run ``stmt`` (a SELECT from jobs) on SQLite with ``hint`` (``INDEXED BY ix``, ``NOT INDEXED``)
    after the table name (SQLAlchemy renders no table hints for SQLite)."""
    compiled = stmt.compile(dialect=conn.dialect)
    sql, n = re.subn(r"\bFROM jobs\b", f"FROM jobs {hint}", str(compiled), count=1)
    assert n == 1, sql
    params = compiled.construct_params()
    return list(conn.exec_driver_sql(sql, tuple(params[k] for k in compiled.positiontup or ())))


def put_tags(conn: Connection, account_id: str, region: str, arn: str, tag_list: Sequence[dict[str, str]]) -> None:
    keys = [t["Key"] for t in tag_list]
    conn.execute(delete(tags).where(tags.c.account_id == account_id, tags.c.region == region,
                                    tags.c.resource_arn == arn, tags.c.key.in_(keys)))
    merged = {t["Key"]: t.get("Value", "") for t in tag_list}
    conn.execute(insert(tags), [
        {"account_id": account_id, "region": region, "resource_arn": arn, "key": k, "value": v}
        for k, v in merged.items()
    ])

