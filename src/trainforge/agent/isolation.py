"""Starting the training process isolated, and signalling every process of the instance.

``sandbox`` (Linux, root, runc): the instance is an OCI container (:mod:`trainforge.agent.container`
writes its bundle; :mod:`trainforge.sandbox.runc` says what it gets). ``runc run`` runs in the
foreground as the agent's child; its child is the container's PID 1, ``INIT`` (``sh``), which runs
the command as its only child and exits with its status (PID 1 exiting takes the whole PID
namespace down: nothing the training code started survives it, however it daemonized).

Stopping (``Instance.terminate``) waits, polling with a bound, until PID 1 has a child, then sends
SIGTERM once to every process of the container's PID namespace but PID 1, and stops there
(processes the training code starts afterwards, e.g. to save its model, are not signalled; as
with ``docker stop``, a wrapper that gets SIGTERM before it started the real program ends at once,
and PID 1 with it). Why it cannot be done with one signal at the moment the stop arrives:

- before runc has started the container there is no process of the instance to signal;
- PID 1 of a PID namespace receives only the signals it installed a handler for, and ``sh``
  installs none: a SIGTERM that reaches only PID 1 (before it has forked the command) is lost.
  Trapping TERM in PID 1 and forwarding it would not close the gap either: a trap runs only
  between commands, and a child forked by ``sh`` inherits the trap's handler until it execs,
  so a SIGTERM forwarded in that window is swallowed by the shell's handler and then lost at
  ``exec``.

Once PID 1 has a child, that child is the command: before its ``exec`` it is a fork of ``sh``
with SIGTERM at its default action (no traps anywhere), so the signal ends it before any user
code runs and PID 1 exits 143 at once; after ``exec`` the training code gets SIGTERM itself.
Either way the job ends promptly without waiting out the grace. The poll is bounded by the
grace: if the container never gets that far, SIGKILL follows as always.

The instance's life is tied to the agent's: ``setpriv --pdeathsig KILL`` before ``runc`` (the
agent dies: runc is killed) and before the container's ``sh`` (runc dies: PID 1 is killed, and the
kernel kills the rest of its namespace). runc's state and cgroup are removed when the instance
ends (``runc delete``), and by the reaper after an agent died.

``none``: a plain subprocess in its own session / process group; stopping signals the group.
The group exists as soon as the process does (``Popen`` returns only after the child called
``setsid`` and exec'd), so one SIGTERM to it is enough: sent before ``setpriv`` has exec'd the
command, it ends ``setpriv`` (default action) before any user code runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from typing import Any

from trainforge.agent.spec import Paths, network_isolated

SETUP_FAILED = "sandbox setup failed"
RUNC_ERROR = "msg=\"runc run failed: "  # how runc logs that a container could not start
# PID 1 of the instance: the command as its child (never exec'd: PID 1 ignores a SIGTERM it has no
# handler for, and the training code must get it), then its exit status.
INIT = '"$@"\nexit $?\n'
# A gang's instance (agent/gang.py): PID 1 first waits for "go" at its gate (container.GATE), the
# container made, its user code not started; the agent writes it once every instance is ready.
GATED_INIT = 'read -r _ < {gate} || exit 125\n' + INIT
TERMINATE_POLL_MAX = 0.02  # a stop waits for the command to exist, polling at most this far apart
NONE_NOTICE = ("training code runs as the server's user ({user}) on the host, without a sandbox "
               "(isolation: none); /opt/ml is not available: the instance's /opt/ml is {ml}, "
               "SAGEMAKER_BASE_DIR and every SM_* path point there")
SANDBOX = "sandbox"


_FOUND: dict[tuple[str, str | None], str] = {}


def which(name: str) -> str | None:
    """``shutil.which`` remembering what it found (a lookup stats every PATH directory; the fork
    server warms this up once for all its agents). A miss is looked up again every time."""
    key = (name, os.environ.get("PATH"))
    found = _FOUND.get(key)
    if found is None:
        found = shutil.which(name)
        if found is not None:
            _FOUND[key] = found
    return found


def warm_up() -> None:
    for name in ("runc", "setpriv"):
        which(name)


class IsolationError(RuntimeError):
    """Isolation was asked for and cannot be had here."""


def setup_failure(stderr_tail: list[str]) -> str:
    """What runc said when the container could not start (its last ``runc run failed`` line)."""
    line = next((ln for ln in reversed(stderr_tail) if RUNC_ERROR in ln), "")
    return line[line.find(RUNC_ERROR) + len('msg="'):].rstrip('"')


def sandboxed(spec: dict[str, Any]) -> bool:
    return spec.get("isolation") == SANDBOX


def describe(spec: dict[str, Any], paths: Paths) -> list[str]:
    """The job-log lines saying what the instance runs in."""
    if not sandboxed(spec):
        import getpass

        return ["[trainforge] isolation: none; " + NONE_NOTICE.format(user=getpass.getuser(), ml=paths.host_ml)]
    s = spec.get("sandbox") or {}
    if network_isolated(spec):
        net = ("network: the job's own (EnableNetworkIsolation: the job's instances only)" if s.get("netns")
               else "network: none (EnableNetworkIsolation: no network)")
    else:
        net = ("network: the job's own" if s.get("netns") else
               "network: its Slurm node's (slurm.network: nodes), algo-N at the nodes' addresses"
               if spec.get("network") == "nodes" else "network: the host's")
    size = (spec["request"].get("ResourceConfig") or {}).get("VolumeSizeInGB")
    lines = [f"[trainforge] isolation: sandbox (runc: user, PID, mount, IPC, UTS namespaces; root is host uid "
             f"{s.get('uid')}; {net}); /opt/ml is this instance's own "
             + (f"{size} GB volume" if size else "directory") + f", host name {spec['host']}"]
    if s.get("cgroups"):
        lines.append(f"[trainforge] limits: {s.get('cpus')} CPUs, {s.get('memory_mb')} MiB memory (cgroups)")
    else:
        lines.append(f"[trainforge] limits: none: {s.get('cgroups_missing') or 'the host has no usable cgroups'}")
    return lines


def check_available(spec: dict[str, Any]) -> None:
    if sandboxed(spec):
        missing = [b for b in ("runc", "setpriv", "mount", "mkfs.ext4") if which(b) is None]
        if missing:
            raise IsolationError(f"the sandbox needs {', '.join(missing)} on PATH")
        if os.geteuid() != 0:
            raise IsolationError(f"the sandbox needs root (the agent runs as uid {os.geteuid()})")
    elif network_isolated(spec):
        raise IsolationError("EnableNetworkIsolation needs the sandbox, which this host "
                             "does not provide (isolation: none)")


class Instance:
    """The training process and every process it started. Constructed: the sandbox's bundle is
    written; :meth:`ready`: a gang's container is started, waiting at its gate; :meth:`go` (after
    the gang barrier, agent/gang.py): the user code starts."""

    def __init__(self, spec: dict[str, Any], paths: Paths, argv: list[str], env: dict[str, str],
                 mounts: list[tuple[str, str, bool]] | None = None, local_paths: list[str] | None = None,
                 slot: Any = None):
        self.namespace = sandboxed(spec)
        self.spec, self.paths = spec, paths
        self._removed = False
        self.gated = False
        self._gate: int | None = None
        self.started = False  # the process (``runc run``) is started
        self._slot = slot  # a prepared instance's created container (agent/prepared.py), started by go()
        self._inner: list[str] = []
        if self.namespace:
            from trainforge.agent import container

            self.gated = container.gated(spec)
            init = GATED_INIT.format(gate=container.GATE) if self.gated else INIT
            inner = [*container.init_prefix(spec), init, "trainforge-init", *argv]
            self._inner = inner
        if slot is not None:
            full = []
            cwd = paths.instance_dir
        elif self.namespace:
            full = container.bundle(spec, paths, inner, env, paths.container("code"), mounts or [],
                                    local_paths or [], which("runc") or "runc")
            cwd = paths.instance_dir
        else:
            full = list(argv)
            cwd = paths.host("code")
        if which("setpriv") and full:
            full = ["setpriv", "--pdeathsig", "KILL", "--"] + full
        self._command, self._env, self._cwd = full, env, cwd
        self._own_ns = _pid_namespace("self")
        self._ns: str | None = None
        self._init_pid: int | None = None

    def ready(self) -> None:
        """A gated container starts now: everything of the instance is made but its user code."""
        if self.gated:
            from trainforge.agent import container

            # held open by the agent: "go" stays in the FIFO until PID 1 opens it, however late
            self._gate = os.open(container.gate_path(self.paths), os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            self._start()

    def wait_at_gate(self, timeout: float = 300.0) -> None:
        """Until the gated container's PID 1 reads its gate (the container is made, nothing of the user
        code runs), the container ended (its setup failed: the runner reports it), or ``timeout``."""
        from trainforge.agent import container

        until = time.monotonic() + timeout
        while self.gated and self.popen.poll() is None and time.monotonic() < until:
            init = self._namespace_init()
            try:
                if init is not None and os.readlink(f"/proc/{init}/fd/0") == container.GATE:
                    return
            except OSError:
                pass
            time.sleep(0.005)

    def go(self) -> None:
        """The user code starts."""
        if self._gate is not None:
            os.write(self._gate, b"go\n")
        else:
            self._start()

    def abandon(self) -> None:
        """The instance ends before its user code started (a stop, the gang's timeout)."""
        if self.started:
            self.kill_all()
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                pass
        self.remove()

    def _start(self) -> None:
        if self._slot is not None:  # PID 1 is this agent's own child: no runc process in between
            self.popen = self._slot.start(self.spec, self._inner, self._env)
            self.pid = self.popen.pid
            self._init_pid, self._ns = self.pid, _pid_namespace(str(self.pid))
            self.started = True
            return
        self.popen = subprocess.Popen(
            self._command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self._env, cwd=self._cwd, start_new_session=True,
            umask=0o022)  # a container's; the agent's own files stay private (the server's 077)
        self.pid = self.popen.pid
        self.started = True

    # ---------------------------------------------------------------------------------------------
    def _namespace_init(self) -> int | None:
        """PID (host view) of the container's init: the child of ``runc run`` in a PID namespace
        other than ours (runc's own helpers, in ours, are never taken for it)."""
        if self._init_pid is None:
            for child in _children(self.pid):
                ns = _pid_namespace(str(child))
                if ns is not None and ns != self._own_ns:
                    self._init_pid, self._ns = child, ns
                    break
        return self._init_pid

    def members(self) -> list[int]:
        """Host PIDs of every process of the instance (namespace isolation), its init included."""
        if self._namespace_init() is None or self._ns is None:
            return []
        return [int(name) for name in os.listdir("/proc")
                if name.isdigit() and _pid_namespace(name) == self._ns]

    def terminate(self, sig: int, until: float, ended: threading.Event) -> bool:
        """Send ``sig`` once to the training process and every process it started (see the module
        docstring). In a PID namespace, wait for the command to exist first: poll until it does,
        the instance ended (``ended``) or ``until`` passed. True once the signal was sent."""
        if not self.namespace:
            _killpg(self.pid, sig)
            return True
        pause = 0.001
        while not ended.is_set():
            init = self._namespace_init()
            command = _children(init) if init is not None else []
            if command:
                # the scan may miss a process created while it runs: the command itself is named
                for pid in set(command) | (set(self.members()) - {init}):
                    _kill(pid, sig)
                return True
            left = until - time.time()
            if left <= 0:
                return False
            ended.wait(min(pause, left))
            pause = min(2 * pause, TERMINATE_POLL_MAX)
        return False

    def kill_all(self) -> None:
        if self.namespace:
            init = self._namespace_init()
            if init is not None:
                _kill(init, signal.SIGKILL)  # the kernel kills the rest of the namespace
            _kill(self.pid, signal.SIGKILL)
        else:
            _killpg(self.pid, signal.SIGKILL)

    def reap_leftovers(self) -> None:
        """After the main process exited: nothing of the instance survives it (as with a container:
        in the sandbox, PID 1's end took its namespace down)."""
        if not self.namespace:
            _killpg(self.pid, signal.SIGKILL)

    def remove(self) -> None:
        """runc's state and cgroup of the ended container (once the exit is delivered: it is not
        on the job's way to its end; the scheduler's sweep removes them if the agent dies first)."""
        if self.namespace and not self._removed:
            from trainforge.agent import container

            self._removed = True
            container.remove(self.spec, self.paths, which("runc") or "runc")
        if self._gate is not None:
            os.close(self._gate)
            self._gate = None

    def exit_code(self) -> int | None:
        rc = self.popen.poll()
        if rc is None:
            return None
        return 128 - rc if rc < 0 else rc


def _children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (runc, a Go program, forks from any of its threads)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return found


def _pid_namespace(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
