"""``GET /metrics`` (issue 15): read with prometheus_client's own parser, values checked against the
jobs the test created through boto3 on a real server."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import ServerProcess, minimal_request, unique_name, wait_for_job, wait_until

parser = pytest.importorskip("prometheus_client.parser")


def scrape(srv: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels)."""
    with urllib.request.urlopen(srv.endpoint + "/metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in parser.text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_the_jobs_the_queue_the_capacity_and_the_requests(
        server_factory: Any, tmp_path: Path, bucket: str) -> None:
    # one instance at a time: a job waiting on a gate holds it, the next one queues
    srv: ServerProcess = server_factory({"allowed_local_roots": [str(tmp_path)], "max_concurrent_instances": 1})
    sm = srv.client()
    out = {"S3OutputPath": f"s3://{bucket}/out"}
    done = [unique_name("done") for _ in range(2)]
    for name in done:
        sm.create_training_job(**minimal_request(name, OutputDataConfig=out))
        wait_for_job(sm, name, "Completed")
    holder, waiting = unique_name("holder"), unique_name("waiting")
    held = minimal_request(holder, OutputDataConfig=out, Environment={"GATE": str(tmp_path / "gate")})
    held["AlgorithmSpecification"]["ContainerArguments"] = ['while [ ! -e "$GATE" ]; do sleep 0.1; done']
    sm.create_training_job(**held)
    wait_for_job(sm, holder, "Training", secondary=True)
    sm.create_training_job(**minimal_request(waiting, OutputDataConfig=out))
    wait_for_job(sm, waiting, "Pending", secondary=True)

    m = scrape(srv)
    assert m[("trainforge_jobs", (("secondary_status", "Completed"), ("status", "Completed")))] == 2
    assert m[("trainforge_jobs", (("secondary_status", "Training"), ("status", "InProgress")))] == 1
    assert m[("trainforge_jobs", (("secondary_status", "Pending"), ("status", "InProgress")))] == 1
    assert m[("trainforge_queue_length", ())] == 1
    assert m[("trainforge_queue_oldest_pending_seconds", ())] > 0
    assert m[("trainforge_instances_running", ())] == 1
    assert m[("trainforge_capacity_instances", (("state", "in_use"),))] == 1
    assert m[("trainforge_capacity_instances", (("state", "available"),))] == 0
    assert m[("trainforge_capacity_cpus", (("state", "in_use"),))] == 2  # ml.m5.large: 2 vCPUs
    # four creates answered 200, each timed
    assert m[("trainforge_api_requests_total", (("code", "200"), ("operation", "CreateTrainingJob")))] == 4
    assert m[("trainforge_api_request_duration_seconds_count",
              (("code", "200"), ("operation", "CreateTrainingJob")))] == 4
    assert m[("trainforge_agent_report_lag_seconds", ())] >= 0

    (tmp_path / "gate").write_text("go")
    wait_for_job(sm, waiting, "Completed")
    after = wait_until(lambda: scrape(srv), message="the queue to empty",
                       until=lambda s: s[("trainforge_queue_length", ())] == 0)
    assert after[("trainforge_jobs", (("secondary_status", "Completed"), ("status", "Completed")))] == 4
    assert after[("trainforge_capacity_instances", (("state", "in_use"),))] == 0
    # an error is counted under its status code
    with pytest.raises(ClientError):
        sm.describe_training_job(TrainingJobName=unique_name("missing"))
    assert scrape(srv)[("trainforge_api_requests_total", (("code", "400"), ("operation", "DescribeTrainingJob")))] == 1


def test_metrics_count_the_bytes_and_seconds_of_staging_and_upload(
        server_factory: Any, bucket: str, s3: Any) -> None:
    srv: ServerProcess = server_factory()
    sm = srv.client()
    s3.put_object(Bucket=bucket, Key="in/a.bin", Body=b"a" * 300_000)
    s3.put_object(Bucket=bucket, Key="in/b.bin", Body=b"b" * 12_345)
    before = scrape(srv)
    assert before[("trainforge_staging_bytes_total", (("direction", "download"),))] == 0
    name = unique_name("staged")
    request = minimal_request(name, OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"}, InputDataConfig=[
        {"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/in/"}}}])
    request["AlgorithmSpecification"]["ContainerArguments"] = [
        "head -c 50000 /dev/urandom > /opt/ml/model/weights"]
    sm.create_training_job(**request)
    desc = wait_for_job(sm, name, "Completed")
    model = desc["ModelArtifacts"]["S3ModelArtifacts"].removeprefix(f"s3://{bucket}/")
    uploaded = s3.head_object(Bucket=bucket, Key=model)["ContentLength"]
    m = scrape(srv)
    assert m[("trainforge_staging_bytes_total", (("direction", "download"),))] == 312_345
    assert m[("trainforge_staging_bytes_total", (("direction", "upload"),))] == uploaded > 50_000
    assert m[("trainforge_staging_seconds_total", (("direction", "download"),))] > 0
    assert m[("trainforge_staging_seconds_total", (("direction", "upload"),))] > 0
    assert not [k for k in m if k[0] == "trainforge_image_pulls_total"]  # a catalog image: nothing pulled
