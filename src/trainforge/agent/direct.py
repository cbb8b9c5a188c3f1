"""Script mode without a second interpreter: the agent prepares the code and starts the script.

A framework image's entrypoint is ``python -m trainforge.images.script_mode train``: a Python
process that prepares the code (entry point, ``sagemaker_submit_directory``), then runs the
user's script as its child. When the job runs exactly that entrypoint and there is nothing to
install (no ``requirements.txt``, no ``setup.py``), the agent does the same preparation itself,
with the same functions, and starts the user's command directly — one interpreter start less
(≈ 35 ms here) between CreateTrainingJob and the first line of user code. After the script
exits the agent writes the toolkit's failure or success file exactly as ``script_mode`` would.

Anything unusual — no entry point, a submit directory that cannot be fetched, packages to
install — falls back to running the entrypoint, inside the instance's isolation, which then
reports the problem or runs the installs as usual (and finds the code already unpacked). So does a
distributed job (``images/launchers.py``): the entrypoint starts torchrun or mpirun around the
code the agent has unpacked.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from trainforge.agent.spec import Paths

SCRIPT_MODE_MODULE = "trainforge.images.script_mode"


class Direct:
    """The user's command, prepared by the agent in place of the script-mode entrypoint."""

    __slots__ = ("command",)

    def __init__(self, command: list[str]):
        self.command = command


def plan(spec: dict[str, Any], paths: Paths, argv: list[str], env: dict[str, str]) -> Direct | None:
    """The user's command when the fast path applies (``env`` gains the code dir on PYTHONPATH)."""
    python = (spec.get("runtime") or {}).get("python")
    if not python or argv != [python, "-m", SCRIPT_MODE_MODULE, "train"]:
        return None
    from trainforge.images import launchers
    from trainforge.images import script_mode as sm

    hps = sm.read_hyperparameters(paths.host_ml)
    program = sm.entry_point(hps, env)
    if not program:
        return None
    host_code = paths.host("code")
    submit = sm.submit_directory(hps, env)
    if submit:
        try:
            _fetch(spec, paths, submit, host_code)
        except Exception:  # noqa: BLE001 - the entrypoint will fetch again and report it properly
            _empty(host_code)
            return None
    if sm.needs_install(host_code) or launchers.distributed(env):
        return None  # the entrypoint installs, or launches torchrun / mpirun (images/launchers.py)
    args = [str(a) for a in json.loads(env.get("SM_USER_ARGS") or "[]")]
    code_dir = paths.container("code")
    command = sm.command(program, code_dir, args, python=python, host_code_dir=host_code)
    env["PYTHONPATH"] = code_dir + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return Direct(command)


def _fetch(spec: dict[str, Any], paths: Paths, submit: str, host_code: str) -> None:
    from trainforge.images import script_mode as sm

    if submit.startswith("s3://"):
        from trainforge.agent.inputs import use_job_credentials

        use_job_credentials(spec)
        uri = submit
    elif submit.startswith("file://"):  # a host path, as a file:// channel's (allowed roots checked)
        uri = submit.removeprefix("file://")
    else:  # a local path as the instance sees it (e.g. /opt/ml/input/data/code/sourcedir.tar.gz)
        uri = paths.to_host(submit)
    roots = spec.get("allowed_local_roots")
    sm.fetch_code(uri, host_code, paths.host_ml, list(roots) if roots is not None else None)


def _empty(directory: str) -> None:
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def finish(paths: Paths, direct: Direct, exit_code: int, stderr_tail: list[str], stopped: bool) -> None:
    """Write what ``script_mode`` writes when its script exits: output/failure or output/success."""
    from trainforge.images import script_mode as sm

    if stopped and exit_code != 0:
        return
    if exit_code != 0:
        sm.write_failure(paths.host_ml, sm.script_failure(exit_code, "\n".join(stderr_tail), direct.command))
    else:
        sm.write_success(paths.host_ml)
