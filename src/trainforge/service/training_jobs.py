"""The training-job operations: plain Python, no HTTP.

Requests reach here already validated against the model (``api/validation.py``); this module
applies the service's semantics (duplicates, not-found, what each status allows) and records
everything in the store. Running jobs is the scheduler's business: this module only wakes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainforge.algorithms.builtin import with_default_metrics
from trainforge.api.errors import ResourceInUse, ValidationError, job_not_found
from trainforge.api.validation import iso_timestamp
from trainforge.awsmodel import operation
from trainforge.config import Config
from trainforge.service import lifecycle
from trainforge.service.create_rules import check_role, check_update
from trainforge.service.describe_defaults import fill_in
from trainforge.service.pagination import TokenSigner
from trainforge.service.unsupported import check_supported, rule_statuses
from trainforge.store.jobs import DuplicateName, JobRow, JobStore


@dataclass(frozen=True)
class Caller:
    account_id: str
    region: str


def check_tag_keys(tag_list: list[dict[str, str]]) -> None:
    """Tag keys beginning with ``aws:`` (any case) are AWS's own, on AddTags and CreateTrainingJob alike."""
    for tag in tag_list:
        if tag["Key"].lower().startswith("aws:"):
            raise ValidationError("Tag keys beginning with 'aws:' are reserved for AWS use.")


def job_arn(caller: Caller, name: str) -> str:
    return f"arn:aws:sagemaker:{caller.region}:{caller.account_id}:training-job/{name}"


_DESCRIBE_MEMBERS = frozenset(operation("DescribeTrainingJob").output_shape.members)
_UPDATABLE = ("ProfilerConfig", "ProfilerRuleConfigurations", "RemoteDebugConfig")


class TrainingJobs:
    def __init__(self, store: JobStore, config: Config, signer: TokenSigner,
                 check_create: Callable[[dict[str, Any]], None] | None = None,
                 wake: Callable[[], None] | None = None,
                 for_algorithm: Callable[[Caller, dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.store = store
        self.config = config
        self.signer = signer
        self._check_create = check_create or (lambda params: None)
        self._wake = wake or (lambda: None)
        # A request on an algorithm resource (AlgorithmName), checked and filled in from it (service/algorithms.py)
        self._for_algorithm = for_algorithm or (lambda caller, request: request)

    def set_wake(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    # --- Create ------------------------------------------------------------------------------
    def check(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        """The request CreateTrainingJob would store for ``params``, or the ValidationException it
        would answer; nothing is stored."""
        self._check_create(params)
        check_role(params.get("RoleArn", ""), self.config, caller.account_id)
        check_tag_keys(params.get("Tags") or [])
        return with_default_metrics(self._for_algorithm(caller, {k: v for k, v in params.items() if k != "Tags"}))

    def create(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        request = self.check(caller, params)
        name = params["TrainingJobName"]
        now = time.time()
        arn = job_arn(caller, name)
        values = {
            "account_id": caller.account_id, "region": caller.region, "name": name, "arn": arn,
            "status": lifecycle.IN_PROGRESS, "secondary_status": "Starting",
            "creation_time": now, "last_modified_time": now, "training_end_time": None,
            "warm_pool_status": None,
            "training_plan_arn": (params.get("ResourceConfig") or {}).get("TrainingPlanArn"),
            "request": request, "state": lifecycle.new_state(now), "phase": "queued",
            "stop_reason": None, "attempt": 1,
        }
        try:
            self.store.insert_job(values, params.get("Tags") or [])
        except DuplicateName:
            raise ResourceInUse(f"Training job names must be unique within an AWS account and region, "
                                f"and a training job with this name already exists ({arn})") from None
        self._wake()
        return {"TrainingJobArn": arn}

    # --- Describe ----------------------------------------------------------------------------
    def get(self, caller: Caller, name: str) -> JobRow:
        job = self.store.get(caller.account_id, caller.region, name)
        if job is None:
            raise job_not_found()
        return job

    def describe(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        return describe_document(self.get(caller, params["TrainingJobName"]))

    # --- List --------------------------------------------------------------------------------
    def list(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        check_supported("ListTrainingJobs", params)  # a filter it does not know would be ignored
        sort_by = params.get("SortBy") or "CreationTime"
        descending = (params.get("SortOrder") or "Ascending") == "Descending"
        limit = params.get("MaxResults") or 10
        filters: dict[str, Any] = {
            "name_contains": params.get("NameContains"),
            "status": params.get("StatusEquals"),
            "created_after": _epoch(params.get("CreationTimeAfter")),
            "created_before": _epoch(params.get("CreationTimeBefore")),
            "modified_after": _epoch(params.get("LastModifiedTimeAfter")),
            "modified_before": _epoch(params.get("LastModifiedTimeBefore")),
            "warm_pool_status": params.get("WarmPoolStatusEquals"),
            "training_plan_arn": params.get("TrainingPlanArnEquals"),
        }
        query = [caller.account_id, caller.region, sort_by, descending, filters]
        if filters["warm_pool_status"] or filters["training_plan_arn"]:
            # Warm pools and training plans are refused at create (service/unsupported.py): no job has one.
            return {"TrainingJobSummaries": []}
        after = self.signer.decode(params["NextToken"], query) if params.get("NextToken") else None
        rows = self.store.list_jobs(caller.account_id, caller.region, sort_by=sort_by,
                                    descending=descending, after=after, limit=limit + 1, **filters)
        out: dict[str, Any] = {"TrainingJobSummaries": [_summary(r) for r in rows[:limit]]}
        if len(rows) > limit:
            last = rows[limit - 1]._mapping
            key = {"Name": [last["name"]], "CreationTime": [last["creation_time"], last["name"]],
                   "Status": [last["status"], last["name"]]}[sort_by]
            out["NextToken"] = self.signer.encode(key, query)
        return out

    # --- Stop --------------------------------------------------------------------------------
    def stop(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        job = self.get(caller, params["TrainingJobName"])
        with self.store.locked(job.id) as (conn, locked):
            if locked is None:
                raise job_not_found()
            if locked.status in lifecycle.FINISHED:
                raise ValidationError(
                    f"The request was rejected because the training job is in status {locked.status}.")
            if locked.status == lifecycle.STOPPING:
                return {}
            now = time.time()
            locked.status = lifecycle.STOPPING
            locked.stop_reason = "Stopped"
            lifecycle.set_secondary(locked, "Stopping", now=now)
            if locked.phase == "queued":
                # Nothing runs yet: the stop completes at once.
                lifecycle.finish(locked, "Stopped", now=now)
            self.store.save(conn, locked)
        self._wake()
        return {}

    # --- Update ------------------------------------------------------------------------------
    def update(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        job = self.get(caller, params["TrainingJobName"])  # an unknown job is answered first, as AWS does
        check_supported("UpdateTrainingJob", params)  # e.g. warm pools and remote debugging, as at create
        with self.store.locked(job.id) as (conn, locked):
            if locked is None:
                raise job_not_found()
            if locked.status in lifecycle.FINISHED and not _only_keep_alive(params):
                raise ValidationError(
                    f"The request was rejected because the training job is in status {locked.status}.")
            check_update(params, locked.request, locked.status, secondary_status=locked.secondary_status,
                         config=self.config)
            for member in _UPDATABLE:
                if member in params:
                    locked.request[member] = params[member]
            keep_alive = (params.get("ResourceConfig") or {}).get("KeepAlivePeriodInSeconds")
            if keep_alive is not None:
                locked.request.setdefault("ResourceConfig", {})["KeepAlivePeriodInSeconds"] = keep_alive
            locked.last_modified_time = time.time()
            self.store.save(conn, locked)
        return {"TrainingJobArn": job.arn}

    # --- Delete ------------------------------------------------------------------------------
    def delete(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        job = self.get(caller, params["TrainingJobName"])
        with self.store.locked(job.id) as (conn, locked):
            if locked is None:
                raise job_not_found()
            if locked.status not in lifecycle.FINISHED:
                raise ResourceInUse(
                    f"Training job {locked.name} is in status {locked.status}; only a Completed, Failed "
                    f"or Stopped training job can be deleted.")
            self.store.delete_job(conn, locked)
        return {}


def describe_document(job: JobRow) -> dict[str, Any]:
    """DescribeTrainingJob's answer: the request as sent, filled in with SageMaker's defaults
    (``describe_defaults.py``; the stored request is not changed), plus the service's own members."""
    doc: dict[str, Any] = fill_in({k: v for k, v in job.request.items() if k in _DESCRIBE_MEMBERS})
    if doc["AlgorithmSpecification"].get("AlgorithmName"):  # its image was taken from the algorithm resource
        doc["AlgorithmSpecification"] = {k: v for k, v in doc["AlgorithmSpecification"].items() if k != "TrainingImage"}
    for key, value in job.state.items():
        if key == "TrainingTimeInSeconds" and job.training_end_time is not None:
            # A job that had started training: finish() gave it TrainingTimeInSeconds, and its end
            # time (a column) comes just before, where the state held it before migration 0004.
            doc["TrainingEndTime"] = job.training_end_time
        if key in _DESCRIBE_MEMBERS:
            doc[key] = value
    doc["TrainingJobName"] = job.name
    doc["TrainingJobArn"] = job.arn
    doc["TrainingJobStatus"] = job.status
    doc["SecondaryStatus"] = job.secondary_status
    doc["CreationTime"] = job.creation_time
    doc["LastModifiedTime"] = job.last_modified_time
    if job.warm_pool_status:
        doc["WarmPoolStatus"] = {"Status": job.warm_pool_status}
    doc.setdefault("ModelArtifacts", {"S3ModelArtifacts": model_artifacts_uri(job.request)})
    # Rules are accepted (the SageMaker SDK adds a ProfilerReport rule by default) but never run here:
    # their statuses say so rather than pretend.
    for request_key, status_key in (("DebugRuleConfigurations", "DebugRuleEvaluationStatuses"),
                                    ("ProfilerRuleConfigurations", "ProfilerRuleEvaluationStatuses")):
        if job.request.get(request_key):
            doc[status_key] = rule_statuses(job.request, request_key, job.creation_time)
    if "ProfilerConfig" in job.request:
        doc["ProfilingStatus"] = "Disabled"  # profilerconfig.json is written; no profiler collects data
    return doc


def model_artifacts_uri(request: dict[str, Any]) -> str:
    out = request["OutputDataConfig"]
    base = out["S3OutputPath"].rstrip("/")
    name = request["TrainingJobName"]
    if out.get("CompressionType") == "NONE":
        return f"{base}/{name}/output/model/"
    return f"{base}/{name}/output/model.tar.gz"


def _only_keep_alive(params: dict[str, Any]) -> bool:
    return set(params) <= {"TrainingJobName", "ResourceConfig"}


def _summary(row: Any) -> dict[str, Any]:
    m = row._mapping
    s: dict[str, Any] = {
        "TrainingJobName": m["name"], "TrainingJobArn": m["arn"], "CreationTime": m["creation_time"],
        "LastModifiedTime": m["last_modified_time"], "TrainingJobStatus": m["status"],
        "SecondaryStatus": m["secondary_status"],
    }
    if m["training_end_time"] is not None:
        s["TrainingEndTime"] = m["training_end_time"]
    if m["warm_pool_status"]:
        s["WarmPoolStatus"] = {"Status": m["warm_pool_status"]}
    if m["training_plan_arn"]:
        s["TrainingPlanArn"] = m["training_plan_arn"]
    return s


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return iso_timestamp(str(value)).timestamp()  # aware: year 1 and year 9999 convert too
