"""The built-in XGBoost algorithm beside a bare xgboost.train (issue 14). One command, prints a table.

    python bench/xgboost.py [--rows 200000] [--features 50] [--rounds 100] [--runs 3]

Measures, on the embedded default (SQLite, local backend, the sandbox when available), the same run:
  (a) a job on the sagemaker-xgboost:1.7-1 image, CSV train channel (file://, as staged for a local
      job), num_round rounds: CreateTrainingJob sent -> DescribeTrainingJob says Completed;
  (b) the same work in a bare Python process on the same file: read the CSV (pyarrow), build the
      DMatrix, xgboost.train with the train set evaluated every round, save the model (the peer);
  (c) the job-start overhead as bench/overhead.py measures it: a no-op job, create -> Completed.
Target: (a) <= 1.1 x (b) + (c). Figures only; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig
from overhead import ended, start_server  # bench/ is this script's directory, first on sys.path

IMAGE = "246618743249.dkr.ecr.us-west-2.amazonaws.com/sagemaker-xgboost:1.7-1"

BARE = r"""
import sys
import numpy as np, xgboost
from pyarrow import csv
path, rounds, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
table = csv.read_csv(path, read_options=csv.ReadOptions(autogenerate_column_names=True))
data = np.column_stack([c.to_numpy() for c in table.columns]).astype(np.float32)
dtrain = xgboost.DMatrix(data[:, 1:], label=data[:, 0], nthread=-1)
booster = xgboost.train({"objective": "reg:squarederror"}, dtrain, num_boost_round=rounds,
                        evals=[(dtrain, "train")], verbose_eval=True)
booster.save_model(out)
"""

MAKE_DATA = r"""
import sys
import numpy as np
import pyarrow as pa
from pyarrow import csv
rows, features, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
x = rng.normal(size=(rows, features)).astype(np.float32)
y = x[:, :5] @ np.array([1.5, -2.0, 0.5, 3.0, 1.0], dtype=np.float32) + np.sin(3 * x[:, 5]) + rng.normal(
    scale=0.1, size=rows).astype(np.float32)
table = pa.table({f"c{i}": col for i, col in enumerate([y, *x.T])})
csv.write_csv(table, path, csv.WriteOptions(include_header=False))
"""


def job(name: str, data: Path, out: Path, rounds: int) -> dict:
    return {
        "TrainingJobName": name, "RoleArn": "arn:aws:iam::000000000000:role/Bench",
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "HyperParameters": {"num_round": str(rounds), "objective": "reg:squarederror"},
        "InputDataConfig": [{"ChannelName": "train", "ContentType": "text/csv", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"file://{data}/", "S3DataDistributionType": "FullyReplicated"}}}],
        "OutputDataConfig": {"S3OutputPath": f"file://{out}", "CompressionType": "NONE"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }


def noop(name: str, out: Path) -> dict:
    return {
        "TrainingJobName": name, "RoleArn": "arn:aws:iam::000000000000:role/Bench",
        "AlgorithmSpecification": {"TrainingImage": "bench/command:1", "TrainingInputMode": "File",
                                   "ContainerEntrypoint": [sys.executable, "-c"], "ContainerArguments": ["pass"]},
        "OutputDataConfig": {"S3OutputPath": f"file://{out}", "CompressionType": "NONE"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


POLL_S = 0.25  # the end is read from TrainingEndTime, so polling fast buys no precision


def completed(sm: object, request: dict) -> float:
    """CreateTrainingJob sent -> the job's TrainingEndTime (the server's clock is this machine's).
    Polled every POLL_S: a describe every 10 ms kept the client and the server busy on ~0.4 of a
    core, which preempted xgboost's OpenMP threads (a round waits for its slowest thread): 20-25 %
    of the job's training time was the bench's own polling."""
    t0 = time.time()
    sm.create_training_job(**request)  # type: ignore[attr-defined]
    d = ended(sm, request["TrainingJobName"], POLL_S)
    if d["TrainingJobStatus"] != "Completed":
        raise SystemExit(f"{request['TrainingJobName']}: {d['TrainingJobStatus']}: {d.get('FailureReason')}")
    return d["TrainingEndTime"].timestamp() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--features", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tf-bench-xgboost-"))
    data, out = work / "train", work / "out"
    data.mkdir()
    subprocess.run([sys.executable, "-c", MAKE_DATA, str(args.rows), str(args.features), str(data / "train.csv")],
                   check=True, cwd=work)
    cpus = os.cpu_count() or 1
    config = {"allowed_local_roots": [str(work)],
              "instance_types": {"ml.m5.xlarge": {"cpus": cpus, "memory_mb": 16384}},
              "images": [{"image": "bench/*", "kind": "command", "entrypoint": ["/bin/sh", "-c"]}]}
    (work / "data").mkdir()
    proc, endpoint = start_server(work / "data", config)
    sm = boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                      aws_secret_access_key="bench", config=BotoConfig(retries={"max_attempts": 0}))
    builtin, bare, overhead = [], [], []
    try:
        sm.list_training_jobs()
        for i in range(args.runs):  # interleaved: the machine's load falls on both alike
            builtin.append(completed(sm, job(f"xgb-{i}", data, out, args.rounds)))
            t0 = time.time()
            subprocess.run([sys.executable, "-c", BARE, str(data / "train.csv"), str(args.rounds),
                            str(work / f"bare-{i}.ubj")], check=True, cwd=work, stdout=subprocess.DEVNULL)
            bare.append(time.time() - t0)
            overhead.append(completed(sm, noop(f"noop-{i}", out)))
        banner = (work / "data" / "server.log").read_text()
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    isolation = banner.rsplit("isolation: ", 1)[1].split(")")[0] if "isolation: " in banner else "?"
    a, b, c = statistics.median(builtin), statistics.median(bare), statistics.median(overhead)
    limit = 1.1 * b + c
    print(f"\nbuilt-in XGBoost, {args.rows:,} x {args.features} CSV rows, {args.rounds} rounds, {args.runs} runs "
          f"each, {cpus} cores, isolation: {isolation}\n")
    print(f"{'figure':52} {'median':>9} {'min':>9}")
    for label, values in (("(a) built-in job: create -> Completed", builtin),
                          ("(b) bare python: read CSV + xgboost.train + save", bare),
                          ("(c) job-start overhead: no-op job create -> Completed", overhead)):
        print(f"{label:52} {statistics.median(values):8.2f}s {min(values):8.2f}s")
    print(f"\ntarget (a) <= 1.1 x (b) + (c) = {limit:.2f} s: {'met' if a <= limit else 'NOT met'} "
          f"((a) / (b) = {a / b:.2f})")
    print(json.dumps({"builtin_s": builtin, "bare_s": bare, "overhead_s": overhead}))


if __name__ == "__main__":
    main()
