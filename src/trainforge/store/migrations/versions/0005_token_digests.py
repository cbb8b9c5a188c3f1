"""``jobs.token`` holds the SHA-256 digest of the agents' token, no longer the token itself: whoever
reads the database (or a backup of it) cannot report for a job nor fetch its role's credentials.

Existing tokens are replaced by their digests here, so the agents running across the upgrade keep
theirs (they present the token; the store looks up its digest). There is no way back to the tokens:
the downgrade leaves the digests, and agents started before the upgrade can no longer report to a
downgraded server (their jobs fail as agents that went silent; new jobs are unaffected).

Revision ID: 0005
Revises: 0004
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The columns of ``jobs`` this revision reads and writes.
_JOBS = sa.table("jobs", sa.column("id", sa.Integer), sa.column("token", sa.String(64)))


def upgrade() -> None:
    conn, last = op.get_bind(), 0
    stmt = sa.update(_JOBS).where(_JOBS.c.id == sa.bindparam("b_id")).values(token=sa.bindparam("b_token"))
    while rows := conn.execute(sa.select(_JOBS.c.id, _JOBS.c.token).where(_JOBS.c.id > last)
                               .order_by(_JOBS.c.id).limit(2000)).all():
        conn.execute(stmt, [{"b_id": job_id, "b_token": _digest(token)} for job_id, token in rows])
        last = rows[-1][0]


def _digest(token: str) -> str:
    """As ``trainforge.store.jobs.token_digest`` does at this revision (a migration is frozen in time)."""
    return hashlib.sha256(token.encode()).hexdigest()


def downgrade() -> None:
    pass  # a digest cannot be turned back into its token (see above)
