"""Starting the training process isolated, and signalling every process of the instance.

``namespace`` (Linux, root), in two steps:

1. ``unshare --mount --uts [--net]`` runs a tiny ``sh`` prologue (in the agent's PID namespace)
   that bind-mounts ``instance_dir/opt/ml`` on ``/opt/ml`` and a generated hosts file on
   ``/etc/hosts`` (mount propagation private: nothing reaches the host), sets the host name,
   brings ``lo`` up in a new network namespace (EnableNetworkIsolation), changes to the code
   directory, then execs
2. ``unshare --pid --fork --mount-proc``, whose child ``sh`` (``INIT``) is PID 1 of the new PID
   namespace and runs the command as its only child, exiting with its status (PID 1 exiting
   takes the whole namespace down).

The split is what makes a stop exact: the instance's PID namespace holds PID 1 and the training
command's process tree and nothing else (the prologue's ``mount``/``ip`` helpers run before it
exists). Stopping (``Instance.terminate``) therefore waits, polling with a bound, until PID 1
has a child, then sends SIGTERM once to every process of the namespace but PID 1, and stops
there (processes the training code starts afterwards, e.g. to save its model, are not
signalled; as with ``docker stop``, a wrapper that gets SIGTERM before it started the real
program ends at once, and PID 1 with it). Why it cannot be done with one signal at the moment the stop arrives:

- before ``unshare`` has forked there is no process of the instance to signal, and ``unshare``
  itself blocks SIGTERM while it waits for its child: a signal sent to it is lost;
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
grace: if the namespace never gets that far, SIGKILL follows as always.

``setpriv --pdeathsig`` and ``unshare --kill-child`` tie the instance's life to the agent's: an
agent killed with -9 leaves no orphan (the death signal set by ``setpriv`` survives the
``exec`` calls of the prologue's chain, up to the ``unshare`` whose child is PID 1).

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

from trainforge.agent.spec import CONTAINER_ML, Paths, network_isolated

SETUP_FAILED = "[trainforge] namespace setup failed"
# $1 ml dir, $2 hosts file, $3 host name, $4 "1" = new network namespace, $5 working directory,
# $6 number of extra bind mounts, then (source, target, "1" = read-only) per mount, then the command
# that starts the PID namespace (``pid_namespace_argv``), which it execs.
PROLOGUE = (
    'fail() { echo "' + SETUP_FAILED + ': $*" >&2; exit 125; }\n'
    'mount --bind "$1" /opt/ml || fail /opt/ml\n'
    'mount --bind "$2" /etc/hosts || fail /etc/hosts\n'
    '{ echo "$3" > /proc/sys/kernel/hostname || hostname "$3"; } 2>/dev/null || fail hostname\n'
    'if [ "$4" = 1 ]; then ip link set lo up 2>/dev/null; fi\n'
    'cwd=$5; n=$6; shift 6\n'
    'while [ "$n" -gt 0 ]; do\n'
    '  mount --bind "$1" "$2" || fail "$2"\n'
    '  if [ "$3" = 1 ]; then mount -o remount,bind,ro "$2" || fail "$2"; fi\n'
    '  shift 3; n=$((n - 1))\n'
    'done\n'
    'cd "$cwd" 2>/dev/null\n'
    'exec "$@"\n'
)
# PID 1 of the instance: the command as its child (never exec'd: PID 1 ignores a SIGTERM it has no
# handler for, and the training code must get it), then its exit status.
INIT = '"$@"\nexit $?\n'
TERMINATE_POLL_MAX = 0.02  # a stop waits for the command to exist, polling at most this far apart
NONE_NOTICE = ("/opt/ml is not available on this host (no namespace isolation): the instance's "
               "/opt/ml is {ml}, SAGEMAKER_BASE_DIR and every SM_* path point there")


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
    for name in ("unshare", "mount", "hostname", "setpriv"):
        which(name)


class IsolationError(RuntimeError):
    """Isolation was asked for and cannot be had here."""


def hosts_file_content(spec: dict[str, Any]) -> str:
    """/etc/hosts for the instance: every host of the job resolves (spec ``host_addresses``)."""
    addresses = spec.get("host_addresses") or {}
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for host in sorted(spec["hosts"]):
        lines.append(f"{addresses.get(host, '127.0.0.1')}\t{host}")
    return "\n".join(lines) + "\n"


def describe(spec: dict[str, Any], paths: Paths) -> str:
    """The job-log line saying which isolation the instance runs under."""
    if spec.get("isolation") == "namespace":
        kinds = "mount, UTS, PID" + (", network (EnableNetworkIsolation: no network)"
                                     if network_isolated(spec) else "")
        return (f"[trainforge] isolation: namespace ({kinds}); /opt/ml is this instance's own "
                f"directory, host name {spec['host']}")
    return "[trainforge] isolation: none; " + NONE_NOTICE.format(ml=paths.host_ml)


def namespace_argv(spec: dict[str, Any], paths: Paths, argv: list[str], cwd: str, hosts_file: str,
                   mounts: list[tuple[str, str, bool]] | None = None) -> list[str]:
    """Step 1 (new mount / UTS / network namespaces, the prologue) exec'ing step 2 (the PID
    namespace, ``INIT`` as its PID 1, the command as INIT's child)."""
    net = network_isolated(spec)
    mounts = mounts or []
    extra = [a for src, dst, ro in mounts for a in (src, dst, "1" if ro else "0")]
    unshare = which("unshare") or "unshare"
    setup = [unshare, "--mount", "--uts", "--propagation", "private"] + (["--net"] if net else [])
    pid_namespace = [unshare, "--pid", "--fork", "--kill-child=SIGKILL", "--mount-proc",
                     "--", "/bin/sh", "-c", INIT, "trainforge-init"]
    prologue = ["/bin/sh", "-c", PROLOGUE, "trainforge-instance", paths.host_ml, hosts_file, spec["host"],
                "1" if net else "0", cwd, str(len(mounts))] + extra
    return setup + ["--"] + prologue + pid_namespace + list(argv)


def check_available(spec: dict[str, Any]) -> None:
    if spec.get("isolation") == "namespace":
        missing = [b for b in ("unshare", "mount", "hostname") if which(b) is None]
        if missing:
            raise IsolationError(f"namespace isolation needs {', '.join(missing)} on PATH")
        if os.geteuid() != 0:
            raise IsolationError(f"namespace isolation needs root (the agent runs as uid {os.geteuid()})")
    elif network_isolated(spec):
        raise IsolationError("EnableNetworkIsolation needs namespace isolation, which this host "
                             "does not provide (isolation: none)")


class Instance:
    """The running training process and every process it started."""

    def __init__(self, spec: dict[str, Any], paths: Paths, argv: list[str], env: dict[str, str],
                 mounts: list[tuple[str, str, bool]] | None = None):
        self.namespace = spec.get("isolation") == "namespace"
        cwd = paths.container("code")
        if self.namespace:
            os.makedirs(CONTAINER_ML, exist_ok=True)  # the (empty) mount point on the host
            hosts_file = os.path.join(paths.instance_dir, "hosts")
            with open(hosts_file, "w", encoding="utf-8") as f:
                f.write(hosts_file_content(spec))
            full = namespace_argv(spec, paths, argv, cwd, hosts_file, mounts or [])
        else:
            full = list(argv)
        if which("setpriv"):
            full = ["setpriv", "--pdeathsig", "KILL", "--"] + full
        self.popen = subprocess.Popen(
            full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            cwd=paths.host("code"), start_new_session=True,
            umask=0o022)  # a container's; the agent's own files stay private (the server's 077)
        self.pid = self.popen.pid
        self._own_ns = _pid_namespace("self")
        self._ns: str | None = None
        self._init_pid: int | None = None

    # ---------------------------------------------------------------------------------------------
    def _namespace_init(self) -> int | None:
        """PID (host view) of the instance's PID-namespace init: the child of ``unshare --pid``
        (``self.pid`` once the prologue exec'd it) in a PID namespace other than ours. Before that,
        ``self.pid``'s children are the prologue's helpers, in our namespace: never taken for it."""
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
        """After the main process exited: nothing of the instance survives it (as with a container)."""
        if not self.namespace:
            _killpg(self.pid, signal.SIGKILL)

    def exit_code(self) -> int | None:
        rc = self.popen.poll()
        if rc is None:
            return None
        return 128 - rc if rc < 0 else rc


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


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
