"""The live view of one training job: its status transitions with their messages and elapsed
times, the latest metric values and, optionally, the tail of its logs; at the end the model URI,
billable seconds and failure reason. On a terminal it is a rich ``Live`` display; elsewhere each
new transition is printed as one line."""

from __future__ import annotations

import argparse
import time
from collections import deque
from datetime import UTC, datetime
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .argparser import ArgParser, parse_strict
from .connection import connect
from .logs import TERMINAL_STATUSES, LogFollower, LogPrinter, make_console

CLOSING_STATUSES = ("Uploading", "Completed", "Failed", "Stopping", "Stopped", "MaxRuntimeExceeded",
                    "MaxWaitTimeExceeded", "Interrupted")
EXIT_BY_STATUS = {"Completed": 0, "Failed": 1, "Stopped": 2}
STATUS_STYLE = {"Completed": "bold green", "Failed": "bold red", "Stopped": "bold yellow",
                "InProgress": "bold cyan", "Stopping": "bold yellow"}


def _now() -> datetime:
    return datetime.now(UTC)


def _seconds(start: Any, end: Any) -> float:
    if not isinstance(start, datetime):
        return 0.0
    end = end if isinstance(end, datetime) else _now()
    return max(0.0, (end - start).total_seconds())


def _fmt(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def metrics_text(description: dict[str, Any]) -> str:
    metrics = description.get("FinalMetricDataList") or []
    return "  ".join(f"{m['MetricName']} = {m['Value']:.4g}" for m in metrics)


def render(description: dict[str, Any], log_lines: list[Text] | None = None) -> Group:
    status = description.get("TrainingJobStatus", "?")
    job_elapsed = _seconds(description.get("CreationTime"), description.get("TrainingEndTime")
                           if status in TERMINAL_STATUSES else None)
    header = Text.assemble((description.get("TrainingJobName", ""), "bold"), "  ",
                           (status, STATUS_STYLE.get(status, "")), f"  {_fmt(job_elapsed)}")
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    table.add_column(justify="right", no_wrap=True)
    for transition in description.get("SecondaryStatusTransitions") or []:
        current = "EndTime" not in transition and status not in TERMINAL_STATUSES
        mark = Text("●", style="cyan") if current else Text("✔", style="green")
        if transition["Status"] in ("Failed", "Stopped", "MaxRuntimeExceeded", "Interrupted"):
            mark = Text("✘", style="red")
        table.add_row(mark, Text(transition["Status"], style="bold"), transition.get("StatusMessage", ""),
                      _fmt(_seconds(transition.get("StartTime"), transition.get("EndTime"))))
    parts: list[Any] = [header, table]
    metrics = metrics_text(description)
    if metrics:
        parts.append(Text.assemble(("metrics  ", "dim"), metrics))
    if log_lines:
        parts.append(Text("logs", style="dim"))
        parts.extend(log_lines)
    return Group(*parts)


def summary(description: dict[str, Any]) -> list[Text]:
    status = description.get("TrainingJobStatus", "?")
    lines = [Text.assemble((status, STATUS_STYLE.get(status, "")), " ", description.get("TrainingJobName", ""),
                           f" after {_fmt(_seconds(description.get('CreationTime'), description.get('TrainingEndTime')))}")]
    model = (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if model:
        lines.append(Text.assemble(("model             ", "dim"), model))
    if description.get("BillableTimeInSeconds") is not None:
        lines.append(Text.assemble(("billable seconds  ", "dim"), str(description["BillableTimeInSeconds"])))
    metrics = metrics_text(description)
    if metrics:
        lines.append(Text.assemble(("final metrics     ", "dim"), metrics))
    if description.get("FailureReason"):
        lines.append(Text.assemble(("failure reason    ", "red"), description["FailureReason"]))
    return lines


def watch(sm_client: Any, job: str, console: Console, poll_seconds: float = 0.5,
          follower: LogFollower | None = None, tail: int = 8) -> dict[str, Any]:
    """Show the job until it ends; returns its final description."""
    printer = LogPrinter(console)
    recent: deque[Text] = deque(maxlen=tail)
    description = sm_client.describe_training_job(TrainingJobName=job)
    if console.is_terminal:
        with Live(render(description), console=console, refresh_per_second=8, transient=False) as live:
            while description["TrainingJobStatus"] not in TERMINAL_STATUSES:
                time.sleep(poll_seconds)
                description = sm_client.describe_training_job(TrainingJobName=job)
                if follower is not None:
                    recent.extend(printer.line(e) for e in follower.poll())
                live.update(render(description, list(recent)))
            if follower is not None:
                recent.extend(printer.line(e) for e in follower.poll())
            live.update(render(description, list(recent)))
    else:
        description = stream_lines(sm_client, job, console, poll_seconds, follower, printer, description)
    for line in summary(description):
        console.print(line, highlight=False)
    return description


def stream_lines(sm_client: Any, job: str, console: Console, poll_seconds: float,
                 follower: LogFollower | None, printer: LogPrinter,
                 description: dict[str, Any] | None = None) -> dict[str, Any]:
    """One line per transition and per log line, in order: the transitions up to Training, the logs,
    then (once the job has ended) the closing transitions. The description is read before the logs,
    so at the end every log line is in."""
    if description is None:
        description = sm_client.describe_training_job(TrainingJobName=job)
    created = description.get("CreationTime")
    shown = 0
    last_metrics = ""

    def show(transitions: list[dict[str, Any]]) -> None:
        for transition in transitions:
            elapsed = _seconds(created, transition.get("StartTime"))
            console.print(f"[{_fmt(elapsed):>8}] {transition['Status']:<12} {transition.get('StatusMessage', '')}",
                          highlight=False, markup=False)

    while True:
        fresh = (description.get("SecondaryStatusTransitions") or [])[shown:]
        shown += len(fresh)
        ended = description["TrainingJobStatus"] in TERMINAL_STATUSES
        closing = next((i for i, t in enumerate(fresh) if t["Status"] in CLOSING_STATUSES), len(fresh)) \
            if ended else len(fresh)
        show(fresh[:closing])
        if follower is not None:
            printer.print(follower.poll())
        show(fresh[closing:])
        if ended:
            return description
        metrics = metrics_text(description)
        if metrics and metrics != last_metrics:
            console.print(f"{'':>10} metrics      {metrics}", highlight=False, markup=False)
            last_metrics = metrics
        time.sleep(poll_seconds)
        description = sm_client.describe_training_job(TrainingJobName=job)


def exit_code(description: dict[str, Any]) -> int:
    return EXIT_BY_STATUS.get(description.get("TrainingJobStatus", ""), 1)


def build_parser() -> ArgParser:
    from .globalopts import add_global_options

    parser = ArgParser(prog="trainforge wait", description="A live view of a training job until it ends. "
                       "Exit code 0 for Completed, 1 for Failed, 2 for Stopped.")
    parser.add_argument("job", help="the training job name")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between polls (0.5)")
    parser.add_argument("--logs", action="store_true", help="show the tail of the job's logs in the view")
    add_global_options(parser, exclude=frozenset({"output", "query"}))
    return parser


def command(argv: list[str], stdout: IO[str], stderr: IO[str]) -> int:
    ns: argparse.Namespace = parse_strict(build_parser(), argv)
    connection = connect(ns, stderr, cli_timestamps=False)
    follower = LogFollower(connection.client("logs"), ns.job) if ns.logs else None
    description = watch(connection.client("sagemaker"), ns.job, make_console(stdout, ns.color), ns.poll, follower)
    return exit_code(description)
