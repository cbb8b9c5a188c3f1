"""CreateTrainingJob → DescribeTrainingJob through boto3 against a real server.

The requests below set every member of CreateTrainingJob's input shape that trainforge implements, at
every depth. Some members exclude each other (TrainingImage / AlgorithmName, InstanceType /
InstanceGroups, one DataSource per channel), so the coverage is spread over a few requests;
``test_requests_cover_every_member`` checks that they set every member trainforge implements, and that
the server refuses every other member of botocore's model (whichever botocore runs the tests, a newer
one's additions included).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError, WaiterError
from conftest import ServerProcess, minimal_request, stop_quietly, unique_name, wait_for_job, wait_until
from model_samples import sample
from test_api_unsupported import shape_at

from trainforge.service.describe_defaults import fill_in

MODEL = botocore.session.get_session().get_service_model("sagemaker")
CREATE = MODEL.operation_model("CreateTrainingJob").input_shape
DESCRIBE = MODEL.operation_model("DescribeTrainingJob").output_shape
# Members of the request that DescribeTrainingJob's output shape has no place for.
NOT_DESCRIBED = {"Tags", "SessionChainingConfig"}

ACCOUNT = "000000000000"
KMS = "arn:aws:kms:us-east-1:000000000000:key/1234abcd-12ab-34cd-56ef-1234567890ab"
FS_ID = "fs-0123456789abcdef0"
TRAINING_PLAN = "arn:aws:sagemaker:us-east-1:000000000000:training-plan/plan-for-roundtrip-tests"


def model_paths(shape: Any, prefix: str = "") -> set[str]:
    """Every member path of a shape: ``A.B``, ``A.List[].C``, ``A.Map{}.D``."""
    out: set[str] = set()
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            path = f"{prefix}.{name}" if prefix else name
            out.add(path)
            out |= model_paths(member, path)
    elif shape.type_name == "list":
        out |= model_paths(shape.member, prefix + "[]")
    elif shape.type_name == "map":
        out |= model_paths(shape.value, prefix + "{}")
    return out


def value_paths(value: Any, shape: Any, prefix: str = "") -> set[str]:
    """The member paths a request actually sets (same spelling as :func:`model_paths`)."""
    out: set[str] = set()
    if shape.type_name == "structure":
        assert isinstance(value, dict), prefix
        for name, member_value in value.items():
            assert name in shape.members, f"{prefix}.{name} is not in the model"
            path = f"{prefix}.{name}" if prefix else name
            out.add(path)
            out |= value_paths(member_value, shape.members[name], path)
    elif shape.type_name == "list":
        for item in value:
            out |= value_paths(item, shape.member, prefix + "[]")
    elif shape.type_name == "map":
        for item in value.values():
            out |= value_paths(item, shape.value, prefix + "{}")
    return out


def _rule(name: str) -> dict[str, Any]:
    return {
        "RuleConfigurationName": name, "LocalPath": "/opt/ml/processing/rules",
        "S3OutputPath": "s3://trainforge-test-output/rules", "RuleEvaluatorImage": "trainforge/rules:latest",
        "InstanceType": "ml.t3.medium", "VolumeSizeInGB": 5, "RuleParameters": {"rule_to_invoke": name},
    }


CREDENTIALS_PROVIDER = "arn:aws:lambda:us-east-1:000000000000:function:creds"


def request_with_image(name: str) -> dict[str, Any]:
    """TrainingImage, InstanceType/InstanceCount, an S3 (augmented manifest, Pipe) and a file-system channel."""
    return {
        "TrainingJobName": name,
        "HyperParameters": {"epochs": "3", "learning_rate": "0.1", "empty": ""},
        "AlgorithmSpecification": {
            "TrainingImage": "trainforge/command:latest",
            "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": "train:loss", "Regex": "loss=([0-9.]+)"}],
            "EnableSageMakerMetricsTimeSeries": True,
            "ContainerEntrypoint": ["/bin/sh", "-c"],
            "ContainerArguments": ["true"],
            # the credentials of the fs_server's registries entry that names this provider
            "TrainingImageConfig": {"TrainingRepositoryAccessMode": "Vpc", "TrainingRepositoryAuthConfig": {
                "TrainingRepositoryCredentialsProviderArn": CREDENTIALS_PROVIDER}},
        },
        "RoleArn": "arn:aws:iam::000000000000:role/SageMakerRole",
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {"S3DataSource": {
                    "S3DataType": "AugmentedManifestFile",
                    "S3Uri": "s3://trainforge-test-input/manifests/train.manifest",
                    "S3DataDistributionType": "ShardedByS3Key",
                    "AttributeNames": ["source-ref", "label"],
                    "ModelAccessConfig": {"AcceptEula": True},
                    "HubAccessConfig": {"HubContentArn":
                                        "arn:aws:sagemaker:us-east-1:aws:hub-content/SageMakerPublicHub/Model/m/1.0.0"},
                }},
                "ContentType": "application/x-recordio",
                "CompressionType": "Gzip",
                "RecordWrapperType": "RecordIO",
                "InputMode": "Pipe",
                "ShuffleConfig": {"Seed": 1234567890123},
            },
            {
                "ChannelName": "shared",
                "DataSource": {"FileSystemDataSource": {
                    "FileSystemId": FS_ID, "FileSystemAccessMode": "ro", "FileSystemType": "EFS",
                    "DirectoryPath": "/shared/data"}},
                "InputMode": "File",
            },
        ],
        # Empty key ids and a zero keep-alive say "none": accepted (any other value is refused, below).
        "OutputDataConfig": {"KmsKeyId": "", "S3OutputPath": "s3://trainforge-test-output/out",
                             "CompressionType": "NONE"},
        "ResourceConfig": {
            "InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10,
            "VolumeKmsKeyId": "", "KeepAlivePeriodInSeconds": 0,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600, "MaxPendingTimeInSeconds": 7200},
        "Tags": [{"Key": "team", "Value": "ml"}, {"Key": "cost-center", "Value": "42"}],
        "EnableNetworkIsolation": False,
        "EnableInterContainerTrafficEncryption": False,
        "EnableManagedSpotTraining": False,
        "CheckpointConfig": {"S3Uri": "s3://trainforge-test-output/checkpoints", "LocalPath": "/opt/ml/checkpoints"},
        "DebugHookConfig": {
            "LocalPath": "/opt/ml/output/tensors", "S3OutputPath": "s3://trainforge-test-output/debug",
            "HookParameters": {"save_interval": "100"},
            "CollectionConfigurations": [{"CollectionName": "losses",
                                          "CollectionParameters": {"save_interval": "10"}}],
        },
        "DebugRuleConfigurations": [_rule("LossNotDecreasing")],
        "TensorBoardOutputConfig": {"LocalPath": "/opt/ml/output/tensorboard",
                                    "S3OutputPath": "s3://trainforge-test-output/tensorboard"},
        "ExperimentConfig": {"ExperimentName": "exp-1", "TrialName": "trial-1",
                             "TrialComponentDisplayName": "component-1", "RunName": "run-1"},
        "ProfilerConfig": {"S3OutputPath": "s3://trainforge-test-output/profiler",
                           "ProfilingIntervalInMilliseconds": 500,
                           "ProfilingParameters": {"DataloaderProfilingConfig": "{\"StartStep\": 5}"},
                           "DisableProfiler": False},
        "ProfilerRuleConfigurations": [_rule("ProfilerReport")],
        "Environment": {"MY_SETTING": "value with spaces", "_UNDERSCORE": "1"},
        "RetryStrategy": {"MaximumRetryAttempts": 2},
        "RemoteDebugConfig": {"EnableRemoteDebug": False},
        "InfraCheckConfig": {"EnableInfraCheck": False},
        "SessionChainingConfig": {"EnableSessionTagChaining": False},
    }


def request_with_groups(name: str) -> dict[str, Any]:
    """AlgorithmName, InstanceGroups (named by a channel), managed spot, network isolation."""
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"AlgorithmName": "trainforge-roundtrip-algorithm",
                                   "TrainingInputMode": "FastFile"},
        "RoleArn": "arn:aws:iam::000000000000:role/SageMakerRole",
        "InputDataConfig": [
            {"ChannelName": "train",
             "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://trainforge-test-input/train/",
                                             "InstanceGroupNames": ["workers"]}}},
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://trainforge-test-output/out"},
        "ResourceConfig": {
            "VolumeSizeInGB": 10,
            "InstanceGroups": [
                {"InstanceType": "ml.m5.large", "InstanceCount": 1, "InstanceGroupName": "workers"},
                {"InstanceType": "ml.m5.large", "InstanceCount": 1, "InstanceGroupName": "driver"},
            ],
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 1200},
        "EnableManagedSpotTraining": True,
        "EnableNetworkIsolation": True,
    }


def request_with_dataset(name: str) -> dict[str, Any]:
    """A channel reading a SageMaker hub dataset: trainforge has no hub, and refuses it at create time."""
    return minimal_request(name, InputDataConfig=[{"ChannelName": "dataset", "DataSource": {"DatasetSource": {
        "DatasetArn": "arn:aws:sagemaker:us-east-1:000000000000:hub-content/hub/DataSet/d/1.0.0"}}}])


# Members trainforge refuses at create time because it cannot honour them (README: "Request members"),
# each with a value that needs the missing feature.
UNSUPPORTED: dict[str, Any] = {
    "VpcConfig": {"SecurityGroupIds": ["sg-0123456789abcdef0"], "Subnets": ["subnet-0123456789abcdef0"]},
    "EnableInterContainerTrafficEncryption": True,
    "OutputDataConfig.KmsKeyId": KMS,
    "ResourceConfig.VolumeKmsKeyId": KMS,
    "ResourceConfig.KeepAlivePeriodInSeconds": 60,
    "ResourceConfig.TrainingPlanArn": TRAINING_PLAN,
    "ResourceConfig.InstancePlacementConfig": {
        "EnableMultipleJobs": True, "PlacementSpecifications": [{"UltraServerId": "us-1", "InstanceCount": 1}]},
    "RemoteDebugConfig": {"EnableRemoteDebug": True},
    "InfraCheckConfig": {"EnableInfraCheck": True},
    "SessionChainingConfig": {"EnableSessionTagChaining": True},
    "ServerlessJobConfig": {
        "BaseModelArn": "arn:aws:sagemaker:us-east-1:aws:hub-content/SageMakerPublicHub/Model/llama/1.0.0",
        "AcceptEula": True, "JobType": "FineTuning", "CustomizationTechnique": "SFT", "Peft": "LORA",
        "EvaluationType": "BenchmarkEvaluation", "EvaluatorArn": "arn:aws:sagemaker:us-east-1:000000000000:x/y"},
    "MlflowConfig": {"MlflowResourceArn": "arn:aws:sagemaker:us-east-1:000000000000:mlflow-tracking-server/tf",
                     "MlflowExperimentName": "experiment", "MlflowRunName": "run"},
    "ModelPackageConfig": {
        "ModelPackageGroupArn": "arn:aws:sagemaker:us-east-1:000000000000:model-package-group/models",
        "SourceModelPackageArn": "arn:aws:sagemaker:us-east-1:000000000000:model-package/models/1"},
}


def request_with(name: str, path: str, value: Any) -> dict[str, Any]:
    """The minimal request plus one member set at ``path`` (dotted)."""
    req = minimal_request(name)
    *parents, leaf = path.split(".")
    node = req
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = copy.deepcopy(value)
    return req


ACCEPTED = (request_with_image, request_with_groups)


def namespaces_available() -> bool:
    """The same probe the server runs before it admits EnableNetworkIsolation."""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--mount", "--uts", "--pid", "--net", "--fork", "true"],
                           capture_output=True, timeout=10, check=False)
    return probe.returncode == 0


def _parent(path: str) -> str:
    """``A.B[].C`` -> ``A.B``; ``A`` -> ``""`` (the request)."""
    return path.rpartition(".")[0].removesuffix("[]").removesuffix("{}")


def _set_member(request: dict[str, Any], path: str, value: Any) -> str:
    """Set ``path`` in ``request`` (through the first element of lists); returns the path with indexes."""
    node: Any = request
    *parents, leaf = path.split(".")
    for part in parents:
        node = node[part.removesuffix("[]")]
        if part.endswith("[]"):
            node = node[0]
    node[leaf] = copy.deepcopy(value)
    return path.replace("[]", "[0]")


def test_requests_cover_every_member(server: Any) -> None:
    """Model-update-proof coverage: every member trainforge implements (``unsupported.IMPLEMENTED``) is
    set by the requests above, and every other member of the model, whichever botocore this runs
    with, is refused by the server naming it."""
    from trainforge.service.unsupported import IMPLEMENTED

    implemented = IMPLEMENTED["CreateTrainingJob"]
    requests = [make("x") for make in (*ACCEPTED, request_with_dataset)]
    covered = set().union(*(value_paths(r, CREATE) for r in requests))
    missing = sorted(implemented - covered)
    assert not missing, f"implemented members of CreateTrainingJob no test request sets: {missing}"
    # The outermost members left out of the allowlist (their own members cannot come without them).
    outermost = sorted(p for p in model_paths(CREATE) - implemented if not _parent(p) or _parent(p) in implemented)
    assert {"VpcConfig", "ServerlessJobConfig", "ResourceConfig.TrainingPlanArn"} <= set(outermost)
    sm = server.client()
    for path in outermost:
        request = copy.deepcopy(next(r for r in requests if not _parent(path) or _parent(path) in value_paths(r, CREATE)))
        request["TrainingJobName"] = name = unique_name("refused")
        shown = _set_member(request, path, sample(shape_at(CREATE, path)))
        with pytest.raises(ClientError) as exc:
            sm.create_training_job(**request)
        code, message = _error(exc)
        assert code == "ValidationException" and f"{shown} is not supported by trainforge: " in message, (path, message)
        with pytest.raises(ClientError) as exc:
            sm.describe_training_job(TrainingJobName=name)
        assert _error(exc) == ("ValidationException", "Requested resource not found."), path
    # And the implemented members describe cannot return are exactly the ones the model leaves out.
    assert {m for m in CREATE.members if m in implemented and m not in DESCRIBE.members} == NOT_DESCRIBED


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    err = exc.value.response["Error"]
    return err["Code"], err["Message"]


def _assert_described(sm: Any, request: dict[str, Any], transitions: list[str], failure: str) -> dict[str, Any]:
    """Every member sent is described (with SageMaker's defaults for what it left out: the table is
    checked row by row in test_describe_defaults.py), once the job has ended as expected (each request
    names an input or an image that trainforge does not have, so its job fails the same way every time)."""
    described = wait_for_job(sm, request["TrainingJobName"])
    for member, value in request.items():
        if member in NOT_DESCRIBED:
            assert member not in described
            continue
        value = fill_in({member: value})[member]
        assert described.get(member) == value, f"{member}: sent {value!r}, described {described.get(member)!r}"
    name = request["TrainingJobName"]
    assert described["TrainingJobArn"] == f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/{name}"
    assert (described["TrainingJobStatus"], described["SecondaryStatus"]) == ("Failed", "Failed")
    assert described["FailureReason"] == failure
    assert [t["Status"] for t in described["SecondaryStatusTransitions"]] == transitions
    assert described["CreationTime"] <= described["LastModifiedTime"]
    assert described["ModelArtifacts"]["S3ModelArtifacts"].startswith(
        request["OutputDataConfig"]["S3OutputPath"].rstrip("/") + "/" + name + "/output/model")
    return described


@pytest.fixture(scope="module")
def fs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that knows the file system of the FileSystemDataSource channel."""
    root = tmp_path_factory.mktemp("fs-roundtrip")
    (root / "fs" / "shared" / "data").mkdir(parents=True)
    srv = ServerProcess(root / "data", {"file_systems": {FS_ID: str(root / "fs")},
                                        "allowed_local_roots": [str(root)],
                                        "registries": {"registry.example.com": {
                                            "username": "puller", "password": "secret",
                                            "credentials_provider_arn": CREDENTIALS_PROVIDER}}}).start()
    yield srv
    srv.stop()
    srv.kill_agents()  # its agents would retry their last reports to it for minutes


def test_create_then_describe_returns_every_member(fs_server: Any) -> None:
    sm = fs_server.client()
    req = request_with_image(unique_name("full"))
    arn = sm.create_training_job(**copy.deepcopy(req))["TrainingJobArn"]
    assert arn.endswith(":training-job/" + req["TrainingJobName"])
    try:
        _assert_described(sm, req, ["Starting", "Downloading", "Failed"],
                          "ClientError: channel 'train': cannot read s3://trainforge-test-input/manifests/"
                          "train.manifest: the bucket 'trainforge-test-input' does not exist")
        tags = sm.list_tags(ResourceArn=arn)["Tags"]
        assert sorted(tags, key=lambda t: t["Key"]) == sorted(req["Tags"], key=lambda t: t["Key"])
    finally:
        stop_quietly(sm, req["TrainingJobName"])


def roundtrip_algorithm(sm: Any) -> None:
    """The algorithm resource request_with_groups names: its image is not in the catalog."""
    try:
        sm.create_algorithm(AlgorithmName="trainforge-roundtrip-algorithm", TrainingSpecification={
            "TrainingImage": "trainforge-roundtrip-image", "SupportedTrainingInstanceTypes": ["ml.m5.large"],
            "SupportsDistributedTraining": True, "TrainingChannels": [
                {"Name": "train", "SupportedContentTypes": ["text/csv"], "SupportedInputModes": ["FastFile"]}]})
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ResourceInUse", exc.response


def test_create_with_instance_groups_and_algorithm_name(fs_server: Any) -> None:
    sm = fs_server.client()
    roundtrip_algorithm(sm)
    req = request_with_groups(unique_name("groups"))
    if not namespaces_available():
        with pytest.raises(ClientError) as exc:
            sm.create_training_job(**copy.deepcopy(req))
        code, message = _error(exc)
        assert code == "ValidationException" and "EnableNetworkIsolation" in message
        req["EnableNetworkIsolation"] = False
    sm.create_training_job(**copy.deepcopy(req))
    try:
        _assert_described(sm, req, ["Starting", "Failed"],
                          "Image 'trainforge-roundtrip-image' is not in trainforge's image catalog: add it "
                          "under the config key 'images' (see README)")
        listed = sm.list_training_jobs(NameContains=req["TrainingJobName"])
        assert [x["TrainingJobName"] for x in listed["TrainingJobSummaries"]] == [req["TrainingJobName"]]
    finally:
        stop_quietly(sm, req["TrainingJobName"])


@pytest.mark.parametrize("path", sorted(UNSUPPORTED))
def test_member_trainforge_cannot_honour_is_refused(server: Any, path: str) -> None:
    sm = server.client()
    req = request_with(unique_name("unsupported"), path, UNSUPPORTED[path])
    with pytest.raises(ClientError) as exc:
        sm.create_training_job(**req)
    code, message = _error(exc)
    assert code == "ValidationException"
    assert f"{path} is not supported by trainforge: " in message
    assert message.endswith("Remove it from the request (README: 'Request members').")
    with pytest.raises(ClientError) as exc:
        sm.describe_training_job(TrainingJobName=req["TrainingJobName"])
    assert _error(exc) == ("ValidationException", "Requested resource not found.")


def test_create_with_dataset_source_is_refused_and_stores_nothing(server: Any) -> None:
    sm = server.client()
    req = request_with_dataset(unique_name("dataset"))
    with pytest.raises(ClientError) as exc:
        sm.create_training_job(**req)
    code, message = _error(exc)
    assert code == "ValidationException"
    assert "S3DataSource or FileSystemDataSource" in message and "'dataset'" in message
    with pytest.raises(ClientError) as exc:
        sm.describe_training_job(TrainingJobName=req["TrainingJobName"])
    assert _error(exc) == ("ValidationException", "Requested resource not found.")


def _sleeping_job(srv: Any, name: str, seconds: int = 60) -> dict[str, Any]:
    """Sleeps; its outputs go to the server's data directory (an allowed local root)."""
    return minimal_request(name, OutputDataConfig={"S3OutputPath": f"file://{srv.data_dir}/outputs"},
                           AlgorithmSpecification={
        "TrainingImage": "trainforge/command:latest", "TrainingInputMode": "File",
        "ContainerEntrypoint": ["/bin/sh", "-c"], "ContainerArguments": [f"exec sleep {seconds}"]})


def test_update_training_job_is_described(server: Any) -> None:
    sm = server.client()
    name = unique_name("update")
    sm.create_training_job(**_sleeping_job(server, name))
    try:
        before = sm.describe_training_job(TrainingJobName=name)
        assert "ProfilerConfig" not in before and "RemoteDebugConfig" not in before
        profiler = {"S3OutputPath": "s3://trainforge-test-output/profiler", "ProfilingIntervalInMilliseconds": 1000,
                    "ProfilingParameters": {"CPUProfilingConfig": "{}"}, "DisableProfiler": False}
        rules = [_rule("ProfilerReport")]
        out = sm.update_training_job(TrainingJobName=name, ProfilerConfig=profiler,
                                     ProfilerRuleConfigurations=rules)
        assert out["TrainingJobArn"] == before["TrainingJobArn"]
        after = sm.describe_training_job(TrainingJobName=name)
        assert after["ProfilerConfig"] == profiler
        assert after["ProfilerRuleConfigurations"] == rules
        assert after["LastModifiedTime"] >= before["LastModifiedTime"]
        for member in ("AlgorithmSpecification", "ResourceConfig", "OutputDataConfig", "StoppingCondition"):
            assert after[member] == before[member]
        # RemoteDebugConfig changes only while the job downloads or trains.
        wait_for_job(sm, name, "Training", secondary=True, timeout=60)
        sm.update_training_job(TrainingJobName=name, RemoteDebugConfig={"EnableRemoteDebug": False})
        assert sm.describe_training_job(TrainingJobName=name)["RemoteDebugConfig"] == {"EnableRemoteDebug": False}
    finally:
        sm.stop_training_job(TrainingJobName=name)


def test_waiter_returns_after_stop(server: Any) -> None:
    sm = server.client()
    name = unique_name("waiter")
    sm.create_training_job(**_sleeping_job(server, name, seconds=600))  # it cannot end by itself here
    wait_for_job(sm, name, "Training", secondary=True, timeout=60)
    polled: list[str] = []  # the status each DescribeTrainingJob of the waiter read
    waiting = server.client()
    waiting.meta.events.register("after-call.sagemaker.DescribeTrainingJob",
                                 lambda parsed, **_: polled.append(parsed.get("TrainingJobStatus")))
    outcome: dict[str, Any] = {}

    def wait() -> None:
        try:
            waiting.get_waiter("training_job_completed_or_stopped").wait(
                TrainingJobName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 150})
            outcome["ok"] = True
        except WaiterError as exc:  # pragma: no cover - reported by the assertion below
            outcome["error"] = exc

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    # The job trains: the waiter polls, and keeps waiting.
    wait_until(lambda: len(polled) >= 2 or not waiter.is_alive(), message="the waiter's second poll")
    assert polled[:2] == ["InProgress", "InProgress"] and waiter.is_alive() and not outcome, (polled, outcome)
    sm.stop_training_job(TrainingJobName=name)
    waiter.join(timeout=40)
    assert not waiter.is_alive(), "the waiter did not return after the stop"
    # It returned on the first terminal status it read.
    assert polled[-1] == "Stopped" and set(polled[:-1]) <= {"InProgress", "Stopping"}, polled
    final = sm.describe_training_job(TrainingJobName=name)
    assert outcome == {"ok": True}, final.get("FailureReason")
    assert final["TrainingJobStatus"] == "Stopped"
    statuses = [t["Status"] for t in final["SecondaryStatusTransitions"]]
    assert statuses[0] == "Starting" and statuses[-1] == "Stopped"
    assert "Stopping" in statuses
