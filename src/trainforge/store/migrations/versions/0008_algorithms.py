"""Algorithm resources (CreateAlgorithm, DescribeAlgorithm, ListAlgorithms, DeleteAlgorithm): one row
per algorithm, its CreateAlgorithm request kept as a JSON document.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "algorithms",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("arn", sa.String(256), nullable=False),
        sa.Column("creation_time", sa.Float, nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.UniqueConstraint("account_id", "region", "name", name="uq_algorithms_name"),
    )
    op.create_index("ix_algorithms_created", "algorithms", ["account_id", "region", "creation_time", "name"])


def downgrade() -> None:
    op.drop_index("ix_algorithms_created", "algorithms")
    op.drop_table("algorithms")
