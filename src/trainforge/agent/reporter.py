"""Reports to the control plane: numbered events, batched, retried until acknowledged.

``POST <control_url>/_trainforge/agent/v1/report`` (docs/INTERNALS.md). Events are numbered from 0
per (job, attempt, host) in the order :meth:`Reporter.emit` is called; one sender thread posts them
in batches, one request in flight, and keeps every event until an answer's ``next_seq`` passes it.
While the control plane is unreachable it retries with backoff (50 ms doubling to 1 s) for as
long as it is asked to; with nothing to send it posts an empty heartbeat every 2 s (the first 2 s
after it starts: its connection is made at once, but nothing is posted before there is news).
Log lines coming within :data:`LOG_LINGER_SECONDS` of the last report wait to go with the next one
(any other event, a flush and the end send at once): a process printing a line every 30 ms cost a
report — a request and a store transaction — per line, whose CPU preempted the training's own
threads (one report per 100 XGBoost rounds, 107 before).

Unacknowledged events are appended to ``instance_dir/agent-outbox.jsonl`` before they are first
posted (``{"seq": n, "event": {...}}`` lines, plus ``{"ack": next_seq}`` lines as answers arrive),
so an agent started again on the same instance directory resends them first, and the control
plane can read what an agent that died never delivered.

Only the standard library is imported, and little of it: the sender thread posts through
``transport.py`` (``socket`` only), so it can start at once and run beside the main thread
without slowing the start of the user's code.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from trainforge.agent.endpoints import REPORT_PATH
from trainforge.log_streams import PLATFORM_KIND

NOTICE_MARK = "[trainforge] "
HEARTBEAT_SECONDS = 2.0
LOG_LINGER_SECONDS = 0.25
MAX_BATCH_EVENTS = 2000
MAX_BATCH_BYTES = 2 * 1024 * 1024
BACKOFF_MIN, BACKOFF_MAX = 0.05, 1.0
REQUEST_TIMEOUT = 15.0
MAX_PENDING_BYTES = 256 * 1024 * 1024


def _size(event: dict[str, Any]) -> int:
    return len(event.get("message") or "") + 100


class Reporter:
    def __init__(self, spec: dict[str, Any], outbox_path: str | None,
                 on_stop: Callable[[str], None] | None = None,
                 on_gone: Callable[[], None] | None = None):
        self._url = spec["control_url"]
        self._path = urlsplit(self._url).path.rstrip("/") + REPORT_PATH
        self._token = spec["token"]
        self._host, self._attempt = spec["host"], spec.get("attempt", 1)
        self._job = spec.get("job_arn")  # the job the reports name (the token must be of it)
        self._outbox_path = outbox_path
        self._on_stop, self._on_gone = on_stop, on_gone
        self._cond = threading.Condition()
        self._pending: list[tuple[int, dict[str, Any]]] = []  # (seq, event), unacknowledged
        self._pending_bytes = 0
        self._next_seq = 0  # number of the next event emitted
        self._urgent_upto = 0  # events below this number go without lingering (not log lines; flushed)
        self._persisted = 0  # events below this number are in the outbox
        self._closing = False
        self._abandoned = False
        self._failing = False  # the last report attempt failed
        self._stopped = False
        self._conn: Any = None
        self.gone = False
        self.stop_reason: str | None = None
        self.last_error: str | None = None
        self.delivered_once = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reporter", daemon=True)
        if outbox_path:
            self._load_outbox(outbox_path)

    # -- producer side ------------------------------------------------------------------------------
    def emit(self, event: dict[str, Any]) -> int:
        """Queue an event. A log line waits while more than ``MAX_PENDING_BYTES`` of log lines are
        unacknowledged (a long outage of the control plane under a flood of output): the training
        process then blocks on its full pipe instead of the agent's memory growing without bound."""
        event.setdefault("time", time.time())
        size = _size(event)
        with self._cond:
            if event.get("type") == "log":
                while (self._pending_bytes > MAX_PENDING_BYTES and self._thread.is_alive()
                       and not self._closing and not self.gone):
                    self._cond.wait(1.0)
            seq = self._next_seq
            self._next_seq += 1
            if event.get("type") != "log":
                self._urgent_upto = self._next_seq
            self._pending.append((seq, event))
            self._pending_bytes += size
            self._cond.notify_all()
        return seq

    def log(self, message: str, stream: str = "stdout", when: float | None = None,
            metrics: list[list[Any]] | None = None) -> int:
        """A line of the algorithm's output, as its CloudWatch event shows it (agent/logtext.py), with
        the metric samples read from it (``[[name, value], ...]``, agent/metrics.py)."""
        event: dict[str, Any] = {"type": "log", "time": when or time.time(), "stream": stream, "message": message}
        if metrics:
            event["metrics"] = metrics
        return self.emit(event)

    def notice(self, message: str) -> int:
        """A line of trainforge's own (not the algorithm's): it goes to the instance's trainforge
        stream (log_streams.py), marked ``[trainforge]``."""
        if not message.startswith(NOTICE_MARK):
            message = NOTICE_MARK + message
        return self.emit({"type": "log", "time": time.time(), "stream": PLATFORM_KIND, "message": message})

    def status(self, status: str, message: str) -> int:
        return self.emit({"type": "status", "status": status, "message": message, "time": time.time()})

    def start(self) -> None:
        self._thread.start()

    def unacknowledged(self) -> int:
        with self._cond:
            return len(self._pending)

    def flush(self, until: float) -> bool:
        """Wait until every event emitted so far is acknowledged (True) or ``until`` passes."""
        with self._cond:
            target = self._urgent_upto = self._next_seq
            self._cond.notify_all()
            while self._pending and self._pending[0][0] < target and not self.gone:
                remaining = until - time.time()
                if remaining <= 0 or self._abandoned or self._outbox_removed():
                    return False
                self._cond.wait(min(remaining, 0.5))
            return not self.gone or not self._pending

    def _outbox_removed(self) -> bool:
        """The instance's directory is gone (its data directory was removed): nothing will ever read
        the outbox, so nothing is gained by waiting to deliver (a restarted control plane reads it)."""
        path = self._outbox_path
        if not path:
            return False
        return not os.path.isdir(os.path.dirname(path))

    def abandon_if_failing(self) -> bool:
        """Give up waiting in :meth:`flush` when the last report failed (the control plane is
        unreachable); what is unacknowledged stays in the outbox. Returns whether it gave up."""
        with self._cond:
            if self._failing:
                self._abandoned = True
                self._cond.notify_all()
            return self._abandoned

    def close(self, until: float) -> bool:
        ok = self.flush(until)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._persist_pending()
        return ok

    # -- sender thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = BACKOFF_MIN
        # The connection is made at once, while the main thread prepares the instance, so that the
        # first status reaches the control plane right away; nothing is posted before there is
        # something to say (an empty report costs the control plane a transaction): the first
        # heartbeat comes HEARTBEAT_SECONDS from now.
        last_post = time.time()
        self._connect()
        while True:
            persist_only = False  # lingering lines go to the outbox at once: an agent killed meanwhile loses none
            with self._cond:
                while not self._closing and not self.gone:
                    if self._pending:
                        wait = self._linger(last_post)
                        if wait <= 0:
                            break
                        if self._pending[-1][0] >= self._persisted:
                            persist_only = True
                            break
                        self._cond.wait(wait)
                        continue
                    wait = last_post + HEARTBEAT_SECONDS - time.time()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._closing or self.gone:
                    return
                if not persist_only:
                    batch = self._batch()
                    first = batch[0][0] if batch else self._next_seq
            self._persist_pending()
            if persist_only:
                continue
            try:
                answer = self._post(first, [e for _, e in batch])
            except _Gone:
                with self._cond:
                    self.gone = True
                    self._cond.notify_all()
                if self._on_gone:
                    self._on_gone()
                return
            except Exception as exc:  # noqa: BLE001 - unreachable, 5xx, garbage: retry
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._failing = True
                self._close_conn()
                with self._cond:
                    self._cond.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_MIN
            self._failing = False
            last_post = time.time()
            self.delivered_once.set()
            self._acknowledge(answer)

    def _linger(self, last_post: float) -> float:
        """How long the pending events may still wait for more (under the lock): only log lines,
        within LOG_LINGER_SECONDS of the last report, short of a full batch."""
        if (self._pending[0][0] < self._urgent_upto or self._pending_bytes >= MAX_BATCH_BYTES
                or len(self._pending) >= MAX_BATCH_EVENTS):
            return 0.0
        return last_post + LOG_LINGER_SECONDS - time.time()

    def _batch(self) -> list[tuple[int, dict[str, Any]]]:
        batch: list[tuple[int, dict[str, Any]]] = []
        size = 0
        for item in self._pending:
            if len(batch) >= MAX_BATCH_EVENTS or (batch and size >= MAX_BATCH_BYTES):
                break
            batch.append(item)
            size += _size(item[1])
        return batch

    def _acknowledge(self, answer: dict[str, Any]) -> None:
        next_seq = answer.get("next_seq")
        stop = answer.get("stop")
        if isinstance(next_seq, int):
            self._append_outbox([{"ack": next_seq}])  # before flush() can see the events gone
        with self._cond:
            if isinstance(next_seq, int):
                k = 0
                while k < len(self._pending) and self._pending[k][0] < next_seq:
                    self._pending_bytes -= _size(self._pending[k][1])
                    k += 1
                del self._pending[:k]
            self._cond.notify_all()
        if stop and not self._stopped:
            self._stopped = True
            self.stop_reason = str(stop)
            if self._on_stop:
                self._on_stop(str(stop))

    def _connect(self) -> None:
        """Open the connection the reports go through (a failure is left to the first post)."""
        from trainforge.agent.transport import Connection  # in the sender thread: socket only

        if self._conn is None:
            self._conn = Connection(self._url, REQUEST_TIMEOUT)
        try:
            self._conn.connect()
        except OSError as exc:
            self.last_error = f"connecting: {exc}"

    def _post(self, seq: int, events: list[dict[str, Any]]) -> dict[str, Any]:
        from trainforge.agent.transport import Connection

        claims = {"job": self._job} if self._job else {}
        body = json.dumps({**claims, "host": self._host, "attempt": self._attempt, "seq": seq, "events": events},
                          separators=(",", ":")).encode()
        if self._conn is None:
            self._conn = Connection(self._url, REQUEST_TIMEOUT)
        status, data = self._conn.post(self._path, body, {
            "Authorization": f"Bearer {self._token}", "Content-Type": "application/json"})
        if status in (401, 403, 404):
            raise _Gone()
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:200]!r}")
        answer = json.loads(data or b"{}")
        if not isinstance(answer, dict):
            raise TypeError("the answer is not a JSON object")
        return answer

    def _close_conn(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError as exc:
                self.last_error = f"closing: {exc}"
            self._conn = None

    # -- outbox -------------------------------------------------------------------------------------
    def _persist_pending(self) -> None:
        with self._cond:
            new = [(s, e) for s, e in self._pending if s >= self._persisted]
            if new:
                self._persisted = new[-1][0] + 1
        if new:
            self._append_outbox([{"seq": s, "event": e} for s, e in new])

    def _append_outbox(self, records: list[dict[str, Any]]) -> None:
        if not self._outbox_path:
            return
        try:
            with open(self._outbox_path, "a", encoding="utf-8") as f:
                f.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
        except OSError as exc:  # a full disk must not stop the reports themselves
            print(f"trainforge agent: cannot write the outbox: {exc}", file=sys.stderr)

    def _load_outbox(self, path: str) -> None:
        if not os.path.exists(path):
            return
        events: dict[int, dict[str, Any]] = {}
        acked = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a torn last line
                if "ack" in record:
                    acked = max(acked, int(record["ack"]))
                elif "seq" in record:
                    events[int(record["seq"])] = record["event"]
        if events:
            self._next_seq = max(events) + 1
            self._persisted = self._next_seq
        self._next_seq = max(self._next_seq, acked)
        self._pending = [(s, events[s]) for s in sorted(events) if s >= acked]
        self._pending_bytes = sum(_size(e) for _, e in self._pending)


class _Gone(Exception):
    """401/404: the job is gone; 403: the control plane refuses this agent's reports (its job or
    its instance has ended, or it was launched again)."""
