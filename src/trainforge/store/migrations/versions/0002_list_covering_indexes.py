"""ListTrainingJobs: one index per sort order that also holds every filter column, so a filtered
page is decided from index entries (the table row is read only for the rows returned).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_FILTERS = ["status", "creation_time", "last_modified_time"]


def upgrade() -> None:
    op.drop_index("ix_jobs_created", table_name="jobs")
    op.drop_index("ix_jobs_status_name", table_name="jobs")
    op.create_index("ix_jobs_created", "jobs", ["account_id", "region", "creation_time", "name", *_FILTERS[::2]])
    op.create_index("ix_jobs_name_cover", "jobs", ["account_id", "region", "name", *_FILTERS])
    op.create_index("ix_jobs_status_name", "jobs", ["account_id", "region", "status", "name", *_FILTERS[1:]])


def downgrade() -> None:
    for name in ("ix_jobs_status_name", "ix_jobs_name_cover", "ix_jobs_created"):
        op.drop_index(name, table_name="jobs")
    op.create_index("ix_jobs_created", "jobs", ["account_id", "region", "creation_time", "name"])
    op.create_index("ix_jobs_status_name", "jobs", ["account_id", "region", "status", "name"])
