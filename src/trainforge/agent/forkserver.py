"""The agent fork server: a small process with the agent's modules imported that forks one agent
per instance, so an agent starts without an interpreter start and its imports (docs/INTERNALS.md).

``python -S -c FORKSERVER_BOOT`` (see ``trainforge.backends.forkserver``), started by the local
backend with pipes on stdin / stdout and its own session. Requests are JSON lines on stdin::

    {"id": 1, "args": ["--finish", "/.../spec.json"], "log": "/.../agent.log", "cwd": "/...",
     "env": {"PATH": "...", ...}}

and each is answered by one JSON line on stdout, in order: ``{"id": 1, "pid": 1234,
"start_ticks": 5678}`` or ``{"id": 1, "error": "..."}``. The first line it writes is
``{"ready": true}``, once the agent's modules are imported.

Each agent is a child of the fork server that calls ``setsid`` at once: it is detached from the
server and from the fork server (its own session and process group, stdin ``/dev/null``,
stdout/stderr appended to the instance's ``agent.log``), with the signal dispositions and mask of
a freshly started interpreter, and runs ``trainforge.agent.main.main(args)`` as ``python -S -c
AGENT_BOOT args`` would. The fork server reaps its children (no zombies) and neither signals nor
waits for them otherwise: when its stdin closes (the server exited or died) it accepts nothing
more, stays only as long as it has living children to reap, then exits. Killing it kills no agent
(they are in their own sessions; init adopts them).

It stays single-threaded: the only threads an agent has are the ones it starts after the fork.

It also keeps the idle agents of prepared instances (:mod:`trainforge.agent.idle`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import sys
import time
from typing import Any

from trainforge.agent.idle import IdleAgents

MAX_LINE = 16 * 1024 * 1024
CLOSE_FDS_UP_TO = 4096


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks (/proc stat field 22): tells it from a recycled PID."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2:].split()[19])


def _preload() -> None:
    """Import what an agent imports on its way to the user's code, once, before any fork."""
    # socket.create_connection encodes the host name (idna); the agent's last reports (ascii, latin-1)
    import encodings.ascii
    import encodings.idna
    import encodings.latin_1  # noqa: F401
    import gzip  # noqa: F401
    import hmac  # noqa: F401  (the sandbox's credentials endpoint, sandbox/relay.py)
    import http.server  # noqa: F401  (idem: ~10 ms of imports in every agent otherwise)
    import subprocess  # noqa: F401
    import tarfile  # noqa: F401  (the leader's model.tar.gz)
    import tempfile  # noqa: F401
    import traceback  # noqa: F401
    import urllib.parse  # noqa: F401

    import trainforge.agent.main
    import trainforge.agent.outputs
    import trainforge.agent.prepared
    import trainforge.agent.transport
    import trainforge.data.owner  # the sandbox: who owns what the data plane writes
    import trainforge.data.volume  # every job with VolumeSizeInGB polls it
    import trainforge.images.script_mode  # every script-mode job plans its command (agent/direct.py)
    import trainforge.sandbox.network  # noqa: F401  (the sandbox's network; its relays import http, ssl)
    from trainforge.agent.isolation import warm_up
    from trainforge.images import pull  # noqa: F401  (a container image's job looks its cache up)

    warm_up()


class ForkServer:
    def __init__(self, requests_fd: int = 0, answers_fd: int = 1) -> None:
        self.requests_fd = requests_fd
        self.answers_fd = answers_fd
        self.children: set[int] = set()
        self.idle = IdleAgents(self)
        self.open = True
        self._buffer = bytearray()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)

    def serve(self) -> int:
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select() through the wakeup fd
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of the server's terminal: EOF ends us
        self._answer({"ready": True, "pid": os.getpid()})
        while self.open or self.children:
            watched = [self._wake_r] + ([self.requests_fd] if self.open else []) + self.idle.watched()
            try:
                readable, _, _ = select.select(watched, [], [], self.idle.timeout())
            except InterruptedError:
                readable = []
            if self._wake_r in readable:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
            self._reap()
            self.idle.tend(readable, self.open)  # first: an agent ready now takes a request read now
            if self.requests_fd in readable:
                self._read_requests()
        return 0

    # -- requests ---------------------------------------------------------------------------------
    def _read_requests(self) -> None:
        try:
            chunk = os.read(self.requests_fd, 1 << 20)
        except InterruptedError:
            return
        if not chunk:
            self.open = False
            self.idle.release_all()
            return
        self._buffer += chunk
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    self._buffer.clear()
                return
            line = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            if line.strip():
                self._handle(line)

    def _handle(self, line: bytes) -> None:
        try:
            request = json.loads(line)
            ident = request.get("id")
        except ValueError as exc:
            self._answer({"id": None, "error": f"bad request: {exc}"})
            return
        claimed = self.idle.claim(request)
        if claimed is not None:
            self._answer({"id": ident, "pid": claimed, "start_ticks": start_ticks(claimed)})
            return
        try:
            pid = self._fork(request)
        except OSError as exc:
            self._answer({"id": ident, "error": f"{type(exc).__name__}: {exc}"})
            return
        self.children.add(pid)
        self._answer({"id": ident, "pid": pid, "start_ticks": start_ticks(pid)})

    def _answer(self, answer: dict[str, Any]) -> None:
        data = (json.dumps(answer) + "\n").encode()
        try:
            while data:
                data = data[os.write(self.answers_fd, data):]
        except (BrokenPipeError, OSError):
            self.open = False  # nobody listens any more

    def _reap(self) -> None:
        while self.children:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.idle.reaped(pid)

    # -- one agent --------------------------------------------------------------------------------
    def _fork(self, request: dict[str, Any]) -> int:
        args = [str(a) for a in request["args"]]
        log_fd = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            pid = os.fork()
            if pid == 0:  # the agent; never returns
                self._become_agent(log_fd, request, args)
        finally:
            os.close(log_fd)
        return pid

    def _become_agent(self, log_fd: int, request: dict[str, Any], args: list[str]) -> None:
        code = 1
        try:
            os.setsid()
            fresh_signals()
            code = run_request(log_fd, request, args, close_fds=True)
        except BaseException:  # noqa: BLE001 - the child must never return into the server loop
            import traceback

            with contextlib.suppress(BaseException):
                traceback.print_exc()
        finally:
            os._exit(code)


def run_request(log_fd: int, request: dict[str, Any], args: list[str], close_fds: bool) -> int:
    """The agent of ``request`` in this process: its stdio, directory, environment, then main."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null)
    if close_fds:
        os.closerange(3, CLOSE_FDS_UP_TO)
    elif log_fd > 2:
        os.close(log_fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.chdir(request.get("cwd") or "/")
    env = request.get("env")
    if isinstance(env, dict):
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in env.items()})
    sys.argv = ["-c", *args]
    return _run_agent(args)


def fresh_signals() -> None:
    """What a freshly started interpreter has (Python ignores SIGPIPE and SIGXFSZ itself)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _run_agent(args: list[str]) -> int:
    """``sys.exit(main(args))`` and the interpreter's exit: non-daemon threads, atexit, flush."""
    import atexit
    import threading

    from trainforge.agent.main import main

    try:
        result: Any = main(args)
    except SystemExit as exc:
        result = exc.code
    code = result if isinstance(result, int) else (0 if result is None else 1)
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return code


def run() -> int:
    started = time.perf_counter()
    _preload()
    gc.collect()
    gc.freeze()  # what is imported now stays shared with every agent (no copy-on-write by the GC)
    server = ForkServer()
    print(f"trainforge fork server {os.getpid()}: ready in {1000 * (time.perf_counter() - started):.0f} ms",
          file=sys.stderr, flush=True)
    return server.serve()
