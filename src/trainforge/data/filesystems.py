"""FileSystemDataSource (EFS, FSx for Lustre): a directory of a configured file system, mounted.

The server's config maps each FileSystemId to where that file system is mounted on this machine
(``file_systems: {"fs-0123": "/mnt/efs"}``). A channel's ``DirectoryPath`` is taken relative to
that mount point (``/training/data`` → ``/mnt/efs/training/data``) and must resolve — symlinks
followed — to an existing directory inside it. ``FileSystemAccessMode`` ``ro`` (default) or
``rw`` says how the training process may use it.

Nothing is copied. The agent exposes each :class:`FileSystemMount` at ``/opt/ml/input/data/<channel>``:
in namespace isolation with a bind mount (``mount --bind source target`` then, for ``ro``,
``mount -o remount,bind,ro target``) inside the instance's mount namespace; without namespaces
it may call :meth:`FileSystemMount.link` (a symbolic link in place of the empty channel
directory — read-only is then *not* enforced, which the agent should say in the job log).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .channels import parse_channels
from .errors import DataError


@dataclass(frozen=True)
class FileSystemMount:
    channel: str
    source: Path  # the directory on this machine
    target: Path  # ml_dir/input/data/<channel> (an empty directory, the mount point)
    container_target: str  # /opt/ml/input/data/<channel>
    read_only: bool
    file_system_type: str  # EFS | FSxLustre

    def link(self) -> None:
        """Replace the empty mount-point directory with a symlink to ``source`` (no isolation)."""
        if self.target.is_symlink():
            self.target.unlink()
        elif self.target.is_dir():
            self.target.rmdir()
        self.target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(self.source, self.target, target_is_directory=True)


def file_system_mounts(request: dict[str, Any], ml_dir: Path, file_systems: dict[str, str], *,
                       create_targets: bool = True) -> list[FileSystemMount]:
    """Every FileSystemDataSource channel resolved; DataError for unknown ids and bad paths."""
    out = []
    for ch in parse_channels(request):
        fs = ch.file_system
        if not fs:
            continue
        fs_id = fs.get("FileSystemId", "")
        if fs_id not in (file_systems or {}):
            known = ", ".join(sorted(file_systems or {})) or "none"
            raise DataError(f"Channel '{ch.name}': FileSystemId '{fs_id}' is not configured on this server "
                            f"(configuration key file_systems maps FileSystemId to a mount point; "
                            f"configured: {known})")
        mount_point = Path(os.path.realpath(file_systems[fs_id]))
        rel = (fs.get("DirectoryPath") or "/").lstrip("/")
        source = Path(os.path.realpath(mount_point / rel))
        if source != mount_point and mount_point not in source.parents:
            raise DataError(f"Channel '{ch.name}': DirectoryPath '{fs.get('DirectoryPath')}' is outside "
                            f"file system {fs_id}")
        if not source.is_dir():
            raise DataError(f"Channel '{ch.name}': DirectoryPath '{fs.get('DirectoryPath')}' does not exist "
                            f"on file system {fs_id} (looked for {source})")
        mode = (fs.get("FileSystemAccessMode") or "ro").lower()
        target = Path(ml_dir) / "input" / "data" / ch.name
        if create_targets:
            target.mkdir(parents=True, exist_ok=True)
        out.append(FileSystemMount(ch.name, source, target, f"/opt/ml/input/data/{ch.name}",
                                   mode != "rw", fs.get("FileSystemType") or "EFS"))
    return out
