"""Device check for a machine with an NVIDIA GPU (issue 10, part 3): a training job runs torch on cuda:0.

    timeout 420 python3 bench/gpu_check.py [--python PYTHON] [--timeout 300]

Run it on the GPU machine, in the repository root (``PYTHONPATH=src`` if trainforge is not installed
from this checkout). It prints what ``sandbox/gpus.py`` discovers (device nodes, control devices,
driver libraries, binaries, driver version) and what an instance given GPU 0 gets (OCI devices,
mounts, environment); then starts a trainforge server on a free port with its default capacity
(``capacity_gpus`` = the GPUs found) and runs one job on ``ml.g5.xlarge`` (1 GPU) whose code, run by
an interpreter that has torch, prints ``torch.cuda.device_count()``, the name of ``cuda:0`` and a
matmul computed there. The same code runs as a bare subprocess beside it (the peer). One table:
each figure in the job, on the bare host, and what it must be. Exit status 0 when the job
completed and agrees (one GPU visible, ``SM_NUM_GPUS`` 1, ``CUDA_VISIBLE_DEVICES`` ``0`` inside a
sandbox that maps only the instance's nodes, the host index under isolation none/namespace, the
right matmul); 1 otherwise; 2 when the machine has no GPU or no torch. Nothing is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SRC = str(Path(__file__).resolve().parent.parent / "src")
sys.path.insert(0, SRC)
os.environ["PYTHONPATH"] = SRC + os.pathsep + os.environ.get("PYTHONPATH", "")  # the server: this checkout's

import boto3
from botocore.config import Config as BotoConfig
from overhead import start_server

from trainforge.sandbox import gpus

TORCH_CODE = """
import json, os, time
t0 = time.perf_counter()
import torch
a = torch.arange(1.0, 5.0, device="cuda:0").reshape(2, 2)
result = (a @ a).cpu().tolist()
torch.cuda.synchronize()
print("GPUCHECK " + json.dumps({
    "device_count": torch.cuda.device_count(), "name": torch.cuda.get_device_name(0), "matmul": result,
    "seconds": round(time.perf_counter() - t0, 3),
    **{k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "SM_NUM_GPUS")}}),
    flush=True)
"""
RUN_CHANNEL = "import os, runpy; runpy.run_path(os.environ['SM_CHANNEL_CODE'] + '/check.py')"
MATMUL = [[7.0, 10.0], [15.0, 22.0]]


def torch_python(given: str | None) -> str | None:
    for candidate in [given] if given else [sys.executable, shutil.which("python3"), shutil.which("python")]:
        if candidate and subprocess.run([candidate, "-c", "import torch"], capture_output=True, check=False).returncode == 0:
            return candidate
    return None


def job_lines(endpoint: str, name: str) -> list[str]:
    logs = boto3.client("logs", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x",
                        aws_secret_access_key="x")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                        logStreamNamePrefix=name)["logStreams"]
    return [e["message"] for s in streams for e in logs.get_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=s["logStreamName"])["events"]]


def run_job(endpoint: str, data: Path, timeout: float) -> tuple[dict[str, Any], list[str], float]:
    sm = boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x",
                      aws_secret_access_key="x", config=BotoConfig(retries={"max_attempts": 0}))
    name = f"gpucheck-{int(time.time())}"
    (data / "code").mkdir()
    (data / "code" / "check.py").write_text(TORCH_CODE)  # a channel: the instance may see no host path
    start = time.monotonic()
    sm.create_training_job(
        TrainingJobName=name, RoleArn="arn:aws:iam::000000000000:role/GpuCheck",
        AlgorithmSpecification={"TrainingImage": "gpucheck/torch:1", "TrainingInputMode": "File",
                                "ContainerArguments": [RUN_CHANNEL]},
        InputDataConfig=[{"ChannelName": "code", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"file://{data / 'code'}/", "S3DataDistributionType": "FullyReplicated"}}}],
        OutputDataConfig={"S3OutputPath": f"file://{data / 'out'}"},
        ResourceConfig={"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": int(timeout)})
    deadline = start + timeout
    while True:
        described = sm.describe_training_job(TrainingJobName=name)
        if described["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
            break
        if time.monotonic() > deadline:
            sm.stop_training_job(TrainingJobName=name)
            break
        time.sleep(0.2)
    return described, job_lines(endpoint, name), time.monotonic() - start


def found(lines: list[str]) -> dict[str, Any]:
    for line in lines:
        if line.startswith("GPUCHECK "):
            return json.loads(line[len("GPUCHECK "):])
    return {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", help="an interpreter with torch (default: this one, python3, python)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds the job may take (300)")
    args = ap.parse_args()
    host = gpus.discover()
    print(f"driver {host.driver_version}; GPUs {list(host.devices)}; control {list(host.control)}")
    print(f"libraries ({len(host.libraries)}): {', '.join(os.path.basename(p) for p in host.libraries)}")
    print(f"links {len(host.links)}; binaries {list(host.binaries)}; firmware {len(host.firmware)}; "
          f"ipcs {list(host.ipcs)}")
    if not host.devices:
        print("no NVIDIA GPU here: nothing to check")
        return 2
    devices, mounts, env = gpus.oci_parts(host, [0])
    print("GPU 0 gets devices", [(d["path"], d["major"], d["minor"]) for d in devices])
    print(f"  {len(mounts)} mounts, environment {env}, cgroup rules {len(gpus.device_cgroup_rules(devices))}")
    python = torch_python(args.python)
    if python is None:
        print("no interpreter with torch here: give one with --python")
        return 2
    bare_start = time.monotonic()
    bare_run = subprocess.run([python, "-c", TORCH_CODE], capture_output=True, text=True,
                              timeout=args.timeout, check=False)
    bare = found(bare_run.stdout.splitlines())
    bare_seconds = time.monotonic() - bare_start
    data = Path(tempfile.mkdtemp(prefix="tf-gpucheck-"))
    proc, endpoint = start_server(data, {"images": [{"image": "gpucheck/torch:*", "kind": "command",
                                                     "entrypoint": [python, "-c"]}], "stop_grace_seconds": 5})
    try:
        described, lines, job_seconds = run_job(endpoint, data, args.timeout)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    job = found(lines)
    spec: dict[str, Any] = next((json.loads(p.read_text()) for p in (data / "jobs").glob("*/*/*/attempt-*/algo-1/spec.json")), {})
    inside = "0" if spec.get("isolation") not in ("none", "namespace") else ",".join(map(str, spec.get("gpus", [])))
    rows = [("status", described["TrainingJobStatus"], "-", "Completed"),
            ("isolation / spec gpus", f"{spec.get('isolation')} / {spec.get('gpus')}", "-", "- / [0]"),
            ("torch.cuda.device_count()", job.get("device_count"), bare.get("device_count"), 1),
            ("device name", job.get("name"), bare.get("name"), bare.get("name")),
            ("matmul on cuda:0", job.get("matmul"), bare.get("matmul"), MATMUL),
            ("CUDA_VISIBLE_DEVICES", job.get("CUDA_VISIBLE_DEVICES"), bare.get("CUDA_VISIBLE_DEVICES"), inside),
            ("NVIDIA_VISIBLE_DEVICES", job.get("NVIDIA_VISIBLE_DEVICES"), bare.get("NVIDIA_VISIBLE_DEVICES"), inside),
            ("SM_NUM_GPUS", job.get("SM_NUM_GPUS"), "-", "1"),
            ("torch import + matmul s", job.get("seconds"), bare.get("seconds"), "-"),
            ("create → Completed s (bare: run)", round(job_seconds, 2), round(bare_seconds, 2), "-")]
    print(f"\n{'figure':34} {'job':28} {'bare host':28} must be")
    for label, in_job, on_host, want in rows:
        print(f"{label:34} {in_job!s:28} {on_host!s:28} {want}")
    ok = (described["TrainingJobStatus"] == "Completed" and job.get("device_count") == 1
          and job.get("matmul") == MATMUL and job.get("name") == bare.get("name")
          and job.get("CUDA_VISIBLE_DEVICES") == inside and job.get("SM_NUM_GPUS") == "1")
    if not ok:
        print("\nFAILED:", described.get("FailureReason"), "\n" + "\n".join(lines[-40:]))
        if bare_run.returncode:
            print("bare run:", bare_run.stderr[-2000:])
    shutil.rmtree(data, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
