"""The local backend: one detached agent process per instance on this machine.

Agents run in their own session so that a server crash or restart does not touch them. A handle
is ``{"pid": .., "start_ticks": ..}``: the start time from /proc tells a living agent from a
recycled PID after a restart.

Agents are forked by the agent fork server (``backends/forkserver.py``), a small process that has
the agent's modules imported already: no interpreter start per agent, and no fork of the large
server process. ``TRAINFORGE_AGENT_FORKSERVER=0`` (or a fork server that cannot start) makes the
backend start each agent as its own ``python -S`` process instead, as before.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any

from trainforge.agent import instance_files
from trainforge.agent.forkserver import start_ticks
from trainforge.backends.base import AgentLaunch, Handle
from trainforge.backends.forkserver import (
    ForkServerClient,
    ForkServerUnavailable,
    agent_args,
    boot,
    child_environment,
)

# ``python -S``: the agent needs only the standard library to start user code.
AGENT_BOOT = boot("trainforge.agent.main", "main(sys.argv[1:])")


class LocalBackend:
    """:class:`trainforge.backends.base.Backend` on this machine; the scheduler's capacity model admits."""

    name = "local"
    queues = False
    control_url: str | None = None

    def __init__(self, forkserver: bool | None = None) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        if forkserver is None:
            forkserver = os.environ.get("TRAINFORGE_AGENT_FORKSERVER", "1") != "0" and hasattr(os, "fork")
        self._forkserver = ForkServerClient() if forkserver else None

    def start(self) -> None:
        """Get ready to launch (starts the fork server now, so the first job does not wait for it)."""
        if self._forkserver is not None:
            try:
                self._forkserver.start()
            except OSError:
                self._forkserver = None

    def close(self) -> None:
        """The server stops: the fork server exits once its agents have ended (they run on)."""
        if self._forkserver is not None:
            self._forkserver.close()

    def launch(self, gangs: list[list[AgentLaunch]]) -> list[list[Handle | OSError]]:
        """Every agent of every gang at once, through the fork server (its requests back to back)."""
        results = iter(self._launch_all([agent for gang in gangs for agent in gang]))
        return [[next(results) for _ in gang] for gang in gangs]

    def waiting(self, handle: Handle | None) -> str | None:
        return None  # no queue here: the scheduler admits only what fits

    def cancel(self, handle: Handle | None) -> None:
        self.kill_group(handle)

    def _launch_all(self, agents: list[AgentLaunch]) -> list[Handle | OSError]:
        """Start each agent: its handle, or why it did not start."""
        if self._forkserver is None:
            return [self._popen(a) for a in agents]
        answers = self._forkserver.launch([(agent_args(a.spec_path, a.finish), a.log_path, a.spec_path.parent)
                                           for a in agents])
        results: list[Handle | OSError] = []
        for answer, a in zip(answers, agents):
            if isinstance(answer, ForkServerUnavailable):  # nothing started: a process of its own
                answer = self._popen(a)
            elif not isinstance(answer, OSError):
                answer = {**answer, "instance_dir": str(a.spec_path.parent)}
            results.append(answer)
        return results

    def _popen(self, agent: AgentLaunch) -> Handle | OSError:
        """The agent as a ``python -S`` process of its own: its handle, or why it did not start."""
        try:
            with open(agent.log_path, "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-S", "-c", AGENT_BOOT, *agent_args(agent.spec_path, agent.finish)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    close_fds=True, env=child_environment(), cwd=str(agent.spec_path.parent),
                )
        except OSError as exc:
            return exc
        with self._lock:
            self._children[proc.pid] = proc
        return {"pid": proc.pid, "start_ticks": start_ticks(proc.pid), "instance_dir": str(agent.spec_path.parent)}

    def reap(self) -> None:
        """Collect the exit status of agents that ended (no zombies left behind)."""
        if self._forkserver is not None:
            self._forkserver.reap()  # its agents are its children: it reaps them itself
        with self._lock:
            for pid, proc in list(self._children.items()):
                if proc.poll() is not None:
                    del self._children[pid]

    def alive(self, handle: dict[str, Any] | None) -> bool:
        if not handle or not handle.get("pid"):
            return False
        self.reap()
        pid = int(handle["pid"])
        ticks = start_ticks(pid)
        if ticks is None:
            return False
        if handle.get("start_ticks") is not None and ticks != handle["start_ticks"]:
            return False  # the PID was recycled
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            return state != b"Z"
        except OSError:
            return False

    def find_agent(self, instance_dir: str | os.PathLike[str],
                   state: instance_files.InstanceState | None) -> dict[str, Any] | None:
        """The handle of the living agent that ``state`` (the instance's ``instance.json``, where each
        agent records itself first thing) names, or None. It must really be that agent: the PID
        started at the recorded time (not recycled), and the process works in ``instance_dir``, where
        every agent starts."""
        if state is None or not state.get("agent_pid") or state.get("agent_start_ticks") is None:
            return None
        handle = {"pid": int(state["agent_pid"]), "start_ticks": state["agent_start_ticks"],
                  "instance_dir": os.fspath(instance_dir)}
        if not self.alive(handle):
            return None
        try:
            cwd = os.readlink(f"/proc/{handle['pid']}/cwd")
        except OSError:
            return None
        return handle if cwd == os.path.realpath(instance_dir) else None

    def signal(self, handle: dict[str, Any] | None, sig: int = signal.SIGTERM) -> None:
        """Signal the agent (it forwards stops to its instance)."""
        if self.alive(handle):
            try:
                os.kill(int(handle["pid"]), sig)  # type: ignore[index]
            except ProcessLookupError:
                pass

    def kill_group(self, handle: dict[str, Any] | None) -> None:
        """SIGKILL what is left of an instance whose agent died: the agent's session, the training
        process's own session (recorded by the agent in ``instance.json``), and an agent that
        recorded itself there although its handle was never stored (it started late)."""
        if not handle:
            return
        groups = [int(handle["pid"])] if handle.get("pid") else []
        instance_dir = handle.get("instance_dir")
        if instance_dir:
            state = instance_files.read_state(instance_dir)
            found = self.find_agent(instance_dir, state)
            if found is not None:
                groups.append(int(found["pid"]))
            if state is not None and state.get("pgid"):
                groups.append(int(state["pgid"]))
        for pgid in dict.fromkeys(groups):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.reap()
