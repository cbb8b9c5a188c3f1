"""ListTrainingJobs NameContains: a trigram index of job names, so a rare substring is found without
reading every name. And no job keeps a LastModifiedTime before its CreationTime (see upgrade()).

SQLite (>= 3.34, with FTS5): ``jobs_name_fts``, an external-content FTS5 table over ``jobs.name``
with the ``trigram`` tokenizer (rowid = ``jobs.id``), kept in step with ``jobs`` by triggers, so
every writer of ``jobs`` (the store, a bulk ``INSERT``) fills it without knowing about it.
PostgreSQL: the ``pg_trgm`` extension and a GIN trigram index on ``jobs.name``.

Where neither is available (an older SQLite, FTS5 not compiled in, a PostgreSQL role that may not
create the extension) nothing is created: the store sees that and scans, as before.

Existing rows are indexed here (FTS5 ``rebuild``; ``CREATE INDEX`` reads the table).

A later migration that rebuilds ``jobs`` on SQLite (Alembic batch mode copies the table and drops
the old one) drops these triggers with it: it must create them again.

Revision ID: 0003
Revises: 0002
"""

import logging
import sqlite3

from alembic import op
from sqlalchemy.exc import DBAPIError, OperationalError

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

log = logging.getLogger("trainforge.store")

_SQLITE_UP = [
    ("CREATE VIRTUAL TABLE jobs_name_fts USING fts5(name, content='jobs', content_rowid='id', "
     "tokenize='trigram')"),
    ("CREATE TRIGGER jobs_name_fts_insert AFTER INSERT ON jobs BEGIN "
     "INSERT INTO jobs_name_fts(rowid, name) VALUES (new.id, new.name); END"),
    ("CREATE TRIGGER jobs_name_fts_delete AFTER DELETE ON jobs BEGIN "
     "INSERT INTO jobs_name_fts(jobs_name_fts, rowid, name) VALUES ('delete', old.id, old.name); END"),
    ("CREATE TRIGGER jobs_name_fts_update AFTER UPDATE OF id, name ON jobs BEGIN "
     "INSERT INTO jobs_name_fts(jobs_name_fts, rowid, name) VALUES ('delete', old.id, old.name); "
     "INSERT INTO jobs_name_fts(rowid, name) VALUES (new.id, new.name); END"),
    "INSERT INTO jobs_name_fts(jobs_name_fts) VALUES ('rebuild')",
]


def upgrade() -> None:
    conn = op.get_bind()
    # The store keeps creation_time <= last_modified_time from now on (a LastModifiedTimeBefore filter
    # also bounds the creation time); a job saved while the clock stepped back is brought in line.
    conn.exec_driver_sql("UPDATE jobs SET last_modified_time = creation_time WHERE last_modified_time < creation_time")
    if conn.dialect.name == "sqlite":
        version = tuple(int(p) for p in conn.exec_driver_sql("SELECT sqlite_version()").scalar_one().split("."))
        if version < (3, 34, 0):
            log.warning("SQLite %s has no FTS5 trigram tokenizer (3.34+): NameContains scans",
                        ".".join(map(str, version)))
            return
        try:
            with conn.begin_nested():
                for sql in _SQLITE_UP:
                    conn.exec_driver_sql(sql)
        except (OperationalError, sqlite3.OperationalError) as exc:  # no FTS5 in this build
            log.warning("no FTS5 trigram index (%s): NameContains scans", exc)
        return
    if conn.dialect.name == "postgresql":
        try:
            with conn.begin_nested():
                conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except DBAPIError as exc:  # not installed, or this role may not create it
            log.warning("no pg_trgm extension (%s): NameContains scans", exc.orig)
            return
        op.create_index("ix_jobs_name_trgm", "jobs", ["name"], postgresql_using="gin",
                        postgresql_ops={"name": "gin_trgm_ops"})


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        for trigger in ("jobs_name_fts_insert", "jobs_name_fts_delete", "jobs_name_fts_update"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger}")
        conn.exec_driver_sql("DROP TABLE IF EXISTS jobs_name_fts")
    elif conn.dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_jobs_name_trgm")
