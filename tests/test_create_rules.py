"""The semantic rules of CreateTrainingJob / UpdateTrainingJob (``trainforge.service.create_rules``):
each rule refused and accepted; then a few end to end through a real server."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import pytest

from trainforge.api.errors import ServiceError, ValidationError
from trainforge.api.validation import validate
from trainforge.awsmodel import operation
from trainforge.config import Config
from trainforge.service.create_rules import (
    MAX_RUNTIME_SECONDS,
    PROFILING_INTERVALS,
    bucket_name_problem,
    check_create,
    check_role,
    check_update,
)

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(data_dir=str(tmp_path / "data"), allowed_local_roots=[str(tmp_path / "allowed")],
                  file_systems={"fs-0123456789abcdef0": str(tmp_path / "efs")})


def channel(name: str = "train", uri: str = "s3://bucket/train/", **extra: Any) -> dict[str, Any]:
    return {"ChannelName": name,
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}}, **extra}


def request(**overrides: Any) -> dict[str, Any]:
    req: dict[str, Any] = {
        "TrainingJobName": "job",
        "RoleArn": ROLE,
        "AlgorithmSpecification": {"TrainingImage": "img:latest", "TrainingInputMode": "File"},
        "InputDataConfig": [channel()],
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }
    req.update(overrides)
    return req


def ok(config: Config, req: dict[str, Any], **kw: Any) -> None:
    validate("CreateTrainingJob", req)  # every case is valid for the model: only the rule decides
    check_create(req, config, **kw)


def refused(config: Config, req: dict[str, Any], pattern: str, **kw: Any) -> ServiceError:
    validate("CreateTrainingJob", req)
    with pytest.raises(ServiceError) as info:
        check_create(req, config, **kw)
    assert re.search(pattern, info.value.message), info.value.message
    assert info.value.status == 400
    return info.value


def test_baseline_accepted(config: Config) -> None:
    ok(config, request())


# ---- algorithm -------------------------------------------------------------------------------
def test_exactly_one_of_image_and_algorithm_name(config: Config) -> None:
    ok(config, request(AlgorithmSpecification={"AlgorithmName": "my-algo", "TrainingInputMode": "File"}))
    refused(config, request(AlgorithmSpecification={"TrainingImage": "img", "AlgorithmName": "algo",
                                                    "TrainingInputMode": "File"}), "not both")
    refused(config, request(AlgorithmSpecification={"TrainingInputMode": "File"}),
            "either TrainingImage or AlgorithmName")


def test_algorithm_specification_required_unless_serverless(config: Config) -> None:
    req = request()
    del req["AlgorithmSpecification"]
    refused(config, req, re.escape("1 validation error detected: Value null at 'algorithmSpecification' failed to "
                                   "satisfy constraint: Member must not be null"))
    serverless = {"BaseModelArn": "arn:aws:sagemaker:us-east-1:aws:hub-content/SageMakerPublicHub/Model/m",
                  "JobType": "FineTuning"}
    req["ServerlessJobConfig"] = serverless
    del req["ResourceConfig"]
    ok(config, req)
    req["ServerlessJobConfig"] = {**serverless, "JobType": "Evaluation"}
    refused(config, req, re.escape("Value null at 'serverlessJobConfig.evaluationType'"))
    req["ServerlessJobConfig"]["EvaluationType"] = "BenchmarkEvaluation"
    ok(config, req)


# ---- resources -------------------------------------------------------------------------------
def groups(*specs: tuple[str, str, int]) -> list[dict[str, Any]]:
    return [{"InstanceGroupName": n, "InstanceType": t, "InstanceCount": c} for n, t, c in specs]


def test_instance_type_and_count_or_groups(config: Config) -> None:
    ok(config, request(ResourceConfig={"InstanceGroups": groups(("a", "ml.m5.large", 1), ("b", "ml.c5.xlarge", 2)),
                                       "VolumeSizeInGB": 10}))
    refused(config, request(ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1,
                                            "InstanceGroups": groups(("a", "ml.m5.large", 1))}), "not both")
    refused(config, request(ResourceConfig={"VolumeSizeInGB": 10}), "InstanceType and InstanceCount, or InstanceGroups")
    refused(config, request(ResourceConfig={"InstanceType": "ml.m5.large"}),
            re.escape("Value null at 'resourceConfig.instanceCount'"))
    refused(config, request(ResourceConfig={"InstanceCount": 1}), re.escape("Value null at 'resourceConfig.instanceType'"))
    req = request()
    del req["ResourceConfig"]
    refused(config, req, re.escape("Value null at 'resourceConfig' failed"))


def test_instance_count_at_least_one(config: Config) -> None:
    refused(config, request(ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 0}), re.escape(
        "1 validation error detected: Value '0' at 'resourceConfig.instanceCount' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1"))
    refused(config, request(ResourceConfig={"InstanceGroups": groups(("a", "ml.m5.large", 1), ("b", "ml.m5.large", 0))}),
            re.escape("Value '0' at 'resourceConfig.instanceGroups.2.member.instanceCount'"))
    placement = {"PlacementSpecifications": [{"InstanceCount": 0}]}
    refused(config, request(ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1,
                                            "InstancePlacementConfig": placement}),
            re.escape("Value '0' at 'resourceConfig.instancePlacementConfig.placementSpecifications.1.member."
                      "instanceCount'"))


def test_instance_group_names_unique_and_referenced(config: Config) -> None:
    refused(config, request(ResourceConfig={"InstanceGroups": groups(("a", "ml.m5.large", 1), ("a", "ml.m5.large", 1))}),
            "Instance group names must be unique: 'a'")
    two = {"InstanceGroups": groups(("a", "ml.m5.large", 1), ("b", "ml.m5.large", 1))}
    c = channel()
    c["DataSource"]["S3DataSource"]["InstanceGroupNames"] = ["b"]
    ok(config, request(ResourceConfig=two, InputDataConfig=[c]))
    c = copy.deepcopy(c)
    c["DataSource"]["S3DataSource"]["InstanceGroupNames"] = ["zzz"]
    refused(config, request(ResourceConfig=two, InputDataConfig=[c]), "instance group 'zzz'")


def test_fits_hook_is_called_for_each_type_and_group(config: Config) -> None:
    calls: list[tuple[str, int]] = []

    def fits(instance_type: str, count: int) -> str | None:
        calls.append((instance_type, count))
        return "8 x ml.p4d.24xlarge never fits here" if instance_type == "ml.p4d.24xlarge" else None

    ok(config, request(ResourceConfig={"InstanceGroups": groups(("a", "ml.m5.large", 1), ("b", "ml.c5.xlarge", 3))}),
       fits=fits)
    assert calls == [("ml.m5.large", 1), ("ml.c5.xlarge", 3)]
    err = refused(config, request(ResourceConfig={"InstanceType": "ml.p4d.24xlarge", "InstanceCount": 8}),
                  "never fits here", fits=fits)
    assert isinstance(err, ValidationError) and err.code == "ValidationException"


def test_warm_pools_not_with_groups_or_spot(config: Config) -> None:
    ok(config, request(ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1,
                                       "KeepAlivePeriodInSeconds": 600}))
    refused(config, request(ResourceConfig={"InstanceGroups": groups(("a", "ml.m5.large", 1)),
                                            "KeepAlivePeriodInSeconds": 600}), "heterogeneous")
    refused(config, request(ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1,
                                            "KeepAlivePeriodInSeconds": 600},
                            EnableManagedSpotTraining=True,
                            StoppingCondition={"MaxRuntimeInSeconds": 60, "MaxWaitTimeInSeconds": 120}), "spot")


# ---- channels --------------------------------------------------------------------------------
def test_channel_names_unique(config: Config) -> None:
    ok(config, request(InputDataConfig=[channel("train"), channel("validation")]))
    refused(config, request(InputDataConfig=[channel("train"), channel("train")]), "'train' is used more than once")


def test_one_data_source_per_channel(config: Config) -> None:
    c = channel()
    c["DataSource"]["FileSystemDataSource"] = {"FileSystemId": "fs-0123456789abcdef0", "FileSystemAccessMode": "ro",
                                               "FileSystemType": "EFS", "DirectoryPath": "/data"}
    refused(config, request(InputDataConfig=[c]), "exactly one of S3DataSource, FileSystemDataSource or "
            "DatasetSource, not S3DataSource and FileSystemDataSource")
    refused(config, request(InputDataConfig=[{"ChannelName": "x", "DataSource": {}}]), "exactly one of")


def test_dataset_source_refused(config: Config) -> None:
    arn = "arn:aws:sagemaker:us-east-1:000000000000:hub-content/hub/DataSet/d/1.0.0"
    dataset = {"DatasetSource": {"DatasetArn": arn}}
    refused(config, request(InputDataConfig=[{"ChannelName": "hub", "DataSource": dataset}]),
            "^Channel 'hub': a DataSource needs S3DataSource or FileSystemDataSource.$")


def test_augmented_manifest_only_in_pipe_mode(config: Config) -> None:
    c = channel()
    c["DataSource"]["S3DataSource"].update(S3DataType="AugmentedManifestFile", AttributeNames=["source-ref"])
    refused(config, request(InputDataConfig=[c]), "only be used if the Channel's input mode is Pipe: channel 'train' "
            "uses File mode")
    ok(config, request(InputDataConfig=[{**c, "InputMode": "Pipe"}]))  # the channel's mode overrides the job's
    refused(config, request(InputDataConfig=[{**c, "InputMode": "FastFile"}]), "uses FastFile mode")
    pipe_job = request(InputDataConfig=[c])
    pipe_job["AlgorithmSpecification"]["TrainingInputMode"] = "Pipe"
    ok(config, pipe_job)


def test_augmented_manifest_needs_attribute_names(config: Config) -> None:
    c = channel(InputMode="Pipe")
    c["DataSource"]["S3DataSource"]["S3DataType"] = "AugmentedManifestFile"
    refused(config, request(InputDataConfig=[c]),
            "^Channel 'train': AttributeNames are required with S3DataType 'AugmentedManifestFile'.$")


def test_attribute_names_only_with_augmented_manifest(config: Config) -> None:
    c = channel(InputMode="Pipe")
    c["DataSource"]["S3DataSource"]["AttributeNames"] = ["source-ref"]
    refused(config, request(InputDataConfig=[c]), "AttributeNames of channel 'train'")


def test_gzip_and_recordio_only_in_pipe_mode(config: Config) -> None:
    refused(config, request(InputDataConfig=[channel(CompressionType="Gzip")]),
            "^Invalid compression type for channel train: File mode only supports NONE, got Gzip instead$")
    refused(config, request(InputDataConfig=[channel(CompressionType="Gzip", InputMode="FastFile")]),
            "FastFile mode only supports NONE")
    refused(config, request(InputDataConfig=[channel(RecordWrapperType="RecordIO")]),
            "^Invalid record wrapper type for channel train: File mode only supports None, got RecordIO instead$")
    ok(config, request(InputDataConfig=[channel(CompressionType="Gzip", RecordWrapperType="RecordIO",
                                                InputMode="Pipe")]))
    ok(config, request(InputDataConfig=[channel(CompressionType="None", RecordWrapperType="None")]))


def fs_channel(fs_id: str = "fs-0123456789abcdef0", path: str = "/data") -> dict[str, Any]:
    return {"ChannelName": "train", "DataSource": {"FileSystemDataSource": {
        "FileSystemId": fs_id, "FileSystemAccessMode": "ro", "FileSystemType": "EFS", "DirectoryPath": path}}}


def test_file_system_must_be_configured(config: Config) -> None:
    ok(config, request(InputDataConfig=[fs_channel()]))
    refused(config, request(InputDataConfig=[fs_channel("fs-99999999")]),
            "FileSystemId 'fs-99999999' of channel 'train' is not configured.*'file_systems'")
    refused(config, request(InputDataConfig=[fs_channel(path="data")]), "must be an absolute path")


def test_file_system_only_in_file_mode_without_shuffle(config: Config) -> None:
    for mode in ("Pipe", "FastFile"):
        refused(config, request(InputDataConfig=[{**fs_channel(), "InputMode": mode}]),
                f"^Channel 'train': FileSystemDataSource supports only File input mode, not {mode}.$")
    pipe_job = request(InputDataConfig=[fs_channel()])
    pipe_job["AlgorithmSpecification"]["TrainingInputMode"] = "Pipe"
    refused(config, pipe_job, "supports only File input mode, not Pipe")
    ok(config, request(InputDataConfig=[{**fs_channel(), "InputMode": "File"}]))
    refused(config, request(InputDataConfig=[{**fs_channel(), "ShuffleConfig": {"Seed": 7}}]),
            "^Channel 'train': ShuffleConfig is not supported with FileSystemDataSource.$")


# ---- stopping condition -------------------------------------------------------------------------
def test_max_wait_only_with_spot(config: Config) -> None:
    refused(config, request(StoppingCondition={"MaxRuntimeInSeconds": 60, "MaxWaitTimeInSeconds": 120}),
            "^Invalid MaxWaitTimeInSeconds. It is only supported when EnableManagedSpotTraining is set to true$")
    ok(config, request(EnableManagedSpotTraining=True,
                       StoppingCondition={"MaxRuntimeInSeconds": 60, "MaxWaitTimeInSeconds": 120}))
    ok(config, request(EnableManagedSpotTraining=True,
                       StoppingCondition={"MaxRuntimeInSeconds": 60, "MaxWaitTimeInSeconds": 60}))


def test_spot_requires_max_wait_not_below_runtime(config: Config) -> None:
    refused(config, request(EnableManagedSpotTraining=True), "MaxWaitTimeInSeconds is required")
    refused(config, request(EnableManagedSpotTraining=True,
                            StoppingCondition={"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 300}),
            r"greater than or equal to MaxRuntimeInSeconds \(600\)")
    ok(config, request(EnableManagedSpotTraining=False, StoppingCondition={"MaxRuntimeInSeconds": 600}))


def test_max_runtime_at_most_28_days(config: Config) -> None:
    ok(config, request(StoppingCondition={"MaxRuntimeInSeconds": MAX_RUNTIME_SECONDS}))
    refused(config, request(StoppingCondition={"MaxRuntimeInSeconds": MAX_RUNTIME_SECONDS + 1}), re.escape(
        f"Value '{MAX_RUNTIME_SECONDS + 1}' at 'stoppingCondition.maxRuntimeInSeconds' failed to satisfy constraint: "
        f"Member must have value less than or equal to {MAX_RUNTIME_SECONDS}"))
    doc = operation("CreateTrainingJob").input_shape.members["StoppingCondition"].members["MaxRuntimeInSeconds"]
    assert "maximum value is 28 days" in text(doc.documentation)


# ---- URIs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bucket,good", [
    ("my-bucket", True), ("a.b.c", True), ("abc", True), ("b" * 63, True), ("dir--usw2-az1--x-s3", True),
    ("ab", False), ("b" * 64, False), ("My-Bucket", False), ("my_bucket", False), ("-bucket", False),
    ("bucket-", False), ("a..b", False), ("a.-b", False), ("192.168.1.1", False), ("xn--bucket", False),
    ("bucket-s3alias", False), ("", False),
])
def test_bucket_names(bucket: str, good: bool) -> None:
    assert (bucket_name_problem(bucket) is None) is good


@pytest.mark.parametrize("member", [
    ("InputDataConfig",), ("OutputDataConfig", "S3OutputPath"), ("CheckpointConfig", "S3Uri"),
    ("TensorBoardOutputConfig", "S3OutputPath"), ("DebugHookConfig", "S3OutputPath"),
    ("ProfilerConfig", "S3OutputPath"), ("DebugRuleConfigurations",), ("ProfilerRuleConfigurations",),
    ("HyperParameters",),
])
def test_every_uri_member_is_checked(config: Config, member: tuple[str, ...]) -> None:
    def with_uri(uri: str) -> dict[str, Any]:
        name = member[0]
        if name == "InputDataConfig":
            return request(InputDataConfig=[channel(uri=uri)])
        if name in ("DebugRuleConfigurations", "ProfilerRuleConfigurations"):
            return request(**{name: [{"RuleConfigurationName": "r", "RuleEvaluatorImage": "img", "S3OutputPath": uri}]})
        if name == "HyperParameters":
            return request(HyperParameters={"sagemaker_submit_directory": f'"{uri}"', "sagemaker_program": '"t.py"'})
        return request(**{name: {member[1]: uri}})

    ok(config, with_uri("s3://good-bucket/some/key"))
    err = refused(config, with_uri("s3://Bad_Bucket/key"), "Invalid S3 URI 's3://Bad_Bucket/key' at '")
    path = {"InputDataConfig": "inputDataConfig.1.member.dataSource.s3DataSource.s3Uri",
            "DebugRuleConfigurations": "debugRuleConfigurations.1.member.s3OutputPath",
            "ProfilerRuleConfigurations": "profilerRuleConfigurations.1.member.s3OutputPath",
            "HyperParameters": "hyperParameters.sagemaker_submit_directory"}.get(
        member[0], f"{member[0][0].lower()}{member[0][1:]}.{member[-1][0].lower()}{member[-1][1:]}")
    assert f"at '{path}'" in err.message
    if member[0] != "HyperParameters":
        refused(config, with_uri("https://bucket.s3.amazonaws.com/key"), "accepts s3://bucket/key URIs")


def test_submit_directory_local_path_is_not_a_uri(config: Config) -> None:
    ok(config, request(HyperParameters={"sagemaker_submit_directory": '"/opt/ml/code"'}))
    ok(config, request(HyperParameters={"sagemaker_submit_directory": "not json"}))


def test_file_uris_only_under_allowed_roots(config: Config, tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    (allowed / "data").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    ok(config, request(OutputDataConfig={"S3OutputPath": f"file://{allowed}/out"}))  # need not exist yet
    ok(config, request(InputDataConfig=[channel(uri=f"file://{allowed}/data/")]))
    ok(config, request(InputDataConfig=[channel(uri=f"file://localhost{allowed}/data")]))
    err = refused(config, request(OutputDataConfig={"S3OutputPath": f"file://{outside}"}),
                  "outside the allowed local roots")
    assert str(allowed) in err.message and "allowed_local_roots" in err.message and "--allow-local-root" in err.message
    refused(config, request(OutputDataConfig={"S3OutputPath": f"file://{allowed}/../outside"}), "outside")
    os.symlink(outside, allowed / "escape")
    refused(config, request(InputDataConfig=[channel(uri=f"file://{allowed}/escape/x")]), "outside")
    refused(config, request(OutputDataConfig={"S3OutputPath": "file://relative/path"}), "must be an absolute path")


def test_default_roots_are_data_dir_and_home(tmp_path: Path) -> None:
    cfg = Config(data_dir=str(tmp_path / "d"))
    ok(cfg, request(OutputDataConfig={"S3OutputPath": f"file://{tmp_path}/d/out"}))
    ok(cfg, request(OutputDataConfig={"S3OutputPath": f"file://{Path.home()}/out"}))
    refused(cfg, request(OutputDataConfig={"S3OutputPath": "file:///etc/out"}), "outside")


# ---- role, tags, debugger -------------------------------------------------------------------------
def test_role_must_be_configured_when_roles_given(config: Config) -> None:
    other = "arn:aws:iam::123456789012:role/Other"
    check_role(other, config, "000000000000")  # the single-user default: any role, any account
    config.roles = {ROLE: {"profile": "p"}}
    check_role(ROLE, config, "000000000000")  # no credentials file: accounts are not checked
    with pytest.raises(ValidationError, match=f"RoleArn '{other}' is not configured.*'roles'"):
        check_role(other, config, "123456789012")


def test_under_a_credentials_file_the_role_is_mapped_and_of_the_callers_account(config: Config) -> None:
    config.credentials_file = "credentials.json"  # not read by the rule
    with pytest.raises(ValidationError, match=f"RoleArn '{ROLE}' is not configured.*'roles'.*credentials file"):
        check_role(ROLE, config, "123456789012")  # no roles: the server's own keys go to no job
    config.roles = {ROLE: {"aws_access_key_id": "K", "aws_secret_access_key": "S"}}
    check_role(ROLE, config, "123456789012")
    with pytest.raises(ValidationError, match="belongs to account '123456789012', not to the caller's account "
                                              "'444455556666'"):
        check_role(ROLE, config, "444455556666")


def test_tag_keys_unique(config: Config) -> None:
    ok(config, request(Tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "1"}]))
    refused(config, request(Tags=[{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}]), "Tag keys must be unique")


def test_rule_and_collection_names_unique(config: Config) -> None:
    rule = {"RuleConfigurationName": "r1", "RuleEvaluatorImage": "img"}
    ok(config, request(DebugRuleConfigurations=[rule], ProfilerRuleConfigurations=[{**rule, "RuleConfigurationName": "r2"}]))
    refused(config, request(DebugRuleConfigurations=[rule], ProfilerRuleConfigurations=[rule]), "'r1' is used more")
    hook = {"S3OutputPath": "s3://bucket/d", "CollectionConfigurations": [{"CollectionName": "c"}, {"CollectionName": "c"}]}
    refused(config, request(DebugHookConfig=hook), "CollectionName must be unique")


def test_profiling_interval_values(config: Config) -> None:
    for interval in PROFILING_INTERVALS:
        ok(config, request(ProfilerConfig={"ProfilingIntervalInMilliseconds": interval}))
    refused(config, request(ProfilerConfig={"ProfilingIntervalInMilliseconds": 300}), "ProfilingIntervalInMilliseconds")
    doc = operation("CreateTrainingJob").input_shape.members["ProfilerConfig"].members[
        "ProfilingIntervalInMilliseconds"].documentation
    assert [int(n) for n in re.findall(r"\b(\d+)\b", doc.split("Available values are")[1].split("The default")[0])
            if int(n) >= 100] == list(PROFILING_INTERVALS)


def text(doc: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", doc))


def test_documentation_still_states_the_rules() -> None:
    """The rules above come from these sentences of the model: watch them for drift."""
    shape = operation("CreateTrainingJob").input_shape
    spec = shape.members["AlgorithmSpecification"].members
    assert "mutually exclusive" in text(spec["AlgorithmName"].documentation)
    channel_shape = shape.members["InputDataConfig"].member
    assert "AugmentedManifestFile can only be used if the Channel's input mode is Pipe" in \
        text(channel_shape.members["DataSource"].members["S3DataSource"].members["S3DataType"].documentation)
    assert "used only in Pipe input mode" in text(channel_shape.members["CompressionType"].documentation)
    assert "In File mode, leave this field unset" in text(channel_shape.members["RecordWrapperType"].documentation)
    stop = shape.members["StoppingCondition"].members
    assert "It must be equal to or greater than MaxRuntimeInSeconds" in text(stop["MaxWaitTimeInSeconds"].documentation)
    assert "Tag keys must be unique per resource" in text(shape.members["Tags"].member.members["Key"].documentation)
    groups_doc = text(shape.members["ResourceConfig"].members["InstancePlacementConfig"].members[
        "PlacementSpecifications"].member.members["InstanceCount"].documentation)
    assert "Minimum value of 1" in groups_doc


# ---- UpdateTrainingJob ------------------------------------------------------------------------------
def test_update_needs_something(config: Config) -> None:
    with pytest.raises(ValidationError, match="at least one of"):
        check_update({"TrainingJobName": "j"}, request(), "InProgress")


def test_update_profiler_only_in_progress(config: Config) -> None:
    check_update({"TrainingJobName": "j", "ProfilerConfig": {"DisableProfiler": True}}, request(), "InProgress")
    with pytest.raises(ValidationError, match="only be updated while the training job is InProgress; it is Completed"):
        check_update({"TrainingJobName": "j", "ProfilerConfig": {"DisableProfiler": True}}, request(), "Completed")
    with pytest.raises(ValidationError, match="ProfilingIntervalInMilliseconds"):
        check_update({"TrainingJobName": "j", "ProfilerConfig": {"ProfilingIntervalInMilliseconds": 7}}, request(),
                     "InProgress")


def test_update_profiler_rules(config: Config) -> None:
    def rule(name: str) -> dict[str, Any]:
        return {"RuleConfigurationName": name, "RuleEvaluatorImage": "img"}

    job = request(ProfilerRuleConfigurations=[rule("ProfilerReport")])
    check_update({"TrainingJobName": "j", "ProfilerRuleConfigurations": [rule("CPUBottleneck")]}, job, "InProgress")
    with pytest.raises(ValidationError, match="'ProfilerReport' is used more than once"):
        check_update({"TrainingJobName": "j", "ProfilerRuleConfigurations": [rule("ProfilerReport")]}, job, "InProgress")
    with pytest.raises(ValidationError, match="at most 20"):
        check_update({"TrainingJobName": "j", "ProfilerRuleConfigurations": [rule(f"r{i}") for i in range(20)]}, job,
                     "InProgress")
    with pytest.raises(ValidationError, match="DisableProfiler"):
        check_update({"TrainingJobName": "j", "ProfilerConfig": {"DisableProfiler": True},
                      "ProfilerRuleConfigurations": [rule("x")]}, job, "InProgress")
    with pytest.raises(ValidationError, match="at 'profilerConfig.s3OutputPath': .* outside"):
        check_update({"TrainingJobName": "j", "ProfilerConfig": {"S3OutputPath": "file:///etc/x"}}, job, "InProgress",
                     config=config)
    bad_rule = {**rule("x"), "S3OutputPath": "s3://Bad_Bucket/r"}
    with pytest.raises(ValidationError, match="at 'profilerRuleConfigurations.1.member.s3OutputPath': bucket name"):
        check_update({"TrainingJobName": "j", "ProfilerRuleConfigurations": [bad_rule]}, job, "InProgress",
                     config=config)
    check_update({"TrainingJobName": "j", "ProfilerRuleConfigurations": [bad_rule]}, job, "InProgress")  # no config


def test_update_keep_alive_only_with_warm_pool() -> None:
    warm = request(ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "KeepAlivePeriodInSeconds": 60})
    update = {"TrainingJobName": "j", "ResourceConfig": {"KeepAlivePeriodInSeconds": 120}}
    check_update(update, warm, "Completed")
    check_update(update, warm, "InProgress")
    with pytest.raises(ValidationError, match="created with a warm pool"):
        check_update(update, request(), "InProgress")
    with pytest.raises(ValidationError, match="Failed training job"):
        check_update(update, warm, "Failed")


def test_update_remote_debug_only_while_downloading_or_training() -> None:
    update = {"TrainingJobName": "j", "RemoteDebugConfig": {"EnableRemoteDebug": True}}
    check_update(update, request(), "InProgress", secondary_status="Training")
    check_update(update, request(), "InProgress", secondary_status="Downloading")
    with pytest.raises(ValidationError, match="Downloading or Training; it is Starting"):
        check_update(update, request(), "InProgress", secondary_status="Starting")
    doc = operation("UpdateTrainingJob").input_shape.members["RemoteDebugConfig"].documentation
    assert "SecondaryStatus of the job is Downloading or Training" in text(doc)


# ---- end to end through a real server -------------------------------------------------------------
def test_server_rejects_invalid_create_and_stores_nothing(server: Any) -> None:
    from conftest import minimal_request, unique_name

    name = unique_name("bad")
    pattern = operation("CreateTrainingJob").input_shape.members["RoleArn"].metadata["pattern"]
    status, body = server.raw("CreateTrainingJob", minimal_request(name, RoleArn="not-an-arn-but-long-enough"))
    assert status == 400
    assert body["__type"].endswith("ValidationException")
    assert body["message"] == ("1 validation error detected: Value 'not-an-arn-but-long-enough' at 'roleArn' failed to "
                               f"satisfy constraint: Member must satisfy regular expression pattern: {pattern}")
    status, body = server.raw("DescribeTrainingJob", {"TrainingJobName": name})
    assert status == 400 and body["message"] == "Requested resource not found."


def test_server_rejects_semantic_rule_and_stores_nothing(server: Any) -> None:
    from conftest import minimal_request, unique_name

    name = unique_name("bad")
    client = server.client(validate=False)
    with pytest.raises(client.exceptions.ClientError) as info:
        client.create_training_job(**minimal_request(
            name, ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 0, "VolumeSizeInGB": 1}))
    error = info.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert error["Message"] == ("1 validation error detected: Value '0' at 'resourceConfig.instanceCount' failed to "
                                "satisfy constraint: Member must have value greater than or equal to 1")
    with pytest.raises(client.exceptions.ClientError, match="Requested resource not found"):
        client.describe_training_job(TrainingJobName=name)


def test_server_answers_serialization_exception(server: Any) -> None:
    status, body = server.raw("DescribeTrainingJob", {"TrainingJobName": 42})
    assert status == 400
    assert body["__type"].endswith("SerializationException")
    assert body["message"] == "NUMBER_VALUE can not be converted to a String"
