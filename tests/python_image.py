"""An OCI image with a Python runtime and the sagemaker-training toolkit, built from this machine:
Debian's ``/usr/bin/python3.11`` with its standard library and the shared libraries it and its
extension modules load (found with ``ldd``), the static busybox layer of :mod:`tests.oci_registry`,
and ``pip install sagemaker-training`` (from PyPI, compiling its small C extension with this machine's
gcc) into ``/usr/local/lib/python3.11/dist-packages``, its ``train`` console script in
``/usr/local/bin``. The OCI layout is cached under ``$TRAINFORGE_TEST_IMAGES`` (default
``~/.cache/trainforge-test-images``) in a directory named by a hash of what goes in, so reruns only
push it; a lock serialises concurrent builds, as :mod:`tests.sdk_venvs` does for environments.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.oci_registry import Entry, busybox_layer, write_layout

PYTHON = "/usr/bin/python3.11"
STDLIB = "/usr/lib/python3.11"
TOOLKIT = "sagemaker-training==5.1.4"
SITE = "usr/local/lib/python3.11/dist-packages"
COMPLETE = ".trainforge-complete"
# busybox applets a base image has and the toolkit runs (``which`` for its launcher checks)
APPLETS = ("which", "grep", "sed", "tar", "gzip", "uname", "ps", "awk", "ln", "mv", "chmod", "find", "xargs")
VERSION = "2"  # bump when the build below changes


def cache_dir() -> Path:
    return Path(os.environ.get("TRAINFORGE_TEST_IMAGES") or Path.home() / ".cache" / "trainforge-test-images")


def toolkit_layout() -> Path:
    """The OCI layout (tag ``latest``) of the toolkit image, built once per hash of its inputs."""
    version = subprocess.run([PYTHON, "-c", "import sys; print(sys.version)"], check=True, capture_output=True,
                             text=True).stdout
    digest = hashlib.sha256(f"{VERSION}\n{TOOLKIT}\n{version}".encode()).hexdigest()[:16]
    out = cache_dir() / f"sagemaker-training-{digest}"
    if (out / COMPLETE).exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / "sagemaker-training.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / COMPLETE).exists():
            return out
        shutil.rmtree(out, ignore_errors=True)
        site = out / "site"
        venv = out / "pip-venv"  # pip runs from a venv of its own: the system Python is never touched
        subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        install = subprocess.run(  # noqa: PLW1510 - its failure is reported below, with its output
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--target", str(site), TOOLKIT], capture_output=True, text=True, timeout=1800)
        if install.returncode != 0:
            raise AssertionError(f"pip install {TOOLKIT} failed:\n{install.stdout[-3000:]}\n{install.stderr[-3000:]}")
        applets = [Entry(f"bin/{a}", kind=tarfile.SYMTYPE, linkname="busybox") for a in APPLETS]
        layers = [busybox_layer(applets), runtime_layer(site), packages_layer(site)]
        write_layout(out / "layout", layers, {
            "Entrypoint": ["train"], "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE=1"],
            "WorkingDir": "/"})
        shutil.rmtree(site)
        shutil.rmtree(venv)
        (out / COMPLETE).write_text(TOOLKIT + "\n")
    return out


def shared_libraries(paths: list[str]) -> set[str]:
    """What ``ldd`` says the ELF files ``paths`` load (the dynamic loader included)."""
    found: set[str] = set()
    for path in paths:
        done = subprocess.run(["ldd", path], capture_output=True, text=True, check=False)
        for line in done.stdout.splitlines():
            m = re.search(r"(/\S+) \(0x", line)
            if m:
                found.add(m.group(1))
    return found


def _add(tar: tarfile.TarFile, source: str, name: str) -> None:
    info = tar.gettarinfo(source, arcname=name)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if info.isreg():
        with open(source, "rb") as f:
            tar.addfile(info, f)
    else:
        tar.addfile(info)


def _tree(tar: tarfile.TarFile, top: str, name: str, skip: tuple[str, ...] = ()) -> None:
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if os.path.join(dirpath, d) not in skip)
        rel = os.path.relpath(dirpath, top)
        _add(tar, dirpath, os.path.normpath(os.path.join(name, rel)))
        for f in sorted(filenames):
            _add(tar, os.path.join(dirpath, f), os.path.normpath(os.path.join(name, rel, f)))


def _dirs(tar: tarfile.TarFile, names: list[str]) -> None:
    for name in names:
        info = tarfile.TarInfo(name)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)


def runtime_layer(site: Path) -> bytes:
    """The interpreter, its standard library (less its tests) and every shared library that it, its
    extension modules and the installed packages' load, each at the path it has here."""
    elves = [PYTHON] + [str(p) for root in (STDLIB, str(site)) for p in Path(root).rglob("*.so*") if p.is_file()]
    libs = sorted(shared_libraries(elves) - {str(p) for p in Path(site).rglob("*")})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _dirs(tar, ["usr/lib", "usr/lib/x86_64-linux-gnu", "lib", "lib64", "lib/x86_64-linux-gnu"])
        for lib in libs:
            info = tar.gettarinfo(os.path.realpath(lib), arcname=lib.lstrip("/"))
            info.uid = info.gid = 0
            with open(lib, "rb") as f:
                tar.addfile(info, f)
        _add(tar, PYTHON, PYTHON.lstrip("/"))
        for alias in ("usr/bin/python3", "usr/bin/python"):
            info = tarfile.TarInfo(alias)
            info.type, info.linkname = tarfile.SYMTYPE, "python3.11"
            tar.addfile(info)
        _tree(tar, STDLIB, STDLIB.lstrip("/"), skip=(f"{STDLIB}/test", f"{STDLIB}/idlelib"))
    return buf.getvalue()


def packages_layer(site: Path) -> bytes:
    """pip's ``--target`` tree as the image's site packages, its ``train`` script in /usr/local/bin
    with the image's interpreter as its ``#!`` (pip wrote the one it ran with)."""
    scripts = site / "bin"
    train = (scripts / "train").read_text()
    train = re.sub(r"^#!.*", f"#!{PYTHON}", train, count=1)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _dirs(tar, ["usr/local", "usr/local/bin", "usr/local/lib", "usr/local/lib/python3.11"])
        _tree(tar, str(site), SITE, skip=(str(scripts),))
        info = tarfile.TarInfo("usr/local/bin/train")
        info.mode, info.size = 0o755, len(train.encode())
        tar.addfile(info, io.BytesIO(train.encode()))
    return buf.getvalue()


if __name__ == "__main__":  # build (or find) the cached image: python3 -m tests.python_image
    print(toolkit_layout(), file=sys.stderr)
