"""VolumeSizeInGB as a real limit at write time: the instance's ``/opt/ml`` is an ext4 filesystem
of that size, in a sparse file of the instance's own, loop-mounted.

A write past the size fails in the writer with ENOSPC, as on SageMaker's ML storage volume; the
file takes on disk only what is written. Making one: ``mkfs.ext4`` once per size into
``<sandbox>/volumes/ext4-<N>g.img`` (no journal: the volume lives as long as the instance; no
reserved blocks: all of it is the instance's), then a sparse copy per instance (``cp
--sparse=always``: milliseconds, whatever the size) and ``mount -o loop,nosuid,nodev``. The
filesystem's root is owned by the instance's root (host ``uid``).

Released (unmounted, the file deleted) when the job ends (:func:`release_under`): the leader reads
the other instances' ``/opt/ml/model`` after they exited, so an instance never releases its own.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

GIB = 1024**3


class VolumeError(RuntimeError):
    """The volume cannot be made or mounted here."""


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, check=False, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
        raise VolumeError(f"{' '.join(argv[:2])} failed: {message[-1] if message else proc.returncode}")


def template(sandbox_dir: str, size_gb: int, uid: int) -> str:
    """The formatted image of ``size_gb`` GiB owned by ``uid`` (made once, atomically)."""
    directory = os.path.join(sandbox_dir, "volumes")
    path = os.path.join(directory, f"ext4-{size_gb}g-{uid}.img")
    if os.path.exists(path):
        return path
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, building = tempfile.mkstemp(prefix=".building-", dir=directory)
    os.close(fd)
    try:
        os.truncate(building, size_gb * GIB)
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
              "-E", f"root_owner={uid}:{uid},lazy_itable_init=1,nodiscard", building])
        os.replace(building, path)
    finally:
        if os.path.exists(building):
            os.unlink(building)
    return path


def image_path(instance_dir: str) -> str:
    return os.path.join(instance_dir, "volume.img")


def mount(sandbox_dir: str, instance_dir: str, target: str, size_gb: int, uid: int) -> None:
    """``target`` (the instance's /opt/ml on the host) becomes its own ``size_gb`` GiB filesystem."""
    image = image_path(instance_dir)
    _run(["cp", "--sparse=always", template(sandbox_dir, size_gb, uid), image])
    os.makedirs(target, exist_ok=True)
    _run(["mount", "-o", "loop,nosuid,nodev", image, target])
    lost = os.path.join(target, "lost+found")
    if os.path.isdir(lost):
        os.rmdir(lost)


def mounted_under(directory: str) -> list[str]:
    """Mount points at or below ``directory`` (deepest first), from this namespace's mount table."""
    prefix = os.path.realpath(directory).rstrip("/") + "/"
    points = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                point = line.split()[4].encode().decode("unicode_escape")
                if (point + "/").startswith(prefix):
                    points.append(point)
    except OSError:
        return []
    return sorted(set(points), key=len, reverse=True)


def release_under(directory: str) -> None:
    """Unmount every volume at or below ``directory`` and delete the images (a job's end, or a job
    directory about to be removed). Idempotent."""
    for point in mounted_under(directory):
        subprocess.run(["umount", "--lazy", point], check=False, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    for dirpath, _dirs, files in os.walk(directory):
        if "volume.img" in files:
            try:
                os.unlink(os.path.join(dirpath, "volume.img"))
            except OSError:
                pass
