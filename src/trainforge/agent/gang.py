"""Gang start: the instances of a job start their training processes together.

Each agent, once its instance is ready to start (inputs staged, code unpacked), marks
``<job_dir>/.gang/<host>`` and waits until every host of the job has marked, then starts. The job
directory is where the scheduler writes every instance's spec, one directory for the whole job on
the local backend. Without the wait the instances start as far apart as their preparations end
(staging, the sandbox's set-up), which for a distributed job is time its first rendezvous waits.

The wait ends early, and the instance starts anyway, when ``give_up()`` says so (a stop, the
deadline) or after :data:`MAX_WAIT_SECONDS` (a peer that failed before marking is reported by the
control plane, which stops the others). A job of one instance does not wait.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

MAX_WAIT_SECONDS = 600.0
POLL_SECONDS = 0.001


def wait_for_peers(spec: dict[str, Any], job_dir: str, give_up: Callable[[], bool]) -> bool:
    """Mark this host ready and wait for the others; True when all were ready together."""
    hosts = list(spec.get("hosts") or [])
    if len(hosts) < 2:
        return True
    directory = os.path.join(job_dir, ".gang")
    os.makedirs(directory, exist_ok=True)
    open(os.path.join(directory, str(spec["host"])), "w").close()
    deadline = time.monotonic() + MAX_WAIT_SECONDS
    wanted = set(hosts)
    while not wanted.issubset(os.listdir(directory)):
        if give_up() or time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True
