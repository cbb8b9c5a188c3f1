"""Tables of the durable store (SQLAlchemy Core). Migrations in ``migrations/`` create them.

Times are stored as float epoch seconds (UTC); JSON documents as text.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()


def _resource_columns() -> list[Column[Any]]:
    """The columns every named SageMaker resource has: its row id, account, region, name and ARN."""
    return [
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("account_id", String(12), nullable=False),
        Column("region", String(32), nullable=False),
        Column("name", String(63), nullable=False),
        Column("arn", String(256), nullable=False),
    ]


jobs = Table(
    "jobs",
    metadata,
    *_resource_columns(),
    Column("status", String(16), nullable=False),
    Column("secondary_status", String(32), nullable=False),
    Column("creation_time", Float, nullable=False),
    Column("last_modified_time", Float, nullable=False),
    # When the job ended (DescribeTrainingJob shows it only if training had started; see
    # service/training_jobs.py); null while it runs.
    Column("training_end_time", Float),
    Column("warm_pool_status", String(32)),
    Column("training_plan_arn", String(2048)),
    # The CreateTrainingJob request as received (without Tags), JSON.
    Column("request", Text, nullable=False),
    # Members of DescribeTrainingJob owned by the service (transitions, failure reason, artifacts,
    # times...), JSON; what only the scheduler reads has columns of its own.
    Column("state", Text, nullable=False),
    # Scheduler phase: queued | launching | running | finalizing | done.
    Column("phase", String(16), nullable=False),
    # Why a stop was asked for: Stopped | MaxRuntimeExceeded | MaxWaitTimeExceeded (null = none).
    Column("stop_reason", String(32)),
    Column("attempt", Integer, nullable=False, default=1),
    # When the agents stop training, fixed by the first launch for every attempt (migration 0004),
    # and the stop reason it gives: MaxRuntimeExceeded | MaxWaitTimeExceeded. Null until launched.
    Column("deadline", Float),
    Column("deadline_reason", String(32)),
    # Hosts whose dead agent was replaced by one that finishes the instance (at most once per host):
    # a JSON array of host names, null = none.
    Column("finishing_hosts", Text),
    # The digest of a token nobody holds: the agents' tokens are per instance (instances.token) since
    # migration 0006; this required, unique column is no longer read.
    Column("token", String(64), nullable=False),
    UniqueConstraint("account_id", "region", "name", name="uq_jobs_name"),
    UniqueConstraint("token", name="uq_jobs_token"),
)
# The list indexes hold every filter column after their sort key (migration 0002).
Index("ix_jobs_created", jobs.c.account_id, jobs.c.region, jobs.c.creation_time, jobs.c.name, jobs.c.status,
      jobs.c.last_modified_time)
Index("ix_jobs_name_cover", jobs.c.account_id, jobs.c.region, jobs.c.name, jobs.c.status, jobs.c.creation_time,
      jobs.c.last_modified_time)
Index("ix_jobs_status", jobs.c.account_id, jobs.c.region, jobs.c.status, jobs.c.creation_time)
Index("ix_jobs_status_name", jobs.c.account_id, jobs.c.region, jobs.c.status, jobs.c.name, jobs.c.creation_time,
      jobs.c.last_modified_time)
Index("ix_jobs_modified", jobs.c.account_id, jobs.c.region, jobs.c.last_modified_time)
Index("ix_jobs_phase", jobs.c.phase, jobs.c.id)
# NameContains is served by a trigram index of jobs.name that migration 0003 creates outside this
# metadata (store/name_index.py): on SQLite the FTS5 table jobs_name_fts and the triggers that keep it
# in step with jobs (a migration that rebuilds jobs in batch mode must create the triggers again); on
# PostgreSQL the GIN index ix_jobs_name_trgm (pg_trgm).

# One row per instance (host) of a job attempt: where it runs and what it has reported.
instances = Table(
    "instances",
    metadata,
    Column("job_id", Integer, primary_key=True),
    Column("host", String(16), primary_key=True),
    Column("attempt", Integer, nullable=False),
    Column("backend", String(16), nullable=False),
    # Backend's handle: for local, {"pid": .., "start_ticks": .., "spec": path}; JSON.
    Column("handle", Text),
    # Next report sequence number expected from this instance (reports are idempotent by seq).
    Column("next_seq", Integer, nullable=False, default=0),
    # running | exited
    Column("state", String(16), nullable=False),
    Column("exit_code", Integer),
    # algorithm | platform | stopped | ok
    Column("outcome", String(16)),
    Column("failure_reason", Text),
    Column("started_at", Float),
    Column("ended_at", Float),
    Column("log_stream", String(512)),
    # SHA-256 digest of the token of this instance's agent, which binds job, attempt and host (a new
    # one per launch). Rows of instances launched before migration 0006 share their job's digest.
    Column("token", String(64)),
)
Index("ix_instances_token", instances.c.token)

tags = Table(
    "tags",
    metadata,
    Column("account_id", String(12), primary_key=True),
    Column("region", String(32), primary_key=True),
    Column("resource_arn", String(256), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", String(256), nullable=False),
)

log_events = Table(
    "log_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, nullable=False),
    Column("stream", String(512), nullable=False),
    Column("timestamp", BigInteger, nullable=False),  # epoch milliseconds
    Column("ingestion_time", BigInteger, nullable=False),
    Column("message", Text, nullable=False),
)
Index("ix_log_events_stream", log_events.c.stream, log_events.c.id)
Index("ix_log_events_job", log_events.c.job_id, log_events.c.id)

# Server-wide values shared by every replica (e.g. the pagination-token signing key).
settings = Table(
    "settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

metric_samples = Table(
    "metric_samples",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, nullable=False),
    Column("name", String(255), nullable=False),
    Column("timestamp", Float, nullable=False),
    Column("value", Float, nullable=False),
    Column("host", String(16)),
    # algorithm (MetricDefinitions) | instance (CPUUtilization, ... sampled by the agent); migration 0007
    Column("kind", String(16), nullable=False, server_default="algorithm"),
)
# One series over a time range (CloudWatch reads); every sample older than the retention (migration 0007).
Index("ix_metric_samples_series", metric_samples.c.job_id, metric_samples.c.name, metric_samples.c.host,
      metric_samples.c.timestamp)
Index("ix_metric_samples_time", metric_samples.c.timestamp)

# Algorithm resources (CreateAlgorithm; migration 0008): the request as received (without Tags), JSON.
algorithms = Table(
    "algorithms",
    metadata,
    *_resource_columns(),
    Column("creation_time", Float, nullable=False),
    Column("document", Text, nullable=False),
    UniqueConstraint("account_id", "region", "name", name="uq_algorithms_name"),
)
Index("ix_algorithms_created", algorithms.c.account_id, algorithms.c.region, algorithms.c.creation_time,
      algorithms.c.name)
