"""Starting the training process isolated, and signalling every process of the instance.

``namespace`` (Linux, root): ``unshare`` gives the process new mount, UTS and PID namespaces
(plus an empty network namespace with EnableNetworkIsolation). A tiny ``sh`` prologue, PID 1 of
the new PID namespace, bind-mounts ``instance_dir/opt/ml`` on ``/opt/ml`` and a generated hosts
file on ``/etc/hosts`` (mount propagation private: nothing reaches the host), sets the host name,
brings ``lo`` up in a new network namespace, then runs the command as its child and exits with its
status. Stopping signals every process whose PID namespace is the instance's; killing PID 1 takes
the whole namespace down. ``setpriv --pdeathsig`` and ``unshare --kill-child`` tie the instance's
life to the agent's: an agent killed with -9 leaves no orphan.

``none``: a plain subprocess in its own session / process group; stopping signals the group.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from typing import Any

from trainforge.agent.spec import CONTAINER_ML, Paths, network_isolated

SETUP_FAILED = "[trainforge] namespace setup failed"
# $1 ml dir, $2 hosts file, $3 host name, $4 "1" = new network namespace, $5 working directory,
# $6 number of extra bind mounts, then (source, target, "1" = read-only) per mount, then the command.
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
    '"$@"\n'
    'exit $?\n'
)
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
    net = network_isolated(spec)
    mounts = mounts or []
    extra = [a for src, dst, ro in mounts for a in (src, dst, "1" if ro else "0")]
    head = ["unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child=SIGKILL", "--mount-proc",
            "--propagation", "private"] + (["--net"] if net else [])
    return head + ["--", "/bin/sh", "-c", PROLOGUE, "trainforge-instance", paths.host_ml, hosts_file,
                   spec["host"], "1" if net else "0", cwd, str(len(mounts))] + extra + list(argv)


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
        self._ns: str | None = None
        self._init_pid: int | None = None

    # ---------------------------------------------------------------------------------------------
    def _namespace_init(self) -> int | None:
        """PID (host view) of the instance's PID-namespace init: the sh child of unshare."""
        if self._init_pid is None:
            try:
                with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                    children = f.read().split()
            except OSError:
                children = []
            if children:
                self._init_pid = int(children[0])
                try:
                    self._ns = os.readlink(f"/proc/{self._init_pid}/ns/pid")
                except OSError:
                    self._init_pid = None
        return self._init_pid

    def members(self) -> list[int]:
        """Host PIDs of every process of the instance (namespace isolation)."""
        if self._namespace_init() is None or self._ns is None:
            return []
        pids = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    if os.readlink(f"/proc/{name}/ns/pid") == self._ns:
                        pids.append(int(name))
                except OSError:
                    pass
        return pids

    def signal_all(self, sig: int) -> None:
        if self.namespace:
            for pid in self.members():
                _kill(pid, sig)
        else:
            _killpg(self.pid, sig)

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
