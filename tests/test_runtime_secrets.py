"""Secrets and S3 outputs through real servers and agents (issue 9 items 4 and 7): an s3:// output
works when nothing else imported boto3, the data directory is private to the server's user, and
the store keeps only hashes of the agents' tokens."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conftest import unique_name, wait_until
from test_runtime_jobs import shell_job, wait_finished

BUCKET = "tf-secrets"


def s3_model(s3: Any, key: str) -> dict[str, bytes]:
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        return {m.name.lstrip("./"): tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}


def file_input_s3_output(name: str, tmp_path: Path, script: str, instances: int = 1) -> dict[str, Any]:
    """A job whose only channel is file:// and whose output is s3://: the agent's first S3 use is the upload."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "part-0.csv").write_text("1,2\n")
    req = shell_job(name, f"cat /opt/ml/input/data/train/part-0.csv > /opt/ml/model/seen; {script}", tmp_path)
    req["InputDataConfig"] = [{"ChannelName": "train", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": f"file://{data}", "S3DataDistributionType": "FullyReplicated"}}}]
    req["OutputDataConfig"] = {"S3OutputPath": f"s3://{BUCKET}/out"}
    req["ResourceConfig"]["InstanceCount"] = instances
    return req


def test_file_input_with_s3_output_uploads_the_model(server_factory: Any, tmp_path: Path, s3: Any) -> None:
    s3.create_bucket(Bucket=BUCKET)
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]})
    sm = srv.client()
    name = unique_name("s3out")
    sm.create_training_job(**file_input_s3_output(name, tmp_path, "echo ok > /opt/ml/model/done"))
    desc = wait_finished(sm, name, timeout=90)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{BUCKET}/out/{name}/output/model.tar.gz"
    assert s3_model(s3, f"out/{name}/output/model.tar.gz") == {"seen": b"1,2\n", "done": b"ok\n"}


def test_a_finishing_agent_uploads_to_s3(server_factory: Any, tmp_path: Path, s3: Any) -> None:
    """The leader's agent dies after its training ended; the agent started with ``--finish`` uploads to
    s3:// although nothing before it in that process touched S3."""
    s3.create_bucket(Bucket=BUCKET)
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]})
    sm = srv.client()
    gate = tmp_path / "gate"
    name = unique_name("s3finish")
    script = (f'h=$(hostname); if [ "$h" = algo-2 ]; then while [ ! -e {gate} ]; do sleep 0.05; done; fi; '
              f'echo "$h" > /opt/ml/model/$h')
    sm.create_training_job(**file_input_s3_output(name, tmp_path, script, instances=2))
    leader = wait_until(lambda: next(srv.data_dir.glob(f"jobs/*/*/{name}/attempt-1/algo-1/outcome.json"), None),
                        timeout=60, message="the leader's training to end").parent
    first_agent = json.loads((leader / "instance.json").read_text())["agent_pid"]
    os.kill(first_agent, signal.SIGKILL)
    gate.write_text("go")
    desc = wait_finished(sm, name, timeout=90)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert json.loads((leader / "instance.json").read_text())["agent_pid"] != first_agent
    model = s3_model(s3, f"out/{name}/output/model.tar.gz")
    assert model["algo-1"] == b"algo-1\n" and model["algo-2"] == b"algo-2\n"
