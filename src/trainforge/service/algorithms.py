"""Algorithm resources: CreateAlgorithm, DescribeAlgorithm, ListAlgorithms, DeleteAlgorithm, and what
CreateTrainingJob with an AlgorithmName (its name or ARN) takes from one (``algorithm_rules.py``).

An algorithm is stored as its CreateAlgorithm request. Without a ValidationSpecification its status
is ``Completed`` from the start; with one, its profiles' training jobs run and its status follows them
(``algorithm_validation.py``). CertifyForMarketplace true is refused (there is no AWS Marketplace
here), with a ValidationException naming the member. A CreateAlgorithm that fails changes nothing:
the validation jobs it created are stopped and deleted; DeleteAlgorithm stops those still running.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from trainforge.api.errors import ResourceInUse, ValidationError
from trainforge.service import algorithm_rules, algorithm_validation
from trainforge.service.pagination import TokenSigner
from trainforge.service.training_jobs import Caller, _epoch, check_tag_keys
from trainforge.store.algorithms import AlgorithmRow, AlgorithmStore
from trainforge.store.jobs import DuplicateName, JobStore

log = logging.getLogger("trainforge.algorithms")

_ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:([a-z0-9-]+):(\d{12}):algorithm/(.+)$")
_DESCRIBED = ("AlgorithmDescription", "TrainingSpecification", "InferenceSpecification", "ValidationSpecification",
              "CertifyForMarketplace")


def algorithm_arn(caller: Caller, name: str) -> str:
    return f"arn:aws:sagemaker:{caller.region}:{caller.account_id}:algorithm/{name}"


class Algorithms:
    def __init__(self, store: AlgorithmStore, signer: TokenSigner, job_store: JobStore) -> None:
        self.store = store
        self.signer = signer
        self.job_store = job_store
        self._jobs: Any = None  # TrainingJobs (set_jobs): it resolves algorithms through for_job

    def set_jobs(self, jobs: Any) -> None:
        """The TrainingJobs service that runs validation profiles (``check`` and ``create``)."""
        self._jobs = jobs

    def create(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("CertifyForMarketplace"):
            raise ValidationError("CertifyForMarketplace is not supported by trainforge: there is no AWS "
                                  "Marketplace to list the algorithm on. Remove it from the request "
                                  "(README: 'Request members').")
        check_tag_keys(params.get("Tags") or [])
        algorithm_rules.check_specification(params["TrainingSpecification"])
        name = params["AlgorithmName"]
        validation = params.get("ValidationSpecification")
        requests = algorithm_validation.job_requests(name, validation) if validation else {}
        document = {k: v for k, v in params.items() if k != "Tags"}
        row = AlgorithmRow(name, algorithm_arn(caller, name), time.time(), document)
        try:
            self.store.insert(caller.account_id, caller.region, row, params.get("Tags") or [])
        except DuplicateName:
            raise ResourceInUse(f"Algorithm {row.arn} already exists.") from None
        if requests:  # the jobs name the stored algorithm: it must exist to be checked and run
            created: list[str] = []
            try:
                document[algorithm_validation.JOBS_KEY] = algorithm_validation.start(
                    caller, requests, self._jobs.check, self._jobs.create, created)
                self.store.update_document(caller.account_id, caller.region, name, document)
            except Exception:
                self._withdraw(caller, row, created)
                raise
        return {"AlgorithmArn": row.arn}

    def _withdraw(self, caller: Caller, row: AlgorithmRow, created: list[str]) -> None:
        """What a failed CreateAlgorithm made goes: its validation jobs, then the algorithm."""
        left = algorithm_validation.withdraw(caller, self._jobs, created) if created else []
        if left:
            log.warning("CreateAlgorithm %s failed: its validation jobs %s were stopped but had not ended "
                        "after %.0f s; they stay, Stopped", row.name, ", ".join(left),
                        algorithm_validation.WITHDRAW_WAIT)
        self.store.delete(caller.account_id, caller.region, row)

    def _statuses(self, caller: Caller, rows: list[AlgorithmRow]) -> list[tuple[str, list[dict[str, Any]]]]:
        """Each algorithm's (AlgorithmStatus, ValidationStatuses), their validation jobs read in one query."""
        names = [job for row in rows for job in (row.document.get(algorithm_validation.JOBS_KEY) or {}).values()]
        found = self.job_store.get_many(caller.account_id, caller.region, names)
        return [algorithm_validation.status(row.document, found.get) for row in rows]

    def get(self, caller: Caller, name_or_arn: str) -> AlgorithmRow:
        name = name_or_arn
        m = _ARN.match(name_or_arn)
        if m:
            name = m.group(3) if (m.group(1), m.group(2)) == (caller.region, caller.account_id) else ""
        row = self.store.get(caller.account_id, caller.region, name) if name else None
        if row is None:
            arn = name_or_arn if m else algorithm_arn(caller, name_or_arn)
            raise ValidationError(f"Algorithm {arn} does not exist.")
        return row

    def describe(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        row = self.get(caller, params["AlgorithmName"])
        [(status, validation)] = self._statuses(caller, [row])
        doc: dict[str, Any] = {"AlgorithmName": row.name, "AlgorithmArn": row.arn, "CreationTime": row.creation_time,
                               "AlgorithmStatus": status,
                               "AlgorithmStatusDetails": {"ValidationStatuses": validation, "ImageScanStatuses": []}}
        doc.update({k: row.document[k] for k in _DESCRIBED if k in row.document})
        return doc

    def list(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        sort_by = params.get("SortBy") or "CreationTime"
        descending = (params.get("SortOrder") or "Ascending") == "Descending"
        limit = params.get("MaxResults") or 10
        filters: dict[str, Any] = {"name_contains": params.get("NameContains"),
                   "created_after": _epoch(params.get("CreationTimeAfter")),
                   "created_before": _epoch(params.get("CreationTimeBefore"))}
        query = [caller.account_id, caller.region, sort_by, descending, filters]
        after = self.signer.decode(params["NextToken"], query) if params.get("NextToken") else None
        rows = self.store.list(caller.account_id, caller.region, sort_by=sort_by, descending=descending,
                               after=after, limit=limit + 1, **filters)
        page = rows[:limit]
        out: dict[str, Any] = {"AlgorithmSummaryList": [_summary(r, status) for r, (status, _) in
                                                        zip(page, self._statuses(caller, page), strict=True)]}
        if len(rows) > limit:
            last = rows[limit - 1]
            out["NextToken"] = self.signer.encode(
                [last.name] if sort_by == "Name" else [last.creation_time, last.name], query)
        return out

    def delete(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        row = self.get(caller, params["AlgorithmName"])
        algorithm_validation.stop(caller, self._jobs, (row.document.get(algorithm_validation.JOBS_KEY) or {}).values())
        self.store.delete(caller.account_id, caller.region, row)
        return {}

    def for_job(self, caller: Caller, request: dict[str, Any]) -> dict[str, Any]:
        """A CreateTrainingJob request on an algorithm resource, checked and filled in from it; any
        other request as it is."""
        name = (request.get("AlgorithmSpecification") or {}).get("AlgorithmName")
        if not name:
            return request
        row = self.get(caller, name)
        return algorithm_rules.apply(row.document, row.name, request)


def _summary(row: AlgorithmRow, status: str) -> dict[str, Any]:
    s: dict[str, Any] = {"AlgorithmName": row.name, "AlgorithmArn": row.arn, "CreationTime": row.creation_time,
                         "AlgorithmStatus": status}
    if row.document.get("AlgorithmDescription"):
        s["AlgorithmDescription"] = row.document["AlgorithmDescription"]
    return s
