"""The names of the AWS CLI commands trainforge serves (from the supported operations) and of
their waiters; importing this loads nothing heavy, so commands that need no awscli stay light."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import IO

from botocore import xform_name

from .. import awsmodel

COMMANDS: dict[str, str] = {xform_name(op, "-"): op for op in awsmodel.SUPPORTED_OPERATIONS}
WAITERS: dict[str, tuple[str, str]] = {
    # cli name -> (botocore waiter name, operation whose arguments it takes)
    "training-job-completed-or-stopped": ("TrainingJobCompletedOrStopped", "DescribeTrainingJob"),
}


@dataclass
class Streams:
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
