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

Prepared instances (agent/prepared.py): after a request whose spec has a shape, once no request
came for ``WARM_DELAY`` seconds, it forks an idle agent for that shape (at most ``MAX_IDLE``, each
for at most ``IDLE_SECONDS``) that prepares an instance from that spec and waits on a pipe; the
next request of the same shape is written to that pipe instead of forking, and answered with the
idle agent's pid. Closing the pipe (stdin's end, an idle agent replaced or expired) ends it: it
removes its instance and exits.
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

MAX_LINE = 16 * 1024 * 1024
_CLOSE_FDS_UP_TO = 4096
WARM_DELAY = 0.3  # seconds without a request before an instance is prepared (not beside a burst)
MAX_IDLE = 2
IDLE_SECONDS = 600.0


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
        self.idle: dict[str, tuple[int, int, float]] = {}  # shape -> idle agent's pid, its pipe, since
        self.wanted: dict[str, str] = {}  # shape -> the spec to prepare its instance from
        self.quiet_at = 0.0
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
            watched = [self._wake_r] + ([self.requests_fd] if self.open else [])
            timeout = max(0.0, self.quiet_at - time.monotonic()) if self.wanted else 1.0
            try:
                readable, _, _ = select.select(watched, [], [], timeout)
            except InterruptedError:
                readable = []
            if self._wake_r in readable:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
            self._reap()
            if self.requests_fd in readable:
                self._read_requests()
            self._tend_idle()
        return 0

    # -- requests ---------------------------------------------------------------------------------
    def _read_requests(self) -> None:
        try:
            chunk = os.read(self.requests_fd, 1 << 20)
        except InterruptedError:
            return
        if not chunk:
            self.open = False
            self.wanted.clear()
            for shape in list(self.idle):
                self._release_idle(shape)
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
        claimed = self._claim(request)
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
            for shape, (idle_pid, _fd, _since) in list(self.idle.items()):
                if idle_pid == pid:
                    self._release_idle(shape)

    # -- prepared instances (agent/prepared.py) -------------------------------------------------
    def _claim(self, request: dict[str, Any]) -> int | None:
        """Hand ``request`` to the idle agent prepared for its shape: its pid, or None (fork one)."""
        args = request.get("args") or []
        if not isinstance(args, list) or len(args) != 1 or not isinstance(args[0], str):
            return None  # "--finish" (upload and report only) never takes a prepared instance
        from trainforge.agent.prepared import shape_of_file

        shape = shape_of_file(args[0])
        if shape is None:
            return None
        self.wanted[shape] = args[0]
        self.quiet_at = time.monotonic() + WARM_DELAY
        held = self.idle.pop(shape, None)
        if held is None:
            return None
        pid, fd, _since = held
        try:
            data = (json.dumps(request) + "\n").encode()
            while data:
                data = data[os.write(fd, data):]
        except OSError:
            return None
        finally:
            os.close(fd)
        return pid

    def _release_idle(self, shape: str) -> None:
        """The idle agent's pipe closes: it removes its instance and exits."""
        _pid, fd, _since = self.idle.pop(shape)
        os.close(fd)

    def _tend_idle(self) -> None:
        now = time.monotonic()
        for shape, (_pid, _fd, since) in list(self.idle.items()):
            if now - since > IDLE_SECONDS:
                self._release_idle(shape)
        if not self.wanted or now < self.quiet_at or not self.open:
            return
        wanted, self.wanted = self.wanted, {}
        for shape, spec_path in wanted.items():
            if shape in self.idle or not os.path.exists(spec_path):
                continue
            while len(self.idle) >= MAX_IDLE:
                self._release_idle(min(self.idle, key=lambda k: self.idle[k][2]))
            try:
                self._fork_idle(shape, spec_path)
            except OSError as exc:
                print(f"trainforge fork server: cannot prepare an instance: {exc}", file=sys.stderr, flush=True)

    def _fork_idle(self, shape: str, spec_path: str) -> None:
        read_fd, write_fd = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            raise
        if pid == 0:  # the idle agent; never returns
            os.close(write_fd)
            self._become_idle(read_fd, spec_path)
        os.close(read_fd)
        self.children.add(pid)
        self.idle[shape] = (pid, write_fd, time.monotonic())

    def _become_idle(self, read_fd: int, spec_path: str) -> None:
        """An idle agent: prepare an instance, then wait for the request of the job it runs in it."""
        code = 0
        try:
            os.setsid()
            _fresh_signals()
            os.dup2(read_fd, 3)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(4, _CLOSE_FDS_UP_TO)
            from trainforge.agent import prepared

            niced = os.geteuid() == 0  # only root can take the priority back for the job
            if niced:
                os.nice(10)  # beside the jobs that run: preparing waits for an idle CPU
            slot = prepared.prepare(spec_path)
            if niced:
                os.nice(-10)
            line = bytearray()
            while not line.endswith(b"\n"):
                chunk = os.read(3, 1 << 20)
                if not chunk:  # the fork server let it go
                    if slot is not None:
                        slot.close()
                    os._exit(0)
                line += chunk
            os.close(3)
            request = json.loads(line)
            log_fd = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            code = self._run_request(log_fd, request, [str(a) for a in request["args"]], close_fds=False)
        except BaseException:  # noqa: BLE001 - the child must never return into the server loop
            import traceback

            with contextlib.suppress(BaseException):
                traceback.print_exc()
            code = 1
        finally:
            os._exit(code)

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
            _fresh_signals()
            code = self._run_request(log_fd, request, args, close_fds=True)
        except BaseException:  # noqa: BLE001 - the child must never return into the server loop
            import traceback

            with contextlib.suppress(BaseException):
                traceback.print_exc()
        finally:
            os._exit(code)

    @staticmethod
    def _run_request(log_fd: int, request: dict[str, Any], args: list[str], close_fds: bool) -> int:
        """The agent of ``request`` in this process: its stdio, directory, environment, then main."""
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(null)
        if close_fds:
            os.closerange(3, _CLOSE_FDS_UP_TO)
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


def _fresh_signals() -> None:
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
