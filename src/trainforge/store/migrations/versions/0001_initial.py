"""Initial schema: jobs, instances, tags, log events, metric samples.

This file is frozen: later schema changes come as new revisions.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("arn", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("secondary_status", sa.String(32), nullable=False),
        sa.Column("creation_time", sa.Float, nullable=False),
        sa.Column("last_modified_time", sa.Float, nullable=False),
        sa.Column("training_end_time", sa.Float),
        sa.Column("warm_pool_status", sa.String(32)),
        sa.Column("training_plan_arn", sa.String(2048)),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("stop_reason", sa.String(32)),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.UniqueConstraint("account_id", "region", "name", name="uq_jobs_name"),
        sa.UniqueConstraint("token", name="uq_jobs_token"),
    )
    op.create_index("ix_jobs_created", "jobs", ["account_id", "region", "creation_time", "name"])
    op.create_index("ix_jobs_status", "jobs", ["account_id", "region", "status", "creation_time"])
    op.create_index("ix_jobs_status_name", "jobs", ["account_id", "region", "status", "name"])
    op.create_index("ix_jobs_modified", "jobs", ["account_id", "region", "last_modified_time"])
    op.create_index("ix_jobs_phase", "jobs", ["phase", "id"])
    op.create_table(
        "instances",
        sa.Column("job_id", sa.Integer, primary_key=True),
        sa.Column("host", sa.String(16), primary_key=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("handle", sa.Text),
        sa.Column("next_seq", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("exit_code", sa.Integer),
        sa.Column("outcome", sa.String(16)),
        sa.Column("failure_reason", sa.Text),
        sa.Column("started_at", sa.Float),
        sa.Column("ended_at", sa.Float),
        sa.Column("log_stream", sa.String(512)),
    )
    op.create_table(
        "tags",
        sa.Column("account_id", sa.String(12), primary_key=True),
        sa.Column("region", sa.String(32), primary_key=True),
        sa.Column("resource_arn", sa.String(256), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.create_table(
        "log_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, nullable=False),
        sa.Column("stream", sa.String(512), nullable=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
        sa.Column("ingestion_time", sa.BigInteger, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_log_events_stream", "log_events", ["stream", "id"])
    op.create_index("ix_log_events_job", "log_events", ["job_id", "id"])
    op.create_table(
        "settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "metric_samples",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("timestamp", sa.Float, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("host", sa.String(16)),
    )
    op.create_index("ix_metric_samples_job", "metric_samples", ["job_id", "name", "id"])


def downgrade() -> None:
    for table in ("metric_samples", "settings", "log_events", "tags", "instances", "jobs"):
        op.drop_table(table)
