"""Gang start of a 3-instance job (issue 12). One command, prints a table.

    python bench/gang.py [--runs 10] [--instances 3]

For each run, on the embedded default (the local backend, the sandbox when run as root):
  skew     the spread (last - first) of the instants each instance's user code starts;
  started  CreateTrainingJob sent -> the last instance's user code starts;
beside the same figures for as many bare processes of the same script started together (one
``Popen`` after another), measured in the same run. Target: job skew <= 50 ms. Figures only;
nothing here is asserted.

The user code's first line records ``time.time()`` in its model (``/opt/ml/model/t-<host>``): every
instance runs on this machine's clock. :func:`slurm_rows` is where the Slurm backend's part (the
same job on the Slurm fixture, beside ``srun -N3`` and ``sbatch`` by hand) adds its rows.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from overhead import ended, request, start_server

LOCAL_SKEW_TARGET_S = 0.050
# the user code's first line: when it ran, into its model (or a marks directory for the bare processes)
FIRST_LINE = "import time; t = time.time(); open('{mark}', 'w').write(repr(t))"
IN_MODEL = "import os, time; t = time.time(); open('/opt/ml/model/t-' + os.environ['SM_CURRENT_HOST'], 'w').write(repr(t))"

Row = tuple[str, str, str, str]  # figure, median, max, target (the shape bench/gang_slurm.py's rows have)


def job_run(sm: Any, out: Path, name: str, instances: int, flags: list[str]) -> tuple[float, float]:
    req = request(name, out, IN_MODEL, [sys.executable, *flags, "-c"])
    req["ResourceConfig"]["InstanceCount"] = instances
    t0 = time.time()
    sm.create_training_job(**req)
    status = ended(sm, name)
    if status["TrainingJobStatus"] != "Completed":
        raise SystemExit(f"{name}: {status['TrainingJobStatus']}: {status.get('FailureReason')}")
    model = out / name / "output" / "model"
    starts = [float((model / f"t-algo-{i + 1}").read_text()) for i in range(instances)]
    return max(starts) - min(starts), max(starts) - t0


def bare_run(marks: Path, run: int, instances: int, flags: list[str]) -> tuple[float, float]:
    paths = [marks / f"bare-{run}-{i}" for i in range(instances)]
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, *flags, "-c", FIRST_LINE.format(mark=p)]) for p in paths]
    for proc in procs:
        proc.wait()
    starts = [float(p.read_text()) for p in paths]
    return max(starts) - min(starts), max(starts) - t0


def _ms(v: float) -> str:
    return f"{v * 1000:9.1f} ms"


def local_rows(runs: int, instances: int = 3, flags: list[str] | None = None) -> list[Row]:
    """The local backend's rows, and the bare processes' beside them, measured in one run (a job, then
    the bare processes, in turn); ``flags``: the interpreter's options, for both."""
    flags = list(flags or [])
    work = Path(tempfile.mkdtemp(prefix="tf-bench-gang-"))
    out, marks = work / "out", work / "marks"
    marks.mkdir()
    config = {"allowed_local_roots": [str(work)], "capacity_cpus": 100000, "capacity_memory_mb": 10**9,
              "instance_types": {"ml.m5.large": {"cpus": 1, "memory_mb": 1024}},
              "images": [{"image": "bench/*", "kind": "command", "entrypoint": ["/bin/sh", "-c"]}]}
    (work / "data").mkdir()
    proc, endpoint = start_server(work / "data", config)
    sm = boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                      aws_secret_access_key="bench", config=BotoConfig(retries={"max_attempts": 0}))
    try:
        sm.list_training_jobs()  # warm the client's connection
        job, bare = [], []
        for i in range(runs):
            job.append(job_run(sm, out, f"gang-{i}", instances, flags))
            bare.append(bare_run(marks, i, instances, flags))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    med = statistics.median
    job_skew, job_start = [s for s, _ in job], [a for _, a in job]
    bare_skew, bare_start = [s for s, _ in bare], [a for _, a in bare]
    met = "met" if med(job_skew) <= LOCAL_SKEW_TARGET_S else "NOT met"
    return [
        (f"local: trainforge create -> all {instances} started", _ms(med(job_start)), _ms(max(job_start)), ""),
        ("local: trainforge gang-start skew", _ms(med(job_skew)), _ms(max(job_skew)),
         f"<= {_ms(LOCAL_SKEW_TARGET_S).strip()}: {met}"),
        (f"local: {instances} bare processes -> all started", _ms(med(bare_start)), _ms(max(bare_start)), ""),
        (f"local: {instances} bare processes, skew", _ms(med(bare_skew)), _ms(max(bare_skew)), "the skew's peer"),
    ]


def slurm_rows(runs: int) -> list[Row]:
    """The Slurm part (issue 12, part 4): the same job on a 3-node Slurm cluster started on this machine,
    beside ``srun -N3`` of the same script and ``sbatch`` + start by hand, in the same run
    (``bench/gang_slurm.py``)."""
    import gang_slurm  # bench/ is the script's directory, first on sys.path

    rows: list[Row] = gang_slurm.slurm_rows(runs)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--no-slurm", action="store_true", help="only the local figures")
    ap.add_argument("--no-site", action="store_true",
                    help="the local user code's interpreter (and the bare processes') started with -S: "
                         "without site's start-up, to show how much of the skew is the interpreters' own")
    args = ap.parse_args()
    flags = ["-S"] if args.no_site else []
    rows = local_rows(args.runs, args.instances, flags) + ([] if args.no_slurm else slurm_rows(args.runs))
    print_table(f"gang start, {args.runs} runs each" + (" (local interpreters with -S)" if flags else ""), rows)


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n{title}\n")
    print(f"{'figure':46} {'median':>12} {'max':>12}   target")
    for figure, median, worst, target in rows:
        print(f"{figure:46} {median:>12} {worst:>12}   {target}")


if __name__ == "__main__":
    main()
