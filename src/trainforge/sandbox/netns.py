"""Network namespaces by path, from Python, without a subprocess.

Python 3.11 has no ``os.setns``/``os.unshare``: they are called through ctypes. A network namespace
belongs to a thread, not to a process, so :func:`inside` moves only the calling thread, and moves it
back on the way out; threads started while inside inherit the namespace, so none are started there.
Sockets keep the namespace they were created in: a listening socket or a netlink socket created
inside stays there once the thread is back home.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _checked(rc: int, what: str) -> None:
    if rc != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _setns(fd: int) -> None:
    _checked(_libc.setns(fd, CLONE_NEWNET), "setns")


@contextmanager
def inside(path: str | None) -> Iterator[None]:
    """Run the block in the network namespace bound at ``path`` (``None``: a new, empty one)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if path is None:
            _checked(_libc.unshare(CLONE_NEWNET), "unshare")
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
        _checked(_libc.mount(b"/proc/thread-self/ns/net", os.fsencode(target), None, MS_BIND, None),
                 f"mount {target}")
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
        rc = _libc.umount2(os.fsencode(path), MNT_DETACH)
        if rc != 0 and ctypes.get_errno() != errno.EINVAL:
            _checked(rc, f"umount {path}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
