"""The client side of a chaos trial (``bench/chaos.py``): a SageMaker client that fails fast, and
the monitor thread that watches the trial's jobs across the server's deaths and restarts."""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from conftest import TERMINAL

from trainforge.config import DEFAULT_REGION


def client(endpoint: str) -> Any:
    """A SageMaker client that neither retries nor waits long: a dead server is an error at once."""
    return boto3.client("sagemaker", endpoint_url=endpoint, region_name=DEFAULT_REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=BotoConfig(retries={"max_attempts": 0, "mode": "standard"}, connect_timeout=1,
                                          read_timeout=15, max_pool_connections=4))


def final_state(described: dict[str, Any]) -> tuple[str, str | None, str | None]:
    return (described["TrainingJobStatus"], described.get("FailureReason"),
            (described.get("ModelArtifacts") or {}).get("S3ModelArtifacts"))


def listed(sm: Any, prefix: str) -> dict[str, str]:
    """ListTrainingJobs of the names containing ``prefix``, every page: name -> status."""
    params: dict[str, Any] = {"NameContains": prefix, "MaxResults": 100}
    found: dict[str, str] = {}
    while True:
        page = sm.list_training_jobs(**params)
        found.update((s["TrainingJobName"], s["TrainingJobStatus"]) for s in page["TrainingJobSummaries"])
        if not page.get("NextToken"):
            return found
        params["NextToken"] = page["NextToken"]


class Monitor(threading.Thread):
    """Polls the trial's jobs (by name prefix) until stopped; connection errors (a dead server) pass."""

    def __init__(self, endpoint: str, prefix: str) -> None:
        super().__init__(daemon=True, name=f"monitor {prefix}")
        self.sm = client(endpoint)
        self.prefix = prefix
        self.latest: dict[str, str] = {}  # name -> the status last listed
        self.first: dict[str, tuple[str, str | None, str | None]] = {}  # the first terminal state seen
        self.changed: dict[str, str] = {}  # name -> what changed
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.poll()
            except (BotoCoreError, ClientError):
                pass
            self._halt.wait(0.1)

    def poll(self) -> None:
        for name, status in listed(self.sm, self.prefix).items():
            self.observe(name, status)

    def observe(self, name: str, status: str) -> None:
        self.latest[name] = status
        seen = self.first.get(name)
        if seen is None and status in TERMINAL:
            state = final_state(self.sm.describe_training_job(TrainingJobName=name))
            self.first[name] = (status, *state[1:])
            if state[0] != status:
                self.changed[name] = f"listed {status}, then described {state[0]}"
        elif seen is not None and status != seen[0]:
            self.changed.setdefault(name, f"{seen[0]} ({(seen[1] or '')[:90]}) -> {status}")

    def halt(self) -> None:
        self._halt.set()
        self.join(10)
