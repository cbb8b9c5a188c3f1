"""images/launchers.py as a function of SM_TRAINING_ENV: which launcher, and its command line."""

from __future__ import annotations

import json
from typing import Any

import pytest

from trainforge.images import launchers


def env_of(fw: dict[str, Any], host: str = "algo-2", group: str = "homogeneousCluster",
           dist_groups: list[str] | None = None, gpus: int = 0) -> dict[str, str]:
    hosts = ["algo-1", "algo-2", "algo-3"]
    return {"SM_TRAINING_ENV": json.dumps({
        "additional_framework_parameters": fw, "current_host": host, "current_instance_group": group,
        "distribution_instance_groups": ["homogeneousCluster"] if dist_groups is None else dist_groups,
        "distribution_hosts": hosts, "hosts": hosts, "master_hostname": "algo-1", "num_gpus": gpus,
        "network_interface_name": "eth0"})}


def test_torch_distributed_runs_torchrun_with_this_hosts_node_rank() -> None:
    c = launchers.cluster(env_of({"sagemaker_torch_distributed_enabled": True}, gpus=4))
    assert (c.kind, c.per_host) == ("torchrun", 4)
    assert launchers.torchrun(c, "train.py", ["--lr", "1"], "/py") == [
        "/py", "-m", "torch.distributed.run", "--nnodes", "3", "--nproc_per_node", "4", "--master_addr", "algo-1",
        "--master_port", "7777", "--node_rank", "1", "train.py", "--lr", "1"]
    assert launchers.variables(c)["MASTER_ADDR"] == "algo-1"
    with pytest.raises(ValueError):
        launchers.torchrun(c, "train.sh", [], "/py")


def test_mpi_comes_first_and_counts_processes_per_host() -> None:
    fw = {"sagemaker_mpi_enabled": True, "sagemaker_torch_distributed_enabled": True,
          "sagemaker_mpi_num_of_processes_per_host": 2, "sagemaker_mpi_custom_mpi_options": "--NCCL_DEBUG WARN -v"}
    c = launchers.cluster(env_of(fw, host="algo-1"))
    assert (c.kind, c.per_host, c.is_master) == ("mpi", 2, True)
    cmd = launchers.mpirun(c, ["/py", "train.py"], "/py")
    assert cmd[cmd.index("--host") + 1] == "algo-1:2,algo-2:2,algo-3:2" and cmd[cmd.index("-np") + 1] == "6"
    assert "NCCL_DEBUG=WARN" in cmd and cmd[-3:] == ["-v", "/py", "train.py"]
    assert cmd[cmd.index("plm_rsh_agent") + 1].endswith("mpi_remote.py agent")


def test_pytorchddp_ranks_get_torchs_variables() -> None:
    c = launchers.cluster(env_of({"sagemaker_pytorch_ddp_enabled": True}))
    assert c.kind == "pytorchddp"
    cmd = launchers.rank_command(c, ["/py", "train.py"], "/py")
    assert cmd[:3] == ["/py", cmd[1], "ranks"] and cmd[1].endswith("mpi_remote.py") and cmd[-1] == "train.py"


def test_no_launcher_outside_the_distribution_groups_or_without_a_flag() -> None:
    assert launchers.cluster(env_of({"sagemaker_torch_distributed_enabled": True}, group="data",
                                    dist_groups=["train"])).kind == ""
    assert launchers.cluster(env_of({})).kind == ""
    assert not launchers.distributed({})


@pytest.mark.parametrize("key", sorted(launchers.REFUSED))
def test_launchers_trainforge_lacks_are_refused(key: str) -> None:
    assert key in (launchers.refusal({key: "true"}) or "")
    assert launchers.refusal({key: "false"}) is None
