"""CloudWatch's arithmetic: time ranges, periods, buckets and statistics, on plain numbers.

As the CloudWatch API reference (GetMetricStatistics, GetMetricData) describes it:

* StartTime is rounded down by its age: to the whole minute when less than 15 days ago, to the
  5-minute clock interval up to 63 days, to the hour beyond. A period of 1, 5, 10, 20 or 30 s
  (high resolution) then falls on the same clock divisions within the minute. EndTime is exclusive.
* Buckets are ``[start + k * Period, start + (k + 1) * Period)`` from the rounded start; a bucket
  without a sample has no datapoint; a datapoint's Timestamp is its bucket's start.
* A period is 1, 5, 10, 20, 30 or a multiple of 60 seconds (every metric here is stored at full
  resolution, as CloudWatch's high-resolution custom metrics are).
* Statistics: SampleCount, Average, Sum, Minimum, Maximum; percentiles ``pNN`` / ``pNN.N`` (0 to
  100) by the nearest-rank method on the raw samples (CloudWatch's own percentiles are estimated
  from a sketch and may differ in the last digits on large series).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
HIGH_RESOLUTION_PERIODS = frozenset({1, 5, 10, 20, 30})
_PERCENTILE = re.compile(r"p(\d{1,3}(?:\.\d{1,10})?)")
_DAY = 86400.0


def valid_period(period: int) -> bool:
    return period in HIGH_RESOLUTION_PERIODS or (period > 0 and period % 60 == 0)


def aligned_start(start: float, now: float) -> float:
    """StartTime rounded down as CloudWatch rounds it, by its age at ``now``."""
    age = now - start
    unit = 60.0 if age < 15 * _DAY else 300.0 if age < 63 * _DAY else 3600.0
    return math.floor(start / unit) * unit


def bucket_count(start: float, end: float, period: int) -> int:
    """How many datapoints the range can hold (CloudWatch's "requested up to N datapoints")."""
    return max(0, math.ceil((end - start) / period))


def buckets(points: Iterable[tuple[float, float]], start: float, end: float,
            period: int) -> dict[float, list[float]]:
    """The samples of ``[start, end)`` by bucket start."""
    out: dict[float, list[float]] = {}
    for t, v in points:
        if start <= t < end:
            out.setdefault(start + math.floor((t - start) / period) * period, []).append(v)
    return out


def percentile_of(name: str) -> float | None:
    """The percentile a statistic such as ``p99`` or ``p99.9`` names; None if it names none."""
    m = _PERCENTILE.fullmatch(name)
    if m is None:
        return None
    p = float(m.group(1))
    return p if 0.0 <= p <= 100.0 else None


def statistic(values: list[float], name: str) -> float:
    """One statistic of a bucket's samples (``name`` is one of STATISTICS or a percentile)."""
    if name == "SampleCount":
        return float(len(values))
    if name == "Sum":
        return math.fsum(values)
    if name == "Average":
        return math.fsum(values) / len(values)
    if name == "Minimum":
        return min(values)
    if name == "Maximum":
        return max(values)
    p = percentile_of(name)
    if p is None:
        raise ValueError(f"not a statistic: {name}")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))  # nearest rank, 1-based
    return ordered[rank - 1]
