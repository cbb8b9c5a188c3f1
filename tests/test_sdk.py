"""The SageMaker Python SDK v2 and v3, unchanged, against a trainforge server and its embedded S3.

The snippets in tests/sdk/ are the README's examples; each runs as a user runs it after the README's
setup (``tests/sdk_setup.py``: a fresh home, ``eval "$(trainforge env --sagemaker-config)"``, which
starts the embedded default server with its S3 endpoint and writes the SDK's config file), in its own
process, with the SDK's own environment from tests/sdk_venvs.py, working directory tests/sdk. What
the setup provides, and why each is needed:

* ``AWS_ENDPOINT_URL_SAGEMAKER``, ``_S3`` (the embedded endpoint), ``_CLOUDWATCH_LOGS`` (the SDK's
  ``fit(logs=True)`` and ``.logs()`` read the job's log stream), ``_STS`` and ``_IAM`` (v3's
  ModelTrainer validates the role: IAM ``GetRole`` and ``SimulatePrincipalPolicy``), and the key pair;
* the SDK's config file with ``DefaultS3Bucket`` (the embedded S3's default bucket): both SDKs ask STS
  for the account at a hard-coded regional endpoint (``sts_regional_endpoint``) when they have to name
  the default bucket themselves, which no endpoint variable redirects; and ``TelemetryOptOut``, without
  which the SDKs try to reach AWS's telemetry bucket.

SAGEMAKER_VALIDATE_ROLE is not set: v3 validates the role against the server's IAM.

``sdk_environment`` (the same variables by hand, with moto's S3 and a config file naming ``bucket``)
serves the tests elsewhere that run SDK code needing no S3 (TrainingJobAnalytics, logs_for_job).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
import sdk_setup
from conftest import ServerProcess
from sdk_setup import SNIPPETS, ReadmeSetup
from sdk_venvs import sdk_python

readme_setup = sdk_setup.readme_setup  # the module-scoped fixture, for this module's tests


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
    """Run ``snippet`` with SDK ``sdk``'s interpreter in ``env`` (``sdk_environment``: a server of the test's
    own configuration); its output, asserting it succeeded."""
    done = subprocess.run([str(sdk_python(sdk)), snippet, *args], check=False, cwd=SNIPPETS, env=env,
                          capture_output=True, text=True, timeout=600)
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


def stored(setup: ReadmeSetup, key: str) -> Path:
    """Where the embedded S3 endpoint keeps object ``key`` of the default bucket: a file in $TRAINFORGE_HOME/s3."""
    return setup.home / "s3" / setup.bucket / key


def test_sdk_v2_pytorch_fit_with_logs_then_attach(readme_setup: ReadmeSetup) -> None:
    output = readme_setup.run("sdk2", "v2_pytorch.py")
    job = _line(output, "job:")
    # fit(logs=True) streamed the algorithm's output from the CloudWatch Logs endpoint.
    assert "epoch 3: loss=0.3333 rows=3" in output
    model = _line(output, "model:")
    bucket = readme_setup.bucket
    assert model == f"s3://{bucket}/{job}/output/model.tar.gz"
    s3 = readme_setup.client("s3")
    assert s3.head_object(Bucket=bucket, Key=f"{job}/output/model.tar.gz")["ContentLength"] > 0
    # through the embedded S3: the model and the uploaded data are files under $TRAINFORGE_HOME/s3
    assert stored(readme_setup, f"{job}/output/model.tar.gz").stat().st_size > 0
    assert stored(readme_setup, "sdk-example/train/train.csv").read_bytes() == (SNIPPETS / "data/train.csv").read_bytes()
    described = readme_setup.client("sagemaker").describe_training_job(TrainingJobName=job)
    assert described["TrainingJobStatus"] == "Completed"
    assert described["HyperParameters"]["sagemaker_program"] == '"train.py"'
    # A prebuilt framework image: SageMaker's default turns time-series metrics on (describe_defaults.py).
    assert described["AlgorithmSpecification"]["EnableSageMakerMetricsTimeSeries"] is True

    attached = readme_setup.run("sdk2", "v2_attach.py", job)
    assert _line(attached, "attached:") == f"{job} ml.m5.large"  # output_kms_key: "" (printed empty)
    assert "epoch 3: loss=0.3333 rows=3" in attached  # .logs() of the finished job


def test_sdk_v3_model_trainer_validates_its_role_against_the_server(readme_setup: ReadmeSetup) -> None:
    assert not any(k.startswith("SAGEMAKER_") for k in readme_setup.env)
    output = readme_setup.run("sdk3", "v3_model_trainer.py")
    assert "SAGEMAKER_VALIDATE_ROLE" not in readme_setup.env
    job, status = _line(output, "job:").split()
    assert status == "Completed"
    model = _line(output, "model:")
    bucket = readme_setup.bucket
    assert model.startswith(f"s3://{bucket}/") and model.endswith(f"/{job}/output/model.tar.gz")
    key = model[len(f"s3://{bucket}/"):]
    assert readme_setup.client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"] > 0
    assert stored(readme_setup, key).stat().st_size > 0


def test_the_readme_shows_the_snippets_the_suite_runs() -> None:
    """The README's SDK examples are these files, verbatim (so the suite runs what users read)."""
    readme = (SNIPPETS.parent.parent / "README.md").read_text()
    for name in ("v2_pytorch.py", "v2_attach.py", "v3_model_trainer.py"):
        assert "```python\n" + (SNIPPETS / name).read_text().rstrip("\n") + "\n```" in readme, name
