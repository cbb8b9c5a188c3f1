"""A Slurm cluster on this machine, for tests and benchmarks: munged, one slurmctld, three slurmd.

Everything lives in one private directory: munged with its own key and socket, a slurm.conf
reached through ``SLURM_CONF`` (absolute path), one ``slurmd -N nodeK`` per node on a port of its
own with its own spool, pid and log files. Every node has ``NodeHostname=localhost`` and
``NodeAddr=127.0.0.1`` (or, given ``addresses``, a loopback address of its own); slurmd tells its nodes apart by ``-N`` and the port. Debian's slurm-wlm
(22.05) runs several slurmd on one host like this: ``-N`` is honoured and each slurmd binds the
``Port`` of its node. Plugins: ``proctrack/linuxproc``, ``task/none``, no cgroup plugins (none is
needed; the machine may have no writable cgroup tree), ``select/cons_tres``, no accounting
(``sacct`` has no database here; finished jobs stay visible to ``scontrol show job`` for
``MinJobAge`` seconds).

Usage::

    with SlurmCluster(nodes=3) as cluster:
        env = cluster.env          # SLURM_CONF for the Slurm commands
        cluster.sinfo()
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

START_TIMEOUT = 60.0


def slurm_available() -> str | None:
    """Why no cluster can be started here, or None."""
    for tool in ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scancel", "sinfo"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the Slurm fixture runs its daemons as root"
    return None


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SlurmCluster:
    def __init__(self, nodes: int = 3, cpus: int = 2, memory_mb: int = 4096, partition: str = "debug",
                 addresses: list[str] | None = None) -> None:
        self.nodes = [f"node{k}" for k in range(1, nodes + 1)]
        # each node's NodeAddr: 127.0.0.1 for all, or loopback addresses of their own (the nodes then
        # look like machines of their own to whoever compares addresses; each slurmd listens on all)
        self.addresses = list(addresses or ["127.0.0.1"] * nodes)
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.partition = partition
        self.dir = Path(tempfile.mkdtemp(prefix="tf-slurm-"))
        self.conf = self.dir / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._procs: list[subprocess.Popen[bytes]] = []

    # -- configuration ---------------------------------------------------------------------------
    def _write_config(self) -> None:
        d = self.dir
        ctld_port, *node_ports = _free_ports(1 + len(self.nodes))
        for sub in ("ctld", "munge", *(f"spool/{n}" for n in self.nodes)):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "munge").chmod(0o700)
        key = d / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.munge_socket = d / "munge" / "munge.socket"
        lines = [
            "ClusterName=trainforge-test",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={d / 'ctld'}",
            f"SlurmdSpoolDir={d / 'spool'}/%n",
            f"SlurmctldPidFile={d / 'slurmctld.pid'}",
            f"SlurmdPidFile={d}/slurmd.%n.pid",
            f"SlurmctldLogFile={d / 'slurmctld.log'}",
            f"SlurmdLogFile={d}/slurmd.%n.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=debug",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill",
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            "MinJobAge=600",
            "KillWait=5",
            "InactiveLimit=0",
            "SlurmdTimeout=30",
            "SlurmctldTimeout=30",
            "MessageTimeout=20",
        ]
        for node, port, address in zip(self.nodes, node_ports, self.addresses, strict=True):
            lines.append(f"NodeName={node} NodeHostname=localhost NodeAddr={address} Port={port} "
                         f"CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN")
        lines.append(f"PartitionName={self.partition} Nodes={','.join(self.nodes)} Default=YES "
                     f"MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")

    # -- life ------------------------------------------------------------------------------------
    def _spawn(self, args: list[str], log: str) -> None:
        with open(self.dir / log, "ab") as out:
            self._procs.append(subprocess.Popen(args, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True))

    def start(self) -> Self:
        self._write_config()
        d = self.dir
        self._spawn(["munged", "-F", "-f", f"--socket={self.munge_socket}",
                     f"--key-file={d / 'munge' / 'munge.key'}", f"--log-file={d / 'munge' / 'munged.log'}",
                     f"--pid-file={d / 'munge' / 'munged.pid'}", f"--seed-file={d / 'munge' / 'munged.seed'}"],
                    "munged.out")
        self._wait(lambda: self.munge_socket.exists(), "munged's socket")
        self.start_controller()
        for node in self.nodes:
            self._spawn(["slurmd", "-D", "-N", node, "-f", str(self.conf)], f"slurmd.{node}.out")
        self._wait(self._all_idle, "the nodes to be idle")
        return self

    def start_controller(self) -> None:
        """slurmctld, from the state it saved when it last ended (if it ran before)."""
        self._spawn(["slurmctld", "-D", "-i", "-f", str(self.conf)], "slurmctld.out")
        self._wait(lambda: self._quiet(["scontrol", "ping"]) and "UP" in self._run(["scontrol", "ping"]),
                   "slurmctld")

    def stop_controller(self) -> None:
        """slurmctld ends (saving its state); the nodes and the jobs they run go on."""
        ctld = next(p for p in self._procs if p.args[0] == "slurmctld")  # type: ignore[index]
        ctld.send_signal(signal.SIGTERM)
        ctld.wait(timeout=30)
        self._procs.remove(ctld)

    def _all_idle(self) -> bool:
        states = self._run(["sinfo", "-h", "-N", "-o", "%N %t"]).split("\n")
        idle = {line.split()[0] for line in states if line.strip().endswith("idle")}
        return idle >= set(self.nodes)

    def _run(self, args: list[str]) -> str:
        done = subprocess.run(args, check=False, env=self.env, capture_output=True, text=True, timeout=30)
        return done.stdout

    def _quiet(self, args: list[str]) -> bool:
        return subprocess.run(args, check=False, env=self.env, capture_output=True, timeout=30).returncode == 0

    def _wait(self, ready: object, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if ready():  # type: ignore[operator]
                return
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a Slurm daemon exited ({proc.args!r}, status {proc.returncode}) while "
                                       f"waiting for {what}:\n{self.logs()}")
            time.sleep(0.2)
        raise TimeoutError(f"Slurm: timed out waiting for {what}:\n{self.logs()}")

    def logs(self) -> str:
        out = []
        for path in sorted(self.dir.glob("*.log")) + sorted(self.dir.glob("*.out")):
            out.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    def node_log(self, node: str) -> str:
        """The slurmd log of ``node`` (at debug level: the signals it delivers to tasks are there)."""
        return (self.dir / f"slurmd.{node}.log").read_text(errors="replace")

    def sinfo(self) -> str:
        return self._run(["sinfo", "-N", "-o", "%N %t %c %m"])

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "--partition", self.partition], check=False, env=self.env,
                       capture_output=True, timeout=30)
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self._procs.clear()
        self._kill_leftovers()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _kill_leftovers(self) -> None:
        """What this cluster's jobs left: the job steps' ``slurmstepd`` outlive its slurmd (they are
        not its children once started), and one whose slurmd is gone retries talking to it for good,
        as does a batch script's ``srun`` whose step died. Each carries this cluster's SLURM_CONF in
        its environment (the daemons are gone by now; this process's own environment has none)."""
        mark = f"SLURM_CONF={self.conf}".encode()
        strays = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if mark not in f.read().split(b"\0"):
                        continue
                os.kill(int(entry), signal.SIGKILL)
                strays.append(int(entry))
            except (OSError, ValueError):
                continue
        deadline = time.monotonic() + 10
        while strays and time.monotonic() < deadline:
            strays = [pid for pid in strays if os.path.exists(f"/proc/{pid}")]
            if strays:
                time.sleep(0.05)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
