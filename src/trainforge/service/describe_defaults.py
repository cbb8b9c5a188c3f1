"""The members DescribeTrainingJob returns with SageMaker's default when the request left them out.

SageMaker does not echo a CreateTrainingJob request: it answers with the job as it filled it in
(``OutputDataConfig.KmsKeyId`` as ``""``, each channel's ``CompressionType`` and
``RecordWrapperType`` as ``"None"``, the ``Enable*`` booleans, ...), and clients read those members
unconditionally: the SageMaker Python SDK's ``Estimator.attach`` indexes
``OutputDataConfig["KmsKeyId"]``, ``ResourceConfig["VolumeSizeInGB"]``,
``StoppingCondition["MaxRuntimeInSeconds"]`` and ``AlgorithmSpecification["TrainingInputMode"]``
(``EstimatorBase._prepare_init_params_from_job_description``, v2.257).

:data:`DEFAULTS` is the one table of them, each row with where its value comes from. The sources:

* ``recorded-2021``: a DescribeTrainingJob response printed by boto3 (TensorFlow 2.4 script-mode
  job, ap-southeast-1, 2021-06-14, response date header ``Mon, 14 Jun 2021 02:27:16 GMT``), published
  in a public repository's README;
* ``sdk-tests``: the responses the SageMaker Python SDK's unit tests replay for attach
  (``tests/unit/test_estimator.py`` ``RETURNED_JOB_DESCRIPTION``, ``tests/unit/test_algorithm.py``,
  v2.257.6);
* ``api-reference``: the default stated in the member's documentation in botocore's SageMaker
  model (the API reference's text).

The table is applied to a copy when describing (:func:`fill_in`); the request as sent stays in
the store untouched, and the runtime reads that.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RECORDED = "recorded-2021"
SDK_TESTS = "sdk-tests"
API_REFERENCE = "api-reference"

# AWS's prebuilt framework images that publish time-series metrics by default (the API reference of
# AlgorithmSpecification.EnableSageMakerMetricsTimeSeries: TensorFlow >= 1.15, MXNet >= 1.6,
# PyTorch >= 1.3; every image of these repositories still published is newer than that).
_TIME_SERIES_REPOSITORIES = ("/tensorflow-training:", "/mxnet-training:", "/pytorch-training:")


def _time_series_default(spec: dict[str, Any]) -> bool:
    """EnableSageMakerMetricsTimeSeries as the API reference defines its default: off, except with a
    MetricDefinition or a prebuilt framework image (and SageMaker's built-in algorithms, which
    trainforge does not have)."""
    if spec.get("MetricDefinitions"):
        return True
    image = spec.get("TrainingImage") or ""
    return any(repo in image for repo in _TIME_SERIES_REPOSITORIES)


def _profiling(config: dict[str, Any]) -> bool:
    return not config.get("DisableProfiler")


@dataclass(frozen=True)
class Default:
    """``path``: dotted members from the top of the answer; ``[]`` after a member names each element
    of that list. The value is set where the path's parent exists and the member is absent (a
    parent that is missing is not created, except by a row of its own). ``value`` is the value, or
    with ``computed`` a function of the parent object; ``when`` limits the row to some parents."""

    path: str
    value: Any
    source: str
    computed: bool = False
    when: Callable[[dict[str, Any]], bool] | None = None

    def resolve(self, parent: dict[str, Any]) -> Any:
        return self.value(parent) if self.computed else copy.deepcopy(self.value)


DEFAULTS: tuple[Default, ...] = (
    Default("EnableNetworkIsolation", False, f"{RECORDED}; {SDK_TESTS}"),
    Default("EnableInterContainerTrafficEncryption", False, f"{RECORDED}; {SDK_TESTS}"),
    Default("EnableManagedSpotTraining", False, RECORDED),
    # StoppingCondition is a required member of DescribeTrainingJob's output (botocore's model).
    Default("StoppingCondition", {}, "required output member (botocore model)"),
    Default("StoppingCondition.MaxRuntimeInSeconds", 86400,
            f"{API_REFERENCE}: 'The default value is 1 day'; {RECORDED}"),
    Default("AlgorithmSpecification.EnableSageMakerMetricsTimeSeries", _time_series_default,
            f"{API_REFERENCE}: false, except built-in algorithms, prebuilt framework images and jobs "
            f"with MetricDefinitions; {RECORDED} (true for a TensorFlow image)", computed=True),
    Default("OutputDataConfig.KmsKeyId", "", f"{RECORDED}; {SDK_TESTS}; the SDK's attach reads it"),
    Default("OutputDataConfig.CompressionType", "GZIP", f"{API_REFERENCE}: 'Defaults to gzip'"),
    Default("InputDataConfig[].CompressionType", "None",
            f"{RECORDED}; {SDK_TESTS} (test_algorithm); {API_REFERENCE}: 'The default value is None'"),
    Default("InputDataConfig[].RecordWrapperType", "None", f"{RECORDED}; {SDK_TESTS} (test_algorithm)"),
    Default("InputDataConfig[].DataSource.S3DataSource.S3DataDistributionType", "FullyReplicated",
            f"{RECORDED}; {SDK_TESTS} (test_algorithm)"),
    Default("ProfilerConfig.ProfilingIntervalInMilliseconds", 500,
            f"{RECORDED}; {API_REFERENCE}: 'The default value is 500 milliseconds'", when=_profiling),
    Default("ProfilerRuleConfigurations[].VolumeSizeInGB", 0, RECORDED),
)


def _parents(doc: dict[str, Any], steps: list[str]) -> list[dict[str, Any]]:
    """The objects that ``steps`` (all but the last member of a path) lead to in ``doc``."""
    found: list[Any] = [doc]
    for step in steps:
        name, each = (step[:-2], True) if step.endswith("[]") else (step, False)
        nxt: list[Any] = []
        for obj in found:
            child = obj.get(name) if isinstance(obj, dict) else None
            if each and isinstance(child, list):
                nxt.extend(child)
            elif not each and child is not None:
                nxt.append(child)
        found = nxt
    return [obj for obj in found if isinstance(obj, dict)]


def fill_in(answer: dict[str, Any]) -> dict[str, Any]:
    """``answer`` (built from the stored request) with every default of :data:`DEFAULTS` applied.
    The objects it changes are copies: the request they came from is not modified."""
    out = dict(answer)
    copied: set[str] = set()
    for row in DEFAULTS:
        *steps, member = row.path.split(".")
        top = (steps[0] if steps else member).removesuffix("[]")
        if steps and top in out and top not in copied:
            out[top] = copy.deepcopy(out[top])  # only the top-level members a row may change
            copied.add(top)
        for parent in _parents(out, steps):
            if member not in parent and (row.when is None or row.when(parent)):
                parent[member] = row.resolve(parent)
    return out
