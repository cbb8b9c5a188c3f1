"""The SageMaker Python SDKs the suite runs, each in a virtual environment of its own.

v2 and v3 are both the ``sagemaker`` package, so they cannot share an environment, and neither
belongs in trainforge's own: each is installed from its pinned, hashed lock file
(``requirements-sdk2.lock``, ``requirements-sdk3.lock`` at the top of the repository, made by
``scripts/lock-sdk``) into ``$TRAINFORGE_TEST_VENVS`` (default ``~/.cache/trainforge-test-venvs``),
in a directory named after the lock's and the interpreter's hash: a changed lock builds a new one,
an unchanged one is reused (CI machines keep it between runs when that directory is cached). A
lock file serialises the builds of concurrent test processes; a build that did not finish is
started over.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPLETE = ".trainforge-complete"


def cache_dir() -> Path:
    return Path(os.environ.get("TRAINFORGE_TEST_VENVS") or Path.home() / ".cache" / "trainforge-test-venvs")


def venv_for(name: str) -> Path:
    """Where the environment of ``requirements-<name>.lock`` lives (built or not)."""
    lock = ROOT / f"requirements-{name}.lock"
    digest = hashlib.sha256(lock.read_bytes() + sys.version.encode()).hexdigest()[:16]
    return cache_dir() / f"{name}-{digest}"


def sdk_python(name: str) -> Path:
    """The interpreter of the environment for ``requirements-<name>.lock``, built if needed."""
    venv = venv_for(name)
    python = venv / "bin" / "python"
    if (venv / COMPLETE).exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / COMPLETE).exists():  # another process built it meanwhile
            return python
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        install = subprocess.run(  # noqa: PLW1510 - its failure is reported below, with its output
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--require-hashes", "-r", str(ROOT / f"requirements-{name}.lock")],
            capture_output=True, text=True, timeout=1800)
        if install.returncode != 0:
            raise AssertionError(f"installing requirements-{name}.lock into {venv} failed:\n"
                                 f"{install.stdout[-3000:]}\n{install.stderr[-3000:]}")
        (venv / COMPLETE).write_text(f"requirements-{name}.lock\n")
    return python


if __name__ == "__main__":  # build them ahead of the tests: python tests/sdk_venvs.py sdk2 sdk3
    for arg in sys.argv[1:] or ["sdk2", "sdk3"]:
        print(sdk_python(arg))
