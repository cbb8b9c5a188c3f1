"""The agent's side of the gang barrier (service/gang.py): a multi-instance job's instance, ready to
start its user code, waits until every instance of its job is.

Only where the control plane asks for it: the spec's ``gang`` object (``timeout_seconds``), which
the launcher sets for a job of more than one instance. A spec without it (a single instance, an
agent run by itself) starts at once. :func:`wait` runs in a worker thread (the agent's main thread
keeps watching for a stop and the deadline); the control plane that cannot be reached is asked
again until the timeout.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any
from urllib.parse import urlsplit

from trainforge.agent.endpoints import GANG_PATH

HOLD_ENV = "TRAINFORGE_TEST_GANG_HOLD"  # tests only: "<host>:<path>", see :func:`_test_hold`
REQUEST_TIMEOUT = 60.0  # one long poll (the server answers within 20 s)
RETRY_S = 0.5


class GangError(Exception):
    """The gang did not get ready: the others did not come in time, or the control plane refused."""


def applies(spec: dict[str, Any]) -> bool:
    return isinstance(spec.get("gang"), dict)


def wait(spec: dict[str, Any]) -> None:
    """Return when every instance of the job is ready; :class:`GangError` after the gang's timeout."""
    from trainforge.agent.transport import Connection

    _test_hold(spec)
    timeout = float(spec["gang"].get("timeout_seconds") or 3600.0)
    until = time.monotonic() + timeout
    path = urlsplit(spec["control_url"]).path.rstrip("/") + GANG_PATH
    body = json.dumps({"host": spec["host"], "attempt": spec.get("attempt", 1)}).encode()
    headers = {"Authorization": f"Bearer {spec['token']}", "Content-Type": "application/json"}
    waiting: list[str] = []
    conn = Connection(spec["control_url"], REQUEST_TIMEOUT)
    try:
        while time.monotonic() < until:
            try:
                status, data = conn.post(path, body, headers)
            except OSError:
                conn.close()
                time.sleep(RETRY_S)
                continue
            if status in (401, 403, 404):
                raise GangError(f"the control plane refused the gang start (HTTP {status})")
            if status != 200:
                time.sleep(RETRY_S)
                continue
            answer = json.loads(data or b"{}")
            if answer.get("go"):
                return
            waiting = list(answer.get("waiting_for") or [])
    finally:
        conn.close()
    raise GangError(f"{', '.join(waiting) or 'the other instances'} not ready to start within "
                    f"{timeout:g} s of {spec['host']}")


def _test_hold(spec: dict[str, Any]) -> None:
    """Fault injection for the tests only (nothing happens unless ``TRAINFORGE_TEST_GANG_HOLD`` is
    set, to ``<host>:<path>``): the agent of ``<host>``, ready, writes ``<path>.held`` and waits for
    ``<path>`` to exist before it tells the control plane, an instance whose preparation is late."""
    host, _, path = os.environ.get(HOLD_ENV, "").partition(":")
    if host != spec["host"] or not path:
        return
    with open(path + ".held", "w", encoding="utf-8") as f:
        f.write(repr(time.time()))
    while not os.path.exists(path):
        time.sleep(0.05)
