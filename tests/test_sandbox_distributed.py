"""Two 2-instance jobs at once, both on MASTER_PORT 7777, each a real torch.distributed gloo
all-reduce across its instances (issue 10): each gets its own sums and never meets the other.
The same with EnableNetworkIsolation: the all-reduce works, the S3 endpoint and the server do not
answer."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import minimal_request, unique_name, wait_for_job
from torch_env import torch_python

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root")

SCRIPT = r'''
import json, os, socket, time
import torch
import torch.distributed as dist
hosts = json.loads(os.environ["SM_HOSTS"])
rank = hosts.index(os.environ["SM_CURRENT_HOST"])
dist.init_process_group("gloo", init_method=f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
                        rank=rank, world_size=len(hosts), timeout=__import__("datetime").timedelta(seconds=60))
value = torch.tensor([float(os.environ["JOB_BASE"]) + rank + 1])
dist.all_reduce(value)
dist.barrier()
result = {"rank": rank, "sum": value.item(), "address": socket.gethostbyname(os.environ["SM_CURRENT_HOST"])}
def probe(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return "connected"
    except OSError as exc:
        return type(exc).__name__
result["s3"] = probe("127.0.0.1", int(os.environ["S3_PORT"]))
result["server"] = probe("127.0.0.1", int(os.environ["SERVER_PORT"]))
with open(f"/opt/ml/model/{os.environ['SM_CURRENT_HOST']}.json", "w") as f:
    json.dump(result, f)
dist.destroy_process_group()
'''


def _job(name: str, code: Path, out: Path, base: int, env: dict[str, str], isolated: bool) -> dict[str, Any]:
    channel = {"ChannelName": "code", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": f"file://{code}/", "S3DataDistributionType": "FullyReplicated"}}}
    req = minimal_request(name, OutputDataConfig={"S3OutputPath": f"file://{out}", "CompressionType": "NONE"},
                          InputDataConfig=[channel], EnableNetworkIsolation=isolated,
                          Environment={"JOB_BASE": str(base), **env})
    req["AlgorithmSpecification"] = {"TrainingImage": "torch/cpu:2.13", "TrainingInputMode": "File",
                                     "ContainerEntrypoint": ["python3", "/opt/ml/input/data/code/dist.py"]}
    req["ResourceConfig"] = {**req["ResourceConfig"], "InstanceCount": 2, "VolumeSizeInGB": 1}
    return req


@pytest.mark.parametrize("isolated", [False, True])
def test_two_distributed_jobs_at_once_each_reduce_on_their_own_network(server_factory: Any, tmp_path: Path,
                                                                      s3_endpoint: str, isolated: bool) -> None:
    python = torch_python()
    srv = server_factory({"allowed_local_roots": [str(tmp_path)],
                          "images": [{"image": "torch/*", "kind": "command", "python": python,
                                      "entrypoint": ["python"]}]})
    sm = srv.client()
    code, out = tmp_path / "code", tmp_path / "out"
    code.mkdir()
    (code / "dist.py").write_text(SCRIPT)
    env = {"S3_PORT": s3_endpoint.rsplit(":", 1)[1], "SERVER_PORT": str(srv.port)}
    jobs = {unique_name("dist-a"): 10, unique_name("dist-b"): 100}
    for name, base in jobs.items():
        sm.create_training_job(**_job(name, code, out, base, env, isolated))
    for name, base in jobs.items():
        desc = wait_for_job(sm, name, timeout=240)
        assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
        results = {h: json.loads((out / name / "output" / "model" / f"{h}.json").read_text())
                   for h in ("algo-1", "algo-2")}
        # (base + 1) + (base + 2): only this job's two ranks took part
        assert [r["sum"] for r in results.values()] == [2 * base + 3] * 2, results
        assert [r["rank"] for r in results.values()] == [0, 1]
        assert [r["address"] for r in results.values()] == ["10.200.0.11", "10.200.0.12"]
        assert all(r["server"] != "connected" for r in results.values()), results
        assert all((r["s3"] == "connected") is (not isolated) for r in results.values()), results
