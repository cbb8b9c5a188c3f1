"""Request members trainforge cannot honour are refused, never silently echoed back.

Each entry names a member (by path), the values that would need a feature trainforge does not
have, and why. The README's "Request members" table is the user-facing copy of this list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainforge.api.errors import ValidationError

_REASONS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("VpcConfig", lambda v: v is not None,
     ("instances run on this machine's network (or a private network namespace with EnableNetworkIsolation), "
      "there are no VPC subnets or security groups to attach")),
    ("EnableInterContainerTrafficEncryption", lambda v: v is True,
     "traffic between instances is not encrypted by trainforge"),
    ("OutputDataConfig.KmsKeyId", lambda v: bool(v), "trainforge does not encrypt outputs with KMS keys"),
    ("ResourceConfig.VolumeKmsKeyId", lambda v: bool(v), "instance volumes are local directories, not KMS-encrypted"),
    ("ResourceConfig.KeepAlivePeriodInSeconds", lambda v: bool(v), "warm pools are not implemented"),
    ("ResourceConfig.TrainingPlanArn", lambda v: bool(v), "training plans (reserved capacity) are not implemented"),
    ("ResourceConfig.InstancePlacementConfig", lambda v: v is not None, "instance placement is not implemented"),
    ("AlgorithmSpecification.TrainingImageConfig", lambda v: v is not None,
     "images are resolved by trainforge's image catalog, not pulled from a registry"),
    ("RemoteDebugConfig", lambda v: bool((v or {}).get("EnableRemoteDebug")),
     "remote debugging through SSM is not available"),
    ("InfraCheckConfig", lambda v: bool((v or {}).get("EnableInfraCheck")), "infrastructure health checks are not run"),
    ("SessionChainingConfig", lambda v: bool((v or {}).get("EnableSessionTagChaining")),
     "session tags of the role are not chained"),
    ("ServerlessJobConfig", lambda v: v is not None, "serverless (model customisation) jobs are not implemented"),
    ("MlflowConfig", lambda v: v is not None, "MLflow tracking integration is not implemented"),
    ("ModelPackageConfig", lambda v: v is not None, "model packages (model registry) are not implemented"),
]


def _get(params: dict[str, Any], path: str) -> Any:
    value: Any = params
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def check_supported(params: dict[str, Any]) -> None:
    problems = [f"{path} is not supported by trainforge: {why}" for path, used, why in _REASONS
                if used(_get(params, path))]
    if problems:
        raise ValidationError("; ".join(problems) + ". Remove it from the request (README: 'Request members').")


RULE_NOT_RUN = ("trainforge does not run rule-evaluation containers: this rule was not evaluated "
                "(README: 'Request members').")


def rule_statuses(request: dict[str, Any], key: str, now: float) -> list[dict[str, Any]]:
    """Debug/Profiler rule evaluation statuses: reported honestly as not evaluated."""
    return [{"RuleConfigurationName": rule["RuleConfigurationName"], "RuleEvaluationStatus": "Error",
             "StatusDetails": RULE_NOT_RUN, "LastModifiedTime": now} for rule in request.get(key) or []]
