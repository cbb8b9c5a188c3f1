"""Training-job logs from the CloudWatch Logs API of the endpoint (group /aws/sagemaker/TrainingJobs):
per instance the algorithm's stream ``<job>/algo-<n>-<epoch>`` and trainforge's own
``<job>.trainforge/algo-<n>-<epoch>`` (log_streams.py), merged in time order, each line prefixed with
its host; trainforge's lines (``[trainforge] ...``) are dimmed. ``trainforge logs JOB [--follow]
[--since ...]``."""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from botocore.exceptions import ClientError
from rich.console import Console
from rich.text import Text

from trainforge.log_streams import LOG_GROUP, job_prefixes

from .argparser import ArgParser, parse_strict
from .connection import connect
from .errors import ParamError

TERMINAL_STATUSES = ("Completed", "Failed", "Stopped")
HOST_STYLES = ("cyan", "magenta", "yellow", "green", "blue", "bright_red", "bright_cyan", "bright_magenta")
PLATFORM_STYLE = "dim"
_EPOCH_SUFFIX = re.compile(r"-\d+$")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")


@dataclass(frozen=True)
class LogEvent:
    host: str
    timestamp: int
    message: str
    stream: str
    platform: bool = False  # a line of trainforge's own, not the algorithm's


def host_of(stream: str) -> str:
    """``algo-N`` of ``<job>/algo-N-<epoch>`` and of ``<job>.trainforge/algo-N-<epoch>``."""
    name = stream.split("/", 1)[-1]
    return _EPOCH_SUFFIX.sub("", name) or name


def parse_since(value: str, now: datetime | None = None) -> int:
    """``10m``, ``2h``, ``1d`` (ago), an ISO 8601 time, or epoch seconds → epoch milliseconds."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(value.strip())
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match.group(2)]
        return int((now - timedelta(**{unit: float(match.group(1))})).timestamp() * 1000)
    try:
        return int(float(value) * 1000)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ParamError(f"--since: expected 10m / 2h / 1d, an ISO 8601 time or epoch seconds, not {value!r}") \
            from exc
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return int(moment.timestamp() * 1000)


class LogFollower:
    """Reads every instance stream of one job, remembering where each stream was left."""

    def __init__(self, logs_client: Any, job: str, start_time_ms: int | None = None) -> None:
        self._client = logs_client
        self.job = job
        self._start = start_time_ms
        self._tokens: dict[str, str | None] = {}

    def streams(self) -> list[str]:
        """The job's algorithm streams and its trainforge streams."""
        return sorted(name for prefix in job_prefixes(self.job) for name in self._streams(prefix))

    def _streams(self, prefix: str) -> list[str]:
        names: list[str] = []
        kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": prefix}
        while True:
            try:
                page = self._client.describe_log_streams(**kwargs)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                    return names
                raise
            names += [s["logStreamName"] for s in page.get("logStreams", [])]
            if not page.get("nextToken") or page["nextToken"] == kwargs.get("nextToken"):
                return names
            kwargs["nextToken"] = page["nextToken"]

    def poll(self) -> list[LogEvent]:
        events: list[LogEvent] = []
        platform_prefix = job_prefixes(self.job)[1]
        for stream in self.streams():
            token = self._tokens.get(stream)
            host, platform = host_of(stream), stream.startswith(platform_prefix)
            while True:
                kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": stream,
                                          "startFromHead": True}
                if token:
                    kwargs["nextToken"] = token
                elif self._start is not None:
                    kwargs["startTime"] = self._start
                page = self._client.get_log_events(**kwargs)
                batch = page.get("events", [])
                events += [LogEvent(host, e.get("timestamp", 0), e.get("message", ""), stream, platform)
                           for e in batch]
                new_token = page.get("nextForwardToken") or token
                if not batch or new_token == token:
                    token = new_token
                    break
                token = new_token
            self._tokens[stream] = token
        events.sort(key=lambda e: (e.timestamp, e.stream))
        return events


class LogPrinter:
    def __init__(self, console: Console) -> None:
        self._console = console
        self._styles: dict[str, str] = {}

    def style_for(self, host: str) -> str:
        """algo-N always gets the same color; other names get the next one."""
        if host not in self._styles:
            number = re.fullmatch(r"algo-(\d+)", host)
            index = int(number.group(1)) - 1 if number else len(self._styles)
            self._styles[host] = HOST_STYLES[index % len(HOST_STYLES)]
        return self._styles[host]

    def line(self, event: LogEvent) -> Text:
        text = Text(f"[{event.host}] ", style=self.style_for(event.host))
        text.append(event.message.rstrip("\n"), style=PLATFORM_STYLE if event.platform else "")
        return text

    def print(self, events: list[LogEvent]) -> None:
        for event in events:
            self._console.print(self.line(event), soft_wrap=True, highlight=False, markup=False)


def make_console(stream: IO[str], color: str) -> Console:
    return Console(file=stream, force_terminal=True if color == "on" else None, no_color=color == "off",
                   highlight=False, soft_wrap=True)


def job_status(client: Any, job: str) -> dict[str, Any]:
    return client.describe_training_job(TrainingJobName=job)


def follow(sm_client: Any, follower: LogFollower, printer: LogPrinter, poll_seconds: float) -> dict[str, Any]:
    """Print log events until the job has ended (and its last lines are printed); the final description."""
    while True:
        printer.print(follower.poll())
        description = job_status(sm_client, follower.job)
        if description["TrainingJobStatus"] in TERMINAL_STATUSES:
            printer.print(follower.poll())
            return description
        time.sleep(poll_seconds)


def build_parser() -> ArgParser:
    from .globalopts import add_global_options

    parser = ArgParser(prog="trainforge logs", description="Every instance's log of a training job, prefixed "
                       "with its host (algo-1, algo-2, ...), in time order.")
    parser.add_argument("job", help="the training job name")
    parser.add_argument("--follow", "-f", action="store_true",
                        help="keep printing new lines until the job has ended (waits for a job that has not started)")
    parser.add_argument("--since", help="only events after this time: 10m, 2h, 1d (ago), ISO 8601, or epoch seconds")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between polls with --follow (0.5)")
    add_global_options(parser, exclude=frozenset({"output", "query"}))
    return parser


def command(argv: list[str], stdout: IO[str], stderr: IO[str]) -> int:
    ns: argparse.Namespace = parse_strict(build_parser(), argv)
    start = parse_since(ns.since) if ns.since else None
    connection = connect(ns, stderr, cli_timestamps=False)
    sm_client = connection.client("sagemaker")
    description = job_status(sm_client, ns.job)  # a missing job is an error before anything else
    follower = LogFollower(connection.client("logs"), ns.job, start)
    printer = LogPrinter(make_console(stdout, ns.color))
    if ns.follow:
        follow(sm_client, follower, printer, ns.poll)
        return 0
    events = follower.poll()
    printer.print(events)
    if not events:
        print(f"trainforge: no log events for {ns.job} yet (status {description['TrainingJobStatus']}, "
              f"{description.get('SecondaryStatus', '')})", file=stderr)
    return 0
