"""The local backend: one detached agent process per instance on this machine.

Agents run in their own session so that a server crash or restart does not touch them. A handle
is ``{"pid": .., "start_ticks": ..}``: the start time from /proc tells a living agent from a
recycled PID after a restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any


def _start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # Field 22 (starttime) comes after the parenthesised command name, which may contain spaces.
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[19])


# ``python -S``: the agent needs only the standard library to start user code (site-packages are
# loaded on demand, see trainforge.sitepaths); the package's own directory goes first on sys.path.
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
AGENT_BOOT = (f"import sys; sys.path.insert(0, {_PACKAGE_PARENT!r}); "
              "from trainforge.agent.main import main; sys.exit(main(sys.argv[1:]))")


class LocalBackend:
    name = "local"

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def launch(self, spec_path: Path, log_path: Path, finish: bool = False) -> dict[str, Any]:
        """Start an agent; with ``finish``, one that only uploads and reports (agent ``--finish``)."""
        env = dict(os.environ)
        env.pop("PYTHONSTARTUP", None)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-S", "-c", AGENT_BOOT, *(["--finish"] if finish else []), str(spec_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, env=env, cwd=str(spec_path.parent),
            )
        with self._lock:
            self._children[proc.pid] = proc
        return {"pid": proc.pid, "start_ticks": _start_ticks(proc.pid), "instance_dir": str(spec_path.parent)}

    def reap(self) -> None:
        """Collect the exit status of agents that ended (no zombies left behind)."""
        with self._lock:
            for pid, proc in list(self._children.items()):
                if proc.poll() is not None:
                    del self._children[pid]

    def alive(self, handle: dict[str, Any] | None) -> bool:
        if not handle or not handle.get("pid"):
            return False
        self.reap()
        pid = int(handle["pid"])
        ticks = _start_ticks(pid)
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

    def signal(self, handle: dict[str, Any] | None, sig: int = signal.SIGTERM) -> None:
        """Signal the agent (it forwards stops to its instance)."""
        if self.alive(handle):
            try:
                os.kill(int(handle["pid"]), sig)  # type: ignore[index]
            except ProcessLookupError:
                pass

    def kill_group(self, handle: dict[str, Any] | None) -> None:
        """SIGKILL what is left of an instance whose agent died: the agent's session and the
        training process's own session (recorded by the agent in ``instance.json``)."""
        if not handle or not handle.get("pid"):
            return
        groups = [int(handle["pid"])]
        try:
            with open(Path(handle.get("instance_dir", "")) / "instance.json", "rb") as f:
                info = json.loads(f.read())
            if info.get("pgid"):
                groups.append(int(info["pgid"]))
        except (OSError, ValueError):
            pass
        for pgid in groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.reap()
