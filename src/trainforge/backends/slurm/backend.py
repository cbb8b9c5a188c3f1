"""The Slurm backend: a job is one Slurm allocation of N nodes whose ``srun`` starts one agent per node.

``launch`` writes, per gang, a gang file (each instance's spec and log, in host order) and a batch
script (``srun`` of :mod:`.node` once per node), then submits it: ``sbatch --nodes=N
--ntasks-per-node=1 --exclusive --time=<MaxRuntime + grace>``. Task K runs the agent of host
algo-(K+1). The handle of each instance is ``{"slurm_job_id", "rank", "instance_dir"}``; the job id is
also written into each instance directory (``slurm-job``) right after sbatch answers, so a control
plane that died before it stored the handles finds the Slurm job again (``find_agent``) instead of
submitting another; one that died before it wrote the id finds it by its name and script (squeue).

Slurm's view of a job comes from ``squeue`` (one call per scheduler pass for every job this backend
follows, :meth:`reap`); what an agent does, from its reports, as on the local backend. While the
allocation waits, :meth:`waiting` gives Slurm's reason (the scheduler shows it as Pending). A stop
is ``scancel --signal=TERM`` (every agent forwards it to its instance and uploads), then a full
``scancel`` once the stop grace and ``stop_kill_after_seconds`` have passed.

Liveness of one instance: its Slurm job is active, and where the agent runs on this machine (the
node's record ``slurm.json`` names this host, always so on the one-machine test cluster) its
process lives, checked as the local backend checks its own agents. On a cluster, an agent that dies
on another node is noticed when the allocation ends (or by its missing reports); see
docs/INTERNALS.md "Slurm".
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import signal as signals
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainforge.agent import instance_files
from trainforge.backends.base import AgentLaunch, Handle
from trainforge.backends.forkserver import boot, compile_package
from trainforge.backends.local import LocalBackend
from trainforge.backends.slurm import cli, network
from trainforge.backends.slurm.node import RECORD
from trainforge.backends.slurm.settings import SlurmSettings
from trainforge.scheduler import faults

if TYPE_CHECKING:
    from trainforge.config import Config

NODE_BOOT = boot("trainforge.backends.slurm.node", "run(sys.argv[1:])")
NETWORK_BOOT = boot("trainforge.backends.slurm.network", "record(sys.argv[1:])")
JOB_FILE = "slurm-job"  # in each instance directory: the Slurm job id, written once sbatch answers
TIME_MARGIN_S = 120  # Slurm's own time limit is a backstop past the control plane's MaxRuntime stop

log = logging.getLogger("trainforge.slurm")


class SlurmBackend:
    """:class:`trainforge.backends.base.Backend` on a Slurm cluster; Slurm queues the gangs."""

    name = "slurm"
    queues = True

    def __init__(self, config: Config) -> None:
        self.settings = SlurmSettings.from_config(config.slurm, config.instance_types)
        self.control_url = self.settings.control_url
        self.stop_grace = float(config.stop_grace_seconds)
        self._local = LocalBackend(forkserver=False)  # the process checks of agents on this machine
        self._lock = threading.Lock()
        self._states: dict[str, cli.JobState] = {}
        self._followed: set[str] = set()
        self._reachable = True  # the last squeue answered
        self._signalled: dict[tuple[str, int], float] = {}  # (job, signal) -> when
        self._kill_at: dict[str, float] = {}  # job -> when the full scancel follows a stop
        self._hostname = socket.gethostname()

    def start(self) -> None:
        compile_package()  # each srun-started agent imports the package without a fork server

    def close(self) -> None:
        pass

    # -- launch ------------------------------------------------------------------------------------
    def launch(self, gangs: list[list[AgentLaunch]]) -> list[list[Handle | OSError]]:
        results: list[list[Handle | OSError]] = []
        for gang in gangs:
            try:
                job_id = self._submit(gang)
            except OSError as exc:
                results.append([exc for _ in gang])
                continue
            with self._lock:
                self._followed.add(job_id)
            results.append([{"slurm_job_id": job_id, "rank": rank, "instance_dir": str(a.spec_path.parent)}
                            for rank, a in enumerate(gang)])
        return results

    def _submit(self, gang: list[AgentLaunch]) -> str:
        specs = [json.loads(a.spec_path.read_text()) for a in gang]
        spec = specs[0]
        job_dir = Path(spec["job_dir"])
        slurm_dir = job_dir / "slurm"
        slurm_dir.mkdir(parents=True, exist_ok=True)
        tag = "finish-" + gang[0].spec_path.parent.name if gang[0].finish else "gang"
        gang_file = slurm_dir / f"{tag}.json"
        gang_file.write_text(json.dumps([{"spec": str(a.spec_path), "log": str(a.log_path), "finish": a.finish}
                                         for a in gang]))
        n = len(gang)
        components = _components(specs)
        script = slurm_dir / f"{tag}.sh"
        het = [f"--het-group={','.join(str(k) for k in range(len(components)))}"] if len(components) > 1 else []
        srun = ["srun", *het, *([] if het else [f"--nodes={n}", f"--ntasks={n}", "--ntasks-per-node=1"]),
                "--kill-on-bad-exit=0", sys.executable, "-S", "-c", NODE_BOOT, str(gang_file)]
        script.write_text("#!/bin/sh\n" + self._network_step(gang, str(gang_file))
                          + "exec " + shlex.join(srun) + "\n")
        script.chmod(0o755)
        # Slurm counts --time from the start: the run time left + the stop grace + a start-up allowance
        seconds = max(60, math.ceil(float(spec["deadline"]) - time.time() + self.stop_grace + TIME_MARGIN_S))
        args = [f"--job-name={_job_name(spec)}",
                f"--time={seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}",
                f"--output={slurm_dir / (tag + '.out')}", f"--chdir={job_dir}", "--export=ALL"]
        if self.settings.partition:
            args.append(f"--partition={self.settings.partition}")
        if self.settings.account:
            args.append(f"--account={self.settings.account}")
        args += list(self.settings.sbatch_args)
        # one component per instance group (a heterogeneous job, ":" between them), each of its type
        for k, (itype, count) in enumerate(components):
            args += [*([":"] if k else []), f"--nodes={count}", "--ntasks-per-node=1",
                     *(["--exclusive"] if self.settings.exclusive and not gang[0].finish else []),
                     *self.settings.resources(itype)]
        job_id = cli.sbatch(args, str(script))
        faults.crash_point("slurm-submitted")
        for a in gang:
            (a.spec_path.parent / JOB_FILE).write_text(job_id)
        return job_id

    def _network_step(self, gang: list[AgentLaunch], gang_file: str) -> str:
        """The batch step's line that records the allocation's network before srun (.network), or
        nothing: a finishing agent makes no network; one instance off ``nodes`` is recorded here."""
        path = network.record_path(gang_file)
        if gang[0].finish:
            return ""
        known = network.trivial(self.settings.network, len(gang))
        if known is not None:
            network.write(path, known)
            return ""
        Path(path).unlink(missing_ok=True)
        return shlex.join([sys.executable, "-S", "-c", NETWORK_BOOT, path, self.settings.network]) + "\n"

    # -- following the Slurm jobs ----------------------------------------------------------------
    def reap(self) -> None:
        """One squeue for every followed job; the full scancel of stops whose grace has passed."""
        with self._lock:
            followed = sorted(self._followed)
        try:
            states = cli.states(followed)
        except cli.SlurmUnreachable as exc:
            if self._reachable:
                log.warning("Slurm does not answer (%s): its jobs are taken as running until it does", exc)
            self._reachable = False
            return
        if not self._reachable:
            log.warning("Slurm answers again")
        self._reachable = True
        now = time.time()
        with self._lock:
            self._states = states
            for job_id in followed:
                if job_id not in states or not states[job_id].active:
                    self._followed.discard(job_id)
                    self._kill_at.pop(job_id, None)
                    for sig in [s for j, s in self._signalled if j == job_id]:
                        del self._signalled[(job_id, sig)]
            due = [j for j, at in self._kill_at.items() if at <= now]
            for job_id in due:
                del self._kill_at[job_id]
        for job_id in due:
            cli.scancel(job_id)

    def _state(self, job_id: str) -> cli.JobState | None:
        with self._lock:
            if job_id not in self._followed:  # a job named by a handle from before a restart
                self._followed.add(job_id)
                try:
                    self._states.update(cli.states([job_id]))
                except cli.SlurmUnreachable:
                    self._reachable = False
            state = self._states.get(job_id)
            return cli.UNREACHABLE if state is None and not self._reachable else state

    def waiting(self, handle: Handle | None) -> str | None:
        job_id = _job_of(handle)
        state = self._state(job_id) if job_id else None
        if state is None or state.state != "PENDING":
            return None
        return f"Slurm job {job_id} is pending ({state.reason})"

    def alive(self, handle: Handle | None) -> bool:
        job_id = _job_of(handle)
        if handle is None or job_id is None:
            return False
        state = self._state(job_id)
        if state is None or not state.active:
            return False
        local = self._agent_here(handle.get("instance_dir"), job_id)
        return local is None or self._local.alive(local)

    def _agent_here(self, instance_dir: Any, job_id: str) -> Handle | None:
        """The agent's process handle, when the node record says it runs on this machine and the agent
        has recorded itself; else None (not started yet, or elsewhere: Slurm's state decides)."""
        record = _record(instance_dir) if instance_dir else None
        if record is None or record.get("job_id") != job_id or record.get("hostname") != self._hostname:
            return None
        state = instance_files.read_state(instance_dir)
        if state is None or not state.get("agent_pid") or float(state.get("started") or 0) < record["started"]:
            return None
        return {"pid": int(state["agent_pid"]), "start_ticks": state.get("agent_start_ticks"),
                "instance_dir": os.fspath(instance_dir)}

    def find_agent(self, instance_dir: str | os.PathLike[str],
                   state: instance_files.InstanceState | None) -> Handle | None:
        """After a restart: the Slurm job that ``slurm-job`` names, while it is active and (on this
        machine) its agent lives."""
        try:
            job_id: str | None = (Path(instance_dir) / JOB_FILE).read_text().strip()
        except OSError:  # submitted, and the control plane died before it wrote the id down
            job_id = self._submitted(instance_dir)
        if not job_id:
            return None
        record = _record(instance_dir)
        handle = {"slurm_job_id": job_id, "rank": None if record is None else record.get("rank"),
                  "instance_dir": os.fspath(instance_dir)}
        return handle if self.alive(handle) else None

    def _submitted(self, instance_dir: str | os.PathLike[str]) -> str | None:
        try:
            spec = json.loads((Path(instance_dir) / instance_files.SPEC).read_text())
        except (OSError, ValueError):
            return None
        return cli.submitted_as(_job_name(spec), str(Path(spec["job_dir"]) / "slurm" / "gang.sh"))

    # -- signals -----------------------------------------------------------------------------------
    def signal(self, handle: Handle | None, sig: int = signals.SIGTERM) -> None:
        """Signal the agents: Slurm signals the whole job's tasks, so the instances of one gang asked
        together are signalled once; a TERM is followed by a full scancel after the grace."""
        job_id = _job_of(handle)
        if not job_id:
            return
        now = time.time()
        with self._lock:
            last = self._signalled.get((job_id, sig))
            if last is not None and now - last < 5.0:
                return
            self._signalled[(job_id, sig)] = now
            if sig == signals.SIGTERM:
                self._kill_at.setdefault(job_id, now + self.stop_grace + self.settings.stop_kill_after_seconds)
        state = self._state(job_id)
        if state is not None and state.state == "PENDING":
            return  # nothing runs yet: the scheduler cancels a stopped pending job (cancel)
        cli.scancel(job_id, signals.Signals(sig).name.removeprefix("SIG"))

    def cancel(self, handle: Handle | None) -> None:
        job_id = _job_of(handle)
        if job_id:
            cli.scancel(job_id)

    def kill_group(self, handle: Handle | None) -> None:
        """What is left of one instance: its processes where they run on this machine (the local
        backend's kill); the rest of the allocation ends with the job (or with its full scancel)."""
        job_id = _job_of(handle)
        if handle is None or job_id is None:
            return
        local = self._agent_here(handle.get("instance_dir"), job_id)
        if local is not None:
            self._local.kill_group(local)
        elif handle.get("instance_dir"):
            state = instance_files.read_state(handle["instance_dir"])
            if state is not None and state.get("pgid") and self._is_here(handle["instance_dir"]):
                self._local.kill_group({"instance_dir": handle["instance_dir"]})

    def _is_here(self, instance_dir: str) -> bool:
        record = _record(instance_dir)
        return record is not None and record.get("hostname") == self._hostname


def _job_of(handle: Handle | None) -> str | None:
    """The Slurm job id a handle names (None: no handle, or no job yet)."""
    return str(handle["slurm_job_id"]) if handle and handle.get("slurm_job_id") else None


def _record(instance_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the srun task of the instance recorded about where it runs (``slurm.json``), or None."""
    try:
        record = json.loads((Path(instance_dir) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _components(specs: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(instance type, node count) per instance group, in host order (a group's hosts are consecutive,
    agent/layout.py); one component for a job without InstanceGroups."""
    components: list[tuple[str, str, int]] = []
    for spec in specs:
        key, itype = str(spec.get("instance_group") or ""), str(spec.get("instance_type") or "")
        if components and components[-1][:2] == (key, itype):
            components[-1] = (key, itype, components[-1][2] + 1)
        else:
            components.append((key, itype, 1))
    return [(itype, count) for _, itype, count in components]


def _job_name(spec: dict[str, Any]) -> str:
    return f"tf-{spec['job_name']}"[:120]
