"""An algorithm's ValidationSpecification, run as SageMaker runs it: each validation profile's
TrainingJobDefinition becomes a training job on the algorithm (through CreateTrainingJob's own checks
and scheduler, as the ValidationRole), and the algorithm's status follows those jobs.

| jobs | AlgorithmStatus | ValidationStatuses[].Status |
|---|---|---|
| any still running | InProgress | InProgress (Completed / Failed for those done) |
| all Completed | Completed | Completed |
| any Failed or Stopped | Failed | Failed, with the job's FailureReason |

The jobs are ordinary training jobs named ``<algorithm>-val<N>-<random>`` (listed by
ListTrainingJobs, unlike SageMaker's hidden ones). A profile's TransformJobDefinition is refused:
trainforge has no batch transform. CreateAlgorithm checks every profile's job before starting any,
so a refused profile leaves neither the algorithm nor a job behind; a call that fails after it created
jobs stops and deletes them (:func:`withdraw`). DeleteAlgorithm stops the jobs still running
(StopTrainingJob) and keeps them, as it keeps those that ended.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from trainforge.api.errors import ResourceInUse, ValidationError
from trainforge.service.training_jobs import Caller

JOBS_KEY = "ValidationJobs"  # in the stored algorithm document: profile name -> training job name
WITHDRAW_WAIT = 30.0  # seconds a failed CreateAlgorithm waits for the jobs it created to end (then deleted)
_PROFILE_STATUS = {"InProgress": "InProgress", "Stopping": "InProgress", "Completed": "Completed",
                   "Failed": "Failed", "Stopped": "Failed"}


def job_requests(algorithm_name: str, spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Profile name -> the CreateTrainingJob request of its validation job."""
    out: dict[str, dict[str, Any]] = {}
    for i, profile in enumerate(spec["ValidationProfiles"], start=1):
        if profile.get("TransformJobDefinition") is not None:
            raise ValidationError(f"ValidationProfiles[{i - 1}].TransformJobDefinition is not supported by "
                                  f"trainforge: it has no batch transform. Remove it from the request "
                                  f"(README: 'Request members').")
        definition = dict(profile["TrainingJobDefinition"])
        mode = definition.pop("TrainingInputMode")
        out[profile["ProfileName"]] = {**definition,
                     "TrainingJobName": f"{algorithm_name[:40]}-val{i}-{secrets.token_hex(4)}",
                     "RoleArn": spec["ValidationRole"],
                     "AlgorithmSpecification": {"AlgorithmName": algorithm_name, "TrainingInputMode": mode}}
    return out


def start(caller: Caller, requests: dict[str, dict[str, Any]], check: Callable[[Caller, dict[str, Any]], Any],
          create: Callable[[Caller, dict[str, Any]], Any], created: list[str]) -> dict[str, str]:
    """Every request checked (a ValidationException names its profile), then every job created, its
    name appended to ``created`` (what a failure has to withdraw)."""
    for profile, request in requests.items():
        try:
            check(caller, request)
        except ValidationError as exc:
            raise ValidationError(f"Validation profile {profile}: {exc.message}") from None
    for request in requests.values():
        create(caller, request)
        created.append(request["TrainingJobName"])
    return {profile: request["TrainingJobName"] for profile, request in requests.items()}


def stop(caller: Caller, jobs: Any, names: Iterable[str]) -> None:
    """StopTrainingJob on each job of ``names`` (``jobs``: the TrainingJobs service); one that has
    ended or is gone is left as it is."""
    for name in names:
        try:
            jobs.stop(caller, {"TrainingJobName": name})
        except ValidationError:
            pass  # ended already, or deleted


def withdraw(caller: Caller, jobs: Any, names: list[str], wait: float = WITHDRAW_WAIT) -> list[str]:
    """The jobs of a failed CreateAlgorithm stopped, and deleted as soon as they have ended (polled,
    for at most ``wait`` seconds); the names of those still stopping then (they end Stopped)."""
    stop(caller, jobs, names)
    left = list(names)
    deadline = time.monotonic() + wait
    while True:
        for name in list(left):
            try:
                jobs.delete(caller, {"TrainingJobName": name})
            except ResourceInUse:
                continue  # its instances are still being stopped
            except ValidationError:
                pass  # gone already
            left.remove(name)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def status(document: dict[str, Any], job_of: Callable[[str], Any]) -> tuple[str, list[dict[str, Any]]]:
    """(AlgorithmStatus, ValidationStatuses) from the validation jobs' states; ``job_of`` gives a
    job's row (``status``, ``state``) by name, or None."""
    jobs: dict[str, str] = document.get(JOBS_KEY) or {}
    statuses: list[dict[str, Any]] = []
    for profile, job_name in jobs.items():
        job = job_of(job_name)
        entry: dict[str, Any] = {"Name": profile,
                                 "Status": _PROFILE_STATUS.get(job.status, "InProgress") if job else "Failed"}
        if job is None:
            entry["FailureReason"] = f"The validation training job {job_name} was deleted."
        elif entry["Status"] == "Failed":
            reason = (job.state or {}).get("FailureReason") or f"Training job {job_name} ended {job.status}."
            entry["FailureReason"] = f"Training job {job_name}: {reason}"
        statuses.append(entry)
    found = {s["Status"] for s in statuses}
    overall = "Failed" if "Failed" in found else "InProgress" if "InProgress" in found else "Completed"
    return overall, statuses
