"""The CloudWatch metrics a SageMaker training job publishes: GetMetricStatistics, GetMetricData and
ListMetrics over the stored samples (the wire protocols are api/cloudwatch.py's).

Namespace ``/aws/sagemaker/TrainingJobs``, as SageMaker publishes it:

* the algorithm's metrics (MetricDefinitions, unit ``None``) under two dimension sets:
  ``Host = <job>/algo-N`` (one instance's samples) and ``TrainingJobName = <job>`` (every
  instance's; the SageMaker SDK's TrainingJobAnalytics reads this one);
* the instance metrics the agent samples (agent/sampler.py: CPUUtilization, MemoryUtilization,
  DiskUtilization, GPUUtilization, GPUMemoryUtilization; unit ``Percent``) under ``Host`` only.

A request's Dimensions must name a metric's whole dimension set, as in CloudWatch (any other set
is another metric, which does not exist: no datapoints). Samples older than the retention
(``metrics_retention_days``; CloudWatch keeps 15 months) are not served and are swept from the
store periodically. Time arithmetic and statistics: service/metric_stats.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from trainforge.api.errors import ServiceError, ValidationError
from trainforge.api.validation import iso_timestamp
from trainforge.service import metric_stats as ms
from trainforge.service.pagination import TokenSigner
from trainforge.service.training_jobs import Caller
from trainforge.store.metrics import ALGORITHM, INSTANCE, MetricStore, Series

log = logging.getLogger("trainforge.metrics")

NAMESPACE = "/aws/sagemaker/TrainingJobs"
UNITS = {ALGORITHM: "None", INSTANCE: "Percent"}
MAX_STATISTICS_DATAPOINTS = 1440
DEFAULT_MAX_DATAPOINTS = 100800
LIST_PAGE = 500
RECENTLY_ACTIVE = {"PT3H": 3 * 3600.0}


class InvalidParameterValue(ServiceError):
    code = "InvalidParameterValue"


class InvalidParameterCombination(ServiceError):
    code = "InvalidParameterCombination"


class InvalidNextToken(ServiceError):
    code = "InvalidNextToken"


def epoch(value: Any) -> float:
    """A request's timestamp (an epoch number, or an ISO 8601 string of the query protocol) in seconds."""
    if isinstance(value, str):
        return iso_timestamp(value).timestamp()
    return float(value)


def dimension_sets(s: Series) -> list[dict[str, str]]:
    """The dimension sets under which a stored series is published."""
    host = {"Host": f"{s.job}/{s.host}"}
    return [host, {"TrainingJobName": s.job}] if s.kind == ALGORITHM else [host]


def _selector(dimensions: list[dict[str, str]]) -> tuple[str, str | None, str | None] | None:
    """(job, host, kind) of the series a request's Dimensions name; None if they name none."""
    dims = {d["Name"]: d["Value"] for d in dimensions}
    if len(dims) != len(dimensions) or len(dims) != 1:
        return None
    if "TrainingJobName" in dims:
        return dims["TrainingJobName"], None, ALGORITHM
    job, sep, host = dims.get("Host", "").rpartition("/")
    return (job, host, None) if sep and job and host.startswith("algo-") else None


class Metrics:
    def __init__(self, store: MetricStore, signer: TokenSigner, retention_days: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.signer = signer
        self.retention = retention_days * 86400.0
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- retention ----------------------------------------------------------------------------
    def horizon(self) -> float:
        """The oldest time still served."""
        return self.clock() - self.retention

    def start_pruning(self) -> None:
        """Sweep expired samples now and then every quarter of the retention (1 s to 1 h)."""
        interval = min(3600.0, max(1.0, self.retention / 4))

        def loop() -> None:
            while True:
                try:
                    self.store.prune(self.horizon())
                except Exception as exc:  # noqa: BLE001 - a busy database: the next sweep catches up
                    log.warning("metric retention sweep failed: %s", exc)
                if self._stop.wait(interval):
                    return
        self._thread = threading.Thread(target=loop, name="metrics-retention", daemon=True)
        self._thread.start()

    def stop_pruning(self) -> None:
        self._stop.set()

    # -- reading one metric -------------------------------------------------------------------
    def _datapoints(self, caller: Caller, metric: dict[str, Any], unit: str | None, start: float,
                    end: float, period: int) -> dict[float, list[float]]:
        """The samples of one metric in ``[start, end)`` by bucket start (empty when no such metric)."""
        if metric.get("Namespace") != NAMESPACE:
            return {}
        selector = _selector(metric.get("Dimensions") or [])
        if selector is None:
            return {}
        job, host, kind = selector
        if host is not None:  # Host: either kind, whichever the name is (a name is one kind per job)
            kinds = {s.kind for s in self.store.series(caller.account_id, caller.region, name=metric["MetricName"],
                                                       job_name=job) if s.host == host}
            kind = next(iter(sorted(kinds)), None)
            if kind is None:
                return {}
        if unit is not None and unit != UNITS[kind or ALGORITHM]:
            return {}
        since = max(start, self.horizon())  # the buckets stay aligned on `start`
        if since >= end:
            return {}
        points = self.store.points(caller.account_id, caller.region, job, metric["MetricName"], host=host,
                                   kind=kind, start=since, end=end)
        return ms.buckets(points, start, end, period)

    def _unit(self, caller: Caller, metric: dict[str, Any]) -> str:
        selector = _selector(metric.get("Dimensions") or [])
        if selector is None or selector[2] == ALGORITHM:
            return UNITS[ALGORITHM]
        found = self.store.series(caller.account_id, caller.region, name=metric["MetricName"], job_name=selector[0])
        return UNITS[INSTANCE] if any(s.kind == INSTANCE for s in found) else UNITS[ALGORITHM]

    def _range(self, params: dict[str, Any]) -> tuple[float, float]:
        start, end = epoch(params["StartTime"]), epoch(params["EndTime"])
        if start >= end:
            raise InvalidParameterValue("The parameter StartTime must be less than the parameter EndTime.")
        return ms.aligned_start(start, self.clock()), end

    # -- operations ---------------------------------------------------------------------------
    def get_metric_statistics(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        stats = list(params.get("Statistics") or [])
        extended = list(params.get("ExtendedStatistics") or [])
        if bool(stats) == bool(extended):
            raise InvalidParameterCombination("Must specify either Statistics or ExtendedStatistics, but not both.")
        for name in extended:
            if ms.percentile_of(name) is None:
                raise InvalidParameterValue(f"The value {name} for parameter ExtendedStatistics is not supported.")
        period = int(params["Period"])
        if not ms.valid_period(period):
            raise InvalidParameterValue("The parameter Period must be a multiple of 60.")
        start, end = self._range(params)
        count = ms.bucket_count(start, end, period)
        if count > MAX_STATISTICS_DATAPOINTS:
            raise InvalidParameterCombination(
                f"You have requested up to {count:,} datapoints, which exceeds the limit of "
                f"{MAX_STATISTICS_DATAPOINTS:,}. You may reduce the datapoints requested by increasing Period, "
                "or decreasing the time range.")
        metric = {k: params.get(k) for k in ("Namespace", "MetricName", "Dimensions")}
        unit = params.get("Unit")
        found = self._datapoints(caller, metric, unit, start, end, period)
        shown_unit = unit or (self._unit(caller, metric) if found else "None")
        datapoints = []
        for t in sorted(found):
            values = found[t]
            point: dict[str, Any] = {"Timestamp": t, **{s: ms.statistic(values, s) for s in stats}}
            if extended:
                point["ExtendedStatistics"] = {e: ms.statistic(values, e) for e in extended}
            point["Unit"] = shown_unit
            datapoints.append(point)
        return {"Label": params["MetricName"], "Datapoints": datapoints}

    def get_metric_data(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        start, end = self._range(params)
        queries = params["MetricDataQueries"]
        ids = [q["Id"] for q in queries]
        if len(set(ids)) != len(ids):
            raise ValidationError("The values for parameter Id in MetricDataQueries must be unique.")
        results: list[dict[str, Any]] = []
        for i, q in enumerate(queries, 1):
            stat = q.get("MetricStat")
            if q.get("Expression") is not None or stat is None:
                raise ValidationError(
                    f"MetricDataQueries.member.{i}: trainforge answers MetricStat queries only; metric math "
                    "Expressions are not evaluated." if q.get("Expression") is not None else
                    f"Exactly one element of MetricStat or Expression must be specified in "
                    f"MetricDataQueries.member.{i}.")
            period = int(stat["Period"])
            if not ms.valid_period(period):
                raise ValidationError(f"The value {period} for parameter MetricDataQueries.member.{i}.MetricStat."
                                      "Period is not a multiple of 60.")
            name = stat["Stat"]
            if name not in ms.STATISTICS and ms.percentile_of(name) is None:
                raise ValidationError(f"The value {name} for parameter MetricDataQueries.member.{i}.MetricStat.Stat "
                                      "is not supported.")
            found = self._datapoints(caller, stat["Metric"], stat.get("Unit"), start, end, period)
            times = sorted(found, reverse=params.get("ScanBy", "TimestampDescending") == "TimestampDescending")
            if q.get("ReturnData", True):
                results.append({"Id": q["Id"], "Label": q.get("Label") or stat["Metric"]["MetricName"],
                                "Timestamps": times, "Values": [ms.statistic(found[t], name) for t in times]})
        return self._metric_data_page(params, results)

    def _metric_data_page(self, params: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
        """One page of at most MaxDatapoints datapoints in all: the queries in order, each query's in
        its own order; NextToken is the position of the next datapoint."""
        query = {k: v for k, v in params.items() if k not in ("NextToken", "MaxDatapoints")}
        offset = 0
        if params.get("NextToken"):
            try:
                offset = int(self.signer.decode(params["NextToken"], query))
            except ValidationError as exc:
                raise InvalidNextToken(exc.message) from None
        budget = int(params.get("MaxDatapoints") or DEFAULT_MAX_DATAPOINTS)
        skip, room, total = offset, budget, 0
        for r in results:
            n = len(r["Timestamps"])
            total += n
            first = min(skip, n)
            skip -= first
            take = min(room, n - first)
            room -= take
            r["Timestamps"], r["Values"] = r["Timestamps"][first:first + take], r["Values"][first:first + take]
            r["StatusCode"] = "Complete" if first + take == n else "PartialData"
            r["Messages"] = []
        out: dict[str, Any] = {"MetricDataResults": results, "Messages": []}
        if offset + budget < total:
            out["NextToken"] = self.signer.encode(offset + budget, query)
        return out

    def list_metrics(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        namespace = params.get("Namespace")
        since = self.horizon()
        active = params.get("RecentlyActive")
        if active is not None:
            since = max(since, self.clock() - RECENTLY_ACTIVE[active])
        metrics: list[dict[str, Any]] = []
        if namespace in (None, NAMESPACE):
            filters = params.get("Dimensions") or []
            seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
            for s in self.store.series(caller.account_id, caller.region, name=params.get("MetricName"), since=since):
                for dims in dimension_sets(s):
                    key = (s.name, tuple(sorted(dims.items())))
                    if key in seen or not all(f["Name"] in dims and f.get("Value") in (None, dims[f["Name"]])
                                              for f in filters):
                        continue
                    seen.add(key)
                    metrics.append({"Namespace": NAMESPACE, "MetricName": s.name,
                                    "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()]})
        metrics.sort(key=lambda m: (m["MetricName"], [(d["Name"], d["Value"]) for d in m["Dimensions"]]))
        query = {k: v for k, v in params.items() if k != "NextToken"}
        start = 0
        if params.get("NextToken"):
            start = int(self.signer.decode(params["NextToken"], query))
        out: dict[str, Any] = {"Metrics": metrics[start:start + LIST_PAGE]}
        if params.get("IncludeLinkedAccounts"):
            out["OwningAccounts"] = [caller.account_id] * len(out["Metrics"])
        if start + LIST_PAGE < len(metrics):
            out["NextToken"] = self.signer.encode(start + LIST_PAGE, query)
        return out

    def handlers(self) -> dict[str, Callable[[Caller, dict[str, Any]], dict[str, Any]]]:
        return {"GetMetricStatistics": self.get_metric_statistics, "GetMetricData": self.get_metric_data,
                "ListMetrics": self.list_metrics}

