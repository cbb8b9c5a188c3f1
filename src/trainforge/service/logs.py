"""The CloudWatch Logs subset the SageMaker SDK reads training logs with.

Log group ``/aws/sagemaker/TrainingJobs``; per instance, the algorithm's stream ``<job>/algo-<n>-<epoch>``
and trainforge's own ``<job>.trainforge/algo-<n>-<epoch>`` (log_streams.py).
Paging tokens are ``f/<id>`` (forward) and ``b/<id>`` (backward): positions in the event table.
"""

from __future__ import annotations

from typing import Any

from trainforge.api.errors import ServiceError, ValidationError
from trainforge.log_streams import LOG_GROUP
from trainforge.service.training_jobs import Caller
from trainforge.store.jobs import JobStore


class LogGroupNotFound(ServiceError):
    code = "ResourceNotFoundException"


def _group(params: dict[str, Any]) -> None:
    name = params.get("logGroupName") or (params.get("logGroupIdentifier") or "").rsplit(":log-group:", 1)[-1]
    if name != LOG_GROUP:
        raise LogGroupNotFound("The specified log group does not exist.")


def _position(token: str | None, prefix: str) -> int | None:
    if not token:
        return None
    kind, _, value = token.partition("/")
    if kind not in ("f", "b") or not value.isdigit():
        raise ValidationError("The specified nextToken is invalid.")
    return int(value)


class Logs:
    def __init__(self, store: JobStore) -> None:
        self.store = store

    def _streams(self, caller: Caller, prefix: str | None) -> list[dict[str, Any]]:
        return self.store.log_streams(caller.account_id, caller.region, prefix)

    def describe_log_groups(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        prefix = params.get("logGroupNamePrefix") or ""
        groups = []
        if LOG_GROUP.startswith(prefix):
            groups.append({"logGroupName": LOG_GROUP, "creationTime": 0, "storedBytes": 0,
                           "arn": f"arn:aws:logs:{caller.region}:{caller.account_id}:log-group:{LOG_GROUP}:*"})
        return {"logGroups": groups}

    def describe_log_streams(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        _group(params)
        streams = self._streams(caller, params.get("logStreamNamePrefix"))
        if params.get("orderBy") == "LastEventTime":
            streams.sort(key=lambda s: s["last"] or 0)
        if params.get("descending"):
            streams.reverse()
        start = int(params["nextToken"]) if str(params.get("nextToken") or "").isdigit() else 0
        limit = int(params.get("limit") or 50)
        page = streams[start:start + limit]
        out: dict[str, Any] = {"logStreams": [{
            "logStreamName": s["log_stream"],
            "creationTime": int((s["started_at"] or 0) * 1000),
            **({"firstEventTimestamp": s["first"], "lastEventTimestamp": s["last"],
                "lastIngestionTime": s["ingested"]} if s["first"] is not None else {}),
            "arn": f"arn:aws:logs:{caller.region}:{caller.account_id}:log-group:{LOG_GROUP}:log-stream:"
                   f"{s['log_stream']}",
            "storedBytes": 0,
        } for s in page]}
        if start + limit < len(streams):
            out["nextToken"] = str(start + limit)
        return out

    def _own(self, caller: Caller, stream: str) -> None:
        if not any(s["log_stream"] == stream for s in self._streams(caller, stream)):
            raise LogGroupNotFound("The specified log stream does not exist.")

    def get_log_events(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        _group(params)
        stream = params["logStreamName"]
        self._own(caller, stream)
        limit = min(int(params.get("limit") or 10000), 10000)
        token = params.get("nextToken")
        pos = _position(token, "")
        backward = bool(token and token.startswith("b/")) or (not token and not params.get("startFromHead"))
        rows = self.store.log_page(
            [stream], after_id=pos if not backward else None, before_id=pos if backward and token else None,
            start_ms=params.get("startTime"), end_ms=params.get("endTime"), limit=limit, newest_first=backward)
        if backward:
            rows.reverse()
        events = [{"timestamp": r["timestamp"], "message": r["message"], "ingestionTime": r["ingestion_time"]}
                  for r in rows]
        first = rows[0]["id"] if rows else (pos or 0)
        last = rows[-1]["id"] if rows else (pos or 0)
        return {"events": events, "nextForwardToken": f"f/{last}", "nextBackwardToken": f"b/{first}"}

    def filter_log_events(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        _group(params)
        names = params.get("logStreamNames")
        streams = [s["log_stream"] for s in self._streams(caller, params.get("logStreamNamePrefix"))]
        if names:
            streams = [s for s in streams if s in set(names)]
        limit = min(int(params.get("limit") or 10000), 10000)
        pattern = (params.get("filterPattern") or "").strip().strip('"') or None
        rows = self.store.log_page(streams, after_id=_position(params.get("nextToken"), ""),
                                   start_ms=params.get("startTime"), end_ms=params.get("endTime"),
                                   contains=pattern, limit=limit) if streams else []
        out: dict[str, Any] = {
            "events": [{"logStreamName": r["stream"], "timestamp": r["timestamp"], "message": r["message"],
                        "ingestionTime": r["ingestion_time"], "eventId": str(r["id"])} for r in rows],
            "searchedLogStreams": [{"logStreamName": s, "searchedCompletely": True} for s in streams],
        }
        if len(rows) == limit:
            out["nextToken"] = f"f/{rows[-1]['id']}"
        return out

    def handlers(self) -> dict[str, Any]:
        return {"DescribeLogGroups": self.describe_log_groups, "DescribeLogStreams": self.describe_log_streams,
                "GetLogEvents": self.get_log_events, "FilterLogEvents": self.filter_log_events}
