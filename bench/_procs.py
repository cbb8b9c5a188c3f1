"""The processes a chaos trial leaves behind (``bench/chaos.py``).

The bench makes itself the *child subreaper* of everything it starts (Linux ``prctl``): a process
whose parent dies — an agent whose server was killed, a training process whose agent was killed,
a fork server whose server is gone — is re-parented to the bench, not to init. So every process
the trial's servers ever started, directly or not, stays a descendant of the bench until it exits,
and a walk of ``/proc`` finds them all, whatever their session, process group or PID namespace
(the walk reads the host's PIDs). Zombies re-parented to the bench are collected here.
"""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit(f"bench/chaos.py needs Linux's child subreaper (prctl): errno {ctypes.get_errno()}")


def _table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process now."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry.name}/stat").read_bytes().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        out[int(entry.name)] = (int(fields[1]), fields[0].decode())
    return out


def descendants(exclude: set[int], *, reap: bool = False) -> list[int]:
    """The living (not zombie) descendants of this process, less ``exclude`` (not their children).
    With ``reap``, first collect the zombies among this process's children outside ``exclude`` (Popen
    objects wait for those, e.g. a server's)."""
    if reap:
        _reap(exclude)
    table = _table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        if pid not in exclude and table[pid][1] != "Z":
            found.append(pid)
    return sorted(found)


def _reap(keep: set[int]) -> None:
    me = os.getpid()
    for pid, (ppid, state) in _table().items():
        if ppid == me and state == "Z" and pid not in keep:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def forkservers(server_pid: int) -> set[int]:
    """The agent fork server(s) of a running server: its children running ``forkserver``."""
    return {pid for pid, (ppid, _) in _table().items() if ppid == server_pid and b"forkserver" in cmdline(pid)}


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
    except OSError:
        return b""


def describe(pid: int) -> str:
    """``cmdline`` shortened, for the report of what was left."""
    text = cmdline(pid).decode(errors="replace")
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = "?"
    if "forkserver" in text:  # forked agents keep their fork server's command line; their cwd differs
        return f"agent in {cwd[-60:]}" if "/jobs/" in cwd else "agent fork server"
    return f"{text[:70]} (cwd {cwd[-50:]})"


def kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def agents(server_pid: int) -> list[int]:
    """The living agents of a running server: the fork server's children (or, without a fork server,
    the server's own ``python -S -c AGENT_BOOT`` children)."""
    servers = forkservers(server_pid)
    table = _table()
    return sorted(pid for pid, (ppid, state) in table.items() if state != "Z" and (
        ppid in servers or ppid == server_pid and pid not in servers and b"trainforge.agent" in cmdline(pid)))
