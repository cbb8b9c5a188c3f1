"""Metric samples from the training's output lines (MetricDefinitions), read by the agent.

Each definition's Regex is searched in every stdout/stderr line of the training process as its
CloudWatch event shows it (agent/logtext.py), as SageMaker matches MetricDefinitions against the
log text: a tab printed by the training is ``#011`` there, so a regex written for SageMaker
(XGBoost's ``.*\\[[0-9]+\\].*#011validation-rmse:(\\S+)``) matches, and one written for the raw
output (``\\t``, which trainforge matched before issue 13) no longer does. The first group (else
the whole match) parsed as a finite float is one sample, sent with the line's log event.

The regexes are the job's own and may backtrack catastrophically (``(a|aa)+$`` against forty ``a``
then ``!`` takes minutes): every search runs with a budget (the ``regex`` engine's timeout, checked
as it backtracks; it also releases the GIL meanwhile, so the reporter keeps sending), and a
definition that overruns it is disabled for the rest of the instance, with a line in the
instance's trainforge stream saying why. The control plane runs none of these regexes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

# The time one definition may take on one line before it is disabled.
LINE_BUDGET_SECONDS = 0.25


class MetricReader:
    """The samples of each line, for the pump threads of stdout and stderr at once."""

    def __init__(self, definitions: list[dict[str, Any]], warn: Callable[[str], None]) -> None:
        from trainforge.sitepaths import ensure_site_packages

        ensure_site_packages()  # the agent starts without site-packages (sitepaths.py)
        import regex  # only a job with MetricDefinitions loads it

        self._warn = warn
        self._lock = threading.Lock()
        self._active: list[tuple[str, Any]] = []
        for d in definitions:
            name, pattern = str(d["Name"]), str(d["Regex"])
            try:
                self._active.append((name, regex.compile(pattern)))
            except regex.error as exc:
                warn(f"[trainforge] MetricDefinitions {name!r}: its Regex {pattern!r} is not valid ({exc}); "
                     f"the metric gets no samples")

    def samples(self, line: str) -> list[list[Any]]:
        """``[[name, value], ...]``: what the line (its event text) yields, in the order of the definitions."""
        out: list[list[Any]] = []
        for entry in list(self._active):
            name, rx = entry
            try:
                m = rx.search(line, timeout=LINE_BUDGET_SECONDS)
            except TimeoutError:
                self._disable(entry)
                continue
            if m is None:
                continue
            try:
                value = float(m.group(1) if m.groups() else m.group(0))
            except (ValueError, TypeError):
                continue
            if math.isfinite(value):  # JSON has no NaN nor infinity
                out.append([name, value])
        return out

    def _disable(self, entry: tuple[str, Any]) -> None:
        with self._lock:
            if entry not in self._active:
                return  # the other stream's thread disabled it first
            self._active.remove(entry)
        self._warn(f"[trainforge] MetricDefinitions {entry[0]!r} disabled for this job: its Regex "
                   f"{entry[1].pattern!r} took longer than {LINE_BUDGET_SECONDS} s on one line of output")


def metric_reader(spec: dict[str, Any], warn: Callable[[str], None]) -> MetricReader | None:
    """The reader of the job's MetricDefinitions; None when it has none."""
    definitions = (spec["request"].get("AlgorithmSpecification") or {}).get("MetricDefinitions")
    return MetricReader(definitions, warn) if definitions else None
