"""CloudWatch metrics of training jobs: GetMetricStatistics, GetMetricData and ListMetrics in each
protocol of botocore's ``cloudwatch`` model (boto3 and the aws CLI, forced onto one protocol with a
copy of the model that lists only it), against a real job whose script logs a metric at times the
job's log events record, and the instance metrics the agent samples; retention drops old points.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from conftest import ServerProcess, minimal_request, unique_name, wait_for_job, wait_until

NS = "/aws/sagemaker/TrainingJobs"
PROTOCOLS = ("smithy-rpc-v2-cbor", "json", "query")
METRIC = "train:loss"
VALUES = (1.5, 2.5, 4.0)
# Three lines a little over a second apart, so that one-second buckets hold one sample each.
SCRIPT = "; ".join(f"echo 'epoch {i}: loss={v}'; sleep 1.2" for i, v in enumerate(VALUES)) + "; echo done"


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """For each protocol, a data directory whose cloudwatch model lists only that protocol."""
    loader = botocore.session.get_session().get_component("data_loader")
    model = loader.load_service_model("cloudwatch", "service-2")
    version = model["metadata"]["apiVersion"]
    paths = {}
    for protocol in PROTOCOLS:
        root = tmp_path_factory.mktemp(f"model-{protocol}")
        target = root / "cloudwatch" / version
        target.mkdir(parents=True)
        forced = {**model, "metadata": {**model["metadata"], "protocol": protocol, "protocols": [protocol]}}
        (target / "service-2.json").write_text(json.dumps(forced))
        paths[protocol] = root
    return paths


def cloudwatch(server: ServerProcess, model_path: Path, protocol: str, *, validate: bool = True) -> Any:
    session = botocore.session.get_session()
    session.get_component("data_loader").search_paths.insert(0, str(model_path))
    client = boto3.Session(botocore_session=session).client(
        "cloudwatch", endpoint_url=server.endpoint, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing", config=BotoConfig(parameter_validation=validate, retries={"max_attempts": 0}))
    assert client.meta.service_model.resolved_protocol == protocol
    sent: list[Any] = []
    client.meta.events.register("before-send.cloudwatch", lambda request, **_: sent.append(request))
    client.sent = sent  # the wire requests, to check the protocol really used
    return client


def wire_protocol(request: Any) -> str:
    if request.url.rstrip("/").endswith(("/GetMetricStatistics", "/GetMetricData", "/ListMetrics")):
        assert request.headers["smithy-protocol"] == b"rpc-v2-cbor"
        return "smithy-rpc-v2-cbor"
    if request.headers.get("X-Amz-Target"):
        return "json"
    body = request.body.decode() if isinstance(request.body, bytes) else request.body
    assert "Action=" in body
    return "query"


@pytest.fixture(scope="module")
def output_bucket(s3_endpoint: str) -> str:
    name = f"tf-cw-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def metric_job(server: ServerProcess, bucket: str, command: str = SCRIPT) -> str:
    sm = server.client()
    name = unique_name("cw")
    req = minimal_request(name, OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"})
    req["AlgorithmSpecification"]["ContainerArguments"] = [command]
    req["AlgorithmSpecification"]["MetricDefinitions"] = [{"Name": METRIC, "Regex": r"loss=([0-9.]+)"}]
    sm.create_training_job(**req)
    assert wait_for_job(sm, name, timeout=120)["TrainingJobStatus"] == "Completed"
    return name


def logged_samples(server: ServerProcess, job: str) -> list[tuple[float, float]]:
    """(time, value) of each metric line, from the job's log events (the samples carry their times)."""
    logs = server.client("logs")
    stream = logs.describe_log_streams(logGroupName=NS, logStreamNamePrefix=job + "/")["logStreams"][0]
    events = logs.get_log_events(logGroupName=NS, logStreamName=stream["logStreamName"], startFromHead=True)
    out = [(e["timestamp"] / 1000, float(e["message"].rsplit("=", 1)[1])) for e in events["events"]
           if "loss=" in e["message"] and e["message"].startswith("epoch")]
    assert [v for _, v in out] == list(VALUES)
    return out


@pytest.fixture(scope="module")
def job(server: ServerProcess, output_bucket: str) -> dict[str, Any]:
    name = metric_job(server, output_bucket)
    return {"name": name, "samples": logged_samples(server, name),
            "description": server.client().describe_training_job(TrainingJobName=name)}


def expected_buckets(samples: list[tuple[float, float]], start: float, period: int) -> dict[float, list[float]]:
    aligned = math.floor(start / 60) * 60  # a start less than 15 days ago: the whole minute
    out: dict[float, list[float]] = {}
    for t, v in samples:
        out.setdefault(aligned + math.floor((t - aligned) / period) * period, []).append(v)
    return out


def window(job: dict[str, Any]) -> tuple[datetime, datetime]:
    first = min(t for t, _ in job["samples"])
    return datetime.fromtimestamp(first - 90, UTC), datetime.fromtimestamp(first + 300, UTC)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_get_metric_statistics(server: ServerProcess, model_paths: dict[str, Path], job: dict[str, Any],
                               protocol: str) -> None:
    cw = cloudwatch(server, model_paths[protocol], protocol)
    start, end = window(job)
    for period, dims in ((60, [{"Name": "TrainingJobName", "Value": job["name"]}]),
                         (1, [{"Name": "Host", "Value": f"{job['name']}/algo-1"}])):
        answer = cw.get_metric_statistics(Namespace=NS, MetricName=METRIC, Dimensions=dims, StartTime=start,
                                          EndTime=end, Period=period,
                                          Statistics=["Average", "Sum", "Minimum", "Maximum", "SampleCount"])
        want = expected_buckets(job["samples"], start.timestamp(), period)
        got = sorted(answer["Datapoints"], key=lambda p: p["Timestamp"])
        assert answer["Label"] == METRIC
        assert [p["Timestamp"].timestamp() for p in got] == sorted(want)
        for p, t in zip(got, sorted(want), strict=True):
            values = want[t]
            assert (p["SampleCount"], p["Sum"], p["Minimum"], p["Maximum"], p["Unit"]) == (
                len(values), sum(values), min(values), max(values), "None")
            assert p["Average"] == sum(values) / len(values)
    answer = cw.get_metric_statistics(Namespace=NS, MetricName=METRIC, StartTime=start, EndTime=end, Period=3600,
                                      Dimensions=[{"Name": "TrainingJobName", "Value": job["name"]}],
                                      ExtendedStatistics=["p50", "p100"])
    assert [p["ExtendedStatistics"] for p in answer["Datapoints"]] in (
        [{"p50": 2.5, "p100": 4.0}], [])  # [] only if the samples straddle an hour: checked below
    assert len(answer["Datapoints"]) == len(expected_buckets(job["samples"], start.timestamp(), 3600))
    assert {wire_protocol(r) for r in cw.sent} == {protocol}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_datapoints_for_other_metrics(server: ServerProcess, model_paths: dict[str, Path],
                                         job: dict[str, Any], protocol: str) -> None:
    cw = cloudwatch(server, model_paths[protocol], protocol)
    start, end = window(job)
    for ns, dims, unit in ((NS, [], None), ("AWS/EC2", [{"Name": "TrainingJobName", "Value": job["name"]}], None),
                           (NS, [{"Name": "TrainingJobName", "Value": job["name"]}], "Percent"),
                           (NS, [{"Name": "TrainingJobName", "Value": job["name"]},
                                 {"Name": "Host", "Value": f"{job['name']}/algo-1"}], None)):
        kw = {"Unit": unit} if unit else {}
        answer = cw.get_metric_statistics(Namespace=ns, MetricName=METRIC, Dimensions=dims, StartTime=start,
                                          EndTime=end, Period=60, Statistics=["Sum"], **kw)
        assert answer["Datapoints"] == [], (ns, dims, unit)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_get_metric_data(server: ServerProcess, model_paths: dict[str, Path], job: dict[str, Any],
                         protocol: str) -> None:
    cw = cloudwatch(server, model_paths[protocol], protocol)
    start, end = window(job)
    metric = {"Namespace": NS, "MetricName": METRIC, "Dimensions": [{"Name": "TrainingJobName", "Value": job["name"]}]}
    queries = [{"Id": "per_second", "MetricStat": {"Metric": metric, "Period": 1, "Stat": "Sum"}},
               {"Id": "per_minute", "Label": "peak", "MetricStat": {"Metric": metric, "Period": 60, "Stat": "Maximum"}},
               {"Id": "hidden", "ReturnData": False, "MetricStat": {"Metric": metric, "Period": 60, "Stat": "Sum"}}]
    seconds = expected_buckets(job["samples"], start.timestamp(), 1)
    minutes = expected_buckets(job["samples"], start.timestamp(), 60)
    answer = cw.get_metric_data(MetricDataQueries=queries, StartTime=start, EndTime=end)
    results = {r["Id"]: r for r in answer["MetricDataResults"]}
    assert set(results) == {"per_second", "per_minute"} and "NextToken" not in answer
    assert [t.timestamp() for t in results["per_second"]["Timestamps"]] == sorted(seconds, reverse=True)
    assert results["per_second"]["Values"] == [sum(seconds[t]) for t in sorted(seconds, reverse=True)]
    assert (results["per_second"]["Label"], results["per_minute"]["Label"]) == (METRIC, "peak")
    assert results["per_minute"]["Values"] == [max(minutes[t]) for t in sorted(minutes, reverse=True)]
    assert {r["StatusCode"] for r in results.values()} == {"Complete"}
    # ascending, two datapoints a page: every page's datapoints, in order, make the whole answer
    pages, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        page = cw.get_metric_data(MetricDataQueries=queries[:1], StartTime=start, EndTime=end,
                                  ScanBy="TimestampAscending", MaxDatapoints=2, **kw)
        pages.append(page["MetricDataResults"][0])
        token = page.get("NextToken")
        if not token:
            break
    assert len(pages) == math.ceil(len(seconds) / 2)
    assert [t.timestamp() for p in pages for t in p["Timestamps"]] == sorted(seconds)
    assert [p["StatusCode"] for p in pages] == ["PartialData"] * (len(pages) - 1) + ["Complete"]
    assert {wire_protocol(r) for r in cw.sent} == {protocol}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_list_metrics(server: ServerProcess, model_paths: dict[str, Path], job: dict[str, Any],
                      protocol: str) -> None:
    cw = cloudwatch(server, model_paths[protocol], protocol)
    host = {"Name": "Host", "Value": f"{job['name']}/algo-1"}
    mine = cw.list_metrics(Namespace=NS, Dimensions=[{"Name": "TrainingJobName", "Value": job["name"]}])
    assert mine["Metrics"] == [{"Namespace": NS, "MetricName": METRIC,
                                "Dimensions": [{"Name": "TrainingJobName", "Value": job["name"]}]}]
    hosts = cw.list_metrics(Namespace=NS, Dimensions=[host])["Metrics"]
    assert {m["MetricName"] for m in hosts} >= {METRIC, "CPUUtilization", "MemoryUtilization", "DiskUtilization"}
    assert all(m["Dimensions"] == [host] for m in hosts)
    assert cw.list_metrics(Namespace="AWS/EC2")["Metrics"] == []
    named = cw.list_metrics(MetricName=METRIC, Dimensions=[{"Name": "Host"}], RecentlyActive="PT3H")["Metrics"]
    assert {"Namespace": NS, "MetricName": METRIC, "Dimensions": [host]} in named
    assert {wire_protocol(r) for r in cw.sent} == {protocol}


def test_instance_metrics(server: ServerProcess, model_paths: dict[str, Path], job: dict[str, Any]) -> None:
    """A job that ran a few seconds has CPU, memory and disk utilisation samples, in Percent."""
    cw = cloudwatch(server, model_paths["json"], "json")
    start, end = window(job)
    host = [{"Name": "Host", "Value": f"{job['name']}/algo-1"}]
    bounds = {"CPUUtilization": 100.0 * (os.cpu_count() or 1), "MemoryUtilization": 100.0, "DiskUtilization": 100.0}
    for name, top in bounds.items():
        points = cw.get_metric_statistics(Namespace=NS, MetricName=name, Dimensions=host, StartTime=start,
                                          EndTime=end, Period=60, Statistics=["Minimum", "Maximum", "SampleCount"])
        assert points["Datapoints"], name
        for p in points["Datapoints"]:
            assert p["Unit"] == "Percent" and p["SampleCount"] >= 1
            assert 0.0 <= p["Minimum"] <= p["Maximum"] <= top, (name, p)
        if name != "CPUUtilization":  # a shell script's resident memory and the disk are never nothing
            assert min(p["Minimum"] for p in points["Datapoints"]) > 0.0
    none = cw.get_metric_statistics(Namespace=NS, MetricName="CPUUtilization", StartTime=start, EndTime=end,
                                    Dimensions=[{"Name": "TrainingJobName", "Value": job["name"]}], Period=60,
                                    Statistics=["Sum"])
    assert none["Datapoints"] == []  # instance metrics carry the Host dimension only


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_errors(server: ServerProcess, model_paths: dict[str, Path], protocol: str) -> None:
    cw = cloudwatch(server, model_paths[protocol], protocol, validate=False)
    now = datetime.now(UTC)
    base = {"Namespace": NS, "MetricName": METRIC, "StartTime": now - timedelta(hours=1), "EndTime": now,
            "Period": 60, "Statistics": ["Sum"]}
    cases = [
        ({**base, "Period": 0}, "ValidationError", ("Value '0' at 'period' failed to satisfy constraint: "
                                                   "Member must have value greater than or equal to 1")),
        ({**base, "Period": 7}, "InvalidParameterValue", "The parameter Period must be a multiple of 60."),
        ({**base, "ExtendedStatistics": ["p90"]}, "InvalidParameterCombination",
         "Must specify either Statistics or ExtendedStatistics, but not both."),
        ({**base, "StartTime": now}, "InvalidParameterValue",
         "The parameter StartTime must be less than the parameter EndTime."),
        ({**base, "Period": 1, "StartTime": now - timedelta(hours=2)}, "InvalidParameterCombination",
         "which exceeds the limit of 1,440"),
        ({**base, "Statistics": ["Median"]}, "ValidationError", "Member must satisfy enum value set"),
    ]
    for params, code, message in cases:
        with pytest.raises(ClientError) as caught:
            cw.get_metric_statistics(**params)
        error = caught.value.response["Error"]
        assert error["Code"] == code and message in error["Message"], (params, error)
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(cw.exceptions.InvalidParameterValueException):
        cw.get_metric_statistics(**{**base, "Period": 90})
    with pytest.raises(cw.exceptions.InvalidNextToken):
        cw.get_metric_data(MetricDataQueries=[{"Id": "a", "MetricStat": {"Metric": {
            "Namespace": NS, "MetricName": METRIC}, "Period": 60, "Stat": "Sum"}}],
            StartTime=base["StartTime"], EndTime=now, NextToken="forged")
    with pytest.raises(ClientError) as caught:
        cw.put_metric_data(Namespace="x", MetricData=[{"MetricName": "m", "Value": 1.0}])
    assert "PutMetricData is not supported" in caught.value.response["Error"]["Message"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_aws_cli(server: ServerProcess, model_paths: dict[str, Path], job: dict[str, Any], protocol: str) -> None:
    start, end = window(job)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_DATA_PATH": str(model_paths[protocol])}
    aws = [sys.executable, "-m", "awscli", "cloudwatch", "--endpoint-url", server.endpoint, "--output", "json",
           "--debug"]
    dims = f"Name=TrainingJobName,Value={job['name']}"
    run = subprocess.run(aws + ["get-metric-statistics", "--namespace", NS, "--metric-name", METRIC, "--dimensions",
                                dims, "--start-time", start.isoformat(), "--end-time", end.isoformat(),
                                "--period", "1", "--statistics", "Sum", "SampleCount"],
                         capture_output=True, text=True, env=env, timeout=120, check=True)
    points = sorted(json.loads(run.stdout)["Datapoints"], key=lambda p: p["Timestamp"])
    assert [(p["Sum"], p["SampleCount"]) for p in points] == [(v, 1.0) for v in VALUES]
    marker = {"smithy-rpc-v2-cbor": "/service/GraniteServiceVersion20100801/operation/GetMetricStatistics",
              "json": "GraniteServiceVersion20100801.GetMetricStatistics", "query": "'Action': 'GetMetricStatistics'"}
    assert marker[protocol] in run.stderr
    query = json.dumps([{"Id": "loss", "MetricStat": {"Metric": {"Namespace": NS, "MetricName": METRIC, "Dimensions": [
        {"Name": "TrainingJobName", "Value": job["name"]}]}, "Period": 1, "Stat": "Maximum"}}])
    run = subprocess.run(aws + ["get-metric-data", "--metric-data-queries", query, "--start-time", start.isoformat(),
                                "--end-time", end.isoformat(), "--scan-by", "TimestampAscending"],
                         capture_output=True, text=True, env=env, timeout=120, check=True)
    assert json.loads(run.stdout)["MetricDataResults"][0]["Values"] == list(VALUES)


ANALYTICS = """
import json, sys
import boto3, sagemaker
from sagemaker.analytics import TrainingJobAnalytics
boto = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
frame = TrainingJobAnalytics(sys.argv[1], sagemaker_session=sagemaker.Session(boto_session=boto)).dataframe()
print(json.dumps({k: [v if isinstance(v, str) else float(v) for v in frame[k]]
                  for k in ("metric_name", "value", "timestamp")}))
"""


def test_training_job_analytics(server: ServerProcess, job: dict[str, Any], s3_endpoint: str,
                                tmp_path: Path) -> None:
    """The SageMaker SDK v2's TrainingJobAnalytics (in its own locked environment, as a user runs it)
    reads the metric as logged."""
    from sdk_venvs import sdk_python
    from test_sdk import sdk_environment

    env = {**sdk_environment(server, s3_endpoint, tmp_path, "unused"), "AWS_ENDPOINT_URL_CLOUDWATCH": server.endpoint}
    done = subprocess.run([str(sdk_python("sdk2")), "-c", ANALYTICS, job["name"]], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    frame = json.loads(done.stdout.strip().splitlines()[-1])
    first = job["description"]["TrainingStartTime"].timestamp()
    want = expected_buckets(job["samples"], first, 60)
    assert frame["metric_name"] == [METRIC] * len(want)
    assert frame["value"] == [sum(v) / len(v) for _, v in sorted(want.items())]
    assert frame["timestamp"] == [t - min(want) for t in sorted(want)]


def test_retention_drops_old_points(server_factory: Any, model_paths: dict[str, Path], output_bucket: str) -> None:
    retention = 20.0  # seconds
    srv = server_factory({"metrics_retention_days": retention / 86400})
    name = metric_job(srv, output_bucket, "echo 'epoch 0: loss=3.5'")
    cw = cloudwatch(srv, model_paths["json"], "json")
    dims = [{"Name": "TrainingJobName", "Value": name}]
    now = datetime.now(UTC)

    def points() -> list[Any]:
        return cw.get_metric_statistics(Namespace=NS, MetricName=METRIC, Dimensions=dims, Period=60,
                                        StartTime=now - timedelta(hours=1), EndTime=now + timedelta(hours=1),
                                        Statistics=["Sum"])["Datapoints"]

    assert [p["Sum"] for p in points()] == [3.5]
    assert cw.list_metrics(Dimensions=dims)["Metrics"]
    wait_until(points, timeout=90, interval=0.5, until=lambda p: p == [], message="the sample to expire")
    assert cw.list_metrics(Dimensions=dims)["Metrics"] == []
    db = srv.data_dir / "trainforge.db"

    def stored() -> int:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM metric_samples").fetchone()[0])
    wait_until(stored, timeout=30, interval=0.5, until=lambda n: n == 0, message="the sweep to delete the samples")

