"""The fork server's idle agents: each prepares an instance (agent/prepared.py) and waits for its job.

After a request whose spec has a shape (:func:`trainforge.agent.prepared.shape`), once no request
came for ``WARM_DELAY`` seconds (after a burst, more than ``BURST`` requests in the last second, that
times their number: 5 s after 100 agents started at once, which preparing beside would slow), the fork
server forks an idle agent for that shape from that spec: at most ``MAX_IDLE`` of them (the oldest
let go for a new shape), each for at most ``IDLE_SECONDS``. An idle agent talks to the fork server
over a socket pair: it writes one byte once its instance is ready; the fork server writes it the
request of the next job of its shape (instead of forking an agent: the answer names the idle
agent's pid), or closes the socket to let it go (stdin's end, replaced, expired), and it then
removes what it prepared and exits. A request that finds no ready agent of its shape gets a forked
agent as always. An idle agent that dies (killed) is found by the reaping: what it left is swept.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from typing import Any

WARM_DELAY = 0.05  # seconds without a request before an instance is prepared
BURST = 4  # more requests than this in the last second: WARM_DELAY per request
MAX_QUIET = 10.0
MAX_IDLE = 2
IDLE_SECONDS = 600.0


class _Idle:
    __slots__ = ("pid", "ready", "since", "sock")

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid, self.sock, self.since, self.ready = pid, sock, time.monotonic(), False


class IdleAgents:
    def __init__(self, server: Any) -> None:
        self.server = server  # the ForkServer: its children, its forked agents' set-up
        self.idle: dict[str, _Idle] = {}  # shape -> its idle agent
        self.wanted: dict[str, str] = {}  # shape -> the spec to prepare its instance from
        self.quiet_at = 0.0
        self.recent: list[float] = []  # when the requests of the last second came

    # -- the fork server's loop -----------------------------------------------------------------
    def watched(self) -> list[socket.socket]:
        return [agent.sock for agent in self.idle.values() if not agent.ready]

    def timeout(self) -> float:
        return max(0.0, self.quiet_at - time.monotonic()) if self.wanted else 1.0

    def tend(self, readable: list[Any], accepting: bool) -> None:
        for shape, agent in list(self.idle.items()):
            if agent.sock in readable:
                try:
                    agent.ready = agent.sock.recv(16) != b""
                except OSError:
                    agent.ready = False
                if not agent.ready:  # it could not prepare its instance, or died
                    self.release(shape)
            elif time.monotonic() - agent.since > IDLE_SECONDS:
                self.release(shape)
        if not self.wanted or time.monotonic() < self.quiet_at or not accepting:
            return
        wanted, self.wanted = self.wanted, {}
        for shape, spec_path in wanted.items():
            if shape in self.idle or not os.path.exists(spec_path):
                continue
            while len(self.idle) >= MAX_IDLE:
                self.release(min(self.idle, key=lambda k: self.idle[k].since))
            try:
                self._fork(shape, spec_path)
            except OSError as exc:
                print(f"trainforge fork server: cannot prepare an instance: {exc}", file=sys.stderr, flush=True)

    def claim(self, request: dict[str, Any]) -> int | None:
        """Hand ``request`` to the ready idle agent of its shape: its pid, or None (fork one)."""
        args = request.get("args") or []
        if not isinstance(args, list) or len(args) != 1 or not isinstance(args[0], str):
            return None  # "--finish" (upload and report only) never takes a prepared instance
        from trainforge.agent.prepared import shape_of_file

        shape = shape_of_file(args[0])
        if shape is None:
            return None
        self.wanted[shape] = args[0]
        now = time.monotonic()
        self.recent = [t for t in self.recent if now - t < 1.0] + [now]
        burst = len(self.recent) > BURST
        self.quiet_at = now + (min(MAX_QUIET, WARM_DELAY * len(self.recent)) if burst else WARM_DELAY)
        agent = self.idle.get(shape)
        if agent is None or not agent.ready:
            return None
        del self.idle[shape]
        try:
            agent.sock.sendall((json.dumps(request) + "\n").encode())
        except OSError:
            return None
        finally:
            agent.sock.close()
        return agent.pid

    def release(self, shape: str) -> None:
        """Its socket closes: the idle agent removes its instance and exits."""
        self.idle.pop(shape).sock.close()

    def release_all(self) -> None:
        self.wanted.clear()
        for shape in list(self.idle):
            self.release(shape)

    def reaped(self, pid: int) -> None:
        """A child of the fork server ended: if it was an idle agent (killed), what it left goes."""
        for shape, agent in list(self.idle.items()):
            if agent.pid == pid:
                self.release(shape)
                from trainforge.agent.prepared import sweep

                with contextlib.suppress(Exception):
                    sweep(json.loads(shape)["sandbox"]["roots"])

    # -- an idle agent --------------------------------------------------------------------------
    def _fork(self, shape: str, spec_path: str) -> None:
        ours, theirs = socket.socketpair()
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            raise
        if pid == 0:  # the idle agent; never returns
            _become_idle(theirs.detach(), spec_path)
        theirs.close()
        self.server.children.add(pid)
        self.idle[shape] = _Idle(pid, ours)


def _become_idle(fd: int, spec_path: str) -> None:
    """An idle agent: prepare an instance, say so, then wait for the request of the job it runs in it."""
    from trainforge.agent import forkserver

    code = 0
    try:
        os.setsid()
        forkserver.fresh_signals()
        os.dup2(fd, 3)
        null = os.open(os.devnull, os.O_RDWR)
        for std in (0, 1, 2):
            os.dup2(null, std)
        os.closerange(4, forkserver.CLOSE_FDS_UP_TO)  # the fork server's pipes, other idle agents' sockets
        sock = socket.socket(fileno=3)
        from trainforge.agent import prepared

        # Not niced: it takes the locks a job's agent takes (the loop devices', the kernel's network and
        # mount locks); at nice 19 a job's agent waited up to 350 ms behind it, starved of CPU.
        slot = prepared.prepare(spec_path)
        if slot is None:
            os._exit(0)  # the fork server reads the end of the socket
        line = bytearray()
        slot.mark_ready()
        with contextlib.suppress(OSError):
            sock.sendall(b"r")
            while not line.endswith(b"\n"):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                line += chunk
        sock.close()
        if not line.endswith(b"\n"):  # the fork server let it go
            slot.close()
            os._exit(0)
        request = json.loads(line)
        log_fd = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        code = forkserver.run_request(log_fd, request, [str(a) for a in request["args"]], close_fds=False)
    except BaseException:  # noqa: BLE001 - the child must never return into the server loop
        import traceback

        with contextlib.suppress(BaseException):
            traceback.print_exc()
        code = 1
    finally:
        os._exit(code)
