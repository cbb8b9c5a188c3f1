"""The semantic rules AWS applies to CreateTrainingJob and UpdateTrainingJob, beyond the model's
per-member constraints (those are ``api/validation.py``'s; these run after it).

``check_create(params, config, fits=None)`` raises :class:`ValidationError` (400
``ValidationException``) on the first rule broken, also when
``fits(instance_type, count)`` says the instances can never run here (AWS answers an instance
quota the same way). ``check_update(params, job_request, job_status, ...)`` does the same for
UpdateTrainingJob.

Where AWS's own message is known it is reproduced (marked *AWS* below); otherwise the message is
a plain sentence naming the members involved. Constraint-like rules that older SageMaker models
stated as member constraints use the validation format (``1 validation error detected: Value '0'
at 'resourceConfig.instanceCount' failed to satisfy constraint: Member must have value greater
than or equal to 1``).

CreateTrainingJob rules (source: the model's documentation strings unless stated):

| rule | message |
|---|---|
| AlgorithmSpecification and ResourceConfig present (unless ServerlessJobConfig) | ``Value null at 'algorithmSpecification' ... Member must not be null`` |
| exactly one of AlgorithmSpecification.TrainingImage / AlgorithmName | sentence |
| ResourceConfig: InstanceType+InstanceCount, or InstanceGroups; not both, not neither | sentence |
| InstanceCount ≥ 1 (instance groups and placement specifications too; "Minimum value of 1") | validation format |
| instance group names unique; channel InstanceGroupNames name a defined group | sentence |
| ``fits(type, count)`` for the type and every group | ValidationException with fits' reason |
| KeepAlivePeriodInSeconds not with InstanceGroups nor managed spot (developer guide, warm pools) | sentence |
| channel names unique | sentence |
| DataSource: exactly one of S3DataSource / FileSystemDataSource / DatasetSource | sentence |
| DatasetSource refused (no SageMaker hub here: the data plane reads S3 and file systems) | sentence |
| AugmentedManifestFile only when the channel's mode (InputMode, else TrainingInputMode) is Pipe | sentence |
| AugmentedManifestFile needs AttributeNames; AttributeNames only with AugmentedManifestFile | sentence |
| CompressionType Gzip only in Pipe mode (AWS rejects File mode; FastFile likewise) | *AWS*: ``Invalid compression type for channel train: File mode only supports NONE, got Gzip instead`` |
| RecordWrapperType RecordIO only in Pipe mode ("In File mode, leave this field unset or set it to None") | same form |
| FileSystemDataSource: FileSystemId configured in ``file_systems``; DirectoryPath absolute | sentence naming the config key |
| FileSystemDataSource only in File mode, and without ShuffleConfig (what the data plane can stage) | sentence |
| MaxWaitTimeInSeconds only with EnableManagedSpotTraining | *AWS*: ``Invalid MaxWaitTimeInSeconds. It is only supported when EnableManagedSpotTraining is set to true`` |
| EnableManagedSpotTraining requires MaxWaitTimeInSeconds, ≥ MaxRuntimeInSeconds (when given) | sentence |
| MaxRuntimeInSeconds ≤ 28 days ("The maximum value is 28 days") | validation format |
| every S3 URI well formed: ``s3://bucket[/key]`` with a valid bucket name; ``https://`` refused | sentence with the member path |
| ``file://`` URIs absolute and, resolved (``..``, symlinks), under ``effective_local_roots`` | sentence naming the roots and ``allowed_local_roots`` |
| URIs checked: channel S3Uri, OutputDataConfig/TensorBoardOutputConfig/DebugHookConfig/ProfilerConfig S3OutputPath, CheckpointConfig.S3Uri, rule S3OutputPath, hyperparameter ``sagemaker_submit_directory`` (JSON-decoded) when it holds ``://`` | |
| RoleArn configured in ``roles`` when that mapping is non-empty or a credentials file is set, and of the caller's account under a credentials file (``check_role``, called with the caller's account) | sentence naming RoleArn and the config key |
| rule configuration names unique across DebugRuleConfigurations and ProfilerRuleConfigurations | sentence |
| collection names unique in DebugHookConfig | sentence |
| tag keys unique ("Tag keys must be unique per resource") | sentence |
| ProfilingIntervalInMilliseconds one of 100, 200, 500, 1000, 5000, 60000 | sentence |
| ServerlessJobConfig: EvaluationType required when JobType is Evaluation | validation format |
| a script-mode image (no ContainerEntrypoint) with SMDDP, parameter-server, MultiWorkerMirrored or XLA distribution hyperparameters (``images/launchers.py``: ``REFUSED``) | sentence naming the hyperparameter and what to use instead |

Not checked here: hyperparameter count and key/value lengths (the model's map and string bounds,
already enforced by validation), EnableNetworkIsolation feasibility (the runtime's; only a Slurm
backend with ``network: nodes``, which can never enforce it, is refused here).

UpdateTrainingJob rules: something to update; ProfilerConfig/ProfilerRuleConfigurations only while
InProgress, rule names new and unique, at most 20 profiler rules in total, no new rules together
with DisableProfiler; ResourceConfig.KeepAlivePeriodInSeconds only for a job created with a warm
pool (KeepAlivePeriodInSeconds) that is InProgress or Completed; RemoteDebugConfig only while the
secondary status is Downloading or Training (model documentation); URIs as for create.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from trainforge.api.constraints import failure, summary, value_at_least, value_at_most
from trainforge.api.errors import ValidationError
from trainforge.config import Config

Fits = Callable[[str, int], "str | None"]

MAX_RUNTIME_SECONDS = 28 * 24 * 3600  # "The maximum value is 28 days."
# ProfilerConfig.ProfilingIntervalInMilliseconds: "Available values are 100, 200, 500, 1000 (1
# second), 5000 (5 seconds), and 60000 (1 minute) milliseconds." (a test watches the model text)
PROFILING_INTERVALS = (100, 200, 500, 1000, 5000, 60000)
MAX_PROFILER_RULES = 20  # ProfilerRuleConfigurations max in the model
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_LIKE = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_RULE_NAMES_UNIQUE = ("RuleConfigurationName must be unique relative to other rule configuration names: '{}' is "
                      "used more than once.")


def _fail(message: str) -> ValidationError:
    return ValidationError(message)


def _constraint(value: Any, path: str, constraint: str) -> ValidationError:
    return ValidationError(summary([failure(value, path, constraint)]))


# ---- CreateTrainingJob -----------------------------------------------------------------------
def check_create(params: dict[str, Any], config: Config, fits: Fits | None = None) -> None:
    serverless = params.get("ServerlessJobConfig") is not None
    _algorithm(params, serverless)
    _image_config(params, config)
    _resources(params, serverless, fits)
    _channels(params, config)
    _stopping(params)
    _uris(params, config)
    _debugger(params)
    _distribution(params, config)
    _network_isolation(params, config)
    _unique((t.get("Key") for t in params.get("Tags") or []), "Tag keys must be unique per resource: '{}' is "
            "given more than once.")
    job = params.get("ServerlessJobConfig") or {}
    if job.get("JobType") == "Evaluation" and job.get("EvaluationType") is None:
        raise _constraint(None, "serverlessJobConfig.evaluationType", "Member must not be null")


def _distribution(params: dict[str, Any], config: Config) -> None:
    """A framework image (script mode, its own entrypoint) asked for a launcher trainforge lacks."""
    from trainforge.images.catalog import SCRIPT_MODE, resolve
    from trainforge.images.launchers import refusal

    algo = params.get("AlgorithmSpecification") or {}
    why = refusal(params.get("HyperParameters") or {})
    if why is None or algo.get("ContainerEntrypoint"):
        return
    runtime = resolve(algo.get("TrainingImage") or algo.get("AlgorithmName") or "", config.images)
    if runtime.error is None and runtime.kind == SCRIPT_MODE:
        raise _fail(why)


def _network_isolation(params: dict[str, Any], config: Config) -> None:
    """EnableNetworkIsolation where the backend cannot enforce it (Slurm's ``network: nodes``)."""
    if params.get("EnableNetworkIsolation") and config.backend == "slurm":
        from trainforge.backends.slurm.settings import isolation_refused

        why = isolation_refused(config.slurm)
        if why:
            raise _fail(why)


def check_role(role_arn: str, config: Config, account_id: str) -> None:
    """Whether a job of ``account_id`` may run with ``role_arn``; raises :class:`ValidationError`.

    The single-user default (no ``roles``, no credentials file) takes any role: its jobs use the
    server's own AWS configuration. With a ``roles`` mapping, only a mapped role. With a credentials
    file (several accounts), only a mapped role of the caller's own account: the server's own AWS
    credentials never reach a job, and no account uses another's role (AWS does not pass a role
    across accounts either).
    """
    if not config.roles and not config.credentials_file:
        return
    if role_arn not in config.roles:
        lent = " (a server with a credentials file lends its own AWS credentials to no job)" \
            if config.credentials_file else ""
        raise _fail(f"RoleArn '{role_arn}' is not configured on this trainforge server: add it to the server "
                    f"configuration key 'roles' (RoleArn -> credentials){lent}.")
    owner = role_arn.split(":")[4] if role_arn.count(":") >= 5 else ""
    if config.credentials_file and owner != account_id:
        raise _fail(f"RoleArn '{role_arn}' belongs to account '{owner}', not to the caller's account "
                    f"'{account_id}': a training job can only use a role of its own account.")


def _algorithm(params: dict[str, Any], serverless: bool) -> None:
    spec = params.get("AlgorithmSpecification")
    if spec is None:
        if serverless:
            return
        raise _constraint(None, "algorithmSpecification", "Member must not be null")
    image, name = spec.get("TrainingImage") or None, spec.get("AlgorithmName") or None
    if image and name:
        raise _fail("AlgorithmSpecification must specify either TrainingImage or AlgorithmName, not both "
                    "(they are mutually exclusive).")
    if not image and not name and not serverless:
        raise _fail("AlgorithmSpecification must specify either TrainingImage or AlgorithmName.")


def _image_config(params: dict[str, Any], config: Config) -> None:
    """TrainingImageConfig's credentials provider (SageMaker calls that Lambda function for the
    registry's credentials) is one configured under ``registries`` (``credentials_provider_arn``)."""
    from trainforge.images.registries import provider

    image_config = (params.get("AlgorithmSpecification") or {}).get("TrainingImageConfig") or {}
    arn = (image_config.get("TrainingRepositoryAuthConfig") or {}).get("TrainingRepositoryCredentialsProviderArn")
    if arn and provider(arn, config.registries) is None:
        raise _fail(f"TrainingRepositoryCredentialsProviderArn '{arn}' is not configured on this trainforge "
                    "server: add it to an entry of the configuration key 'registries' "
                    "(credentials_provider_arn, with the credentials it stands for).")


def _at_least_one(count: Any, path: str) -> None:
    if count is not None and count < 1:
        raise _constraint(count, path, value_at_least("1"))


def _resources(params: dict[str, Any], serverless: bool, fits: Fits | None) -> None:
    rc = params.get("ResourceConfig")
    if rc is None:
        if serverless:
            return
        raise _constraint(None, "resourceConfig", "Member must not be null")
    groups = rc.get("InstanceGroups") or []
    itype, count = rc.get("InstanceType"), rc.get("InstanceCount")
    wanted: list[tuple[str, int]] = []
    if groups:
        if itype is not None or count is not None:
            raise _fail("ResourceConfig must specify either InstanceType and InstanceCount, or InstanceGroups, "
                        "not both.")
        names: set[str] = set()
        for i, group in enumerate(groups, 1):
            _at_least_one(group.get("InstanceCount"), f"resourceConfig.instanceGroups.{i}.member.instanceCount")
            name = group.get("InstanceGroupName")
            if name in names:
                raise _fail(f"Instance group names must be unique: '{name}' is used by more than one "
                            "InstanceGroup.")
            names.add(name)
            wanted.append((group["InstanceType"], group["InstanceCount"]))
        if rc.get("KeepAlivePeriodInSeconds"):
            raise _fail("KeepAlivePeriodInSeconds (warm pools) is not supported with heterogeneous clusters "
                        "(InstanceGroups).")
    elif not serverless or itype is not None or count is not None:
        if itype is None and count is None:
            raise _fail("ResourceConfig must specify InstanceType and InstanceCount, or InstanceGroups.")
        if itype is None:
            raise _constraint(None, "resourceConfig.instanceType", "Member must not be null")
        if count is None:
            raise _constraint(None, "resourceConfig.instanceCount", "Member must not be null")
        _at_least_one(count, "resourceConfig.instanceCount")
        wanted.append((itype, count))
    placement = (rc.get("InstancePlacementConfig") or {}).get("PlacementSpecifications") or []
    for i, spec in enumerate(placement, 1):
        _at_least_one(spec.get("InstanceCount"),
                      f"resourceConfig.instancePlacementConfig.placementSpecifications.{i}.member.instanceCount")
    if rc.get("KeepAlivePeriodInSeconds") and params.get("EnableManagedSpotTraining"):
        raise _fail("KeepAlivePeriodInSeconds (warm pools) is not supported with managed spot training "
                    "(EnableManagedSpotTraining).")
    group_names = {g.get("InstanceGroupName") for g in groups}
    for channel in params.get("InputDataConfig") or []:
        s3 = (channel.get("DataSource") or {}).get("S3DataSource") or {}
        for name in s3.get("InstanceGroupNames") or []:
            if name not in group_names:
                raise _fail(f"Channel '{channel.get('ChannelName')}' names instance group '{name}', which is not "
                            "defined in ResourceConfig.InstanceGroups.")
    if fits is not None:
        for instance_type, n in wanted:
            reason = fits(instance_type, int(n))
            if reason:
                raise ValidationError(reason)  # issue 3: a type that can never fit is a ValidationException


def _channels(params: dict[str, Any], config: Config) -> None:
    job_mode = (params.get("AlgorithmSpecification") or {}).get("TrainingInputMode") or "File"
    seen: set[str] = set()
    for channel in params.get("InputDataConfig") or []:
        name = channel.get("ChannelName")
        if name in seen:
            raise _fail(f"Channel names must be unique within InputDataConfig: '{name}' is used more than once.")
        seen.add(name)
        mode = channel.get("InputMode") or job_mode
        source = channel.get("DataSource") or {}
        kinds = [k for k in ("S3DataSource", "FileSystemDataSource", "DatasetSource") if source.get(k) is not None]
        if len(kinds) != 1:
            raise _fail(f"The DataSource of channel '{name}' must specify exactly one of S3DataSource, "
                        f"FileSystemDataSource or DatasetSource{'' if not kinds else ', not ' + ' and '.join(kinds)}.")
        if kinds == ["DatasetSource"]:
            raise _fail(f"Channel '{name}': a DataSource needs S3DataSource or FileSystemDataSource.")
        s3 = source.get("S3DataSource")
        if s3 is not None:
            if s3.get("S3DataType") == "AugmentedManifestFile":
                if mode != "Pipe":
                    raise _fail(f"AugmentedManifestFile can only be used if the Channel's input mode is Pipe: "
                                f"channel '{name}' uses {mode} mode.")
                if not s3.get("AttributeNames"):
                    raise _fail(f"Channel '{name}': AttributeNames are required with S3DataType "
                                "'AugmentedManifestFile'.")
            if s3.get("AttributeNames") and s3.get("S3DataType") != "AugmentedManifestFile":
                raise _fail(f"AttributeNames of channel '{name}' can only be used with S3DataType "
                            f"AugmentedManifestFile, not {s3.get('S3DataType')}.")
        if channel.get("CompressionType") == "Gzip" and mode != "Pipe":
            raise _fail(f"Invalid compression type for channel {name}: {mode} mode only supports NONE, "
                        "got Gzip instead")
        if channel.get("RecordWrapperType") == "RecordIO" and mode != "Pipe":
            raise _fail(f"Invalid record wrapper type for channel {name}: {mode} mode only supports None, "
                        "got RecordIO instead")
        fs = source.get("FileSystemDataSource")
        if fs is not None:
            if fs.get("FileSystemId") not in config.file_systems:
                raise _fail(f"FileSystemId '{fs.get('FileSystemId')}' of channel '{name}' is not configured on this "
                            "trainforge server: add it to the server configuration key 'file_systems' "
                            "(FileSystemId -> local mount point).")
            if not str(fs.get("DirectoryPath", "")).startswith("/"):
                raise _fail(f"DirectoryPath '{fs.get('DirectoryPath')}' of channel '{name}' must be an absolute "
                            "path in the file system.")
            if mode != "File":
                raise _fail(f"Channel '{name}': FileSystemDataSource supports only File input mode, not {mode}.")
            if channel.get("ShuffleConfig"):
                raise _fail(f"Channel '{name}': ShuffleConfig is not supported with FileSystemDataSource.")


def _stopping(params: dict[str, Any]) -> None:
    stop = params.get("StoppingCondition") or {}
    runtime, wait = stop.get("MaxRuntimeInSeconds"), stop.get("MaxWaitTimeInSeconds")
    if runtime is not None and runtime > MAX_RUNTIME_SECONDS:
        raise _constraint(runtime, "stoppingCondition.maxRuntimeInSeconds", value_at_most(str(MAX_RUNTIME_SECONDS)))
    spot = bool(params.get("EnableManagedSpotTraining"))
    if wait is not None and not spot:
        raise _fail("Invalid MaxWaitTimeInSeconds. It is only supported when EnableManagedSpotTraining is set to true")
    if spot and wait is None:
        raise _fail("MaxWaitTimeInSeconds is required when EnableManagedSpotTraining is set to true.")
    if spot and runtime is not None and wait < runtime:
        raise _fail(f"Invalid MaxWaitTimeInSeconds ({wait}). It must be greater than or equal to "
                    f"MaxRuntimeInSeconds ({runtime}).")


def _debugger(params: dict[str, Any]) -> None:
    rules = (params.get("DebugRuleConfigurations") or []) + (params.get("ProfilerRuleConfigurations") or [])
    _unique((r.get("RuleConfigurationName") for r in rules), _RULE_NAMES_UNIQUE)
    collections = (params.get("DebugHookConfig") or {}).get("CollectionConfigurations") or []
    _unique((cc.get("CollectionName") for cc in collections if cc.get("CollectionName") is not None),
            "CollectionName must be unique in DebugHookConfig.CollectionConfigurations: '{}' is used more than once.")
    _profiling_interval(params.get("ProfilerConfig"))


def _profiling_interval(profiler: dict[str, Any] | None) -> None:
    interval = (profiler or {}).get("ProfilingIntervalInMilliseconds")
    if interval is not None and interval not in PROFILING_INTERVALS:
        raise _fail(f"Invalid ProfilingIntervalInMilliseconds {interval}: the available values are "
                    f"{', '.join(map(str, PROFILING_INTERVALS))} milliseconds.")


def _unique(values: Any, message: str) -> None:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise _fail(message.format(value))
        seen.add(value)


# ---- URIs --------------------------------------------------------------------------------------
def _uris(params: dict[str, Any], config: Config) -> None:
    for path, uri in _uri_members(params):
        check_uri(uri, path, config)
    submit = (params.get("HyperParameters") or {}).get("sagemaker_submit_directory")
    if isinstance(submit, str):
        try:
            decoded = json.loads(submit)
        except ValueError:
            decoded = submit
        if isinstance(decoded, str) and "://" in decoded:
            check_uri(decoded, "hyperParameters.sagemaker_submit_directory", config)


def _uri_members(params: dict[str, Any]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for i, channel in enumerate(params.get("InputDataConfig") or [], 1):
        s3 = (channel.get("DataSource") or {}).get("S3DataSource") or {}
        if s3.get("S3Uri") is not None:
            found.append((f"inputDataConfig.{i}.member.dataSource.s3DataSource.s3Uri", s3["S3Uri"]))
    for member, key in (("OutputDataConfig", "S3OutputPath"), ("CheckpointConfig", "S3Uri"),
                        ("TensorBoardOutputConfig", "S3OutputPath"), ("DebugHookConfig", "S3OutputPath"),
                        ("ProfilerConfig", "S3OutputPath")):
        value = (params.get(member) or {}).get(key)
        if value is not None:
            found.append((f"{member[0].lower()}{member[1:]}.{key[0].lower()}{key[1:]}", value))
    for member in ("DebugRuleConfigurations", "ProfilerRuleConfigurations"):
        for i, rule in enumerate(params.get(member) or [], 1):
            if rule.get("S3OutputPath") is not None:
                found.append((f"{member[0].lower()}{member[1:]}.{i}.member.s3OutputPath", rule["S3OutputPath"]))
    return found


def check_uri(uri: str, path: str, config: Config) -> None:
    """An ``s3://bucket/key`` URI with a valid bucket name, or a ``file://`` URI under the allowed roots."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme == "file":
        problem = local_path_problem(uri, config.effective_local_roots)
        if problem:
            raise _fail(f"Invalid file:// URI '{uri}' at '{path}': {problem}")
        return
    if scheme != "s3":
        raise _fail(f"Invalid S3 URI '{uri}' at '{path}': trainforge accepts s3://bucket/key URIs (and file:// "
                    "URIs under the allowed local roots).")
    bucket = uri[5:].split("/", 1)[0]
    problem = bucket_name_problem(bucket)
    if problem:
        raise _fail(f"Invalid S3 URI '{uri}' at '{path}': {problem}.")


def local_path_problem(uri: str, roots: list[Path]) -> str | None:
    """Why a ``file://`` URI is refused: not absolute, or (``..`` and symlinks resolved, the path need
    not exist yet) outside every allowed root; None when it is fine."""
    rest = uri.split("://", 1)[1]
    if rest.startswith("localhost/"):
        rest = rest[len("localhost"):]
    if not rest.startswith("/"):
        return "it must be an absolute path (file:///path)."
    real = Path(os.path.realpath(unquote(rest)))
    for root in roots:
        root = Path(os.path.realpath(root))
        if real == root or root in real.parents:
            return None
    shown = ", ".join(str(r) for r in roots) or "(none)"
    return (f"it resolves to {real}, outside the allowed local roots ({shown}). Allow more directories with the "
            "server option --allow-local-root (configuration key 'allowed_local_roots').")


def bucket_name_problem(bucket: str) -> str | None:
    """Why ``bucket`` is not a valid S3 bucket name (general purpose or directory bucket), or None."""
    if not bucket:
        return "the bucket name is missing"
    if not 3 <= len(bucket) <= 63:
        return f"bucket name '{bucket}' must be between 3 and 63 characters long"
    if not _BUCKET.fullmatch(bucket):
        return (f"bucket name '{bucket}' may contain only lowercase letters, digits, dots and hyphens, and must "
                "begin and end with a letter or digit")
    if ".." in bucket or ".-" in bucket or "-." in bucket:
        return f"bucket name '{bucket}' must not contain two adjacent periods or a period next to a hyphen"
    if _IP_LIKE.fullmatch(bucket):
        return f"bucket name '{bucket}' must not be formatted as an IP address"
    if bucket.startswith(("xn--", "sthree-", "amzn-s3-demo-")) or bucket.endswith(("-s3alias", "--ol-s3", ".mrap")):
        return f"bucket name '{bucket}' uses a prefix or suffix reserved by S3"
    return None


# ---- UpdateTrainingJob ------------------------------------------------------------------------
def check_update(params: dict[str, Any], job_request: dict[str, Any], job_status: str, *,
                 secondary_status: str | None = None, config: Config | None = None) -> None:
    """The rules of UpdateTrainingJob for a job created with ``job_request`` and now in ``job_status``."""
    profiler, rules = params.get("ProfilerConfig"), params.get("ProfilerRuleConfigurations")
    resources, remote = params.get("ResourceConfig"), params.get("RemoteDebugConfig")
    if profiler is None and rules is None and resources is None and remote is None:
        raise _fail("UpdateTrainingJob needs at least one of ProfilerConfig, ProfilerRuleConfigurations, "
                    "ResourceConfig or RemoteDebugConfig.")
    if (profiler is not None or rules is not None) and job_status != "InProgress":
        raise _fail(f"The profiler configuration can only be updated while the training job is InProgress; it is "
                    f"{job_status}.")
    if profiler is not None:
        _profiling_interval(profiler)
    if config is not None:
        _uris(params, config)  # of UpdateTrainingJob's members, ProfilerConfig's and the rules' have URIs
    if rules:
        if (profiler or {}).get("DisableProfiler"):
            raise _fail("ProfilerRuleConfigurations cannot be added while DisableProfiler is true.")
        existing = [r.get("RuleConfigurationName") for r in (job_request.get("ProfilerRuleConfigurations") or [])]
        names = [r.get("RuleConfigurationName") for r in rules]
        _unique(existing + names, _RULE_NAMES_UNIQUE)
        if len(existing) + len(names) > MAX_PROFILER_RULES:
            raise _fail(f"A training job can have at most {MAX_PROFILER_RULES} ProfilerRuleConfigurations; it has "
                        f"{len(existing)} and the update adds {len(names)}.")
    if resources is not None:
        if (job_request.get("ResourceConfig") or {}).get("KeepAlivePeriodInSeconds") is None:
            raise _fail("KeepAlivePeriodInSeconds can only be updated for a training job created with a warm pool "
                        "(ResourceConfig.KeepAlivePeriodInSeconds).")
        if job_status not in ("InProgress", "Completed"):
            raise _fail(f"The warm pool of a {job_status} training job cannot be updated: only InProgress and "
                        "Completed jobs retain one.")
    if remote is not None:
        status = secondary_status or job_status
        if status not in ("Downloading", "Training"):
            raise _fail(f"RemoteDebugConfig can be updated only when the SecondaryStatus of the training job is "
                        f"Downloading or Training; it is {status}.")
