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
    with open(data / "server.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "trainforge.server", "--port", str(port), "--data-dir",
                                 str(data), "--config", str(cfg)], stdout=log,
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
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def request(name: str, out: Path, script: str, entrypoint: list[str] | None = None) -> dict:
    return {
        "TrainingJobName": name, "RoleArn": "arn:aws:iam::000000000000:role/Bench",
        "AlgorithmSpecification": {"TrainingImage": "bench/command:1", "TrainingInputMode": "File",
                                   "ContainerEntrypoint": entrypoint or [sys.executable, "-c"],
                                   "ContainerArguments": [script]},
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
    # Capacity is not what is measured here: let every queued job run at once.
    config = {"allowed_local_roots": [str(work)], "capacity_cpus": 100000, "capacity_memory_mb": 10**9,
              "instance_types": {"ml.m5.large": {"cpus": 2, "memory_mb": 8192},
                                 "ml.p4d.24xlarge": {"cpus": 100000, "memory_mb": 10**9}},
              "images": [{"image": "bench/*", "kind": "command", "entrypoint": ["/bin/sh", "-c"]}]}
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

        # Dispatch: a blocker holds the whole machine while N no-op jobs queue behind it; when it
        # ends, the scheduler dispatches them all. Rate = N / (last agent up - blocker ended).
        gate = Path(f"/tmp/tfgate-{os.getpid()}")
        blocker = request("dispatch-blocker", out, f"import os,time;[time.sleep(.01) for _ in iter(lambda:os.path.exists('{gate}'),True)]")
        blocker["ResourceConfig"]["InstanceType"] = "ml.p4d.24xlarge"  # configured as the whole machine
        sm.create_training_job(**blocker)
        names = [f"dispatch-{i}" for i in range(args.jobs)]
        for n in names:
            # a no-op job: a shell that records when it ran
            sm.create_training_job(**request(n, out, f"date +%s.%N > {marks / n}", ["/bin/sh", "-c"]))
        assert all(sm.describe_training_job(TrainingJobName=n)["SecondaryStatus"] == "Pending" for n in names[:3])
        gate.write_text("go")
        while sum(1 for n in names if (marks / n).exists() and (marks / n).read_text()) < len(names):
            time.sleep(0.01)
        while sm.describe_training_job(TrainingJobName=names[-1])["TrainingJobStatus"] == "InProgress":
            time.sleep(0.01)
        released = sm.describe_training_job(TrainingJobName="dispatch-blocker")["TrainingEndTime"].timestamp()
        agents_up, user_started, completed = [], [], []
        for n in names:
            d = sm.describe_training_job(TrainingJobName=n)
            while d["TrainingJobStatus"] == "InProgress":
                time.sleep(0.01)
                d = sm.describe_training_job(TrainingJobName=n)
            tr = {t["Status"]: t for t in d["SecondaryStatusTransitions"]}
            agents_up.append(tr["Downloading"]["StartTime"].timestamp())
            user_started.append(float((marks / n).read_text()))
            completed.append(d["TrainingEndTime"].timestamp())
        dispatch = (max(agents_up) - released, max(user_started) - released, max(completed) - released)
    finally:
        proc.terminate()
        proc.wait(10)
        Path(f"/tmp/tfgate-{os.getpid()}").unlink(missing_ok=True)
        banner = (work / "data" / "server.log").read_text()
        shutil.rmtree(work, ignore_errors=True)
    isolation = banner.rsplit("isolation: ", 1)[1].split(")")[0] if "isolation: " in banner else "?"

    def ms(v: float) -> str:
        return f"{v * 1000:8.1f} ms"
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
    print(f"\ndispatch: {args.jobs} no-op jobs (sh -c date) queued behind a job holding the whole machine, "
          "released at once")
    for label, secs in zip(("agents up (instance reports Downloading)", "user code started",
                            "all Completed"), dispatch):
        print(f"  {label:42} after {secs:6.2f} s -> {args.jobs / secs:6.1f} jobs/s"
              + ("   (target >= 20 jobs/s)" if label.startswith("agents") else ""))


if __name__ == "__main__":
    main()
