"""Helpers for the CLI tests (no tests here): a recording SageMaker/Logs endpoint and runners that
drive `aws` (awscli, in process) and `trainforge` (in process or as a subprocess)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import awscli  # noqa: F401  (sets AWS_DATA_PATH on import: import it before any test environment)

JOB_ARN = "arn:aws:sagemaker:us-east-1:000000000000:training-job/my-job"

DESCRIBE = {
    "TrainingJobName": "my-job",
    "TrainingJobArn": JOB_ARN,
    "ModelArtifacts": {"S3ModelArtifacts": "s3://bucket/out/my-job/output/model.tar.gz"},
    "TrainingJobStatus": "Completed",
    "SecondaryStatus": "Completed",
    "HyperParameters": {"epochs": "3", "lr": "0.1"},
    "AlgorithmSpecification": {"TrainingImage": "img:latest", "TrainingInputMode": "File",
                               "MetricDefinitions": [{"Name": "loss", "Regex": "loss=([0-9.]+)"}]},
    "RoleArn": "arn:aws:iam::000000000000:role/r",
    "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": "s3://bucket/train/", "S3DataDistributionType": "FullyReplicated"}}}],
    "OutputDataConfig": {"S3OutputPath": "s3://bucket/out"},
    "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 30},
    "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    "CreationTime": 1700000000.123,
    "TrainingStartTime": 1700000001.5,
    "TrainingEndTime": 1700000061,
    "LastModifiedTime": 1700000062.25,
    "SecondaryStatusTransitions": [
        {"Status": "Starting", "StartTime": 1700000000.2, "EndTime": 1700000001.5,
         "StatusMessage": "Preparing the instances for training"},
        {"Status": "Training", "StartTime": 1700000001.5, "EndTime": 1700000050,
         "StatusMessage": "Training image download completed. Training in progress."},
        {"Status": "Completed", "StartTime": 1700000061, "EndTime": 1700000061,
         "StatusMessage": "Training job completed"},
    ],
    "FinalMetricDataList": [{"MetricName": "loss", "Value": 0.125, "Timestamp": 1700000050}],
    "EnableNetworkIsolation": False,
    "TrainingTimeInSeconds": 60,
    "BillableTimeInSeconds": 60,
}

CANNED: dict[str, Any] = {
    "SageMaker.CreateTrainingJob": {"TrainingJobArn": JOB_ARN},
    "SageMaker.DescribeTrainingJob": DESCRIBE,
    "SageMaker.ListTrainingJobs": {"TrainingJobSummaries": [
        {"TrainingJobName": f"job-{i}", "TrainingJobArn": JOB_ARN.replace("my-job", f"job-{i}"),
         "CreationTime": 1700000000 + i, "TrainingEndTime": 1700000100 + i, "LastModifiedTime": 1700000100 + i,
         "TrainingJobStatus": ["Completed", "Failed", "InProgress"][i % 3]} for i in range(3)]},
    "SageMaker.StopTrainingJob": {},
    "SageMaker.UpdateTrainingJob": {"TrainingJobArn": JOB_ARN},
    "SageMaker.DeleteTrainingJob": {},
    "SageMaker.AddTags": {"Tags": [{"Key": "team", "Value": "ml"}]},
    "SageMaker.ListTags": {"Tags": [{"Key": "team", "Value": "ml"}, {"Key": "env", "Value": "dev"}]},
    "SageMaker.DeleteTags": {},
}


@dataclass
class Recorded:
    target: str
    body: Any
    headers: dict[str, str]


@dataclass
class Recorder:
    """A real HTTP endpoint on 127.0.0.1 that records every request and answers canned JSON."""

    requests: list[Recorded] = field(default_factory=list)
    responses: dict[str, Any] = field(default_factory=lambda: dict(CANNED))
    errors: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Recorder:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                target = self.headers.get("X-Amz-Target", "")
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                recorder.requests.append(Recorded(target, body, dict(self.headers)))
                if target in recorder.errors:
                    status, payload = recorder.errors[target]
                else:
                    status, payload = 200, recorder.responses.get(target, {})
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def take(self) -> list[Recorded]:
        taken, self.requests[:] = list(self.requests), []
        return taken


def aws_env(tmp: Path, timestamp_format: str = "iso8601") -> dict[str, str]:
    """Environment for both CLIs: fixed credentials, no metadata lookups, a profile config."""
    config = tmp / "aws-config"
    config.write_text(f"[default]\ncli_timestamp_format = {timestamp_format}\n")
    return {
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(config), "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_PAGER": "", "AWS_MAX_ATTEMPTS": "1",
    }


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _environ(env: dict[str, str]):  # type: ignore[no-untyped-def]
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith(("AWS_", "TRAINFORGE_")) and k != "AWS_DATA_PATH"]:
        del os.environ[key]
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


_DRIVERS: dict[tuple[tuple[str, str], ...], Any] = {}


def _driver(env: dict[str, str], fresh: bool) -> Any:
    """One awscli driver per environment (creating one costs ~0.3 s; it reads the environment once).

    A driver keeps the event handlers its commands registered: `fresh` for --generate-cli-skeleton,
    whose handlers would print once per command run before."""
    from awscli.clidriver import create_clidriver

    key = tuple(sorted(env.items()))
    if fresh or key not in _DRIVERS:
        if len(_DRIVERS) > 8:
            _DRIVERS.clear()
        _DRIVERS[key] = create_clidriver()
    return _DRIVERS[key]


def run_aws(args: list[str], env: dict[str, str], fresh: bool = False) -> Result:
    """`aws <args>` with the awscli package, in this process (fast, same botocore)."""
    out, err = io.StringIO(), io.StringIO()
    with _environ(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = _driver(env, fresh).main(args)
        except SystemExit as exc:  # argparse errors
            code = int(exc.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


def run_tf(args: list[str], env: dict[str, str]) -> Result:
    """`trainforge <args>`, in this process."""
    from trainforge.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with _environ(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return Result(code, out.getvalue(), err.getvalue())


def run_tf_process(args: list[str], env: dict[str, str], timeout: float = 120,
                   cwd: str | None = None) -> Result:
    """`trainforge <args>` as a separate process (python -m trainforge.cli)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRAINFORGE_"))}
    full_env.update(env)
    done = subprocess.run([sys.executable, "-m", "trainforge.cli", *args], capture_output=True, text=True, check=False,
                          env=full_env, timeout=timeout, cwd=cwd)
    return Result(done.returncode, done.stdout, done.stderr)
