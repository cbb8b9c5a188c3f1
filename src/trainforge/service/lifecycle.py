"""The training-job state machine: statuses, secondary statuses and their transitions.

Every change of SecondaryStatus goes through :func:`set_secondary`, which closes the current
entry of SecondaryStatusTransitions and opens the next one (or only updates the message when the
status stays the same, as AWS does for Starting and Downloading progress).

A finished job (Completed, Failed, Stopped) is final: :func:`set_secondary` and :func:`finish`
leave it as it is, and the store refuses to write any other status over it (``JobStore.save``).
"""

from __future__ import annotations

import time
from typing import Any

from trainforge.store.jobs import TERMINAL_STATUSES, JobRow

IN_PROGRESS, COMPLETED, FAILED, STOPPING, STOPPED = "InProgress", "Completed", "Failed", "Stopping", "Stopped"
FINISHED = TERMINAL_STATUSES  # COMPLETED, FAILED, STOPPED

MESSAGES = {
    "Starting": "Starting the training job",
    "Pending": "Waiting for capacity",
    "Downloading": "Downloading input data",
    "Training": "Training image download completed. Training in progress.",
    "Uploading": "Uploading generated training model",
    "Completed": "Training job completed",
    "Failed": "Training job failed",
    "Stopping": "Stopping the training job",
    "Stopped": "Training job stopped",
    "MaxRuntimeExceeded": "Training job reached its maximum allowed runtime and was stopped",
    "MaxWaitTimeExceeded": "Training job reached its maximum allowed wait time and was stopped",
    "Restarting": "Restarting the training job after an internal error",
    "Interrupted": "Training job interrupted",
}
PREPARING = "Preparing the instances for training"

# Secondary statuses that end a job, with the primary status they imply.
TERMINAL_SECONDARY = {
    "Completed": COMPLETED,
    "Failed": FAILED,
    "Stopped": STOPPED,
    "MaxRuntimeExceeded": STOPPED,
    "MaxWaitTimeExceeded": STOPPED,
}


def new_state(now: float) -> dict[str, Any]:
    return {
        "SecondaryStatusTransitions": [
            {"Status": "Starting", "StartTime": now, "StatusMessage": MESSAGES["Starting"]}
        ]
    }


def set_secondary(job: JobRow, status: str, message: str | None = None, now: float | None = None) -> bool:
    """Move the job to ``status``; returns False when nothing changed (a finished job never changes)."""
    if job.status in FINISHED:
        return False
    now = time.time() if now is None else now
    message = message or MESSAGES.get(status, status)
    transitions: list[dict[str, Any]] = job.state.setdefault("SecondaryStatusTransitions", [])
    if transitions and transitions[-1]["Status"] == status:
        if transitions[-1].get("StatusMessage") == message:
            return False
        transitions[-1]["StatusMessage"] = message
    else:
        if transitions:
            transitions[-1]["EndTime"] = now
        entry: dict[str, Any] = {"Status": status, "StartTime": now, "StatusMessage": message}
        if status in TERMINAL_SECONDARY:
            entry["EndTime"] = now
        transitions.append(entry)
    job.secondary_status = status
    job.last_modified_time = now
    if status == "Training" and "TrainingStartTime" not in job.state:
        job.state["TrainingStartTime"] = now
    return True


def finish(job: JobRow, secondary: str, *, failure_reason: str | None = None, now: float | None = None,
           message: str | None = None) -> None:
    """End the job: primary status from the terminal secondary status, end times, billed seconds.
    A job that has ended already keeps how it ended (its status, reason and times)."""
    if job.status in FINISHED:
        return
    now = time.time() if now is None else now
    set_secondary(job, secondary, message, now=now)
    job.status = TERMINAL_SECONDARY[secondary]
    job.phase = "done"
    if failure_reason:
        job.state["FailureReason"] = failure_reason[:1024]
    job.training_end_time = now
    start = job.state.get("TrainingStartTime")
    if start is not None:
        seconds = max(1, round(now - start))
        # DescribeTrainingJob shows TrainingEndTime just before this member (training_jobs.py).
        job.state["TrainingTimeInSeconds"] = seconds
        # Both figures are per instance (AWS: multiply by InstanceCount for the compute billed).
        job.state["BillableTimeInSeconds"] = seconds
