"""Network namespaces by path, from Python, without a subprocess.

Python 3.11 has no ``os.setns``/``os.unshare``: they are called through ctypes (:mod:`.syscalls`). A network namespace
belongs to a thread, not to a process, so :func:`inside` moves only the calling thread, and moves it
back on the way out; threads started while inside inherit the namespace, so none are started there.
Sockets keep the namespace they were created in: a listening socket or a netlink socket created
inside stays there once the thread is back home.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from trainforge.sandbox.syscalls import MS_BIND, checked, libc, mount, umount

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    checked(libc.setns(fd, CLONE_NEWNET), "setns")


@contextmanager
def inside(path: str | None) -> Iterator[None]:
    """Run the block in the network namespace bound at ``path`` (``None``: a new, empty one)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if path is None:
            checked(libc.unshare(CLONE_NEWNET), "unshare")
        else:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def bind_here(target: str) -> None:
    """Bind-mount the calling thread's network namespace on ``target`` (a new file)."""
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    try:
        mount("/proc/thread-self/ns/net", target, None, MS_BIND)
    except OSError:
        os.unlink(target)
        raise


def is_bound(path: str) -> bool:
    """Whether ``path`` holds a namespace mount (an nsfs file, not the plain file under it)."""
    try:
        return os.stat(path).st_dev != os.stat(os.path.dirname(path) or ".").st_dev
    except FileNotFoundError:
        return False


def unbind(path: str) -> None:
    """Unmount every namespace bound at ``path`` and remove the file; nothing there is fine."""
    while is_bound(path):
        code = umount(path)
        if code not in (0, errno.EINVAL):
            raise OSError(code, f"umount {path}: {os.strerror(code)}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
