"""What ``srun`` starts on each node of a job's allocation: the agent of the instance whose rank is
this task's (``SLURM_PROCID``: algo-1 is task 0).

``python -S -c NODE_BOOT GANG.json``: the gang file lists, in host order, each instance's spec and
log file. The task records where it runs (``slurm.json`` in the instance directory: the Slurm job,
the node, this machine's name, the allocation's node list), makes its spec what the allocation
gives (GPUs, deadline, the network the batch step recorded: :mod:`.network`) and becomes the agent,
in this process: the agent's own record (``instance.json``) then names the PID that Slurm signals.
Standard library only, as the agent's start.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

RECORD = "slurm.json"


def run(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as f:
        gang = json.load(f)
    rank = int(os.environ.get("SLURM_PROCID", "0"))
    if rank >= len(gang):
        print(f"trainforge: task {rank} has no instance in {argv[0]}", file=sys.stderr)
        return 2
    agent = gang[rank]
    instance_dir = os.path.dirname(agent["spec"])
    started = time.time()
    record = {"job_id": os.environ.get("SLURM_JOB_ID"), "node": os.environ.get("SLURMD_NODENAME"),
              "node_id": os.environ.get("SLURM_NODEID"), "rank": rank, "hostname": socket.gethostname(),
              "nodelist": os.environ.get("SLURM_JOB_NODELIST"), "started": started}
    tmp = os.path.join(instance_dir, RECORD + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(tmp, os.path.join(instance_dir, RECORD))
    adopt_allocation(agent["spec"], os.environ, started, None if agent["finish"] else (argv[0], rank))
    os.chdir(instance_dir)
    log = os.open(agent["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - the agent's own stdout
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    from trainforge.agent.main import main

    return main([*(["--finish"] if agent["finish"] else []), agent["spec"]])


def slurm_gpus(env: dict[str, str] | os._Environ[str]) -> list[int] | None:
    """The GPUs Slurm gave this task (GRES): ``SLURM_STEP_GPUS``, else ``SLURM_JOB_GPUS`` (the node's
    own indices), else ``CUDA_VISIBLE_DEVICES`` as Slurm set it; None when Slurm gave none."""
    for key in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES"):
        value = (env.get(key) or "").strip()
        if value and value != "NoDevFiles":
            try:
                return [int(i) for i in value.split(",") if i.strip()]
            except ValueError:  # GPU UUIDs or the like: not indices this agent can use
                continue
    return None


def adopt_allocation(spec_path: str, env: dict[str, str] | os._Environ[str], started: float,
                     gang: tuple[str, int] | None = None) -> None:
    """Make the instance's spec what this node gives: the GPUs of Slurm's allocation (not the control
    plane's GPU slots), the deadline counted from now that the instance starts (the gang may have
    waited in Slurm's queue; :func:`trainforge.backends.base.started_deadline`) and, given the gang
    file and this task's rank, the allocation's network (:func:`.network.adopt`)."""
    from trainforge.agent import instance_files
    from trainforge.backends.base import started_deadline
    from trainforge.backends.slurm import network

    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    gpus = slurm_gpus(env)
    spec["gpus"] = gpus or []
    spec["num_gpus"] = len(spec["gpus"])
    if spec.get("deadline") is not None:
        spec["deadline"] = started_deadline(float(spec["deadline"]), spec.get("launched_at"), started,
                                            spec.get("deadline_cap"))
        spec["launched_at"] = None  # adopted once: a finishing agent started later keeps this deadline
    if gang is not None:
        network.adopt(spec, gang[0], gang[1], env.get("SLURMD_NODENAME"))
    instance_files.write_spec(os.path.dirname(spec_path), spec)
