"""VolumeSizeInGB as a real limit at write time: the instance's ``/opt/ml`` is an ext4 filesystem
of that size, in a sparse file of the instance's own, loop-mounted.

A write past the size fails in the writer with ENOSPC, as on SageMaker's ML storage volume; the
file takes on disk only what is written. Making one: ``mkfs.ext4`` once per size into
``<sandbox>/volumes/ext4-<N>g.img`` (no journal: the volume lives as long as the instance; no
reserved blocks: all of it is the instance's), then a sparse copy per instance (only the
template's data extents, ``copy_file_range``: a millisecond or two, whatever the size), a free loop
device configured on it in one ``LOOP_CONFIGURE`` ioctl (autoclear: the device is released with the
last unmount) and ``mount(2)`` with ``nosuid,nodev``, all from the agent's own thread: no ``cp``,
``losetup`` or ``mount`` process (they cost ~30 ms together; a kernel without ``LOOP_CONFIGURE``
(before 5.8) gets ``mount -o loop``). The filesystem's root is owned by the instance's root (host ``uid``).

Released (unmounted, the file deleted) when the job ends (:func:`release_under`): the leader reads
the other instances' ``/opt/ml/model`` after they exited, so an instance never releases its own.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import subprocess
import tempfile
import time

from trainforge.sandbox.syscalls import MS_NODEV, MS_NOSUID, umount
from trainforge.sandbox.syscalls import mount as mount_call

GIB = 1024**3
LOOP_CTL_GET_FREE, LOOP_CONFIGURE = 0x4C82, 0x4C0A
LO_FLAGS_AUTOCLEAR = 4
LOOP_RACE_SECONDS = 30.0
# struct loop_config: fd, block_size, struct loop_info64 (232 bytes; lo_flags at offset 52 and the
# file name, for losetup -l, at 56), 64 reserved bytes
_LOOP_CONFIG = struct.Struct("=II52xI64s112x64x")


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


def copy_sparse(source: str, target: str) -> None:
    """``target`` (new) a copy of ``source`` with its holes: only the data extents are copied."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(src).st_size
            os.ftruncate(dst, size)
            offset = 0
            while offset < size:
                try:
                    start = os.lseek(src, offset, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:  # only a hole is left
                        break
                    raise
                offset = os.lseek(src, start, os.SEEK_HOLE)
                while start < offset:
                    copied = os.copy_file_range(src, dst, offset - start, start, start)
                    if copied <= 0:
                        raise VolumeError(f"copying {source}: short copy at {start}")
                    start += copied
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _attach_loop(image: str) -> tuple[str, int]:
    """A free loop device on ``image`` (autoclear): its path and an open fd, which must stay open
    until the device is mounted (autoclear would release an unused device at its last close)."""
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        config = _LOOP_CONFIG.pack(backing, 0, LO_FLAGS_AUTOCLEAR, os.fsencode(image)[-63:])
        # Agents started together would all get the same free device and all but one would try
        # again (each round a device opened and refused): they take turns, under a lock on the
        # control device (closed, hence released, with it). Another process may still take the free
        # device between the two calls: one of them wins each round, so the bound is a time.
        fcntl.flock(control, fcntl.LOCK_EX)
        until = time.monotonic() + LOOP_RACE_SECONDS
        while True:
            device = f"/dev/loop{fcntl.ioctl(control, LOOP_CTL_GET_FREE)}"
            fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, LOOP_CONFIGURE, config)
                return device, fd
            except OSError as exc:
                os.close(fd)
                if exc.errno != errno.EBUSY:
                    raise
            if time.monotonic() > until:
                raise VolumeError(f"no free loop device for {image}")
    finally:
        os.close(control)
        os.close(backing)


def mount(sandbox_dir: str, instance_dir: str, target: str, size_gb: int, uid: int) -> None:
    """``target`` (the instance's /opt/ml on the host) becomes its own ``size_gb`` GiB filesystem."""
    image = image_path(instance_dir)
    copy_sparse(template(sandbox_dir, size_gb, uid), image)
    os.makedirs(target, exist_ok=True)
    try:
        device, fd = _attach_loop(image)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTTY):  # a kernel without LOOP_CONFIGURE (< 5.8)
            raise VolumeError(f"loop device for {image}: {exc}") from exc
        _run(["mount", "-o", "loop,nosuid,nodev", image, target])
    else:
        try:
            mount_call(device, target, "ext4", MS_NOSUID | MS_NODEV)
        except OSError as exc:
            raise VolumeError(f"mounting {image}: {exc}") from exc
        finally:
            os.close(fd)  # mounted: the mount holds the device; not mounted: autoclear releases it
    lost = os.path.join(target, "lost+found")
    if os.path.isdir(lost):
        os.rmdir(lost)


def mounted_under(directory: str) -> list[str]:
    """Mount points at or below ``directory`` (deepest first), from this namespace's mount table."""
    prefix = os.path.realpath(directory).rstrip("/") + "/"
    # mountinfo writes space, tab, newline and backslash as octal escapes: look for the prefix so
    # written before decoding a line (a host with a thousand mounts has a thousand lines to pass over)
    escaped = "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in prefix[:-1])
    points = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                if escaped not in line:
                    continue
                point = line.split()[4].encode().decode("unicode_escape")
                if (point + "/").startswith(prefix):
                    points.append(point)
    except OSError:
        return []
    return sorted(set(points), key=len, reverse=True)


def release_under(directory: str, points: list[str] | None = None) -> None:
    """Unmount every volume at or below ``directory`` (``points``, deepest first, where the caller
    has read them from the mount table already: reading it costs milliseconds of CPU on a host with
    a thousand mounts) and delete the images (a job's end, or a job directory about to be removed).
    Idempotent."""
    for point in mounted_under(directory) if points is None else points:
        umount(point)  # lazily: a process still in it keeps it until it leaves; errors change nothing
    for dirpath, _dirs, files in os.walk(directory):
        if "volume.img" in files:
            try:
                os.unlink(os.path.join(dirpath, "volume.img"))
            except OSError:
                pass
