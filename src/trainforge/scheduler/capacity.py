"""What an instance reserves and what a machine offers."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainforge.config import Config
from trainforge.sandbox.gpus import discover

if TYPE_CHECKING:
    from trainforge.store.jobs import JobStore

log = logging.getLogger("trainforge.scheduler")

# A type missing from the configured table reserves this much.
DEFAULT_SHAPE = {"cpus": 2.0, "memory_mb": 8192, "gpus": 0}


@dataclass(frozen=True)
class Resources:
    cpus: float = 0.0
    memory_mb: float = 0.0
    gpus: int = 0
    instances: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpus + other.cpus, self.memory_mb + other.memory_mb,
                         self.gpus + other.gpus, self.instances + other.instances)

    def __mul__(self, n: int) -> Resources:
        return Resources(self.cpus * n, self.memory_mb * n, self.gpus * n, self.instances * n)

    def fits_in(self, total: Resources) -> bool:
        return (self.cpus <= total.cpus + 1e-9 and self.memory_mb <= total.memory_mb
                and self.gpus <= total.gpus and self.instances <= total.instances)

    def describe(self) -> str:
        text = f"{self.cpus:g} CPUs, {self.memory_mb / 1024:.4g} GiB memory"
        return text + (f", {self.gpus} GPUs" if self.gpus else "")


def _machine_memory_mb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 8192.0


class CapacityModel:
    """Machine capacity and per-instance reservations, from the configuration.

    By default the machine offers ``overcommit`` × its cores and its physical memory, and an
    instance reserves its type's shape clipped to that (so every ``ml.*`` type can run on a small
    machine); ``max_concurrent_instances`` caps the number of instances at once. GPUs: the NVIDIA
    GPUs found on the machine (``sandbox/gpus.py``) unless ``capacity_gpus`` says otherwise.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        cores = os.cpu_count() or 1
        self.total = Resources(
            cpus=float(config.capacity_cpus if config.capacity_cpus is not None else cores * config.overcommit),
            memory_mb=float(config.capacity_memory_mb if config.capacity_memory_mb is not None
                            else _machine_memory_mb() * config.overcommit),
            gpus=int(config.capacity_gpus if config.capacity_gpus is not None else len(discover().devices)),
            instances=config.max_concurrent_instances or 1_000_000,
        )
        found = len(discover().devices)
        if self.total.gpus > found:
            log.warning("capacity_gpus is %d but %d NVIDIA GPU(s) were found here: an instance given a GPU "
                        "index from %d up gets no device", self.total.gpus, found, found)

    def shape(self, instance_type: str) -> Resources:
        raw: dict[str, Any] = self.config.instance_types.get(instance_type) or DEFAULT_SHAPE
        res = Resources(float(raw.get("cpus", 1)), float(raw.get("memory_mb", 1024)), int(raw.get("gpus", 0)), 1)
        if self.config.scale_instances_to_machine:
            res = Resources(min(res.cpus, self.total.cpus), min(res.memory_mb, self.total.memory_mb),
                            min(res.gpus, self.total.gpus), 1)
        return res

    def reservation(self, request: dict[str, Any]) -> Resources:
        total = Resources()
        for instance_type, count in instance_groups(request):
            total = total + self.shape(instance_type) * count
        return total

    def in_use(self, store: JobStore) -> Resources:
        """What the running jobs reserve (the scheduler's own sum): the console's and /metrics' figure."""
        total = Resources()
        for job in store.jobs_in_phase("running"):
            total = total + self.reservation(job.request)
        return total

    def never_fits(self, instance_type: str, count: int) -> str | None:
        """A reason when ``count`` instances of the type can never run here, else None."""
        need = self.shape(instance_type) * count
        if need.fits_in(self.total):
            return None
        slots = f", {self.total.instances} instances" if self.total.instances < 1_000_000 else ""
        return (f"{count} x {instance_type} needs {need.describe()}, more than this trainforge offers "
                f"({self.total.describe()}{slots}); see the config keys 'instance_types', 'capacity_*', "
                f"'overcommit' and 'max_concurrent_instances'")


def instance_groups(request: dict[str, Any]) -> list[tuple[str, int]]:
    rc = request.get("ResourceConfig") or {}
    if rc.get("InstanceGroups"):
        return [(g["InstanceType"], int(g["InstanceCount"])) for g in rc["InstanceGroups"]]
    return [(rc.get("InstanceType", "ml.m5.large"), int(rc.get("InstanceCount", 1)))]


def host_names(request: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host, instance type, group name) of every instance, algo-1 … algo-N."""
    rc = request.get("ResourceConfig") or {}
    out: list[tuple[str, str, str]] = []
    if rc.get("InstanceGroups"):
        for g in rc["InstanceGroups"]:
            for _ in range(int(g["InstanceCount"])):
                out.append((f"algo-{len(out) + 1}", g["InstanceType"], g["InstanceGroupName"]))
    else:
        for _ in range(int(rc.get("InstanceCount", 1))):
            out.append((f"algo-{len(out) + 1}", rc.get("InstanceType", "ml.m5.large"), "homogeneousCluster"))
    return out
