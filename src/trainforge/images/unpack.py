"""An image's layers made into a root filesystem, safely: ``umoci unpack``, then a sanitising pass.

umoci applies the layers in order, honours whiteouts (``.wh.<name>``, opaque ``.wh..wh..opq``) and
resolves every path inside the root (``../``, absolute names, symlinked directories and hard links
that point out are confined: umoci extracts through securejoin). It maps the image's owners onto the
instance's user namespace (``--uid-map 0:<uid>:65536``): a file of the image's root is the
instance's root's, nothing is the host's. It is run on a private directory under ``tmp/``; before
the result becomes visible (a rename), :func:`sanitise` drops what an instance must never get from
an image: device nodes (block and character) and set-uid / set-gid bits and file capabilities on
files. The instance's ``noNewPrivileges`` would already keep those bits from raising privileges;
they are dropped so that nothing in the cache depends on it.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from dataclasses import dataclass, field
from typing import Any

from trainforge.sandbox.runc import ID_RANGE

UMOCI = "umoci"
CAPABILITY_XATTR = "security.capability"


class UnpackError(RuntimeError):
    """The image cannot be unpacked (a corrupt or malformed layer)."""


@dataclass
class Sanitised:
    devices: list[str] = field(default_factory=list)
    setid: list[str] = field(default_factory=list)
    bytes: int = 0  # what the root takes on disk (the cache's size accounting)


def unpack(layout: str, name: str, bundle: str, uid: int, umoci: str = UMOCI) -> None:
    """``umoci unpack`` of ``layout:name`` into ``bundle`` (which must not exist)."""
    argv = [umoci, "--log", "error", "unpack", "--uid-map", f"0:{uid}:{ID_RANGE}", "--gid-map",
            f"0:{uid}:{ID_RANGE}", "--image", f"{layout}:{name}", bundle]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=3600, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        raise UnpackError(detail[-1] if detail else f"umoci exited {done.returncode}")


def sanitise(root: str) -> Sanitised:
    """Drop device nodes, set-uid/set-gid bits and file capabilities under ``root`` (no symlink
    followed); count what the root takes on disk on the way. One ``lstat`` per entry (the directory
    entry's own), paths joined only by hand: an image's ten thousand files took a second with
    ``os.walk`` + ``relpath``, most of it the path arithmetic."""
    found = Sanitised()
    pending = [("", root)]  # (path inside the root, host path) of the directories still to read
    while pending:
        rel_dir, host_dir = pending.pop()
        try:
            entries = os.scandir(host_dir)
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                found.bytes += st.st_blocks * 512
                mode = st.st_mode
                if stat.S_ISDIR(mode):
                    pending.append((f"{rel_dir}/{entry.name}", entry.path))
                elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                    os.unlink(entry.path)
                    found.devices.append(f"{rel_dir}/{entry.name}")
                elif stat.S_ISREG(mode):
                    if mode & (stat.S_ISUID | stat.S_ISGID):
                        os.chmod(entry.path, stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))
                        found.setid.append(f"{rel_dir}/{entry.name}")
                    try:
                        os.removexattr(entry.path, CAPABILITY_XATTR, follow_symlinks=False)
                    except OSError:
                        pass
    return found


@dataclass
class ImageConfig:
    """What of the image's configuration a training instance uses."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    user: str = ""

    @classmethod
    def of(cls, config_blob: dict[str, Any]) -> ImageConfig:
        c = config_blob.get("config") or {}
        return cls(list(c.get("Entrypoint") or []), list(c.get("Cmd") or []), list(c.get("Env") or []),
                   str(c.get("WorkingDir") or ""), str(c.get("User") or ""))

    def as_dict(self) -> dict[str, Any]:
        return {"entrypoint": self.entrypoint, "cmd": self.cmd, "env": self.env, "working_dir": self.working_dir,
                "user": self.user}

    @classmethod
    def load(cls, path: str) -> ImageConfig:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        return cls(d["entrypoint"], d["cmd"], d["env"], d["working_dir"], d["user"])


def resolve_user(rootfs: str, user: str) -> tuple[int, int]:
    """The image's ``User`` (``uid``, ``name``, ``uid:gid``, ``name:group``) as ids inside the instance,
    names looked up in the image's own /etc/passwd and /etc/group."""
    if not user:
        return 0, 0
    name, _, group = user.partition(":")
    passwd = _table(rootfs, "passwd")
    if name.isdigit():
        uid = int(name)
        gid = next((int(row[3]) for row in passwd if row[2] == name and len(row) > 3 and row[3].isdigit()), uid)
    else:
        row = next((r for r in passwd if r[0] == name and len(r) > 3), None)
        if row is None:
            raise UnpackError(f"the image's User '{user}' is not in its /etc/passwd")
        uid, gid = int(row[2]), int(row[3])
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            grow = next((r for r in _table(rootfs, "group") if r[0] == group and len(r) > 2), None)
            if grow is None:
                raise UnpackError(f"the image's User '{user}': group '{group}' is not in its /etc/group")
            gid = int(grow[2])
    if not (0 <= uid < ID_RANGE and 0 <= gid < ID_RANGE):
        raise UnpackError(f"the image's User '{user}' is outside the instance's ids 0-{ID_RANGE - 1}")
    return uid, gid


def _table(rootfs: str, name: str) -> list[list[str]]:
    path = os.path.join(rootfs, "etc", name)
    inside = os.path.realpath(rootfs).rstrip("/") + "/"
    if not os.path.realpath(path).startswith(inside) or not os.path.isfile(path):
        return []  # the image's links are never followed out onto the host
    with open(path, encoding="utf-8", errors="replace") as f:
        return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
