"""How much trainforge adds to running a script (issue 3). One command, prints a table.

    python bench/overhead.py [--runs 20] [--jobs 100]

Measures, on the embedded default (SQLite, local backend, namespace isolation when available):
  (a) CreateTrainingJob sent -> first line of user code runs,
  (b) CreateTrainingJob sent -> DescribeTrainingJob says Completed (no inputs, script does nothing),
  (c) the same script as a bare subprocess (the limit),
and the dispatch rate with 100 no-op jobs queued at once. Figures only; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path, config: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cfg = data / "config.json"
    cfg.write_text(json.dumps(config))
    proc = subprocess.Popen([sys.executable, "-m", "trainforge.server", "--port", str(port), "--data-dir",
                             str(data), "--config", str(cfg)], stdout=open(data / "server.log", "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not start: " + (data / "server.log").read_text())


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def request(name: str, out: Path, script: str) -> dict:
    return {
        "TrainingJobName": name, "RoleArn": "arn:aws:iam::000000000000:role/Bench",
        "AlgorithmSpecification": {"TrainingImage": "bench/command:1", "TrainingInputMode": "File",
                                   "ContainerEntrypoint": [sys.executable, "-c"], "ContainerArguments": [script]},
        "OutputDataConfig": {"S3OutputPath": f"file://{out}"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=100)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tf-bench-overhead-"))
    marks = work / "marks"
    marks.mkdir()
    out = work / "out"
    config = {"allowed_local_roots": [str(work)], "images": [{"image": "bench/*", "kind": "command",
                                                              "entrypoint": ["/bin/sh", "-c"]}]}
    (work / "data").mkdir()
    proc, endpoint = start_server(work / "data", config)
    sm = boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                      aws_secret_access_key="bench", config=BotoConfig(retries={"max_attempts": 0}))
    # The user code: its first line records when it ran; then it exits.
    first_line = "import time,sys; open(sys.argv[1] if len(sys.argv)>1 else '{mark}','w').write(repr(time.time()))"
    try:
        sm.list_training_jobs()  # warm the client's connection
        first, complete = [], []
        for i in range(args.runs):
            mark = marks / f"run-{i}"
            name = f"overhead-{i}"
            t0 = time.time()
            sm.create_training_job(**request(name, out, first_line.format(mark=mark)))
            while not mark.exists() or not mark.read_text():
                time.sleep(0.001)
            first.append(float(mark.read_text()) - t0)
            while sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] != "Completed":
                time.sleep(0.002)
            complete.append(time.time() - t0)
        bare = []
        for i in range(args.runs):
            t0 = time.time()
            subprocess.run([sys.executable, "-c", first_line.format(mark=marks / f"bare-{i}")], check=True)
            bare.append(time.time() - t0)

        # Dispatch: N no-op jobs queued at once; rate = jobs whose user code started per second.
        t0 = time.time()
        names = [f"dispatch-{i}" for i in range(args.jobs)]
        for n in names:
            sm.create_training_job(**request(n, out, first_line.format(mark=marks / n)))
        submitted = time.time() - t0
        while sum(1 for n in names if (marks / n).exists()) < len(names):
            time.sleep(0.01)
        started = max(float((marks / n).read_text() or 0) for n in names) - t0
        done_t = None
        while done_t is None:
            summaries = []
            token = None
            while True:
                page = sm.list_training_jobs(MaxResults=100, NameContains="dispatch-", StatusEquals="Completed",
                                             **({"NextToken": token} if token else {}))
                summaries += page["TrainingJobSummaries"]
                token = page.get("NextToken")
                if not token:
                    break
            if len(summaries) >= len(names):
                done_t = time.time() - t0
            else:
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)
        banner = (work / "data" / "server.log").read_text()
        shutil.rmtree(work, ignore_errors=True)
    isolation = banner.split("isolation: ", 1)[1].split(")")[0] if "isolation: " in banner else "?"

    ms = lambda v: f"{v * 1000:8.1f} ms"  # noqa: E731
    med_b = statistics.median(complete)
    med_c = statistics.median(bare)
    rows = [
        ("(a) create -> first line of user code", ms(statistics.median(first)), ms(pct(first, 0.9)), "<= 150 ms"),
        ("(b) create -> Completed (no-op job)", ms(med_b), ms(pct(complete, 0.9)), ""),
        ("(c) bare subprocess, same script (limit)", ms(med_c), ms(pct(bare, 0.9)), ""),
        ("(b) - (c)", ms(med_b - med_c), ms(pct(complete, 0.9) - pct(bare, 0.9)), "<= 300 ms"),
    ]
    print(f"\ntrainforge overhead, {args.runs} runs each, {os.cpu_count()} cores, isolation: {isolation}\n")
    print(f"{'figure':44} {'median':>11} {'p90':>11}   target")
    for label, a, b, target in rows:
        print(f"{label:44} {a:>11} {b:>11}   {target}")
    print(f"\ndispatch: {args.jobs} no-op jobs queued at once (submitted in {submitted:.2f} s)")
    print(f"  all user code started after {started:.2f} s  -> {args.jobs / started:6.1f} jobs/s dispatched "
          f"(target >= 20 jobs/s)")
    print(f"  all Completed after         {done_t:.2f} s  -> {args.jobs / done_t:6.1f} jobs/s end to end")


if __name__ == "__main__":
    main()
