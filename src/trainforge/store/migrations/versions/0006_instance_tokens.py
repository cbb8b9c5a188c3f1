"""Agent tokens per instance: ``instances.token`` holds the SHA-256 digest of the token of the one
agent of that (job, attempt, host), so that a report or a credentials request binds all three.
Until now one token per job attempt (its digest in ``jobs.token``) was shared by every agent of
the attempt, and nothing bound an agent to its own host.

The instances running across the upgrade keep the token they hold: their rows get their job's
digest, which still binds the job and the attempt (not the host, as before the upgrade). Every
launch after it gives each agent a token of its own; ``jobs.token`` is no longer read. The
downgrade drops the column: agents launched since the upgrade then cannot report to the
downgraded server (their jobs fail as agents that went silent; new jobs are unaffected).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The columns this revision reads and writes.
_JOBS = sa.table("jobs", sa.column("id", sa.Integer), sa.column("token", sa.String(64)))
_INSTANCES = sa.table("instances", sa.column("job_id", sa.Integer), sa.column("token", sa.String(64)))


def upgrade() -> None:
    op.add_column("instances", sa.Column("token", sa.String(64)))
    op.create_index("ix_instances_token", "instances", ["token"])
    shared = sa.select(_JOBS.c.token).where(_JOBS.c.id == _INSTANCES.c.job_id).scalar_subquery()
    op.get_bind().execute(sa.update(_INSTANCES).values(token=shared))


def downgrade() -> None:
    op.drop_index("ix_instances_token", "instances")
    op.drop_column("instances", "token")
