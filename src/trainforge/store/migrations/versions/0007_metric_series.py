"""CloudWatch metrics: ``metric_samples.kind`` tells the algorithm's metrics (MetricDefinitions,
read from its output) from the instance metrics the agent samples (CPUUtilization, ...), and the
indexes serve what GetMetricStatistics / GetMetricData / ListMetrics read and what the retention
sweep deletes: one series (job, metric, host) over a time range, and every sample older than a time.

Rows stored before this revision are algorithm metrics (the only kind there was).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("metric_samples", sa.Column("kind", sa.String(16), nullable=False,
                                              server_default="algorithm"))
    op.drop_index("ix_metric_samples_job", "metric_samples")
    op.create_index("ix_metric_samples_series", "metric_samples", ["job_id", "name", "host", "timestamp"])
    op.create_index("ix_metric_samples_time", "metric_samples", ["timestamp"])


def downgrade() -> None:
    op.drop_index("ix_metric_samples_time", "metric_samples")
    op.drop_index("ix_metric_samples_series", "metric_samples")
    op.create_index("ix_metric_samples_job", "metric_samples", ["job_id", "name", "id"])
    with op.batch_alter_table("metric_samples") as batch:
        batch.drop_column("kind")
