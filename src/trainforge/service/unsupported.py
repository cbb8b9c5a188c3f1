"""The request members trainforge implements: an allowlist. Anything else is refused, never echoed back.

:data:`IMPLEMENTED` names, per operation, every member trainforge honours or interprets, by its path
through the operation's input shape (``A.B``; a list's elements as ``A[]``, a map's values as
``A{}``). :func:`check_supported` walks a request against botocore's model: a member present (not
null) whose path is not listed is refused with a ValidationException naming it, whether today's
model has it or a newer botocore added it. Some implemented members are refused for the values that
would need a feature trainforge lacks (:data:`_REASONS`, which also says why some members are not
implemented). The README's "Request members" table is the user-facing copy of these lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from botocore.model import Shape

from trainforge.api.errors import ValidationError
from trainforge.awsmodel import operation


def _paths(table: dict[str, str]) -> frozenset[str]:
    """``{"A": "B C"}`` -> ``{"A.B", "A.C"}``; the key ``""`` holds the request's own members."""
    return frozenset(f"{parent}.{name}" if parent else name for parent, names in table.items()
                     for name in names.split())


_RULE = "RuleConfigurationName RuleEvaluatorImage RuleParameters InstanceType VolumeSizeInGB LocalPath S3OutputPath"
_PROFILER = "S3OutputPath ProfilingIntervalInMilliseconds ProfilingParameters DisableProfiler"

IMPLEMENTED: dict[str, frozenset[str]] = {
    "CreateTrainingJob": _paths({
        "": ("TrainingJobName RoleArn AlgorithmSpecification HyperParameters Environment InputDataConfig "
             "OutputDataConfig ResourceConfig StoppingCondition CheckpointConfig TensorBoardOutputConfig "
             "DebugHookConfig DebugRuleConfigurations ProfilerConfig ProfilerRuleConfigurations RetryStrategy "
             "EnableNetworkIsolation EnableManagedSpotTraining EnableInterContainerTrafficEncryption "
             "RemoteDebugConfig InfraCheckConfig SessionChainingConfig ExperimentConfig Tags"),
        "AlgorithmSpecification": ("TrainingImage AlgorithmName TrainingInputMode ContainerEntrypoint "
                                   "ContainerArguments MetricDefinitions EnableSageMakerMetricsTimeSeries "
                                   "TrainingImageConfig"),
        # the credentials provider must be configured (create_rules; images/registries.py)
        "AlgorithmSpecification.TrainingImageConfig": "TrainingRepositoryAccessMode TrainingRepositoryAuthConfig",
        "AlgorithmSpecification.TrainingImageConfig.TrainingRepositoryAuthConfig":
            "TrainingRepositoryCredentialsProviderArn",
        "AlgorithmSpecification.MetricDefinitions[]": "Name Regex",
        "InputDataConfig[]": ("ChannelName DataSource ContentType CompressionType RecordWrapperType InputMode "
                              "ShuffleConfig"),
        "InputDataConfig[].ShuffleConfig": "Seed",
        # DatasetSource is interpreted to be refused, by a create rule naming the channel (no SageMaker hub here).
        "InputDataConfig[].DataSource": "S3DataSource FileSystemDataSource DatasetSource",
        "InputDataConfig[].DataSource.DatasetSource": "DatasetArn",
        "InputDataConfig[].DataSource.S3DataSource": ("S3DataType S3Uri S3DataDistributionType AttributeNames "
                                                      "InstanceGroupNames ModelAccessConfig HubAccessConfig"),
        "InputDataConfig[].DataSource.S3DataSource.ModelAccessConfig": "AcceptEula",
        "InputDataConfig[].DataSource.S3DataSource.HubAccessConfig": "HubContentArn",
        "InputDataConfig[].DataSource.FileSystemDataSource": ("FileSystemId FileSystemAccessMode FileSystemType "
                                                              "DirectoryPath"),
        "OutputDataConfig": "S3OutputPath CompressionType KmsKeyId",
        "ResourceConfig": ("InstanceType InstanceCount InstanceGroups VolumeSizeInGB VolumeKmsKeyId "
                           "KeepAlivePeriodInSeconds"),
        "ResourceConfig.InstanceGroups[]": "InstanceType InstanceCount InstanceGroupName",
        "StoppingCondition": "MaxRuntimeInSeconds MaxWaitTimeInSeconds MaxPendingTimeInSeconds",
        "CheckpointConfig": "S3Uri LocalPath",
        "TensorBoardOutputConfig": "LocalPath S3OutputPath",
        "DebugHookConfig": "LocalPath S3OutputPath HookParameters CollectionConfigurations",
        "DebugHookConfig.CollectionConfigurations[]": "CollectionName CollectionParameters",
        "DebugRuleConfigurations[]": _RULE,
        "ProfilerConfig": _PROFILER,
        "ProfilerRuleConfigurations[]": _RULE,
        "RetryStrategy": "MaximumRetryAttempts",
        "RemoteDebugConfig": "EnableRemoteDebug",
        "InfraCheckConfig": "EnableInfraCheck",
        "SessionChainingConfig": "EnableSessionTagChaining",
        "ExperimentConfig": "ExperimentName TrialName TrialComponentDisplayName RunName",
        "Tags[]": "Key Value",
    }),
    "UpdateTrainingJob": _paths({
        "": "TrainingJobName ProfilerConfig ProfilerRuleConfigurations ResourceConfig RemoteDebugConfig",
        "ProfilerConfig": _PROFILER,
        "ProfilerRuleConfigurations[]": _RULE,
        "ResourceConfig": "KeepAlivePeriodInSeconds",
        "RemoteDebugConfig": "EnableRemoteDebug",
    }),
    "ListTrainingJobs": _paths({"": (
        "NextToken MaxResults CreationTimeAfter CreationTimeBefore LastModifiedTimeAfter LastModifiedTimeBefore "
        "NameContains StatusEquals SortBy SortOrder WarmPoolStatusEquals TrainingPlanArnEquals")}),
    "AddTags": _paths({"": "ResourceArn Tags", "Tags[]": "Key Value"}),
}

_PRESENT: Callable[[Any], bool] = lambda v: True  # any value: the member is not implemented

# (member path, values refused, why): implemented members whose values need a missing feature, and
# the reason given for members left out of IMPLEMENTED (any other member gets _NOT_IMPLEMENTED).
_REASONS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("VpcConfig", _PRESENT,
     ("instances run on this machine's network (or a private network namespace with EnableNetworkIsolation), "
      "there are no VPC subnets or security groups to attach")),
    ("EnableInterContainerTrafficEncryption", lambda v: v is True,
     "traffic between instances is not encrypted by trainforge"),
    ("OutputDataConfig.KmsKeyId", bool, "trainforge does not encrypt outputs with KMS keys"),
    ("ResourceConfig.VolumeKmsKeyId", bool, "instance volumes are local directories, not KMS-encrypted"),
    ("ResourceConfig.KeepAlivePeriodInSeconds", bool, "warm pools are not implemented"),
    ("ResourceConfig.TrainingPlanArn", _PRESENT, "training plans (reserved capacity) are not implemented"),
    ("ResourceConfig.InstancePlacementConfig", _PRESENT, "instance placement is not implemented"),
    ("RemoteDebugConfig", lambda v: bool(v.get("EnableRemoteDebug")), "remote debugging through SSM is not available"),
    ("InfraCheckConfig", lambda v: bool(v.get("EnableInfraCheck")), "infrastructure health checks are not run"),
    ("SessionChainingConfig", lambda v: bool(v.get("EnableSessionTagChaining")),
     "session tags of the role are not chained"),
    ("ServerlessJobConfig", _PRESENT, "serverless (model customisation) jobs are not implemented"),
    ("MlflowConfig", _PRESENT, "MLflow tracking integration is not implemented"),
    ("ModelPackageConfig", _PRESENT, "model packages (model registry) are not implemented"),
]
_NOT_IMPLEMENTED = "trainforge does not implement this member"
_REASON_AT = {path: (refused, why) for path, refused, why in _REASONS}  # looked up once per member
assert len(_REASON_AT) == len(_REASONS), "one reason per path"


def _refusals(shape: Shape, value: Any, implemented: frozenset[str], path: str, shown: str) -> Iterator[str]:
    """Why members under ``value`` (of ``shape``, at ``path``; ``shown`` with real indexes) are refused."""
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, member_value in value.items():
            member = shape.members.get(name)
            if member_value is None or member is None:  # unknown names are the validator's business
                continue
            member_path, member_shown = (f"{path}.{name}", f"{shown}.{name}") if path else (name, name)
            refused, reason = _REASON_AT.get(member_path, (None, None))
            why = reason if refused is not None and refused(member_value) else None
            if why is None and member_path not in implemented:
                why = _NOT_IMPLEMENTED
            if why is not None:
                yield f"{member_shown} is not supported by trainforge: {why}"
            else:
                yield from _refusals(member, member_value, implemented, member_path, member_shown)
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            yield from _refusals(shape.member, item, implemented, f"{path}[]", f"{shown}[{i}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            yield from _refusals(shape.value, item, implemented, f"{path}{{}}", f"{shown}[{key!r}]")


def check_supported(operation_name: str, params: dict[str, Any]) -> None:
    """Refuse ``params`` (already valid against the model) when they set a member trainforge does not
    implement, or a value of one that needs a feature it lacks."""
    problems = list(_refusals(operation(operation_name).input_shape, params, IMPLEMENTED[operation_name], "", ""))
    if problems:
        raise ValidationError("; ".join(problems) + ". Remove it from the request (README: 'Request members').")


RULE_NOT_RUN = ("trainforge does not run rule-evaluation containers: this rule was not evaluated "
                "(README: 'Request members').")


def rule_statuses(request: dict[str, Any], key: str, now: float) -> list[dict[str, Any]]:
    """Debug/Profiler rule evaluation statuses: reported honestly as not evaluated."""
    return [{"RuleConfigurationName": rule["RuleConfigurationName"], "RuleEvaluationStatus": "Error",
             "StatusDetails": RULE_NOT_RUN, "LastModifiedTime": now} for rule in request.get(key) or []]
