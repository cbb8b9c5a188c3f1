"""Engine creation and migrations: SQLite in WAL mode by default, PostgreSQL by URL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Select, create_engine, event
from sqlalchemy.pool import QueuePool

MIGRATIONS = Path(__file__).with_name("migrations")


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 (the driver we ship), not psycopg2."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Database:
    """One engine plus the write discipline the store needs.

    SQLite allows one writer: writes are serialised by a process lock and run in ``BEGIN
    IMMEDIATE`` so a read-modify-write never interleaves. PostgreSQL uses row locks
    (``SELECT ... FOR UPDATE``) so several API replicas can share one database.

    Reads on SQLite go through a second engine on the same file that issues no ``BEGIN``: each
    statement is its own implicit transaction (one consistent WAL snapshot per statement), which
    saves two statements per read.
    """

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self._write_lock = threading.RLock()
        if self.is_sqlite:
            path = self.url.split("///", 1)[1] if "///" in self.url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                self.url,
                poolclass=QueuePool,
                pool_size=8,
                max_overflow=16,
                connect_args={"check_same_thread": False, "timeout": 30, "isolation_level": None},
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
            self.read_engine = self.engine  # an in-memory database is private to its connections
            self._path = path if path and path != ":memory:" else None
            if self._path:
                self.read_engine = create_engine(
                    self.url,
                    poolclass=QueuePool,
                    pool_size=8,
                    max_overflow=16,
                    connect_args={"check_same_thread": False, "timeout": 30, "isolation_level": None},
                )
                event.listen(self.read_engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(self.url, pool_size=10, max_overflow=20, pool_pre_ping=True)
            self.read_engine = self.engine
            self._path = None
        # SQLite: one read connection per thread for prepared reads (no pool round trip per read); it
        # is closed when its thread ends (worker threads come and go: nothing else may hold it).
        self._local = threading.local()

    def migrate(self, revision: str = "head", *, down: bool = False) -> None:
        """Upgrade the schema to ``revision`` (with ``down``: downgrade it to ``revision``)."""
        from alembic import command
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self._write_lock, self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(cfg, revision)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.read_engine.connect() as conn:
            yield conn

    def prepare(self, stmt: Select[Any]) -> Prepared:
        return Prepared(self, stmt)

    @contextmanager
    def raw_read(self) -> Iterator[Any]:
        """A DBAPI connection for one read: this thread's own on a SQLite file, else one from the pool."""
        if self._path:
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
                _sqlite_pragmas(conn, None)
                self._local.conn = conn
            yield conn  # autocommit: each statement reads its own WAL snapshot
            return
        conn = self.read_engine.raw_connection()
        try:
            yield conn
        finally:
            conn.close()  # back to the pool (which rolls back: the end of the read transaction)

    def read_version(self) -> tuple[int, int] | None:
        """A value that changes whenever any other connection has committed to the database since
        this thread's last call: SQLite's ``PRAGMA data_version`` on this thread's read connection
        (which never writes), tagged with that connection. None where there is no such thing
        (PostgreSQL, in-memory SQLite): nothing read may then be reused."""
        if not self._path:
            return None
        with self.raw_read() as conn:
            return id(conn), conn.execute("PRAGMA data_version").fetchone()[0]

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that may read then write; committed on success."""
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    def for_update(self, stmt):  # type: ignore[no-untyped-def]
        """Lock the selected rows until the transaction ends (no-op on SQLite: the lock is global)."""
        return stmt if self.is_sqlite else stmt.with_for_update()

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()


class Prepared:
    """A SELECT compiled once for the engine's dialect and run on a DBAPI cursor.

    For the hottest reads (a job by name, id or token): it skips the per-call expression building,
    compilation cache lookup, pool checkout and result processing of SQLAlchemy Core (about 170 µs
    of 200 on SQLite), which is only correct for columns the driver returns as they are (numbers,
    strings).
    """

    def __init__(self, db: Database, stmt: Select[Any]) -> None:
        self.db = db
        self.compiled = stmt.compile(dialect=db.read_engine.dialect)
        self.sql = str(self.compiled)
        self.columns = [str(c.key) for c in stmt.selected_columns]

    def first(self, **values: Any) -> dict[str, Any] | None:
        params = self.compiled.construct_params(values)
        args: Sequence[Any] | Mapping[str, Any] = (
            [params[k] for k in self.compiled.positiontup or ()] if self.compiled.positional else params)
        with self.db.raw_read() as conn:
            cur = conn.cursor()
            try:
                cur.execute(self.sql, args)
                row = cur.fetchone()
            finally:
                cur.close()
        return dict(zip(self.columns, row)) if row is not None else None


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    # A page cache of up to 32 MiB per connection (SQLite's default is 2 MiB): the list indexes of
    # 100,000 jobs stay in it instead of being reread from the file (a syscall per page). Only the
    # connections that list grow that far: the server's RSS stays below 200 MB at 100,000 jobs
    # (bench/api.py). mmap would avoid the reads too, but counts the whole file in the RSS.
    cur.execute("PRAGMA cache_size=-32768")
    cur.close()


def _sqlite_begin(conn) -> None:  # type: ignore[no-untyped-def]
    conn.exec_driver_sql("BEGIN")
