"""What an algorithm resource's TrainingSpecification asks of itself and of a training job on it.

At CreateAlgorithm (:func:`check_specification`): hyperparameter and channel names unique, each
hyperparameter's Range of its Type (Integer, Continuous, Categorical; none for FreeText), Min ≤ Max,
a DefaultValue inside the range, ``IsRequired`` with no default allowed.

At CreateTrainingJob with AlgorithmName (:func:`apply`), each rule a ValidationException naming it:

| rule | |
|---|---|
| SupportedTrainingInstanceTypes | the job's instance type (every instance group's) is listed |
| SupportsDistributedTraining | more than one instance only where it is true |
| TrainingChannels | required channels present; no channel the algorithm does not declare; the channel's ContentType among SupportedContentTypes, its input mode (InputMode, else the job's TrainingInputMode) among SupportedInputModes, its CompressionType among SupportedCompressionTypes |
| SupportedHyperParameters | no unknown name (``sagemaker_*`` and ``_*`` are the platform's own); a value of the Type, inside the Range; IsRequired ones given or defaulted; DefaultValues fill the rest |

The job then runs the algorithm's TrainingImage, with its MetricDefinitions when the request names none.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from trainforge.algorithms.xgboost.hyperparameters import PLATFORM_PREFIXES
from trainforge.api.errors import ValidationError

RANGE_OF_TYPE = {"Integer": "IntegerParameterRangeSpecification", "Continuous": "ContinuousParameterRangeSpecification",
                 "Categorical": "CategoricalParameterRangeSpecification"}


def check_specification(spec: dict[str, Any]) -> None:
    hps = spec.get("SupportedHyperParameters") or []
    _unique([h["Name"] for h in hps], "SupportedHyperParameters")
    _unique([c["Name"] for c in spec.get("TrainingChannels") or []], "TrainingChannels")
    for hp in hps:
        ranges = hp.get("Range") or {}
        kinds = [k for k, v in ranges.items() if v is not None]
        wanted = RANGE_OF_TYPE.get(hp["Type"])
        if wanted is None and kinds:
            raise ValidationError(f"Hyperparameter {hp['Name']}: a FreeText hyperparameter has no Range.")
        if wanted is not None and kinds != [wanted]:
            raise ValidationError(f"Hyperparameter {hp['Name']}: a hyperparameter of type {hp['Type']} needs a "
                                  f"Range with {wanted} (and nothing else).")
        if hp["Type"] in ("Integer", "Continuous"):
            r = ranges[wanted]
            low, high = (_number(hp, r["MinValue"], "MinValue"), _number(hp, r["MaxValue"], "MaxValue"))
            if low > high:
                raise ValidationError(f"Hyperparameter {hp['Name']}: MinValue {r['MinValue']} is greater than "
                                      f"MaxValue {r['MaxValue']}.")
        if hp.get("DefaultValue") is not None:
            _check_value(hp, hp["DefaultValue"], "DefaultValue")


def apply(algorithm: dict[str, Any], name: str, request: dict[str, Any]) -> dict[str, Any]:
    """``request`` checked against the algorithm (see the module docstring), with its image,
    metric definitions and hyperparameter defaults filled in."""
    spec = algorithm["TrainingSpecification"]
    _instances(spec, name, request.get("ResourceConfig") or {})
    _channels(spec, name, request)
    out = copy.deepcopy(request)
    algo = out["AlgorithmSpecification"]
    algo["TrainingImage"] = spec["TrainingImage"]
    if not algo.get("MetricDefinitions") and spec.get("MetricDefinitions"):
        algo["MetricDefinitions"] = copy.deepcopy(spec["MetricDefinitions"])
    hyperparameters = _hyperparameters(spec, name, request.get("HyperParameters") or {})
    if hyperparameters:
        out["HyperParameters"] = hyperparameters
    return out


def _instances(spec: dict[str, Any], name: str, resources: dict[str, Any]) -> None:
    groups = resources.get("InstanceGroups") or [resources]
    supported = spec["SupportedTrainingInstanceTypes"]
    for group in groups:
        itype = group.get("InstanceType")
        if itype and itype not in supported:
            raise ValidationError(f"Instance type {itype} is not supported by algorithm {name} "
                                  f"(SupportedTrainingInstanceTypes: {', '.join(supported)}).")
    count = sum(int(g.get("InstanceCount") or 0) for g in groups)
    if count > 1 and not spec.get("SupportsDistributedTraining"):
        raise ValidationError(f"Algorithm {name} does not support distributed training "
                              f"(SupportsDistributedTraining is false): the job asks for {count} instances.")


def _channels(spec: dict[str, Any], name: str, request: dict[str, Any]) -> None:
    declared = {c["Name"]: c for c in spec["TrainingChannels"]}
    given = {c["ChannelName"]: c for c in request.get("InputDataConfig") or []}
    job_mode = (request.get("AlgorithmSpecification") or {}).get("TrainingInputMode") or "File"
    for channel_name, ch in declared.items():
        if ch.get("IsRequired") and channel_name not in given:
            raise ValidationError(f"Channel {channel_name} is required by algorithm {name} (TrainingChannels) "
                                  f"but missing from InputDataConfig.")
    for channel_name, ch in given.items():
        rule = declared.get(channel_name)
        if rule is None:
            raise ValidationError(f"Channel {channel_name} is not supported by algorithm {name}: its "
                                  f"TrainingChannels are {', '.join(declared)}.")
        content_type = ch.get("ContentType")
        if content_type and content_type not in rule["SupportedContentTypes"]:
            raise ValidationError(f"Content type {content_type} of channel {channel_name} is not supported by "
                                  f"algorithm {name} (SupportedContentTypes: "
                                  f"{', '.join(rule['SupportedContentTypes'])}).")
        mode = ch.get("InputMode") or job_mode
        if mode not in rule["SupportedInputModes"]:
            raise ValidationError(f"Input mode {mode} of channel {channel_name} is not supported by algorithm "
                                  f"{name} (SupportedInputModes: {', '.join(rule['SupportedInputModes'])}).")
        compression = ch.get("CompressionType") or "None"
        supported = rule.get("SupportedCompressionTypes")
        if compression != "None" and supported and compression not in supported:
            raise ValidationError(f"Compression type {compression} of channel {channel_name} is not supported by "
                                  f"algorithm {name} (SupportedCompressionTypes: {', '.join(supported)}).")


def _hyperparameters(spec: dict[str, Any], name: str, given: dict[str, str]) -> dict[str, str]:
    table = {h["Name"]: h for h in spec.get("SupportedHyperParameters") or []}
    out = dict(given)
    for key, value in given.items():
        if key.startswith(PLATFORM_PREFIXES):
            continue
        hp = table.get(key)
        if hp is None:
            raise ValidationError(f"Hyperparameter {key} is not supported by algorithm {name} "
                                  f"(SupportedHyperParameters: {', '.join(table) or 'none'}).")
        _check_value(hp, value, "value")
    for key, hp in table.items():
        if key in out:
            continue
        if hp.get("DefaultValue") is not None:
            out[key] = hp["DefaultValue"]
        elif hp.get("IsRequired"):
            raise ValidationError(f"Hyperparameter {key} is required by algorithm {name} and has no default.")
    return out


def _check_value(hp: dict[str, Any], value: str, what: str) -> None:
    kind = hp["Type"]
    if kind == "FreeText":
        return
    r = (hp.get("Range") or {}).get(RANGE_OF_TYPE[kind]) or {}
    if kind == "Categorical":
        if value not in r.get("Values", []):
            raise ValidationError(f"Hyperparameter {hp['Name']}: {what} {value!r} is not one of its Categorical "
                                  f"values ({', '.join(r.get('Values', []))}).")
        return
    number = _number(hp, value, what)
    if kind == "Integer" and not number.is_integer():
        raise ValidationError(f"Hyperparameter {hp['Name']}: {what} {value!r} is not an Integer.")
    low, high = float(r["MinValue"]), float(r["MaxValue"])
    if not low <= number <= high:
        raise ValidationError(f"Hyperparameter {hp['Name']}: {what} {value} is outside its range "
                              f"[{r['MinValue']}, {r['MaxValue']}].")


def _number(hp: dict[str, Any], value: str, what: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ValidationError(f"Hyperparameter {hp['Name']}: {what} {value!r} is not a {hp['Type']} number.")
    return number


def _unique(names: list[str], member: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValidationError(f"{member}: the name {n} appears more than once.")
        seen.add(n)
