"""Fault-injection points, for the crash tests only: nothing happens unless the variable is set.

``TRAINFORGE_TEST_CRASH_AT=<point>`` in the server's environment makes the server kill itself
(SIGKILL, as a crash or an OOM kill would) the first time it reaches ``<point>``:

- ``launch-committed``: a launch transaction is committed (the jobs run, with their instance
  rows), no agent is started yet;
- ``launch-window``: the agents of a launch are started, their handles are not stored yet;
- ``slurm-submitted``: (Slurm backend) sbatch accepted a gang; its job id is not written anywhere yet.

The tests restart the server on the same data directory without the variable and check what
reconciliation makes of it (tests/test_runtime_launch_window.py). Never set it in production.
"""

from __future__ import annotations

import logging
import os
import signal

ENV = "TRAINFORGE_TEST_CRASH_AT"
POINTS = frozenset({"launch-committed", "launch-window", "slurm-submitted"})

log = logging.getLogger("trainforge.scheduler")


def crash_point(point: str) -> None:
    """SIGKILL this process if ``TRAINFORGE_TEST_CRASH_AT`` names ``point``."""
    assert point in POINTS, point
    if os.environ.get(ENV) == point:
        log.critical("%s=%s: the server kills itself here (test-only fault injection)", ENV, point)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)
