"""The server's side of the agent fork server (``trainforge.agent.forkserver``).

One fork server per server process, started on demand (again if it died) as ``python -S -c
FORKSERVER_BOOT`` in its own session, with pipes on its stdin and stdout. :meth:`ForkServerClient.launch`
writes one JSON line per agent and reads the answers, in order, so that starting N agents costs
the server N small writes instead of N forks of a large process; several requests are in flight
at once. Closing the client closes the fork server's stdin: it exits once its agents have ended.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


def boot(module: str, call: str) -> str:
    """A ``python -S -c`` program: this package first on sys.path, then ``sys.exit(<call>)`` from
    ``module`` (site-packages are loaded on demand, see trainforge.sitepaths)."""
    name = call.split("(", 1)[0]
    return f"import sys; sys.path.insert(0, {_PACKAGE_PARENT!r}); from {module} import {name}; sys.exit({call})"


def compile_package() -> threading.Thread:
    """This package's bytecode written into its ``__pycache__`` directories, in a thread: an agent
    started by itself (Slurm's ``srun``; no fork server preloads it there) would otherwise compile
    every module it imports on each start where the environment says ``PYTHONDONTWRITEBYTECODE``
    (half of its imports' CPU time). Where the directories cannot be written, nothing happens."""
    import compileall

    def work() -> None:
        compileall.compile_dir(os.path.join(_PACKAGE_PARENT, "trainforge"), quiet=2)

    thread = threading.Thread(target=work, name="compile-package", daemon=True)
    thread.start()
    return thread


def child_environment() -> dict[str, str]:
    """The environment of the processes the backend starts: the server's, without PYTHONSTARTUP."""
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    return env


def agent_args(spec_path: Path, finish: bool) -> list[str]:
    """The agent's command-line arguments (``--finish``: upload and report only)."""
    return [*(["--finish"] if finish else []), str(spec_path)]


FORKSERVER_BOOT = boot("trainforge.agent.forkserver", "run()")
READY_TIMEOUT = 60.0  # its start under load (an interpreter and the agent's imports)
ANSWER_TIMEOUT = 30.0  # per answer; a fork takes milliseconds
# Requests written before their answers are read: the answers (~70 bytes each) must fit in the pipe
# while the fork server works, or it would block writing them while we block writing requests.
BATCH = 100


class ForkServerError(OSError):
    """The fork server could not start an agent (or did not answer)."""


class ForkServerUnavailable(ForkServerError):
    """No fork server could take the request: nothing was started for it."""


class ForkServerClient:
    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._buffer = bytearray()
        self._next_id = 0
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> None:
        """Start the fork server if it is not running (does not wait until it is ready)."""
        with self._lock:
            self._ensure_started()

    def launch(self, requests: list[tuple[list[str], Path, Path]]) -> list[dict[str, Any] | OSError]:
        """Start one agent per ``(args, log_path, cwd)``; a handle or the error, per request."""
        env = child_environment()
        results: list[dict[str, Any] | OSError] = []
        with self._lock:
            for i in range(0, len(requests), BATCH):
                results += self._launch_batch([{"args": args, "log": str(log), "cwd": str(cwd), "env": env}
                                               for args, log, cwd in requests[i:i + BATCH]])
        return results

    def _launch_batch(self, requests: list[dict[str, Any]]) -> list[dict[str, Any] | OSError]:
        for attempt in (1, 2):
            try:
                self._ensure_started()
                self._wait_ready()
                ids = self._send(requests)
                break
            except BrokenPipeError:
                # It died before reading anything of ours: nothing was started, start it again.
                self._discard()
                if attempt == 2:
                    return [ForkServerUnavailable("the agent fork server is not running")] * len(requests)
            except (ForkServerError, OSError) as exc:  # it could not start or never became ready
                self._discard()
                return [ForkServerUnavailable(f"the agent fork server is not available: {exc}")] * len(requests)
        results: list[dict[str, Any] | OSError] = []
        for ident in ids:
            try:
                answer = self._read_answer()
                if answer.get("id") != ident:
                    raise ForkServerError(f"the fork server answered out of order: {answer!r}")
            except ForkServerError as exc:
                self._discard()  # what it started meanwhile runs on unknown to us; start a new one
                return results + [exc] * (len(ids) - len(results))
            if answer.get("error"):
                results.append(ForkServerError(str(answer["error"])))
            else:
                results.append({"pid": int(answer["pid"]), "start_ticks": answer.get("start_ticks")})
        return results

    def close(self) -> None:
        """Let the fork server go: it starts nothing more and exits once its agents have ended."""
        with self._lock:
            proc, self._proc = self._proc, None
            self._ready = False
            self._buffer.clear()
            if proc is not None and proc.stdin is not None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
                if proc.stdout is not None:
                    proc.stdout.close()
                proc.poll()

    def reap(self) -> None:
        if self._proc is not None:
            self._proc.poll()

    # -- internals ----------------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        if self._proc is not None:
            self._discard()
        self._proc = subprocess.Popen(
            [sys.executable, "-S", "-c", FORKSERVER_BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            start_new_session=True, close_fds=True, env=child_environment(), cwd="/", bufsize=0)
        self._ready = False
        self._buffer.clear()

    def _wait_ready(self) -> None:
        if self._ready:
            return
        answer = self._read_answer(READY_TIMEOUT)
        if not answer.get("ready"):
            raise ForkServerError(f"the fork server did not start: {answer!r}")
        self._ready = True

    def _send(self, requests: list[dict[str, Any]]) -> list[int]:
        assert self._proc is not None and self._proc.stdin is not None
        ids, lines = [], []
        for request in requests:
            self._next_id += 1
            ids.append(self._next_id)
            lines.append(json.dumps({"id": self._next_id, **request}, separators=(",", ":")))
        data = memoryview(("\n".join(lines) + "\n").encode())
        while data:  # an unbuffered pipe may take part of it (a signal during a long write)
            data = data[self._proc.stdin.write(data) or 0:]
        return ids

    def _read_answer(self, timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[:end + 1]
                try:
                    answer = json.loads(line)
                except ValueError as exc:
                    raise ForkServerError(f"the fork server answered garbage: {line[:200]!r}") from exc
                if not isinstance(answer, dict):
                    raise ForkServerError(f"the fork server answered garbage: {line[:200]!r}")
                return answer
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ForkServerError(f"the fork server did not answer within {timeout:g} s")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise ForkServerError("the fork server exited")
                self._buffer += chunk

    def _discard(self) -> None:
        """Give up on the current fork server (it is dead or confused): kill it, not its agents."""
        proc, self._proc = self._proc, None
        self._ready = False
        self._buffer.clear()
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)  # only the fork server: agents are in their own sessions
            except ProcessLookupError:
                pass
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
