"""Several instances training one XGBoost model: XGBoost's own collective (its Rabit tracker).

The first host runs the tracker on :data:`TRACKER_PORT`; every host (the first too) joins as the
worker whose rank is its index in the sorted host list, and trains on its own data (its shard with
ShardedByS3Key, everything with FullyReplicated). Gradient statistics are summed across the
workers each round, so all of them grow the same trees; the first host saves the model.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

TRACKER_PORT = 9099
CONNECT_SECONDS = 600.0
RETRIES = 60  # the other hosts may connect before the first one's tracker listens


@contextmanager
def communicator(hosts: list[str], current: str) -> Iterator[None]:
    from xgboost import collective
    from xgboost.tracker import RabitTracker

    rank = hosts.index(current)
    address = _resolve(hosts[0])
    tracker = None
    if rank == 0:
        tracker = RabitTracker(n_workers=len(hosts), host_ip=address, port=TRACKER_PORT, sortby="task")
        tracker.start()
    args: dict[str, Any] = {"dmlc_communicator": "rabit", "dmlc_tracker_uri": address, "dmlc_tracker_port": TRACKER_PORT,
            "dmlc_task_id": str(rank), "dmlc_retry": RETRIES, "dmlc_timeout": int(CONNECT_SECONDS)}
    try:
        with collective.CommunicatorContext(**args):
            yield
    finally:
        if tracker is not None:
            tracker.wait_for(timeout=60)


def _resolve(host: str) -> str:
    deadline = time.monotonic() + CONNECT_SECONDS
    while True:
        try:
            return socket.gethostbyname(host)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)

