"""DescribeTrainingJob fills in SageMaker's defaults (service/describe_defaults.py), in every status.

Jobs that leave the defaulted members out, and one that sets them all, are described while in
progress and once Completed, Failed and Stopped; every row of the table is checked member by member:
the table's value where the request left the member out (and only where its parent exists), the
value sent where it set one, and every value valid for botocore's DescribeTrainingJob output shape.
The request as sent stays as it was in the store (what the runtime reads).
"""

from __future__ import annotations

import copy
from typing import Any

import boto3
import botocore.session
import pytest
from conftest import ServerProcess, minimal_request, stop_quietly, unique_name, wait_for_job

from trainforge.service.describe_defaults import DEFAULTS
from trainforge.store.db import Database
from trainforge.store.jobs import JobStore

MODEL = botocore.session.get_session().get_service_model("sagemaker")
OUTPUT = MODEL.operation_model("DescribeTrainingJob").output_shape
MISSING = object()
RULE = {"RuleConfigurationName": "ProfilerReport-1", "RuleEvaluatorImage": "trainforge/rules:latest",
        "RuleParameters": {"rule_to_invoke": "ProfilerReport"}}


def _leaves(doc: Any, path: str) -> list[tuple[dict[str, Any], Any]]:
    """(parent, value or MISSING) for every place ``path`` names in ``doc`` whose parent exists."""
    *steps, member = path.split(".")
    parents: list[Any] = [doc]
    for step in steps:
        name = step.removesuffix("[]")
        nxt: list[Any] = []
        for p in parents:
            child = p.get(name) if isinstance(p, dict) else None
            nxt.extend(child if step.endswith("[]") and isinstance(child, list) else [] if child is None
                       or step.endswith("[]") else [child])
        parents = nxt
    return [(p, p.get(member, MISSING)) for p in parents if isinstance(p, dict)]


def _shape(path: str) -> Any:
    shape = OUTPUT
    for step in path.split("."):
        shape = shape.members[step.removesuffix("[]")]
        if step.endswith("[]"):
            shape = shape.member
    return shape


def _valid(shape: Any, value: Any) -> bool:
    """Whether ``value`` fits the model's shape (type, enum, min/max)."""
    kind, meta = shape.type_name, shape.metadata
    if kind == "structure":
        return isinstance(value, dict) and all(k in shape.members for k in value)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer" or kind == "long":
        return (isinstance(value, int) and not isinstance(value, bool) and value >= meta.get("min", value)
                and value <= meta.get("max", value))
    if kind == "string":
        return (isinstance(value, str) and (not shape.enum or value in shape.enum)
                and meta.get("min", 0) <= len(value) <= meta.get("max", len(value)))
    return False


def check_against_table(sent: dict[str, Any], described: dict[str, Any], time_series: bool) -> int:
    """Every row of DEFAULTS, member by member; returns how many defaults were filled in."""
    filled = 0
    for row in DEFAULTS:
        assert _shape(row.path) is not None
        got = _leaves(described, row.path)
        sent_values = [v for _, v in _leaves(sent, row.path)]
        if not row.path.count(".") or row.path == "StoppingCondition.MaxRuntimeInSeconds":
            assert got, f"{row.path}: missing from {described}"
        assert len(got) >= len(sent_values), row.path
        for i, (parent, value) in enumerate(got):
            assert value is MISSING or _valid(_shape(row.path), value), f"{row.path}: {value!r} is not valid"
            was = sent_values[i] if i < len(sent_values) else MISSING
            if was is not MISSING:
                assert value == was, f"{row.path}: sent {was!r}, described {value!r}"
                continue
            if row.when is not None and not row.when(parent):
                assert value is MISSING, f"{row.path}: {value!r} where the table gives no default"
                continue
            expected = time_series if row.computed else row.value
            if isinstance(expected, dict):  # a parent the table creates: later rows fill it in
                assert isinstance(value, dict) and expected.items() <= value.items(), row.path
            else:
                assert value == expected, f"{row.path}: described {value!r}, the table says {expected!r}"
            filled += 1
    return filled


@pytest.fixture(scope="module")
def tf(tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = ServerProcess(tmp_path_factory.mktemp("tf-defaults")).start()
    yield srv
    srv.stop()
    srv.kill_agents()


def _requests(bucket: str) -> dict[str, tuple[dict[str, Any], bool]]:
    """name -> (request, EnableSageMakerMetricsTimeSeries expected). One leaves every defaulted
    member out (its StoppingCondition too), one sets them all to other values than the defaults."""
    channel = {"ChannelName": "train", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/in/"}}}
    bare = minimal_request(unique_name("dflt-done"), OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"},
                           InputDataConfig=[channel, copy.deepcopy(channel) | {"ChannelName": "val"}],
                           ProfilerConfig={"S3OutputPath": f"s3://{bucket}/prof"},
                           ProfilerRuleConfigurations=[RULE])
    del bare["StoppingCondition"]
    full = minimal_request(unique_name("dflt-fail"), OutputDataConfig={
        "S3OutputPath": f"s3://{bucket}/out", "KmsKeyId": "", "CompressionType": "NONE"},
        InputDataConfig=[{**channel, "CompressionType": "Gzip", "RecordWrapperType": "RecordIO",
                          "InputMode": "Pipe", "DataSource": {"S3DataSource": {
                              **channel["DataSource"]["S3DataSource"], "S3DataDistributionType": "ShardedByS3Key"}}}],
        ProfilerConfig={"S3OutputPath": f"s3://{bucket}/prof", "ProfilingIntervalInMilliseconds": 1000},
        ProfilerRuleConfigurations=[{**RULE, "VolumeSizeInGB": 5}],
        EnableInterContainerTrafficEncryption=False, StoppingCondition={"MaxRuntimeInSeconds": 600})
    full["AlgorithmSpecification"] |= {"ContainerArguments": ["exit 3"], "EnableSageMakerMetricsTimeSeries": False,
                                       "MetricDefinitions": [{"Name": "loss", "Regex": "loss=(\\S+)"}]}
    running = minimal_request(unique_name("dflt-stop"), OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"},
                              ProfilerConfig={"DisableProfiler": True})
    running["AlgorithmSpecification"] |= {"ContainerArguments": ["sleep 120"],
                                          "MetricDefinitions": [{"Name": "loss", "Regex": "loss=(\\S+)"}]}
    return {"Completed": (bare, False), "Failed": (full, False), "Stopped": (running, True)}


def test_describe_fills_in_defaults_in_every_status(tf: ServerProcess, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="in/part-0", Body=b"1,2\n")
    sm = tf.client()
    jobs = _requests(bucket)
    for request, _ in jobs.values():
        sm.create_training_job(**copy.deepcopy(request))
    filled: dict[str, int] = {}
    stop_request, stop_series = jobs["Stopped"]
    running = wait_for_job(sm, stop_request["TrainingJobName"], "Training", secondary=True)
    assert running["TrainingJobStatus"] == "InProgress"
    filled["InProgress"] = check_against_table(stop_request, running, stop_series)
    stop_quietly(sm, stop_request["TrainingJobName"])
    for status, (request, series) in jobs.items():
        described = wait_for_job(sm, request["TrainingJobName"])
        assert described["TrainingJobStatus"] == status, described.get("FailureReason")
        filled[status] = check_against_table(request, described, series)
    # The bare job had every default filled in (2 channels); the full one only the two Enable* it
    # left out; the running one those of a job without channels nor profiling.
    assert filled == {"InProgress": 6, "Completed": 16, "Failed": 2, "Stopped": 6}, filled
    # The store keeps each request as it was sent: the runtime reads that, not the filled-in answer.
    store = JobStore(Database(f"sqlite:///{tf.data_dir / 'trainforge.db'}"))
    for request, _ in jobs.values():
        row = store.get("000000000000", "us-east-1", request["TrainingJobName"])
        assert row is not None and row.request == {k: v for k, v in request.items() if k != "Tags"}


def test_attach_reads_what_the_sdk_reads(tf: ServerProcess, s3: Any, bucket: str) -> None:
    """The members the SageMaker SDK's Estimator.attach indexes unconditionally are all there for
    a job created with none of the optional ones (boto3, as a script would)."""
    request = minimal_request(unique_name("dflt-attach"), OutputDataConfig={"S3OutputPath": f"s3://{bucket}/o"},
                              InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
                                  "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/in/"}}}])
    del request["StoppingCondition"]
    sm = boto3.client("sagemaker", endpoint_url=tf.endpoint, region_name="us-east-1")
    s3.put_object(Bucket=bucket, Key="in/part-0", Body=b"1,2\n")
    sm.create_training_job(**request)
    d = wait_for_job(sm, request["TrainingJobName"])
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert d["OutputDataConfig"] == {"S3OutputPath": f"s3://{bucket}/o", "KmsKeyId": "", "CompressionType": "GZIP"}
    assert d["InputDataConfig"] == [{"ChannelName": "train", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/in/", "S3DataDistributionType": "FullyReplicated"}},
        "CompressionType": "None", "RecordWrapperType": "None"}]
    assert d["StoppingCondition"]["MaxRuntimeInSeconds"] == 86400
    assert d["ResourceConfig"]["VolumeSizeInGB"] == 10  # sent: no default is invented for it
    assert d["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert (d["EnableNetworkIsolation"], d["EnableInterContainerTrafficEncryption"],
            d["EnableManagedSpotTraining"]) == (False, False, False)
