"""What this host's sandbox can do, found once when the server starts (:func:`probe`).

The probe runs a real container (``/bin/true`` in the shared root filesystem, with the user
namespace every instance gets): a host where that fails cannot sandbox, whatever the reason (no
runc, not root, user namespaces disabled, not Linux), and the server refuses to start jobs there
unless ``isolation: none`` is configured explicitly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from trainforge.sandbox import rootfs, runc

CONTROLLERS = ("memory", "cpu", "pids")
INSTALL_HINT = "install runc (Debian: apt-get install runc) and run the server as root"


@dataclass
class SandboxHost:
    available: bool
    reason: str = ""
    cgroups: bool = False
    cgroups_missing: str = ""
    runc: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


def cgroup_controllers() -> tuple[bool, str]:
    """Whether runc can set memory, CPU and process limits here (cgroup v1 hierarchies or v2)."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        with open("/sys/fs/cgroup/cgroup.controllers", encoding="utf-8") as f:
            have = set(f.read().split())
    else:
        have = {c for c in CONTROLLERS if os.path.isdir(f"/sys/fs/cgroup/{c}")}
    missing = [c for c in CONTROLLERS if c not in have]
    if missing:
        return False, f"the host's cgroups lack the {', '.join(missing)} controller(s)"
    return True, ""


def probe(sandbox_dir: str, data_dir: str, uid: int = runc.UID_BASE) -> SandboxHost:
    if not sys.platform.startswith("linux"):
        return SandboxHost(False, f"the sandbox needs Linux (this is {sys.platform})")
    runc_path = shutil.which("runc")
    if runc_path is None:
        return SandboxHost(False, f"runc is not installed: {INSTALL_HINT}")
    if os.geteuid() != 0:
        return SandboxHost(False, f"the sandbox needs root (the server runs as uid {os.geteuid()})")
    missing_tools = [t for t in ("setpriv", "mount", "mkfs.ext4", "cp") if shutil.which(t) is None]
    if missing_tools:
        return SandboxHost(False, f"the sandbox needs {', '.join(missing_tools)} on PATH")
    etc = rootfs.ensure(sandbox_dir, uid)
    bundle = os.path.join(sandbox_dir, "probe")
    roots = rootfs.roots_dir(data_dir)
    cid = f"tf-probe-{os.getpid()}"
    root = rootfs.instance_root(roots, cid, uid)
    cfg = runc.config(argv=["/bin/true"], env={"PATH": "/usr/bin:/bin"}, cwd="/", hostname="probe",
                      rootfs=root, mounts=[runc.bind("/usr", "/usr"), runc.bind(etc, "/etc")], network="new",
                      uid_base=uid)
    runc.write_bundle(bundle, cfg)
    state = rootfs.runc_state(roots)
    try:
        done = subprocess.run(runc.run_argv(state, bundle, cid, runc_path), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=60, check=False)
    finally:
        runc.delete(state, cid, runc_path)
        rootfs.remove_root(roots, cid)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        return SandboxHost(False, "runc cannot start a container with a user namespace here: "
                           + (detail[-1] if detail else f"exit {done.returncode}"))
    cgroups, missing = cgroup_controllers()
    return SandboxHost(True, cgroups=cgroups, cgroups_missing=missing, runc=runc_path,
                       settings={"dir": sandbox_dir, "roots": roots, "data_dir": data_dir, "uid": uid,
                                 "cgroups": cgroups,
                                 "cgroups_missing": missing})
