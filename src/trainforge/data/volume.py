"""VolumeSizeInGB while training: how much an instance has written, against its volume.

Staging refuses inputs that do not fit before writing anything (``staging.py``). While the
training process runs, the agent may call :func:`volume_error` periodically (it walks the
instance's ``/opt/ml``; each inode counted once, by allocated blocks, so sparse files count what
they really use) and fail the job with the returned error when it is not None.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import DataError
from .progress import human
from .staging import volume_bytes


def disk_usage(root: Path) -> int:
    """Bytes allocated under ``root`` (hard links counted once; symlinks not followed)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
    return total


def volume_error(request: dict[str, Any], ml_dir: Path) -> DataError | None:
    """A DataError naming the volume size when ``ml_dir`` holds more than VolumeSizeInGB, else None."""
    limit = volume_bytes(request)
    if limit is None:
        return None
    used = disk_usage(Path(ml_dir))
    if used <= limit:
        return None
    gb = (request.get("ResourceConfig") or {}).get("VolumeSizeInGB")
    return DataError(f"ClientError: The instance wrote {human(used)} under /opt/ml, more than its storage "
                     f"volume of {gb} GB (ResourceConfig.VolumeSizeInGB = {gb})")
