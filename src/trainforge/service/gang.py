"""The gang barrier of a multi-instance job (issue 12): no instance's user code starts before every
instance of the job's attempt is ready to start it.

Each agent prepares its instance fully (volume, network, inputs, the container's bundle), then asks
``POST /_trainforge/agent/v1/gang`` (api/agent_api.py) and waits, a long poll: the answer is
``{"go": true}`` once every host of the attempt has asked, or ``{"go": false, "waiting_for": [...]}``
after :data:`POLL_S` (the agent asks again, until its spec's ``gang.timeout_seconds``). All the
waiting requests are answered in the same instant, so the agents start their instances together.
The state is the server's memory: an agent that asks again after a restart of the control plane
counts again (asking is idempotent), and a gang nobody asked about for :data:`KEEP_S` is forgotten
(an opened one answers a late repeat of a lost answer until then).
"""

from __future__ import annotations

import asyncio
import time

POLL_S = 20.0  # the longest one request waits
KEEP_S = 600.0  # a gang nobody asked about for this long is forgotten


class _Gang:
    def __init__(self, hosts: frozenset[str]) -> None:
        self.hosts = hosts
        self.ready: set[str] = set()
        self.opened: asyncio.Event = asyncio.Event()
        self.touched = time.monotonic()  # the last request about it


class GangBarrier:
    """The gangs waiting now, by (job id, attempt). Used from the server's event loop only."""

    def __init__(self) -> None:
        self._gangs: dict[tuple[int, int], _Gang] = {}

    async def arrive(self, job_id: int, attempt: int, host: str, hosts: frozenset[str],
                     wait_s: float = POLL_S) -> list[str]:
        """``host`` is ready: wait until all ``hosts`` are (or ``wait_s``). The hosts still awaited
        (none: go)."""
        self._forget_old()
        gang = self._gangs.get((job_id, attempt))
        if gang is None or gang.hosts != hosts:
            gang = self._gangs[(job_id, attempt)] = _Gang(hosts)
        gang.ready.add(host)
        gang.touched = time.monotonic()
        if gang.ready >= gang.hosts:
            gang.opened.set()
        try:
            await asyncio.wait_for(gang.opened.wait(), wait_s)
        except TimeoutError:
            pass
        return sorted(gang.hosts - gang.ready)

    def _forget_old(self) -> None:
        now = time.monotonic()
        for key in [k for k, g in self._gangs.items() if now - g.touched > KEEP_S]:
            del self._gangs[key]
