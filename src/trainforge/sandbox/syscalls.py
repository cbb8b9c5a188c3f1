"""The few system calls the sandbox makes from Python that Python 3.11 does not wrap: ``mount``,
``umount2``, ``setns``, ``unshare`` (through ctypes; a ``mount`` or ``umount`` process costs
milliseconds of fork and exec, the call microseconds). Errors are :class:`OSError` with the errno."""

from __future__ import annotations

import ctypes
import os

MS_NOSUID, MS_NODEV, MS_BIND = 0x2, 0x4, 0x1000
MNT_DETACH = 2
libc = ctypes.CDLL(None, use_errno=True)


def checked(rc: int, what: str) -> None:
    if rc != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    checked(libc.mount(os.fsencode(source), os.fsencode(target), fstype.encode() if fstype else None, flags,
                       os.fsencode(data) if data is not None else None), f"mount {target}")


def umount(target: str, detach: bool = True) -> int:
    """``umount2``; returns 0 or the errno (the caller decides which ones matter)."""
    rc = libc.umount2(os.fsencode(target), MNT_DETACH if detach else 0)
    return 0 if rc == 0 else ctypes.get_errno()
