"""The trigram index of job names (migration 0003), for ListTrainingJobs' NameContains.

A substring filter cannot use a B-tree index: without this, a rare NameContains walks the whole sort
index for every page. On SQLite the index is the FTS5 table ``jobs_name_fts`` (``trigram``
tokenizer), asked here for the ids of the jobs whose names hold the substring; the store then reads
only those rows. On PostgreSQL it is a GIN ``gin_trgm_ops`` index on ``jobs.name``, which the planner
uses for the ``ILIKE`` filter on its own (it has statistics to tell a rare substring from a common one).
"""

from __future__ import annotations

from sqlalchemy import Connection

from trainforge.store.db import Database

# A trigram index cannot look up a shorter substring (and short ones match many names anyway).
MIN_LENGTH = 3
# Above this many matching names (1 % of 100,000 jobs) a scan of the sort index fills each page after
# about 100 / 1 % = 10,000 entries, while reading and sorting every match would cost more per page.
MAX_CANDIDATES = 1000

_CANDIDATES = "SELECT rowid FROM jobs_name_fts WHERE jobs_name_fts MATCH ? LIMIT ?"


class NameIndex:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._present: bool | None = None

    def present(self, conn: Connection) -> bool:
        """Whether migration 0003 could create the SQLite index (FTS5 with trigrams is optional)."""
        if self._present is None:
            self._present = conn.exec_driver_sql(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs_name_fts'").first() is not None
        return self._present

    def candidates(self, conn: Connection, substring: str) -> list[int] | None:
        """Ids of every job (of any account) whose name holds ``substring`` ignoring case: a superset
        of the NameContains matches (FTS5 folds case beyond ASCII; the caller still applies its LIKE).

        None when the index cannot narrow the search: not SQLite (PostgreSQL's index is used by the
        planner), no index, a substring shorter than a trigram, or more than MAX_CANDIDATES matches.
        """
        if not self.db.is_sqlite or len(substring) < MIN_LENGTH or not self.present(conn):
            return None
        phrase = '"' + substring.replace('"', '""') + '"'  # one FTS5 string: every character literal
        ids = [r[0] for r in conn.exec_driver_sql(_CANDIDATES, (phrase, MAX_CANDIDATES + 1))]
        return ids if len(ids) <= MAX_CANDIDATES else None
