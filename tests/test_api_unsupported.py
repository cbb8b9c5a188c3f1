"""Members trainforge cannot honour are refused with a clear error (those outside the allowlist, today's or a
newer model's, included); rules say they were not run."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from conftest import ServerProcess, minimal_request, stop_quietly, unique_name

REFUSED = [
    ("VpcConfig", {"VpcConfig": {"SecurityGroupIds": ["sg-0123456789abcdef0"], "Subnets": ["subnet-0123456789abcdef0"]}}),
    ("EnableInterContainerTrafficEncryption", {"EnableInterContainerTrafficEncryption": True}),
    ("OutputDataConfig.KmsKeyId", {"OutputDataConfig": {"S3OutputPath": "s3://bucket/o", "KmsKeyId": "alias/k"}}),
    ("RemoteDebugConfig", {"RemoteDebugConfig": {"EnableRemoteDebug": True}}),
    ("MlflowConfig", {"MlflowConfig": {"MlflowResourceArn": "arn:aws:sagemaker:us-east-1:000000000000:mlflow-tracking-server/x"}}),
]


@pytest.mark.parametrize("member,extra", REFUSED, ids=[m for m, _ in REFUSED])
def test_unsupported_member_is_refused_and_nothing_is_stored(server: Any, member: str, extra: dict) -> None:
    sm = server.client()
    name = unique_name("unsup")
    with pytest.raises(ClientError) as err:
        sm.create_training_job(**minimal_request(name, **extra))
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert f"{member} is not supported by trainforge" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError, match="Requested resource not found"):
        sm.describe_training_job(TrainingJobName=name)


def test_default_values_of_those_members_are_accepted(server: Any) -> None:
    sm = server.client()
    name = unique_name("defaults")
    sm.create_training_job(**minimal_request(name, EnableInterContainerTrafficEncryption=False,
                                             RemoteDebugConfig={"EnableRemoteDebug": False}))
    assert sm.describe_training_job(TrainingJobName=name)["EnableInterContainerTrafficEncryption"] is False


def test_rule_configurations_report_that_they_were_not_evaluated(server: Any) -> None:
    sm = server.client()
    name = unique_name("rules")
    sm.create_training_job(**minimal_request(name, ProfilerRuleConfigurations=[{
        "RuleConfigurationName": "ProfilerReport-1", "RuleEvaluatorImage": "x.dkr.ecr.us-east-1.amazonaws.com/r:latest",
        "RuleParameters": {"rule_to_invoke": "ProfilerReport"}}]))
    statuses = sm.describe_training_job(TrainingJobName=name)["ProfilerRuleEvaluationStatuses"]
    assert [(s["RuleConfigurationName"], s["RuleEvaluationStatus"]) for s in statuses] == [("ProfilerReport-1", "Error")]
    assert "not evaluated" in statuses[0]["StatusDetails"]


# ---- the allowlist: members trainforge does not implement, today's and a newer botocore's ---------------
FUTURE = "FutureOption"  # the member injected below, as a newer botocore could add it
INJECTED_INTO = ("ResourceConfig", "S3DataSource", "UpdateTrainingJobRequest", "ProfilerConfigForUpdate",
                 "ListTrainingJobsRequest", "Tag")


@pytest.fixture(scope="module")
def newer_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Any]]:
    """A server and a boto3 client that both load a copy of botocore's SageMaker model with
    ``FutureOption`` added to shapes at several depths (botocore's own AWS_DATA_PATH mechanism)."""
    root = tmp_path_factory.mktemp("newer-model")
    loader = botocore.loaders.Loader()
    version = loader.determine_latest_version("sagemaker", "service-2")
    model = copy.deepcopy(loader.load_service_model("sagemaker", "service-2", version))
    model["shapes"]["FutureOptionValue"] = {"type": "string", "min": 1, "max": 64}
    for shape in INJECTED_INTO:
        assert FUTURE not in model["shapes"][shape]["members"]
        model["shapes"][shape]["members"][FUTURE] = {"shape": "FutureOptionValue"}
    (root / "models" / "sagemaker" / version).mkdir(parents=True)
    (root / "models" / "sagemaker" / version / "service-2.json").write_text(json.dumps(model))
    srv = ServerProcess(root / "data", env={"AWS_DATA_PATH": str(root / "models")}).start()
    session = botocore.session.get_session()
    session.set_config_variable("data_path", str(root / "models"))
    client = boto3.Session(botocore_session=session).client(
        "sagemaker", endpoint_url=srv.endpoint, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing", config=BotoConfig(retries={"max_attempts": 0, "mode": "standard"}))
    assert FUTURE in client.meta.service_model.shape_for("ResourceConfig").members  # it really sends the member
    yield srv, client
    srv.stop()
    srv.kill_agents()  # its agents would retry their last reports to it for minutes


def _refused(call: Callable[[], Any], shown_path: str) -> None:
    with pytest.raises(ClientError) as err:
        call()
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert err.value.response["Error"]["Message"] == (
        f"{shown_path} is not supported by trainforge: trainforge does not implement this member. "
        "Remove it from the request (README: 'Request members').")


def _assert_not_stored(sm: Any, name: str) -> None:
    with pytest.raises(ClientError) as err:
        sm.describe_training_job(TrainingJobName=name)
    assert err.value.response["Error"]["Message"] == "Requested resource not found."
    assert sm.list_training_jobs(NameContains=name)["TrainingJobSummaries"] == []


@pytest.mark.parametrize("shown_path", ["ResourceConfig.FutureOption",
                                        "InputDataConfig[1].DataSource.S3DataSource.FutureOption",
                                        "Tags[0].FutureOption"])
def test_member_a_newer_model_adds_is_refused_and_nothing_is_stored(newer_model: Any, shown_path: str) -> None:
    _, sm = newer_model
    name = unique_name("future")
    channel = {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://trainforge-test-input/x/"}}}
    request = minimal_request(name, InputDataConfig=[copy.deepcopy({**channel, "ChannelName": c}) for c in "ab"],
                              Tags=[{"Key": "team", "Value": "ml"}])
    sm.create_training_job(**copy.deepcopy(request))  # without the member: accepted by this server
    stop_quietly(sm, name)
    request["TrainingJobName"] = name = unique_name("future")
    node: Any = request
    for part in shown_path.split(".")[:-1]:
        key, _, index = part.partition("[")
        node = node[key][int(index[:-1])] if index else node[key]
    node[FUTURE] = "on"
    _refused(lambda: sm.create_training_job(**request), shown_path)
    _assert_not_stored(sm, name)


def test_update_list_and_tag_members_a_newer_model_adds_are_refused(newer_model: Any) -> None:
    _, sm = newer_model
    name = unique_name("future-update")
    sm.create_training_job(**minimal_request(name))
    try:
        arn = sm.describe_training_job(TrainingJobName=name)["TrainingJobArn"]
        _refused(lambda: sm.update_training_job(TrainingJobName=name, FutureOption="on"), "FutureOption")
        _refused(lambda: sm.update_training_job(TrainingJobName=name, ProfilerConfig={
            "ProfilingIntervalInMilliseconds": 500, FUTURE: "on"}), "ProfilerConfig.FutureOption")
        assert "ProfilerConfig" not in sm.describe_training_job(TrainingJobName=name)
        _refused(lambda: sm.list_training_jobs(FutureOption="on"), "FutureOption")
        _refused(lambda: sm.add_tags(ResourceArn=arn, Tags=[{"Key": "k", "Value": "v", FUTURE: "on"}]),
                 "Tags[0].FutureOption")
        assert sm.list_tags(ResourceArn=arn)["Tags"] == []
    finally:
        stop_quietly(sm, name)


RESOURCE_CONFIG = botocore.session.get_session().get_service_model("sagemaker").shape_for("ResourceConfig")
NEWER_MEMBERS = [  # members botocore 1.44.8 added to CreateTrainingJob, refused as any unimplemented one
    ("ResourceConfig.InstancePreferences", {"ResourceConfig": {
        "InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10,
        "InstancePreferences": [{"InstanceType": "ml.m5.large", "InstanceCount": 1}]}}),
    ("ResourceConfig.SelectedInstanceType", {"ResourceConfig": {
        "InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10, "SelectedInstanceType": "ml.m5.large"}}),
    ("ResourceConfig.SelectedInstanceCount", {"ResourceConfig": {
        "InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10, "SelectedInstanceCount": 1}}),
]


@pytest.mark.skipif("InstancePreferences" not in RESOURCE_CONFIG.members, reason="botocore older than 1.44.8")
@pytest.mark.parametrize("member,extra", NEWER_MEMBERS, ids=[m for m, _ in NEWER_MEMBERS])
def test_members_of_botocore_1_44_are_refused(server: Any, member: str, extra: dict) -> None:
    sm = server.client()
    name = unique_name("newer")
    _refused(lambda: sm.create_training_job(**minimal_request(name, **extra)), member)
    _assert_not_stored(sm, name)


@pytest.mark.skipif("InstancePreferences" not in RESOURCE_CONFIG.members, reason="botocore older than 1.44.8")
def test_serverless_sequence_length_of_botocore_1_44_is_refused_with_its_structure(server: Any) -> None:
    sm = server.client()
    name = unique_name("newer")
    serverless = {"BaseModelArn": "arn:aws:sagemaker:us-east-1:aws:hub-content/SageMakerPublicHub/Model/m/1.0.0",
                  "JobType": "FineTuning", "SequenceLength": "8K"}
    with pytest.raises(ClientError) as err:
        sm.create_training_job(**minimal_request(name, ServerlessJobConfig=serverless))
    assert "ServerlessJobConfig is not supported by trainforge" in err.value.response["Error"]["Message"]
    _assert_not_stored(sm, name)


# ---- values of any member, for the tests that send members no request here knows ---------------------
def shape_at(shape: Any, path: str) -> Any:
    """The shape of the member at ``path`` (``A.B[].C``, ``A{}.D``) under ``shape``."""
    for part in path.split("."):
        shape = shape.members[part.removesuffix("[]").removesuffix("{}")]
        shape = shape.member if part.endswith("[]") else shape.value if part.endswith("{}") else shape
    return shape


