"""Which GPUs each running instance holds: host indices ``0 … capacity_gpus - 1``.

Admission counts GPUs like the other resources (``capacity.Resources``); this hands out the
indices themselves, so that no two running instances share one. An instance's indices go into its
spec (``"gpus"``), which is also where they are found again after a server restart: the first tick
reads the spec of every running job that reserves GPUs and holds them again. They are freed when
the job (that attempt of it) is no longer running, at the next tick.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from trainforge.agent import instance_files
from trainforge.agent.spec import load as load_spec
from trainforge.store.jobs import JobRow

log = logging.getLogger("trainforge.scheduler")

Key = tuple[int, int]  # (job id, attempt)


class GpuSlots:
    def __init__(self, count: int) -> None:
        self.count = count
        self.held: dict[Key, dict[str, list[int]]] = {}  # job attempt -> host -> indices

    def free(self) -> list[int]:
        used = {i for hosts in self.held.values() for indices in hosts.values() for i in indices}
        return [i for i in range(self.count) if i not in used]

    def take(self, job: JobRow, host: str, n: int) -> list[int]:
        """The lowest ``n`` free indices, now held by ``host`` of ``job``'s current attempt (the
        ones it held already, if it holds some)."""
        hosts = self.held.setdefault((job.id, job.attempt), {})
        if host in hosts:
            return hosts[host]
        free = self.free()
        if len(free) < n:
            raise RuntimeError(f"{n} GPU(s) wanted, {len(free)} of {self.count} free")
        hosts[host] = free[:n]
        return hosts[host]

    def sync(self, running: list[JobRow], reserves_gpus: Callable[[JobRow], bool],
             instance_dirs: Callable[[JobRow], list[Path]]) -> None:
        """Free what jobs no longer running held; hold again what running jobs' specs record (after
        a restart: nothing is held yet)."""
        current = {(j.id, j.attempt) for j in running}
        for key in [k for k in self.held if k not in current]:
            del self.held[key]
        for job in running:
            if (job.id, job.attempt) not in self.held and reserves_gpus(job):
                self.held[(job.id, job.attempt)] = _recorded(job, instance_dirs(job))


def _recorded(job: JobRow, instance_dirs: list[Path]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for inst_dir in instance_dirs:
        try:
            gpus = load_spec(str(inst_dir / instance_files.SPEC)).get("gpus") or []
        except (OSError, ValueError) as exc:
            log.warning("the GPUs of %s/%s are unknown (its spec is unreadable: %s): they may be given "
                        "to another instance", job.name, inst_dir.name, exc)
            continue
        found[inst_dir.name] = [int(i) for i in gpus]
    return found
