"""The store's change signal for the console's live pages.

Every write transaction of this server commits through ``Database.engine`` (the agents' reports
included: they arrive over HTTP); a listener on its ``commit`` event bumps a counter and wakes the
coroutines waiting for a change. An open page waits on it through one server-sent-events stream:
no polling, no wake-up while nothing is written (one keep-alive comment every
:data:`KEEPALIVE_SECONDS`).

Writes of other server processes sharing a PostgreSQL database are not seen here: on PostgreSQL the
keep-alive is a change event instead, so a page catches up within that period.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import event

from trainforge.store.db import Database

KEEPALIVE_SECONDS = 25.0
# A burst of commits (a report of many log lines, a scheduler pass) is one event, this long after the first.
COALESCE_SECONDS = 0.25


class ChangeSignal:
    def __init__(self, db: Database) -> None:
        self.version = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: set[asyncio.Future[None]] = set()
        self._closed = False
        self._shared = not db.is_sqlite  # other replicas may write: the idle beat refreshes the pages
        event.listen(db.engine, "commit", self._committed)

    def _committed(self, _conn: Any) -> None:
        """In the writing thread: count the commit, wake the waiters on their event loop."""
        with self._lock:
            self.version += 1
            loop = self._loop if self._waiters else None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def close(self) -> None:
        """End every stream (the server is shutting down); call on the event loop."""
        self._closed = True
        self._wake()

    async def wait(self, seen: int, timeout: float) -> int:
        """The version once it differs from ``seen``, or after ``timeout`` seconds, whichever first."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._loop = loop
            if self.version != seen or self._closed:
                return self.version
            self._waiters.add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(fut)
        return self.version

    async def stream(self, since: int | None = None) -> AsyncIterator[str]:
        """Server-sent events: ``data: <version>`` after each change (coalesced), a comment while idle.
        ``since``: the version the page was served at; a change since then is told at once (none: always)."""
        seen = self.version
        yield f"retry: 2000\ndata: {seen}\n\n" if since != seen else "retry: 2000\n\n"
        while not self._closed:
            now = await self.wait(seen, KEEPALIVE_SECONDS)
            if self._closed:
                return
            if now == seen and not self._shared:
                yield ": idle\n\n"
                continue
            await asyncio.sleep(COALESCE_SECONDS)
            seen = self.version
            yield f"data: {seen}\n\n"
