"""The instance metrics SageMaker publishes for a training job, sampled by the agent.

Every :data:`SAMPLE_SECONDS` (the first after :data:`FIRST_SAMPLE_SECONDS`) while the training
process runs, one ``{"type": "sample", "metrics": [[name, value], ...]}`` event goes with the
reports; the control plane keeps them as CloudWatch metrics of namespace
``/aws/sagemaker/TrainingJobs``, dimension ``Host = <job>/algo-N`` (service/cloudwatch.py).
Units and ranges as SageMaker documents them (unit ``Percent``):

* ``CPUUtilization``: the CPU time of the instance's processes over the interval, 100 per core
  (4 busy cores: 400).
* ``MemoryUtilization``: their resident memory, as a percentage of the instance's memory (the
  machine's, or the instance type's reservation when the spec names one and it is smaller).
* ``DiskUtilization``: the used share of the file system holding the instance's /opt/ml.
* ``GPUUtilization`` / ``GPUMemoryUtilization``: for an instance with GPUs, the sum over its GPUs
  (``CUDA_VISIBLE_DEVICES``, else every GPU) of each one's utilisation and memory used, 100 per
  GPU, as ``nvidia-smi`` reports them for the device (not per process).

What "the instance's processes" are is a :class:`Usage` source: :class:`ProcessTree` (the training
process and its descendants, from /proc) today; :class:`Cgroup` (a cgroup v2 directory, e.g. the
container's) when a sandbox gives the instance one. Only the standard library is used.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

INSTANCE_METRICS = frozenset({"CPUUtilization", "MemoryUtilization", "DiskUtilization", "GPUUtilization",
                              "GPUMemoryUtilization"})
FIRST_SAMPLE_SECONDS = 1.0
SAMPLE_SECONDS = 5.0
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Usage(Protocol):
    def read(self) -> tuple[float, int]:
        """(CPU seconds used so far, resident bytes now) of the instance's processes."""


class ProcessTree:
    """A process and its descendants, from /proc. A reaped child's time is in its parent's
    cumulative fields (cutime, cstime), which are counted: the total only grows while the tree lives.

    The tree is walked from its root through each thread's ``children`` file: a few files per
    process of the instance. Where the kernel has no such files, every process of the host is read
    (``/proc/*/stat``: hundreds of opens per sample on a busy host, each agent every few seconds)."""

    def __init__(self, root_pid: int, proc: str = "/proc") -> None:
        self.root_pid = root_pid
        self.proc = proc
        self._walk = os.path.exists(f"{proc}/self/task/{os.getpid()}/children")

    def read(self) -> tuple[float, int]:
        stats = self._tree() if self._walk else self._every_process()
        ticks = sum(sum(int(x) for x in fields[11:15]) for fields in stats)
        pages = sum(int(fields[21]) for fields in stats)
        return ticks / _TICKS, pages * _PAGE

    def _stat(self, pid: int | str) -> list[str] | None:
        """After "pid (comm) ": state ppid ... utime(14) stime(15) cutime(16) cstime(17) ... rss(24)."""
        try:
            with open(f"{self.proc}/{pid}/stat", encoding="latin-1") as f:
                return f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None  # gone meanwhile

    def _tree(self) -> list[list[str]]:
        found: list[list[str]] = []
        todo, seen = [self.root_pid], set()
        while todo:
            pid = todo.pop()
            fields = self._stat(pid) if pid not in seen else None
            if fields is None:
                continue
            seen.add(pid)
            found.append(fields)
            try:
                tasks = os.listdir(f"{self.proc}/{pid}/task")
            except OSError:
                continue
            for task in tasks:  # a child belongs to the thread that forked it (runc forks from any)
                try:
                    with open(f"{self.proc}/{pid}/task/{task}/children", encoding="ascii") as f:
                        todo += [int(c) for c in f.read().split()]
                except OSError:
                    continue
        return found

    def _every_process(self) -> list[list[str]]:
        stats: dict[int, list[str]] = {}
        for entry in os.listdir(self.proc):
            if entry.isdigit() and (fields := self._stat(entry)) is not None:
                stats[int(entry)] = fields
        children: dict[int, list[int]] = {}
        for pid, fields in stats.items():
            children.setdefault(int(fields[1]), []).append(pid)
        found = []
        todo = [self.root_pid] if self.root_pid in stats else []
        while todo:
            pid = todo.pop()
            found.append(stats[pid])
            todo.extend(children.get(pid, ()))
        return found


class Cgroup:
    """A cgroup v2 directory: ``cpu.stat`` usage_usec, ``memory.current`` less the inactive page cache."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _keyed(self, name: str) -> dict[str, int]:
        with open(os.path.join(self.path, name), encoding="ascii") as f:
            return {k: int(v) for k, v in (line.split() for line in f if line.strip())}

    def read(self) -> tuple[float, int]:
        cpu = self._keyed("cpu.stat").get("usage_usec", 0) / 1e6
        with open(os.path.join(self.path, "memory.current"), encoding="ascii") as f:
            memory = int(f.read())
        return cpu, max(0, memory - self._keyed("memory.stat").get("inactive_file", 0))


def machine_memory_bytes() -> int:
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def gpu_usage(devices: str | None) -> tuple[float, float] | None:
    """(sum of utilisation %, sum of memory used %) over the GPUs; None without nvidia-smi or GPUs."""
    args = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used,memory.total", "--format=csv,noheader,nounits"]
    if devices:
        args.append(f"--id={devices}")
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10, check=True).stdout
        rows = [[float(x) for x in line.split(",")] for line in out.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if not rows:
        return None
    return sum(r[0] for r in rows), sum(100.0 * r[1] / r[2] for r in rows if r[2] > 0)


class Sampler:
    def __init__(self, usage: Usage, emit: Callable[[dict[str, Any]], Any], disk_path: str, memory_bytes: int,
                 gpus: str | None = None, interval: float = SAMPLE_SECONDS) -> None:
        """``gpus``: None for an instance without GPUs, else the devices (``""``: all of them)."""
        self.usage = usage
        self.emit = emit
        self.disk_path = disk_path
        self.memory_bytes = memory_bytes
        self.gpus = gpus
        self.interval = interval
        self._stop = threading.Event()
        self._last: tuple[float, float] | None = None  # (monotonic time, CPU seconds)
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> Sampler:
        # A process tree started just now has used no CPU yet: it is not read (that scans every
        # process of the host in /proc, on the agent's thread, while the instance starts).
        self._last = (time.monotonic(), 0.0 if isinstance(self.usage, ProcessTree) else self.usage.read()[0])
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def sample(self) -> list[list[Any]]:
        """The metrics since the previous sample (or start)."""
        cpu, memory = self.usage.read()
        now = time.monotonic()
        out: list[list[Any]] = []
        if self._last is not None and now > self._last[0]:
            out.append(["CPUUtilization", max(0.0, 100.0 * (cpu - self._last[1]) / (now - self._last[0]))])
        self._last = (now, cpu)
        if self.memory_bytes > 0:
            out.append(["MemoryUtilization", 100.0 * memory / self.memory_bytes])
        st = os.statvfs(self.disk_path)
        if st.f_blocks:
            out.append(["DiskUtilization", 100.0 * (st.f_blocks - st.f_bfree) / st.f_blocks])
        if self.gpus is not None:
            gpu = gpu_usage(self.gpus)
            if gpu is not None:
                out += [["GPUUtilization", gpu[0]], ["GPUMemoryUtilization", gpu[1]]]
        return out

    def _run(self) -> None:
        wait = FIRST_SAMPLE_SECONDS
        while not self._stop.wait(wait):
            wait = self.interval
            try:
                metrics = self.sample()
            except (OSError, ValueError):  # /proc or the volume unreadable for a moment
                continue
            if metrics and not self._stop.is_set():
                self.emit({"type": "sample", "time": time.time(), "metrics": metrics})


def start_sampler(spec: dict[str, Any], root_pid: int, disk_path: str,
                  emit: Callable[[dict[str, Any]], Any]) -> Sampler | None:
    """The sampler of one instance's process tree (None where /proc is not there to read)."""
    if not os.path.isdir("/proc/self"):
        return None
    memory = machine_memory_bytes()
    if spec.get("memory_mb"):
        memory = min(memory, int(float(spec["memory_mb"]) * 1024 * 1024)) if memory else int(
            float(spec["memory_mb"]) * 1024 * 1024)
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "") if int(spec.get("num_gpus") or 0) > 0 else None
    usage: Usage = Cgroup(spec["cgroup"]) if spec.get("cgroup") else ProcessTree(root_pid)
    return Sampler(usage, emit, disk_path, memory, gpus).start()
