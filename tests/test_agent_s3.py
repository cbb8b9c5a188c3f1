"""The agent with S3 (moto's server): staging, outputs and script-mode code under the job's credentials."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

from conftest import read_model
from test_agent_harness import (
    ControlPlane,
    agent_log,
    base_request,
    control_fixture,  # noqa: F401 - the fixture "control"
    make_spec,
    run_agent,
)

TRAIN = b"""
import json, os, sys
import boto3
files = sorted(os.listdir(os.environ["SM_CHANNEL_TRAIN"]))
# the training process reaches S3 with the job's container credentials and the endpoint it was given
listed = boto3.client("s3").list_objects_v2(Bucket=os.environ["BUCKET"], Prefix="data/")["KeyCount"]
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as f:
    json.dump({"files": files, "argv": sys.argv[1:], "listed": listed,
               "secret_in_env": any(k in os.environ for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))}, f)
"""


def test_s3_channel_code_and_outputs_use_the_jobs_credentials(tmp_path: Path, control: ControlPlane, s3: Any,
                                                              s3_endpoint: str, bucket: str) -> None:
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"data/train/part-{i}.csv", Body=b"x" * (i + 1))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("train.py")
        info.size = len(TRAIN)
        tar.addfile(info, io.BytesIO(TRAIN))
    s3.put_object(Bucket=bucket, Key="code/sourcedir.tar.gz", Body=buf.getvalue())
    request = base_request(
        "job-1", AlgorithmSpecification={"TrainingImage": "img", "TrainingInputMode": "File"},
        HyperParameters={"epochs": "1", "sagemaker_program": '"train.py"',
                         "sagemaker_submit_directory": f'"s3://{bucket}/code/sourcedir.tar.gz"'},
        InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/data/train/"}}}],
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"}, Environment={"BUCKET": bucket})
    runtime = {"command": [sys.executable, "-m", "trainforge.images.script_mode"], "python": sys.executable,
               "image": "img", "error": None}
    spec = make_spec(tmp_path, control, request=request, runtime=runtime, s3_endpoint_url=s3_endpoint)
    assert run_agent(spec, timeout=120) == 0, agent_log(spec)
    ev = control.exit_event()
    assert ev["outcome"] == "ok", (ev, agent_log(spec))
    assert ev["model_artifacts"] == f"s3://{bucket}/out/job-1/output/model.tar.gz"
    model = json.loads(read_model(ev["model_artifacts"])["model.json"])
    assert model == {"files": ["part-0.csv", "part-1.csv", "part-2.csv"], "argv": ["--epochs", "1"],
                     "listed": 3, "secret_in_env": False}
    # the agent (staging, code, upload) and the training process fetched the job's credentials
    assert control.credential_requests >= 2
