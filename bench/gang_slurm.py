"""Gang start on Slurm (issue 12, the Slurm part of ``bench/gang.py``). One command, prints a table.

    python bench/gang_slurm.py [--runs 5]      (root: the Slurm daemons of tests/slurm_cluster.py)

On a 3-node Slurm started on this machine (munged, slurmctld, three slurmd; tests/slurm_cluster.py),
for a 3-instance job whose user code is one line recording when it started (``date +%s.%N``), in
one run, medians over ``--runs``:

- trainforge with ``backend: slurm``: CreateTrainingJob sent -> all three instances' user code
  started, and the skew (latest start - earliest start);
- the same line run by ``srun -N3`` by hand (an allocation made by srun itself): srun started ->
  all started, and the skew: the peer of trainforge's skew;
- ``sbatch -N3`` of a script that ``srun``s the same line, by hand: sbatch sent -> all started,
  and the skew: the peer of trainforge's create -> all started.

Targets: skew <= 1.2 x the hand-made srun's; create -> all started <= 1.2 x sbatch + start by hand.
Both clocks are this machine's. Figures only; nothing is asserted.
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

import boto3
from botocore.config import Config as BotoConfig

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from overhead import ended, request, start_server
from slurm_cluster import SlurmCluster

LINE = 'date +%s.%N > "$MARKS/$ID"'
Row = tuple[str, str, str, str]


def _starts(marks: Path, count: int, timeout: float = 300.0) -> list[float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = [p for p in marks.iterdir() if p.is_file()] if marks.exists() else []
        texts = [p.read_text().strip() for p in files]
        if len(files) == count and all(texts):
            return sorted(float(t) for t in texts)
        time.sleep(0.005)
    raise TimeoutError(f"{marks}: {count} starts not seen")


def _by_hand(cluster: SlurmCluster, work: Path, runs: int, batch: bool) -> tuple[list[float], list[float]]:
    """``srun -N3`` (or ``sbatch`` of a script that srun's) the line: (t0 -> all started, skew) per run."""
    total, skew = [], []
    for i in range(runs):
        marks = work / f"{'sbatch' if batch else 'srun'}-{i}"
        marks.mkdir()
        line = LINE.replace("$MARKS", str(marks)).replace("$ID", "$SLURM_PROCID")
        srun = ["srun", "-N3", "--ntasks-per-node=1", "sh", "-c", line]
        t0 = time.time()
        if batch:
            script = work / f"hand-{i}.sh"
            script.write_text("#!/bin/sh\nexec srun -N3 --ntasks-per-node=1 sh -c '" + line + "'\n")
            subprocess.run(["sbatch", "--parsable", "-N3", "--ntasks-per-node=1", "--exclusive",
                            f"--output={work}/hand-{i}.out", str(script)], env=cluster.env, check=True,
                           capture_output=True)
        else:
            subprocess.Popen(srun, env=cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        starts = _starts(marks, 3)
        total.append(starts[-1] - t0)
        skew.append(starts[-1] - starts[0])
        _idle(cluster)
    return total, skew


def _idle(cluster: SlurmCluster, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-o", "%i"], env=cluster.env, capture_output=True, text=True,
                             check=False).stdout
        if not out.strip():
            return
        time.sleep(0.05)


def _trainforge(cluster: SlurmCluster, work: Path, runs: int) -> tuple[list[float], list[float]]:
    data, out = work / "data", work / "out"
    data.mkdir()
    config = {"allowed_local_roots": [str(work)], "backend": "slurm", "slurm": {"partition": cluster.partition},
              "images": [{"image": "bench/*", "kind": "command", "entrypoint": ["/bin/sh", "-c"]}]}
    import os

    os.environ["SLURM_CONF"] = str(cluster.conf)  # the server's Slurm commands
    proc, endpoint = start_server(data, config)
    sm = boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                      aws_secret_access_key="bench", config=BotoConfig(retries={"max_attempts": 0}))
    total, skew = [], []
    try:
        sm.list_training_jobs()
        for i in range(runs):
            name = f"gang-slurm-{i}"
            req = request(name, out, LINE.replace("$MARKS", "/opt/ml/model").replace("$ID", "$SM_CURRENT_HOST"),
                          ["/bin/sh", "-c"])
            req["ResourceConfig"]["InstanceCount"] = 3
            t0 = time.time()
            sm.create_training_job(**req)
            ended(sm, name)
            starts = _starts(out / name / "output" / "model", 3)
            total.append(starts[-1] - t0)
            skew.append(starts[-1] - starts[0])
            _idle(cluster)
    finally:
        proc.terminate()
        proc.wait(15)
    return total, skew


def _ms(v: float) -> str:
    return f"{v * 1000:9.1f} ms"


def slurm_rows(runs: int = 5) -> list[Row]:
    """The Slurm rows of bench/gang.py: (figure, median, max, target), measured in one run."""
    work = Path(tempfile.mkdtemp(prefix="tf-bench-gang-slurm-"))
    try:
        with SlurmCluster(nodes=3) as cluster:
            tf_total, tf_skew = _trainforge(cluster, work, runs)
            srun_total, srun_skew = _by_hand(cluster, work, runs, batch=False)
            sb_total, sb_skew = _by_hand(cluster, work, runs, batch=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = statistics.median

    def judged(value: float, peer: float) -> str:
        limit = 1.2 * peer
        return f"<= {_ms(limit).strip()} (1.2 x peer): {'met' if value <= limit else 'NOT met'}"

    return [
        ("Slurm: trainforge create -> all 3 started", _ms(med(tf_total)), _ms(max(tf_total)),
         judged(med(tf_total), med(sb_total))),
        ("Slurm: trainforge gang-start skew", _ms(med(tf_skew)), _ms(max(tf_skew)),
         judged(med(tf_skew), med(srun_skew))),
        ("Slurm: srun -N3 by hand -> all started", _ms(med(srun_total)), _ms(max(srun_total)), ""),
        ("Slurm: srun -N3 by hand, skew (peer)", _ms(med(srun_skew)), _ms(max(srun_skew)), "the skew's peer"),
        ("Slurm: sbatch + srun by hand -> all started", _ms(med(sb_total)), _ms(max(sb_total)),
         "the create's peer"),
        ("Slurm: sbatch + srun by hand, skew", _ms(med(sb_skew)), _ms(max(sb_skew)), ""),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    rows = slurm_rows(args.runs)
    from gang import print_table

    print_table(f"gang start on Slurm (3 nodes on this machine), {args.runs} runs each", rows)


if __name__ == "__main__":
    main()
