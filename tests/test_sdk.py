"""The SageMaker Python SDK v2 and v3, unchanged, against a trainforge server and moto's S3.

The snippets in tests/sdk/ are the README's examples; each runs as a user runs it (its own process,
the SDK's own environment from tests/sdk_venvs.py, working directory tests/sdk), configured only
by the environment and the SageMaker SDK's configuration file that ``trainforge env`` provides:

* ``AWS_ENDPOINT_URL_SAGEMAKER``, ``_S3``, ``_CLOUDWATCH_LOGS`` (the SDK's ``fit(logs=True)`` and
  ``.logs()`` read the job's log stream), ``_STS`` and ``_IAM`` (v3's ModelTrainer validates the
  role: IAM ``GetRole`` and ``SimulatePrincipalPolicy``);
* the SDK's config file (``SAGEMAKER_USER_CONFIG_OVERRIDE``) with ``DefaultS3Bucket``: both SDKs
  ask STS for the account at a hard-coded regional endpoint (``sts_regional_endpoint``) when they
  have to name the default bucket themselves, which no endpoint variable redirects; and
  ``TelemetryOptOut``, without which the SDKs try to reach AWS's telemetry bucket.

SAGEMAKER_VALIDATE_ROLE is not set: v3 validates the role against the server's IAM.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerProcess
from sdk_venvs import sdk_python

SNIPPETS = Path(__file__).resolve().parent / "sdk"


def sdk_environment(server: ServerProcess, s3_endpoint: str, tmp_path: Path, bucket: str) -> dict[str, str]:
    config = tmp_path / "sagemaker-config.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n"
                      f"      Session:\n        DefaultS3Bucket: {bucket}\n      TelemetryOptOut: true\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "SAGEMAKER_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({
        "HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": s3_endpoint,
        "AWS_ENDPOINT_URL_SAGEMAKER": server.endpoint, "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": server.endpoint,
        "AWS_ENDPOINT_URL_STS": server.endpoint, "AWS_ENDPOINT_URL_IAM": server.endpoint,
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config),
    })
    return env


def run_snippet(sdk: str, snippet: str, env: dict[str, str], *args: str) -> str:
    python = sdk_python(sdk)
    done = subprocess.run([str(python), snippet, *args], check=False, cwd=SNIPPETS, env=env, capture_output=True,
                          text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{snippet} ({sdk}) exited {done.returncode}:\n{output[-6000:]}"
    return output


def _line(output: str, prefix: str) -> str:
    found = [line[len(prefix):].strip() for line in output.splitlines() if line.startswith(prefix)]
    assert found, f"no line '{prefix}' in:\n{output[-4000:]}"
    return found[-1]


@pytest.fixture
def sdk_bucket() -> str:
    """A bucket that does not exist yet: the SDK's default_bucket() creates it."""
    return f"tf-sdk-{uuid.uuid4().hex[:12]}"


def test_sdk_v2_pytorch_fit_with_logs_then_attach(server: ServerProcess, s3_endpoint: str, s3: Any,
                                                  tmp_path: Path, sdk_bucket: str) -> None:
    env = sdk_environment(server, s3_endpoint, tmp_path, sdk_bucket)
    output = run_snippet("sdk2", "v2_pytorch.py", env)
    job = _line(output, "job:")
    # fit(logs=True) streamed the algorithm's output from the CloudWatch Logs endpoint.
    assert "epoch 3: loss=0.3333 rows=3" in output
    model = _line(output, "model:")
    assert model == f"s3://{sdk_bucket}/{job}/output/model.tar.gz"
    assert s3.head_object(Bucket=sdk_bucket, Key=f"{job}/output/model.tar.gz")["ContentLength"] > 0
    described = server.client().describe_training_job(TrainingJobName=job)
    assert described["TrainingJobStatus"] == "Completed"
    assert described["HyperParameters"]["sagemaker_program"] == '"train.py"'
    # A prebuilt framework image: SageMaker's default turns time-series metrics on (describe_defaults.py).
    assert described["AlgorithmSpecification"]["EnableSageMakerMetricsTimeSeries"] is True

    attached = run_snippet("sdk2", "v2_attach.py", env, job)
    assert _line(attached, "attached:") == f"{job} ml.m5.large"  # output_kms_key: "" (printed empty)
    assert "epoch 3: loss=0.3333 rows=3" in attached  # .logs() of the finished job


def test_sdk_v3_model_trainer_validates_its_role_against_the_server(server: ServerProcess, s3_endpoint: str,
                                                                    s3: Any, tmp_path: Path,
                                                                    sdk_bucket: str) -> None:
    env = sdk_environment(server, s3_endpoint, tmp_path, sdk_bucket)
    assert "SAGEMAKER_VALIDATE_ROLE" not in env
    output = run_snippet("sdk3", "v3_model_trainer.py", env)
    job, status = _line(output, "job:").split()
    assert status == "Completed"
    model = _line(output, "model:")
    assert model.startswith(f"s3://{sdk_bucket}/") and model.endswith(f"/{job}/output/model.tar.gz")
    key = model[len(f"s3://{sdk_bucket}/"):]
    assert s3.head_object(Bucket=sdk_bucket, Key=key)["ContentLength"] > 0


def test_the_readme_shows_the_snippets_the_suite_runs() -> None:
    """The README's SDK examples are these files, verbatim (so the suite runs what users read)."""
    readme = (SNIPPETS.parent.parent / "README.md").read_text()
    for name in ("v2_pytorch.py", "v2_attach.py", "v3_model_trainer.py"):
        assert "```python\n" + (SNIPPETS / name).read_text().rstrip("\n") + "\n```" in readme, name
