"""The scheduler's own values of a job become columns of ``jobs``, out of its ``state`` document
(which now holds only members of DescribeTrainingJob): ``_deadline`` -> ``deadline``,
``_deadline_reason`` -> ``deadline_reason``, ``_finishing`` -> ``finishing_hosts`` (a JSON array).
``TrainingEndTime`` was kept twice, in ``state`` and in ``training_end_time``: the column stays.

Existing rows are moved here. Columns are added and dropped in place (no batch mode: rebuilding
``jobs`` on SQLite would drop the name index triggers of 0003); SQLite 3.35+ drops columns.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_COLUMNS = (("deadline", sa.Float), ("deadline_reason", sa.String(32)), ("finishing_hosts", sa.Text))
# Only rows whose text holds one of these can have a key to move (``_`` matches any character).
_MARKS = ('%"_deadline%', '%"_finishing"%', '%"TrainingEndTime"%')
# The columns of ``jobs`` this revision reads and writes (not the store's metadata, which follows
# later revisions).
_JOBS = sa.table("jobs", sa.column("id", sa.Integer), sa.column("state", sa.Text),
                 sa.column("training_end_time", sa.Float), *(sa.column(n, t) for n, t in _COLUMNS))


def upgrade() -> None:
    for name, type_ in _COLUMNS:
        op.add_column("jobs", sa.Column(name, type_))
    c = _JOBS.c
    for rows in _batches(sa.select(c.id, c.state, c.training_end_time)
                         .where(sa.or_(*(c.state.like(m) for m in _MARKS)))):
        _update([_moved_in(*row) for row in rows])


def _moved_in(job_id: int, text: str, end_time: float | None) -> dict[str, Any]:
    state = orjson.loads(text)
    finishing = state.pop("_finishing", None)
    end_in_state = state.pop("TrainingEndTime", None)
    return {
        "b_id": job_id, "deadline": state.pop("_deadline", None),
        "deadline_reason": state.pop("_deadline_reason", None),
        "finishing_hosts": orjson.dumps(finishing).decode() if finishing else None,
        "training_end_time": end_in_state if end_time is None else end_time,
        "state": orjson.dumps(state).decode(),
    }


def downgrade() -> None:
    c = _JOBS.c
    for rows in _batches(sa.select(c.id, c.state, c.training_end_time, c.deadline, c.deadline_reason,
                                   c.finishing_hosts)):
        _update([_moved_out(*row) for row in rows])
    for name, _ in reversed(_COLUMNS):
        op.drop_column("jobs", name)


def _moved_out(job_id: int, text: str, end_time: float | None, deadline: float | None, reason: str | None,
               finishing: str | None) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for key, value in orjson.loads(text).items():
        if key == "TrainingTimeInSeconds" and end_time is not None:
            state["TrainingEndTime"] = end_time
        state[key] = value
    for key, value in (("_deadline", deadline), ("_deadline_reason", reason),
                       ("_finishing", orjson.loads(finishing) if finishing else None)):
        if value is not None:
            state[key] = value
    return {"b_id": job_id, "state": orjson.dumps(state).decode()}


def _batches(stmt: sa.Select[Any], size: int = 2000) -> Iterator[Sequence[Any]]:
    """The rows of ``stmt`` (whose first column is ``jobs.id``) in id order, ``size`` at a time."""
    conn, last = op.get_bind(), 0
    while rows := conn.execute(stmt.where(_JOBS.c.id > last).order_by(_JOBS.c.id).limit(size)).all():
        yield rows
        last = rows[-1][0]


def _update(rows: list[dict[str, Any]]) -> None:
    if rows:
        values: dict[str, Any] = {k: sa.bindparam(k) for k in rows[0] if k != "b_id"}
        stmt = sa.update(_JOBS).where(_JOBS.c.id == sa.bindparam("b_id")).values(**values)
        op.get_bind().execute(stmt, rows)
