"""What ``srun`` starts on each node of a job's allocation: the agent of the instance whose rank is
this task's (``SLURM_PROCID``: algo-1 is task 0).

``python -S -c NODE_BOOT GANG.json``: the gang file lists, in host order, each instance's spec and
log file. The task records where it runs (``slurm.json`` in the instance directory: the Slurm job,
the node, this machine's name, the allocation's node list) and becomes the agent, in this process:
the agent's own record (``instance.json``) then names the PID that Slurm signals. Standard library
only, as the agent's start.
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
    record = {"job_id": os.environ.get("SLURM_JOB_ID"), "node": os.environ.get("SLURMD_NODENAME"),
              "node_id": os.environ.get("SLURM_NODEID"), "rank": rank, "hostname": socket.gethostname(),
              "nodelist": os.environ.get("SLURM_JOB_NODELIST"), "started": time.time()}
    tmp = os.path.join(instance_dir, RECORD + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(tmp, os.path.join(instance_dir, RECORD))
    os.chdir(instance_dir)
    log = os.open(agent["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - the agent's own stdout
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    from trainforge.agent.main import main

    return main([*(["--finish"] if agent["finish"] else []), agent["spec"]])
