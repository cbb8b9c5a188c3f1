"""Members trainforge cannot honour are refused with a clear error; rules say they were not run."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import minimal_request, unique_name

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
