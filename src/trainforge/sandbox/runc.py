"""An instance as an OCI container run by ``runc``: the bundle's ``config.json`` and runc's commands.

Why runc (measured, docs/INTERNALS.md "Sandbox"): Debian's crun 1.8.1 refuses cgroup hybrid
hosts; bubblewrap starts faster but, run by root, cannot map the sandbox's root to an unprivileged
host uid, sets no cgroup limits and reads no OCI bundle; runc does all three, and the images
issue's unpacked bundles are OCI bundles.

What the container gets (``config``):

- a user namespace: its uid/gid 0..65535 are host ``uid_base``.. (default 100000): its root owns
  nothing of the host, holds no capability in the host's namespaces (no mount, setns, ptrace,
  raw sockets or modules against the host), and ``noNewPrivileges`` is set;
- PID, IPC, UTS, mount and cgroup namespaces; a network namespace given by path (the job's
  network), or a new one with only ``lo`` (EnableNetworkIsolation without a job network), or the
  host's when ``network`` is None (the sandbox without per-job networks);
- the root filesystem read-only, ``/proc`` of its own (kernel knobs masked or read-only as
  Docker does), a minimal ``/dev`` (runc's default devices, plus GPU nodes when given), a private
  ``/tmp``, ``/root`` and ``/dev/shm`` (tmpfs: charged to the instance's memory limit), and the
  bind mounts it is given (``/opt/ml`` the only writable host directory);
- memory, CPU and process-count limits in its own cgroup (``/trainforge/<id>``), where the
  host's cgroups have those controllers.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

RUNC = "runc"
UID_BASE = 100000
ID_RANGE = 65536
CAPABILITIES = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
                "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_AUDIT_WRITE",
                "CAP_SETFCAP", "CAP_MKNOD"]
MASKED = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
          "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/fs/cgroup"]
READ_ONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
PIDS_LIMIT = 32768


def bind(source: str, destination: str, read_only: bool = True) -> dict[str, Any]:
    return {"destination": destination, "type": "bind", "source": source,
            "options": ["rbind", "ro" if read_only else "rw", "nosuid", "nodev"]}


def tmpfs(destination: str, mode: str = "1777", size_bytes: int | None = None,
          extra: tuple[str, ...] = ("nosuid", "nodev")) -> dict[str, Any]:
    options = [*extra, f"mode={mode}"] + ([f"size={size_bytes}"] if size_bytes else [])
    return {"destination": destination, "type": "tmpfs", "source": "tmpfs", "options": options}


def base_mounts(private_dirs: bool = True) -> list[dict[str, Any]]:
    """What every container has before its own binds: /proc, /dev, /sys (read-only, the host's
    view of devices and CPUs that programs such as ``os.cpu_count`` read; its cgroup tree is
    masked), and its private /tmp, /root, /var/tmp (unless its root is writable: an image's)."""
    private = [tmpfs("/tmp"), tmpfs("/var/tmp"), tmpfs("/root", "700")] if private_dirs else []
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        tmpfs("/dev", "755", 65536 * 1024, ("nosuid", "strictatime")),
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        tmpfs("/dev/shm", "1777", None, ("nosuid", "nodev", "noexec")),
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        bind("/sys", "/sys") | {"options": ["rbind", "ro", "nosuid", "noexec", "nodev"]},
        *private,
    ]


def config(*, argv: list[str], env: dict[str, str], cwd: str, hostname: str, rootfs: str,
           mounts: list[dict[str, Any]], network: str | None, memory_bytes: int | None = None,
           cpus: float | None = None, cgroups_path: str | None = None, uid_base: int = UID_BASE,
           devices: list[dict[str, Any]] | None = None,
           device_rules: list[dict[str, Any]] | None = None, writable_root: bool = False,
           user: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """The bundle's config.json. ``network``: a namespace path, ``"new"`` (only ``lo``), or None
    (the host's network). ``writable_root``: an image's root with its private layer (no tmpfs
    /tmp, /root, /var/tmp over it); ``user``: the process's uid and gid inside."""
    namespaces: list[dict[str, Any]] = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "user", "cgroup")]
    if network == "new":
        namespaces.append({"type": "network"})
    elif network:
        namespaces.append({"type": "network", "path": network})
    resources: dict[str, Any] = {"pids": {"limit": PIDS_LIMIT}}
    if memory_bytes:
        resources["memory"] = {"limit": int(memory_bytes)}
    if cpus:
        resources["cpu"] = {"quota": int(cpus * 100000), "period": 100000}
    if device_rules:
        resources["devices"] = [{"allow": False, "access": "rwm"}, *device_rules]
    linux: dict[str, Any] = {
        "uidMappings": [{"containerID": 0, "hostID": uid_base, "size": ID_RANGE}],
        "gidMappings": [{"containerID": 0, "hostID": uid_base, "size": ID_RANGE}],
        "namespaces": namespaces, "resources": resources, "maskedPaths": MASKED, "readonlyPaths": READ_ONLY,
    }
    if cgroups_path:
        linux["cgroupsPath"] = cgroups_path
    if devices:
        linux["devices"] = devices
    caps = list(CAPABILITIES)
    return {
        "ociVersion": "1.0.2",
        "process": {"terminal": False, "user": {"uid": user[0], "gid": user[1]}, "args": list(argv),
                    "env": [f"{k}={v}" for k, v in env.items()], "cwd": cwd, "noNewPrivileges": True,
                    "capabilities": {"bounding": caps, "effective": caps, "permitted": caps}},
        "root": {"path": rootfs, "readonly": not writable_root},
        "hostname": hostname,
        "mounts": base_mounts(not writable_root) + list(mounts),
        "linux": linux,
    }


def write_bundle(bundle_dir: str, cfg: dict[str, Any]) -> None:
    os.makedirs(bundle_dir, mode=0o700, exist_ok=True)
    path = os.path.join(bundle_dir, "config.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(json.dumps(cfg))  # one C-encoded string: json.dump encodes piecewise in Python (~10x the CPU)
    os.replace(path + ".tmp", path)


def run_argv(state_root: str, bundle_dir: str, container_id: str, runc: str = RUNC) -> list[str]:
    """``runc run`` in the foreground: its child is the container's PID 1; the container's output
    is runc's (the agent's pipes)."""
    return [runc, "--root", state_root, "run", "--bundle", bundle_dir, container_id]


def create_argv(state_root: str, bundle_dir: str, container_id: str, pid_file: str, runc: str = RUNC) -> list[str]:
    """``runc create``: the container made, its process not started (``runc start``); its PID 1 is
    then the child of whoever reaps runc's orphans (agent/prepared.py)."""
    return [runc, "--root", state_root, "create", "--bundle", bundle_dir, "--pid-file", pid_file, container_id]


def delete(state_root: str, container_id: str, runc: str = RUNC) -> None:
    """Remove what runc keeps of a container (its state, its cgroup), killing what is left of it.
    Nothing to do (and no runc process, ~25 ms of CPU) once its state directory is gone: ``runc
    run`` in the foreground removes state and cgroup itself when the container ends; they remain
    only when runc itself was killed."""
    if not os.path.lexists(os.path.join(state_root, container_id)):
        return
    subprocess.run([runc, "--root", state_root, "delete", "--force", container_id], check=False,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)


def containers(state_root: str) -> list[str]:
    """The ids runc knows under ``state_root`` (for the reaper)."""
    try:
        names = os.listdir(state_root)
    except OSError:
        return []
    return [n for n in names if os.path.isfile(os.path.join(state_root, n, "state.json"))]
