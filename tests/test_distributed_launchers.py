"""The framework containers' distributed launchers in script mode (images/launchers.py), on two
sandboxed instances each, with torch 2.13.0 (CPU, gloo):

- the SageMaker Python SDK v2 (``PyTorch`` estimator, ``distribution={"torch_distributed": ...}``)
  and v3 (``ModelTrainer`` with ``Torchrun()``) run an unchanged torchrun-style script that
  all-reduces across both hosts and takes its rank from RANK;
- ``mpi`` (2 hosts x 2 processes, ranks from OMPI_COMM_WORLD_*) and ``pytorchddp`` (the same mpirun,
  ranks from RANK) at once: each all-reduces over its own 4 ranks;
- one host exiting 1 fails the job, names that host, and stops the other;
- SMDDP and the TensorFlow parameter server are refused at create.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import minimal_request, read_model, unique_name, wait_for_job
from test_sdk import _line, run_snippet, sdk_environment
from torch_env import torch_python

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root")

SDK_DIR = Path(__file__).resolve().parent / "sdk"
PYTORCH_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5.1-gpu-py311"

MPI_SCRIPT = r'''
import datetime, json, os, sys
import torch
import torch.distributed as dist
if sys.argv[sys.argv.index("--mode") + 1] == "mpi":  # plain mpirun: Open MPI's own variables
    rank, world = int(os.environ["OMPI_COMM_WORLD_RANK"]), int(os.environ["OMPI_COMM_WORLD_SIZE"])
else:  # pytorchddp: the rank variables torch's env:// reads
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
dist.init_process_group("gloo", init_method=f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
                        rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120))
value = torch.tensor([float(os.environ["JOB_BASE"]) + rank])
dist.all_reduce(value)
out = {"rank": rank, "world": world, "sum": value.item(), "host": os.environ["SM_CURRENT_HOST"],
       "local": int(os.environ["OMPI_COMM_WORLD_LOCAL_RANK"])}
with open(os.path.join(os.environ["SM_MODEL_DIR"], f"rank-{rank}.json"), "w") as f:
    json.dump(out, f)
dist.destroy_process_group()
'''

FAILING_SCRIPT = r'''
import os, sys, time
if os.environ["SM_CURRENT_HOST"] == "algo-2":
    print("algo-2 gives up", file=sys.stderr, flush=True)
    sys.exit(1)
open(os.path.join(os.environ["SM_MODEL_DIR"], "algo-1-started"), "w").close()
time.sleep(600)
'''


def torch_config(**more: Any) -> dict[str, Any]:
    """The PyTorch framework image in script mode on the torch test environment; the GPU type the
    SDK asks for maps to a CPU shape this machine can hold twice (config ``instance_types``)."""
    return {"images": [{"image": "*.dkr.ecr.*.amazonaws.com/pytorch-training:*", "python": torch_python()}],
            "instance_types": {"ml.p4d.24xlarge": {"cpus": 1, "memory_mb": 2048, "gpus": 0}}, **more}


def _ranks(model: dict[str, bytes]) -> list[dict[str, Any]]:
    return sorted((json.loads(v) for k, v in model.items() if k.startswith("rank-")), key=lambda r: r["rank"])


@pytest.mark.parametrize("sdk,snippet", [("sdk2", "v2_torch_distributed.py"), ("sdk3", "v3_torchrun.py")])
def test_sdk_torch_distributed_all_reduces_across_two_hosts(server_factory: Any, s3_endpoint: str, tmp_path: Path,
                                                            sdk: str, snippet: str) -> None:
    srv = server_factory(torch_config())
    bucket = f"tf-dist-{unique_name('b')[-12:].replace('-', '')}"
    output = run_snippet(sdk, snippet, sdk_environment(srv, s3_endpoint, tmp_path, bucket))
    job = _line(output, "job:").split()[0]
    desc = srv.client().describe_training_job(TrainingJobName=job)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    ranks = _ranks(read_model(desc["ModelArtifacts"]["S3ModelArtifacts"]))
    # one process per host (no GPUs here), rank 0 on algo-1, both summing 1 + 2
    assert [(r["rank"], r["world"], r["local_rank"], r["host"], r["sum"]) for r in ranks] == [
        (0, 2, 0, "algo-1", 3.0), (1, 2, 0, "algo-2", 3.0)], ranks
    assert [r["address"] for r in ranks] == ["10.200.0.11", "10.200.0.12"]
    if sdk == "sdk2":
        assert "rank 1 of 2 on algo-2: all-reduced 3" in output  # fit(logs=True) streamed algo-2's log too
        assert json.loads(desc["HyperParameters"]["sagemaker_torch_distributed_enabled"]) is True


def _script_job(name: str, code: Path, out: Path, hyperparameters: dict[str, Any], env: dict[str, str],
                count: int = 2) -> dict[str, Any]:
    hps = {"sagemaker_program": "train.py", "sagemaker_submit_directory": f"file://{code}",
           **hyperparameters}
    req = minimal_request(name, OutputDataConfig={"S3OutputPath": f"file://{out}"},
                          HyperParameters={k: json.dumps(v) for k, v in hps.items()}, Environment=env)
    req["AlgorithmSpecification"] = {"TrainingImage": PYTORCH_IMAGE, "TrainingInputMode": "File"}
    req["ResourceConfig"] = {"InstanceType": "ml.p4d.24xlarge", "InstanceCount": count, "VolumeSizeInGB": 1}
    return req


def _submit(sm: Any, tmp_path: Path, script: str, prefix: str, hyperparameters: dict[str, Any],
            count: int = 2) -> str:
    """``script`` as the job's train.py (a directory submitted by file://), created; its name."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(script)
    name = unique_name(prefix)
    sm.create_training_job(**_script_job(name, code, tmp_path / "out", hyperparameters, {}, count))
    return name


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="Open MPI is not installed (scripts/test installs it)")
def test_mpi_and_pytorchddp_jobs_at_once_each_reduce_over_their_four_ranks(server_factory: Any,
                                                                          tmp_path: Path) -> None:
    srv = server_factory(torch_config(allowed_local_roots=[str(tmp_path)]))
    sm = srv.client()
    out = tmp_path / "out"
    jobs: dict[str, tuple[str, int]] = {}
    for kind, flag, base in (("mpi", "sagemaker_mpi_enabled", 10), ("ddp", "sagemaker_pytorch_ddp_enabled", 100)):
        code = tmp_path / f"code-{kind}"
        code.mkdir()
        (code / "train.py").write_text(MPI_SCRIPT)
        name = unique_name(f"mpi-{kind}")
        hps = {flag: True, "sagemaker_mpi_num_of_processes_per_host": 2, "sagemaker_instance_type": "ml.p4d.24xlarge",
               "sagemaker_mpi_custom_mpi_options": "--NCCL_DEBUG WARN", "mode": "mpi" if kind == "mpi" else "ddp"}
        req = _script_job(name, code, out, hps, {"JOB_BASE": str(base)})
        sm.create_training_job(**req)
        jobs[name] = (kind, base)
    for name, (kind, base) in jobs.items():
        desc = wait_for_job(sm, name, timeout=300)
        assert desc["TrainingJobStatus"] == "Completed", (kind, desc.get("FailureReason"))
        ranks = _ranks(read_model(desc["ModelArtifacts"]["S3ModelArtifacts"]))
        # 4 ranks, 2 per host, mapped by slot; each summed only its own job's base + rank
        assert [(r["rank"], r["world"], r["host"], r["local"]) for r in ranks] == [
            (0, 4, "algo-1", 0), (1, 4, "algo-1", 1), (2, 4, "algo-2", 0), (3, 4, "algo-2", 1)], (kind, ranks)
        assert {r["sum"] for r in ranks} == {4 * base + 6.0}, (kind, ranks)


def test_one_host_failing_fails_the_job_naming_it_and_stops_the_other(server_factory: Any, tmp_path: Path) -> None:
    srv = server_factory(torch_config(allowed_local_roots=[str(tmp_path)]))
    sm = srv.client()
    name = _submit(sm, tmp_path, FAILING_SCRIPT, "dist-fail", {"sagemaker_torch_distributed_enabled": True})
    desc = wait_for_job(sm, name, timeout=120)  # long before algo-1's 600 s sleep would end
    assert desc["TrainingJobStatus"] == "Failed"
    reason = desc["FailureReason"]
    # torchrun's own report of the failed worker ends the stderr tail the toolkit's format keeps
    assert reason.startswith("AlgorithmError: (algo-2) ExecuteUserScriptError:\nExitCode 1"), reason
    assert "--node_rank 1 train.py" in reason, reason
    # algo-1 had started and was stopped (its model directory was still uploaded)
    model = read_model(f"file://{tmp_path}/out/{name}/output/model.tar.gz")
    assert "algo-1-started" in model


@pytest.mark.parametrize("flag,words", [
    ("sagemaker_distributed_dataparallel_enabled", "SMDDP"),
    ("sagemaker_parameter_server_enabled", "parameter-server"),
])
def test_launchers_trainforge_lacks_are_refused_at_create(server_factory: Any, tmp_path: Path, flag: str,
                                                          words: str) -> None:
    sm = server_factory(torch_config(allowed_local_roots=[str(tmp_path)])).client()
    req = _script_job(unique_name("refused"), tmp_path, tmp_path / "out", {flag: True}, {})
    with pytest.raises(ClientError) as err:
        sm.create_training_job(**req)
    error = err.value.response["Error"]
    assert error["Code"] == "ValidationException" and flag in error["Message"] and words in error["Message"]
    # the same hyperparameter with the image's entrypoint replaced (no launcher): accepted
    req["TrainingJobName"] = unique_name("byoc")
    req["AlgorithmSpecification"]["ContainerEntrypoint"] = ["/bin/sh", "-c", "true"]
    sm.create_training_job(**req)
    assert wait_for_job(sm, req["TrainingJobName"], timeout=60)["TrainingJobStatus"] == "Completed"


GROUPS_SCRIPT = r'''
import json, os
host = os.environ["SM_CURRENT_HOST"]
rc = json.load(open("/opt/ml/input/config/resourceconfig.json"))
te = json.loads(os.environ["SM_TRAINING_ENV"])
seen = {"group": rc["current_group_name"], "groups": rc["instance_groups"], "rank": os.environ.get("RANK"),
        "world": os.environ.get("WORLD_SIZE"), "master": os.environ.get("MASTER_ADDR"),
        "group_hosts": te["current_instance_group_hosts"], "dist_hosts": te["distribution_hosts"],
        "channels": json.loads(os.environ["SM_CHANNELS"])}
if seen["rank"] is not None:
    import datetime, torch, torch.distributed as dist
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    value = torch.tensor([1.0])
    dist.all_reduce(value)
    seen["sum"] = value.item()
    dist.destroy_process_group()
with open(os.path.join(os.environ["SM_MODEL_DIR"], f"seen-{host}.json"), "w") as f:
    json.dump(seen, f)
'''


def test_distribution_applies_to_the_instance_groups_it_names(server_factory: Any, tmp_path: Path) -> None:
    srv = server_factory(torch_config(allowed_local_roots=[str(tmp_path)]))
    sm = srv.client()
    code, data = tmp_path / "code", tmp_path / "data"
    code.mkdir()
    data.mkdir()
    (code / "train.py").write_text(GROUPS_SCRIPT)
    (data / "x.csv").write_text("x\n")
    name = unique_name("dist-groups")
    req = _script_job(name, code, tmp_path / "out", {"sagemaker_torch_distributed_enabled": True,
                                                    "sagemaker_distribution_instance_groups": ["train"]}, {})
    req["ResourceConfig"] = {"VolumeSizeInGB": 1, "InstanceGroups": [
        {"InstanceGroupName": "data", "InstanceType": "ml.m5.large", "InstanceCount": 1},
        {"InstanceGroupName": "train", "InstanceType": "ml.p4d.24xlarge", "InstanceCount": 2}]}
    req["InputDataConfig"] = [{"ChannelName": "raw", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": f"file://{data}/", "InstanceGroupNames": ["data"]}}}]
    sm.create_training_job(**req)
    desc = wait_for_job(sm, name, timeout=240)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    model = read_model(desc["ModelArtifacts"]["S3ModelArtifacts"])
    seen = {h: json.loads(model[f"seen-{h}.json"]) for h in ("algo-1", "algo-2", "algo-3")}
    groups = [{"instance_group_name": "data", "instance_type": "ml.m5.large", "hosts": ["algo-1"]},
              {"instance_group_name": "train", "instance_type": "ml.p4d.24xlarge", "hosts": ["algo-2", "algo-3"]}]
    assert all(s["groups"] == groups and s["dist_hosts"] == ["algo-2", "algo-3"] for s in seen.values()), seen
    # the data group: its own script, once, with the channel routed to it; no launcher
    assert (seen["algo-1"]["group"], seen["algo-1"]["rank"], seen["algo-1"]["channels"]) == ("data", None, ["raw"])
    # the train group: torchrun over its two hosts, rendezvous on its first host
    assert [(s["group"], s["rank"], s["world"], s["master"], s["sum"], s["channels"], s["group_hosts"])
            for s in (seen["algo-2"], seen["algo-3"])] == [
        ("train", "0", "2", "algo-2", 2.0, [], ["algo-2", "algo-3"]),
        ("train", "1", "2", "algo-2", 2.0, [], ["algo-2", "algo-3"])], seen
