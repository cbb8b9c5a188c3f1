"""The distributed launchers of SageMaker's framework containers, for script mode.

The SageMaker Python SDK turns an estimator's ``distribution`` into hyperparameters; inside a
framework image the ``sagemaker-training`` toolkit (and the PyTorch container's ``training.py``)
reads them and starts the user's script under a launcher. This module does the same here:

| hyperparameter (true) | launcher |
|---|---|
| ``sagemaker_mpi_enabled`` | ``mpirun`` from the master host across the distribution hosts |
| ``sagemaker_pytorch_ddp_enabled`` | the same ``mpirun``, each rank given ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` |
| ``sagemaker_torch_distributed_enabled`` | ``torchrun --nnodes N --nproc_per_node P --master_addr M --master_port 7777 --node_rank I`` on every host |
| none of them | the script, once per host |

(The container checks them in that order: MPI first.) Refused at CreateTrainingJob instead
(``service/create_rules.py`` via :func:`refusal`): SMDDP (``sagemaker_distributed_dataparallel_enabled``,
AWS's closed library), the TensorFlow parameter server, TensorFlow's MultiWorkerMirroredStrategy and
PyTorch/XLA — each would otherwise run silently as one process per host.

Processes per host (``P``): ``sagemaker_mpi_num_of_processes_per_host``, else the instance's GPUs,
else 1. A launcher applies only on hosts of the groups ``sagemaker_distribution_instance_groups``
names (by default the job's only group); the master is the first of those hosts. Every host gets
``MASTER_ADDR`` (the master) and ``MASTER_PORT`` 7777 and the NCCL settings the container sets.

MPI: the master waits until every worker serves :data:`mpi_remote.PORT` (no sshd; see
:mod:`trainforge.images.mpi_remote`), then runs ``mpirun`` with the container's options and
``plm_rsh_agent`` pointed at that module. Workers serve until their ``orted`` has ended, then exit 0:
the master's exit status is the job's, as in SageMaker. Python scripts run under ``-m mpi4py``
when the interpreter has mpi4py (an uncaught exception then aborts every rank).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import sys
import time
from typing import Any, NamedTuple

from trainforge.images import mpi_remote

MASTER_PORT = "7777"
MPI = "sagemaker_mpi_enabled"
PYTORCH_DDP = "sagemaker_pytorch_ddp_enabled"
TORCH_DISTRIBUTED = "sagemaker_torch_distributed_enabled"
PER_HOST = "sagemaker_mpi_num_of_processes_per_host"
NUM_PROCESSES = "sagemaker_mpi_num_processes"
CUSTOM_MPI_OPTIONS = "sagemaker_mpi_custom_mpi_options"
WORKER_WAIT_SECONDS = 900.0

REFUSED = {
    "sagemaker_distributed_dataparallel_enabled": (
        "SageMaker's distributed data parallel library (SMDDP, distribution={'smdistributed': {'dataparallel': "
        "...}}) is AWS's closed library and is not available here; use distribution={'pytorchddp': "
        "{'enabled': True}} or {'torch_distributed': {'enabled': True}} with torch.distributed (NCCL or gloo)"),
    "sagemaker_parameter_server_enabled": (
        "TensorFlow's parameter-server distribution (distribution={'parameter_server': ...}) is not "
        "implemented by trainforge; use distribution={'mpi': ...}"),
    "sagemaker_multi_worker_mirrored_strategy_enabled": (
        "TensorFlow's MultiWorkerMirroredStrategy distribution is not implemented by trainforge; use "
        "distribution={'mpi': ...}"),
    "sagemaker_pytorch_xla_multi_worker_enabled": (
        "PyTorch/XLA multi-worker distribution needs XLA devices, which trainforge does not have; use "
        "distribution={'torch_distributed': {'enabled': True}}"),
}


def refusal(hyperparameters: dict[str, Any]) -> str | None:
    """Why a script-mode job with these (raw, JSON-encoded) hyperparameters cannot run, or None."""
    from trainforge.agent.environment import decode  # the control plane's side: not on script mode's path

    for key, why in REFUSED.items():
        if _truthy(decode(hyperparameters.get(key))):
            return f"HyperParameters '{key}' is not supported by trainforge: {why}."
    return None


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


class Cluster(NamedTuple):
    """The distribution as this host sees it (from SM_TRAINING_ENV). A NamedTuple, not a dataclass:
    ``dataclasses`` (with ``inspect``) would add tens of milliseconds to every script-mode start, in
    the user's process; ``typing`` is loaded anyway."""

    kind: str  # "torchrun", "mpi", "pytorchddp" or "" (no launcher)
    hosts: list[str]
    current: str
    master: str
    per_host: int
    num_processes: int | None
    interface: str
    custom_mpi_options: str

    @property
    def is_master(self) -> bool:
        return self.current == self.master


def cluster(env: dict[str, str]) -> Cluster:
    """What launches the script on this host (``kind`` empty: the script itself)."""
    te = json.loads(env.get("SM_TRAINING_ENV") or "{}")
    fw = te.get("additional_framework_parameters") or {}
    kind = ""
    if te.get("current_instance_group") in (te.get("distribution_instance_groups") or []):
        kind = ("mpi" if _truthy(fw.get(MPI)) else "pytorchddp" if _truthy(fw.get(PYTORCH_DDP))
                else "torchrun" if _truthy(fw.get(TORCH_DISTRIBUTED)) else "")
    hosts = list(te.get("distribution_hosts") or te.get("hosts") or [])
    gpus = int(te.get("num_gpus") or 0)
    num = fw.get(NUM_PROCESSES)
    return Cluster(kind=kind, hosts=hosts, current=str(te.get("current_host") or ""),
                   master=str(te.get("master_hostname") or (hosts[0] if hosts else "")),
                   per_host=int(fw.get(PER_HOST) or gpus or 1), num_processes=int(num) if num else None,
                   interface=str(te.get("network_interface_name") or "eth0"),
                   custom_mpi_options=str(fw.get(CUSTOM_MPI_OPTIONS) or ""))


def distributed(env: dict[str, str]) -> bool:
    return bool(cluster(env).kind)


def variables(c: Cluster) -> dict[str, str]:
    """What the PyTorch container sets before any launcher: the rendezvous and NCCL's network."""
    return {"MASTER_ADDR": c.master, "MASTER_PORT": MASTER_PORT, "NCCL_SOCKET_IFNAME": c.interface,
            "NCCL_IB_DISABLE": "1", "NCCL_DEBUG": "WARN"}


def torchrun(c: Cluster, program: str, args: list[str], python: str) -> list[str]:
    if not program.endswith(".py"):
        raise ValueError(f"torch_distributed runs a Python script; the entry point is {program!r}")
    cmd = [python, "-m", "torch.distributed.run", "--nnodes", str(len(c.hosts)), "--nproc_per_node",
           str(c.per_host)]
    if len(c.hosts) > 1:
        cmd += ["--master_addr", c.master, "--master_port", MASTER_PORT, "--node_rank",
                str(c.hosts.index(c.current))]
    return cmd + [program] + args


def mpirun(c: Cluster, user_command: list[str], python: str) -> list[str]:
    """The master's ``mpirun`` command line (the toolkit's options; no sshd: our rsh agent)."""
    mpirun_bin = shutil.which("mpirun")
    if mpirun_bin is None:
        raise FileNotFoundError("mpirun is not installed on this trainforge host (Debian: apt-get install "
                                "openmpi-bin)")
    hosts = c.hosts if c.per_host == 1 else [f"{h}:{c.per_host}" for h in c.hosts]
    known, extra = _custom_options(c.custom_mpi_options)
    cmd = [mpirun_bin, "--host", ",".join(hosts), "-np", str(c.num_processes or c.per_host * len(c.hosts)),
           "--allow-run-as-root", "--tag-output",
           "-mca", "plm_rsh_agent", f"{python} {os.path.abspath(mpi_remote.__file__)} agent",
           "-mca", "btl_tcp_if_include", c.interface, "-mca", "oob_tcp_if_include", c.interface,
           "-mca", "plm_rsh_no_tree_spawn", "1", "-bind-to", "none", "-map-by", "slot",
           "-mca", "pml", "ob1", "-mca", "btl", "^openib", "-mca", "orte_abort_on_non_zero_status", "1",
           "-mca", "btl_vader_single_copy_mechanism", "none",
           "-x", f"NCCL_SOCKET_IFNAME={c.interface}", "-x", f"NCCL_DEBUG={known.get('NCCL_DEBUG', 'INFO')}",
           "-x", "PATH", "-x", "PYTHONPATH"]
    if os.environ.get("LD_LIBRARY_PATH"):
        cmd += ["-x", "LD_LIBRARY_PATH"]
    return cmd + extra + user_command


def _custom_options(text: str) -> tuple[dict[str, str], list[str]]:
    """``--NCCL_DEBUG X`` (or ``=X``) is the toolkit's one known option; the rest goes to mpirun."""
    words, known, extra = shlex.split(text), {}, []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--NCCL_DEBUG" and i + 1 < len(words):
            known["NCCL_DEBUG"], i = words[i + 1], i + 2
            continue
        if word.startswith("--NCCL_DEBUG="):
            known["NCCL_DEBUG"] = word.split("=", 1)[1]
        else:
            extra.append(word)
        i += 1
    return known, extra


def rank_command(c: Cluster, user_command: list[str], python: str) -> list[str]:
    """What each MPI rank runs: mpi4py's runner for a Python script (when installed), and for
    ``pytorchddp`` the rank variables torch's ``env://`` reads."""
    cmd = list(user_command)
    if cmd and cmd[0] == python and _has_mpi4py():
        cmd = [python, "-m", "mpi4py"] + cmd[1:]
    if c.kind == "pytorchddp":
        cmd = [python, os.path.abspath(mpi_remote.__file__), "ranks"] + cmd
    return cmd


def _has_mpi4py() -> bool:
    return importlib.util.find_spec("mpi4py") is not None


def log(message: str) -> None:
    print(f"trainforge launcher: {message}", flush=True)


def plan(c: Cluster, program: str, user_command: list[str], args: list[str]) -> list[str] | None:
    """The command this host runs in place of ``user_command``; None when it only serves MPI."""
    python = sys.executable
    if c.kind == "torchrun":
        cmd = torchrun(c, program, args, python)
        log(f"torch_distributed: {len(c.hosts)} hosts x {c.per_host} processes, rendezvous on "
            f"{c.master}:{MASTER_PORT}")
        return cmd
    if not c.is_master:
        return None
    deadline = time.monotonic() + WORKER_WAIT_SECONDS
    for host in c.hosts:
        if host != c.current and not mpi_remote.wait_until_serving(host, deadline):
            raise TimeoutError(f"MPI worker {host} did not come up within {WORKER_WAIT_SECONDS:.0f} s")
    log(f"{c.kind}: mpirun over {len(c.hosts)} hosts x {c.per_host} processes")
    return mpirun(c, rank_command(c, user_command, python), python)


def serve_worker(c: Cluster, env: dict[str, str], code_dir: str) -> int:
    """An MPI worker host: start the master's ``orted`` when asked, return when it has ended."""
    log(f"MPI worker: serving {c.master}'s mpirun on port {mpi_remote.PORT}")
    rc = mpi_remote.serve(c.master, env, code_dir)
    log(f"MPI worker: the orted exited with status {rc}")
    return 0
