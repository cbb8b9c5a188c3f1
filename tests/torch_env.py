"""A Python with torch 2.13.0 (CPU) for the distributed tests: a virtual environment made once per
machine in ``$TRAINFORGE_TEST_VENVS`` (default ``~/.cache/trainforge-test-venvs``), with
``pip install torch==2.13.0`` (the CPU wheel; this machine's pip configuration may serve it from a
local file). Made under a file lock; a ``.complete`` marker says it is whole."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

TORCH = "torch==2.13.0"


def torch_python() -> str:
    base = Path(os.environ.get("TRAINFORGE_TEST_VENVS") or Path.home() / ".cache" / "trainforge-test-venvs")
    venv = base / "torch-2.13.0"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".torch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                            "--disable-pip-version-check", TORCH], check=True)
            (venv / ".complete").write_text(TORCH)
    return str(venv / "bin" / "python")


if __name__ == "__main__":
    print(torch_python())
