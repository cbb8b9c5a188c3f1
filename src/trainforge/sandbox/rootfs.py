"""The root filesystem of a catalog-image instance: the host's system, read-only, and nothing else.

A catalog image (script mode on the server's Python) runs on the host's own programs. Its instance
sees a root of its own (:func:`roots_dir`/<container id>: an empty directory owned by its root,
where runc makes the mount points, remounted read-only once they are made) holding:

- ``/usr`` (and the merged-``/usr`` links ``/bin``, ``/lib``, ``/lib64``, ``/sbin``) bind-mounted
  read-only from the host;
- ``/etc`` a copy of the few host files programs read (name service, the dynamic loader's cache,
  certificates, pip's configuration, time zone...) with a ``passwd``/``group`` of its own: never the
  host's ``shadow``, ``ssh`` keys or the server's configuration (``<sandbox>/etc``, built once per
  data directory, bind-mounted read-only into every instance);
- the runtime's Python (its prefix, and every directory on the agent's ``sys.path``: an editable
  trainforge, ``PYTHONPATH`` entries) bind-mounted read-only at the same paths;
- empty mount points for what each instance gets of its own (``/opt/ml``, ``/tmp``, ``/root``,
  ``/proc``, ``/dev``, ``/sys``); the instance's ``/etc/hosts``, ``/etc/hostname`` and
  ``/etc/resolv.conf`` are its own files, bind-mounted over the copies.

Nothing of the data directory is visible but the instance's own ``/opt/ml``: a read-only path
under the data directory is refused (:func:`read_only_paths`).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterable

# /etc entries copied into the instance's root (files or whole directories, symlinks kept)
ETC_COPIED = ("alternatives", "bash.bashrc", "ca-certificates", "ca-certificates.conf", "debian_version",
              "gai.conf", "host.conf", "inputrc", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime",
              "mime.types", "networks", "nsswitch.conf", "os-release", "pip.conf", "profile", "protocols",
              "python3", "python3.11", "services", "shells", "ssl", "timezone", "xdg")
PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
GROUP = "root:x:0:\nnogroup:x:65534:\n"
MERGED_USR = {"bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64", "sbin": "usr/sbin"}
VERSION = "3"  # bump when the layout changes: an /etc of another version is rebuilt


def ensure(sandbox_dir: str, uid: int) -> str:
    """``<sandbox_dir>/etc``, built once (atomically: concurrent agents race harmlessly), the
    instances' root's (``uid``) alone: private modes, as everything in the data directory."""
    etc = os.path.join(sandbox_dir, "etc")
    marker = os.path.join(etc, ".trainforge-etc")
    try:
        with open(marker, encoding="utf-8") as f:
            if f.read().strip() == VERSION:
                return etc
    except OSError:
        pass
    os.makedirs(sandbox_dir, exist_ok=True)
    building = tempfile.mkdtemp(prefix=".etc-", dir=sandbox_dir)
    _build_etc(building, uid)
    with open(os.path.join(building, ".trainforge-etc"), "w", encoding="utf-8") as f:
        f.write(VERSION + "\n")
    old = etc + f".old-{os.getpid()}"
    try:
        os.rename(etc, old)
    except FileNotFoundError:
        old = ""
    try:
        os.rename(building, etc)
    except OSError:  # another agent won the race: its copy is as good as ours
        shutil.rmtree(building, ignore_errors=True)
    if old:
        shutil.rmtree(old, ignore_errors=True)
    return etc


def roots_dir(data_dir: str) -> str:
    """Where the instances' root directories are: runc reaches a root as the instance's own root (an
    unprivileged host uid), so no directory above it may be private, as the data directory is.
    ``/run/trainforge/<digest of the data directory>`` (mode 0711: traversed, never listed)."""
    import hashlib

    base = "/run/trainforge" if os.access("/run", os.W_OK) else os.path.join(tempfile.gettempdir(), "trainforge")
    path = os.path.join(base, hashlib.sha256(os.path.realpath(data_dir).encode()).hexdigest()[:16])
    for d in (base, path):
        os.makedirs(d, mode=0o711, exist_ok=True)
        os.chmod(d, 0o711)
    return path


def runc_state(roots: str) -> str:
    """runc's state directory (outside the data directory: runc makes its directories readable by others)."""
    return os.path.join(roots, ".runc")


def network_dir(roots: str) -> str:
    """Where the jobs' network namespaces are (:mod:`trainforge.sandbox.network`)."""
    return os.path.join(roots, "net")


def job_key(job_dir: str) -> str:
    """The name of a job's network directory (one per attempt), whoever computes it (agent or sweep)."""
    import hashlib

    return "j" + hashlib.sha256(os.path.realpath(job_dir).encode()).hexdigest()[:16]


def instance_root(roots: str, name: str, uid: int) -> str:
    """The instance's (empty) root directory, with the merged-/usr links, owned by its root."""
    root = os.path.join(roots, name)
    os.makedirs(root, mode=0o755, exist_ok=True)
    for top, target in MERGED_USR.items():
        link = os.path.join(root, top)
        if not os.path.lexists(link):
            if os.path.islink("/" + top):
                os.symlink(target, link)
            else:
                os.mkdir(link)
    os.chown(root, uid, uid)
    return root


def remove_root(roots: str, name: str) -> None:
    """After the container's end (its mount namespace is gone: only empty mount points are left; an
    image's root, mounted with its writable layer, is unmounted first, never walked into)."""
    path = os.path.join(roots, name)
    if os.path.ismount(path):
        from trainforge.sandbox.syscalls import umount

        umount(path, detach=True)  # the system call: no umount(8) process
        if os.path.ismount(path):
            return
    shutil.rmtree(path, ignore_errors=True)


def _build_etc(etc: str, uid: int) -> None:
    for name in ETC_COPIED:
        source = os.path.join("/etc", name)
        target = os.path.join(etc, name)
        try:
            if os.path.isdir(source) and not os.path.islink(source):
                shutil.copytree(source, target, symlinks=True, ignore_dangling_symlinks=True)
            elif os.path.lexists(source):
                shutil.copy2(source, target, follow_symlinks=False)
        except OSError:
            continue  # unreadable or vanished: the instance goes without it
    for name, text in (("passwd", PASSWD), ("group", GROUP), ("hosts", ""), ("hostname", ""),
                       ("resolv.conf", "")):
        with open(os.path.join(etc, name), "w", encoding="utf-8") as f:
            f.write(text)
    for dirpath, dirnames, filenames in os.walk(etc):
        os.lchown(dirpath, uid, uid)
        os.chmod(dirpath, 0o700)
        for name in filenames:
            path = os.path.join(dirpath, name)
            os.lchown(path, uid, uid)
            if not os.path.islink(path):
                os.chmod(path, 0o600)


def python_paths(python: str, extra: Iterable[str] = ()) -> list[str]:
    """The host directories the runtime's Python needs, outermost first, without duplicates: its
    prefix (from the interpreter's real path), this process's prefixes, the directory trainforge
    is imported from, the entries of ``PYTHONPATH``, and ``extra``. ``/usr`` paths are there already."""
    candidates: list[str] = []
    real = os.path.realpath(python) if python else sys.executable
    candidates.append(os.path.dirname(os.path.dirname(real)))
    if python:  # a virtual environment: its own directory, whose bin/python links elsewhere
        candidates.append(os.path.dirname(os.path.dirname(os.path.abspath(python))))
    candidates += [sys.prefix, sys.base_prefix]
    candidates += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.isabs(p)]
    candidates += [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))]
    candidates += list(extra)
    chosen: list[str] = []
    for path in sorted({os.path.realpath(p) for p in candidates if p}, key=len):
        if not os.path.isdir(path) or path in ("/", "/usr") or path.startswith("/usr/"):
            continue
        if any(path == c or path.startswith(c.rstrip("/") + "/") for c in chosen):
            continue
        chosen.append(path)
    return chosen


def read_only_paths(python: str, data_dir: str, extra: Iterable[str] = ()) -> list[str]:
    """:func:`python_paths` without anything that holds or lies in the data directory (an instance
    must never see the server's database or another job's files)."""
    data = os.path.realpath(data_dir).rstrip("/") + "/"
    return [p for p in python_paths(python, extra)
            if not (p.rstrip("/") + "/").startswith(data) and not data.startswith(p.rstrip("/") + "/")]
