"""How much trainforge adds to running a script (issue 3). One command, prints a table.

    python bench/overhead.py [--runs 20] [--jobs 100]

Measures, on the embedded default (SQLite, local backend, the sandbox when available):
  (a) CreateTrainingJob sent -> first line of user code runs,
  (b) CreateTrainingJob sent -> the job is Completed (its TrainingEndTime; no inputs, script does nothing),
  (c) the same script as a bare subprocess (the limit),
  (d) the same script in runc started by hand, with the bundle options trainforge uses (its own root,
      user namespace, read-only /usr, /etc and Python, a writable /opt/ml, a new network namespace),
  (e) the same in bubblewrap with the equivalent options (the tool not chosen, for the record),
and the dispatch rate with 100 no-op jobs queued at once. (a)-(e) are interleaved, one of each per
round, so that a change in the machine's load touches them alike: on a shared machine compare the
ratios to (d), not the absolute figures. Figures only; nothing here is asserted.
The user code records when it ran in its model (/opt/ml/model/t): inside the sandbox no host path
is writable.
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
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

HERE = Path(__file__).resolve().parent
# (b) is the job's TrainingEndTime (when the server marked it Completed), so polling need not be
# tight: a describe every 2 ms kept the server it measures busy (its GIL) on a loaded machine. Nor
# does (a), read from the model's mark. Each describe costs the client and the server ~2-3 ms of
# CPU, taken from the job being measured (2 cores): every 0.1 s, not every 25 ms.
POLL_S = 0.1


def ended(sm: Any, name: str, poll_s: float = POLL_S) -> dict[str, Any]:
    """DescribeTrainingJob of ``name`` once it is no longer InProgress, asked every ``poll_s``. The
    benches read their figures from marks and TrainingEndTime, so a tight poll buys no precision and
    its CPU comes out of the job being measured."""
    while (described := sm.describe_training_job(TrainingJobName=name))["TrainingJobStatus"] == "InProgress":
        time.sleep(poll_s)
    return dict(described)


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


def start_bench_server(work: Path, prepared: bool = True) -> tuple[subprocess.Popen, Any]:
    """The server under ``work/data`` (a blocker type holding the whole machine, command images) and a
    client; ``prepared``: config ``prepared_instances`` (the default, true)."""
    # Capacity is not what is measured here: let every queued job run at once.
    config = {"allowed_local_roots": [str(work)], "capacity_cpus": 100000, "capacity_memory_mb": 10**9,
              "instance_types": {"ml.m5.large": {"cpus": 2, "memory_mb": 8192},
                                 "ml.p4d.24xlarge": {"cpus": 100000, "memory_mb": 10**9}},
              "images": [{"image": "bench/*", "kind": "command", "entrypoint": ["/bin/sh", "-c"]}],
              "prepared_instances": prepared}
    (work / "data").mkdir()
    proc, endpoint = start_server(work / "data", config)
    sm = boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                      aws_secret_access_key="bench", config=BotoConfig(retries={"max_attempts": 0}))
    return proc, sm


def prepared_for(data: Path, image: str, timeout: float = 60) -> None:
    """Until the server (data directory ``data``) has an instance prepared for a job of ``image``
    (agent/prepared.py: a slot's ``ready`` file, there while it is offered, names its shape)."""
    from trainforge.sandbox import rootfs

    warm = Path(rootfs.roots_dir(str(data))) / "warm"
    wanted = json.dumps(image)
    deadline = time.monotonic() + timeout
    while True:
        shapes = []
        for ready in warm.glob("s*/ready"):
            try:
                shapes.append(ready.read_text())
            except OSError:
                pass
        if any(wanted in shape for shape in shapes):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"no instance was prepared for {image}")
        time.sleep(0.01)


def prepared_start(sm: Any, name: str) -> bool:
    """Whether the job started in a prepared instance (its log says so)."""
    from trainforge.agent.steps import PREPARED_NOTICE

    logs = boto3.client("logs", endpoint_url=sm.meta.endpoint_url, region_name="us-east-1",
                        aws_access_key_id="bench", aws_secret_access_key="bench")
    events = logs.filter_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=name)["events"]
    return any(PREPARED_NOTICE in e["message"] for e in events)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def request(name: str, out: Path, script: str, entrypoint: list[str] | None = None) -> dict:
    return {
        "TrainingJobName": name, "RoleArn": "arn:aws:iam::000000000000:role/Bench",
        "AlgorithmSpecification": {"TrainingImage": "bench/command:1", "TrainingInputMode": "File",
                                   "ContainerEntrypoint": entrypoint or [sys.executable, "-c"],
                                   "ContainerArguments": [script]},
        "OutputDataConfig": {"S3OutputPath": f"file://{out}", "CompressionType": "NONE"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--no-prepared", action="store_true",
                    help="prepared_instances: false (every job makes its own instance: the cold start)")
    args = ap.parse_args()
    load_before = load_after()
    work = Path(tempfile.mkdtemp(prefix="tf-bench-overhead-"))
    marks = work / "marks"
    marks.mkdir()
    out = work / "out"
    proc, sm = start_bench_server(work, prepared=not args.no_prepared)
    # The user code: its first line records when it ran (in its model); then it exits.
    first_line = "import time; open('{mark}','w').write(repr(time.time()))"
    in_model = "/opt/ml/model/t"

    def model_mark(name: str) -> Path:
        return out / name / "output" / "model" / "t"
    try:
        sm.list_training_jobs()  # warm the client's connection
        first, complete, bare = [], [], []
        # Interleaved (one of each per round): a machine whose load changes affects all alike.
        starters = {tool: HandStarted(tool, work, first_line) for tool in ("runc", "bwrap")}
        by_hand: dict[str, tuple[list[float], list[float]]] = {tool: ([], []) for tool in starters}
        for i in range(args.runs):
            name = f"overhead-{i}"
            if i and not args.no_prepared:  # as a user's next job, a moment after the last: its instance is ready
                prepared_for(work / "data", "bench/command:1")
            t0 = time.time()
            sm.create_training_job(**request(name, out, first_line.format(mark=in_model)))
            described = ended(sm, name)
            complete.append(described["TrainingEndTime"].timestamp() - t0)
            first.append(float(model_mark(name).read_text()) - t0)
            t0 = time.time()
            subprocess.run([sys.executable, "-c", first_line.format(mark=marks / f"bare-{i}")], check=True)
            bare.append(time.time() - t0)
            for tool, starter in starters.items():
                if starter.available:
                    to_first, to_done = starter.run(i)
                    by_hand[tool][0].append(to_first)
                    by_hand[tool][1].append(to_done)

        prepared_used = sum(1 for i in range(args.runs) if prepared_start(sm, f"overhead-{i}"))
        # Dispatch: a blocker holds the whole machine while N no-op jobs queue behind it; when it
        # ends, the scheduler dispatches them all. Rate = N / (last agent up - blocker ended).
        # the blocker waits for a file the bench puts into its /opt/ml (no host path is visible inside)
        blocker = request("dispatch-blocker", out,
                          "import os,time;[time.sleep(.01) for _ in iter(lambda:os.path.exists('/opt/ml/gate'),True)]")
        blocker["ResourceConfig"]["InstanceType"] = "ml.p4d.24xlarge"  # configured as the whole machine
        sm.create_training_job(**blocker)
        names = [f"dispatch-{i}" for i in range(args.jobs)]
        for n in names:
            # a no-op job: a shell that records when it ran
            sm.create_training_job(**request(n, out, f"date +%s.%N > {in_model}", ["/bin/sh", "-c"]))
        assert all(sm.describe_training_job(TrainingJobName=n)["SecondaryStatus"] == "Pending" for n in names[:3])
        gate = next((work / "data" / "jobs").glob("*/*/dispatch-blocker/attempt-*/algo-1/opt/ml"))
        (gate / "gate").write_text("go")
        ended(sm, names[-1])  # the figures are the transitions' times: no tight poll taking CPU from the dispatch
        released = sm.describe_training_job(TrainingJobName="dispatch-blocker")["TrainingEndTime"].timestamp()
        agents_up, user_started, completed = [], [], []
        for n in names:
            d = ended(sm, n)
            tr = {t["Status"]: t for t in d["SecondaryStatusTransitions"]}
            agents_up.append(tr["Downloading"]["StartTime"].timestamp())
            user_started.append(float(model_mark(n).read_text()))
            completed.append(d["TrainingEndTime"].timestamp())
        dispatch = (max(agents_up) - released, max(user_started) - released, max(completed) - released)
    finally:
        proc.terminate()
        proc.wait(10)
        banner = (work / "data" / "server.log").read_text()
        shutil.rmtree(work, ignore_errors=True)
    isolation = banner.rsplit("isolation: ", 1)[1].split(")")[0] if "isolation: " in banner else "?"

    def ms(v: float) -> str:
        return f"{v * 1000:8.1f} ms"
    med_b = statistics.median(complete)
    med_c = statistics.median(bare)
    runc_first, runc_done = by_hand["runc"]
    rows = [
        ("(a) create -> first line of user code", ms(statistics.median(first)), ms(pct(first, 0.9)),
         target(statistics.median(first), runc_first)),
        ("(b) create -> Completed (no-op job)", ms(med_b), ms(pct(complete, 0.9)),
         target(med_b, runc_done)),
        ("(c) bare subprocess, same script (limit)", ms(med_c), ms(pct(bare, 0.9)), ""),
        ("(b) - (c)", ms(med_b - med_c), ms(pct(complete, 0.9) - pct(bare, 0.9)), ""),
    ]
    for tool, (tool_first, tool_done) in by_hand.items():
        if tool_first:
            rows.append((f"(d) {tool} by hand -> first line", ms(statistics.median(tool_first)),
                         ms(pct(tool_first, 0.9)), "the peer" if tool == "runc" else "not chosen"))
            rows.append((f"(d) {tool} by hand -> exited", ms(statistics.median(tool_done)),
                         ms(pct(tool_done, 0.9)), ""))
    print(f"\ntrainforge overhead, {args.runs} runs each, {os.cpu_count()} cores, isolation: {isolation}, "
          f"prepared instances: {'off' if args.no_prepared else 'on (each job created once the one before ended and the next instance was prepared)'}"
          f", used by {prepared_used} of the {args.runs} jobs")
    print(f"machine load while it ran: load average {load_before} before, {load_after()} after"
          f"{cpu_pressure()}: figures are comparable only beside the peers measured in the same run\n")
    print(f"{'figure':44} {'median':>11} {'p90':>11}   target (<= 1.2 x runc by hand + 15 ms)")
    for label, a, b, goal in rows:
        print(f"{label:44} {a:>11} {b:>11}   {goal}")
    print(f"\ndispatch: {args.jobs} no-op jobs (sh -c date) queued behind a job holding the whole machine, "
          "released at once")
    for label, secs in zip(("agents up (instance reports Downloading)", "user code started",
                            "all Completed"), dispatch):
        print(f"  {label:42} after {secs:6.2f} s -> {args.jobs / secs:6.1f} jobs/s"
              + ("   (target >= 50 jobs/s)" if label.startswith("agents") else ""))


def target(value: float, peer: list[float]) -> str:
    if not peer:
        return "(no runc here)"
    limit = 1.2 * statistics.median(peer) + 0.015
    ratio = value / statistics.median(peer)
    return f"<= {limit * 1000:.1f} ms: {'met' if value <= limit else 'NOT met'} ({ratio:.2f} x runc by hand)"


def load_after() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def cpu_pressure() -> str:
    """The kernel's CPU pressure over the last 5 minutes (share of time some task waited for a CPU)."""
    try:
        with open("/proc/pressure/cpu", encoding="ascii") as f:
            fields = dict(kv.split("=") for kv in f.readline().split()[1:])
        return f", CPU pressure {fields['avg300']}% (5 min)"
    except (OSError, KeyError, ValueError):
        return ""


class HandStarted:
    """The script started by hand in ``tool`` (runc or bwrap) with the options trainforge uses."""

    def __init__(self, tool: str, work: Path, first_line: str) -> None:
        from trainforge.sandbox import rootfs, runc

        self.tool, self.first_line = tool, first_line
        self.available = shutil.which(tool) is not None and os.geteuid() == 0
        if not self.available:
            return
        self.sandbox = work / f"hand-{tool}"
        self.ml = self.sandbox / "ml"
        self.ml.mkdir(parents=True)
        os.chown(self.ml, runc.UID_BASE, runc.UID_BASE)
        os.chmod(self.ml, 0o777)  # bwrap run by root keeps uid 0 without capabilities
        self.etc = rootfs.ensure(str(self.sandbox), runc.UID_BASE)
        self.ro = rootfs.read_only_paths(sys.executable, str(work / "data"))

    def run(self, i: int) -> tuple[float, float]:
        """One start: (start -> first line, start -> exited)."""
        from trainforge.sandbox import rootfs, runc

        tool, sandbox, ml, etc, ro = self.tool, self.sandbox, self.ml, self.etc, self.ro
        mark = f"/opt/ml/{tool}-{i}"
        argv = [sys.executable, "-c", self.first_line.format(mark=mark)]
        if tool == "runc":
            roots = rootfs.roots_dir(str(sandbox))
            root = rootfs.instance_root(roots, f"hand-{i}", runc.UID_BASE)
            mounts = [runc.bind("/usr", "/usr"), runc.bind(etc, "/etc"), *[runc.bind(p, p) for p in ro],
                      runc.bind(str(ml), "/opt/ml", read_only=False)]
            cfg = runc.config(argv=argv, env={"PATH": "/usr/bin:/bin"}, cwd="/", hostname="algo-1", rootfs=root,
                              mounts=mounts, network="new")
            bundle = sandbox / f"bundle-{i}"
            runc.write_bundle(str(bundle), cfg)
            cmd = runc.run_argv(str(sandbox / "state"), str(bundle), f"hand-{i}")
        else:
            cmd = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--uid", "0", "--gid", "0",
                   "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
                   "--symlink", "usr/lib64", "/lib64", "--ro-bind", etc, "/etc", "--proc", "/proc", "--dev", "/dev",
                   "--tmpfs", "/tmp", "--bind", str(ml), "/opt/ml"]
            for p in ro:
                cmd += ["--ro-bind", p, p]
            cmd += argv
        t0 = time.time()
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
        done = time.time() - t0
        first = float((ml / f"{tool}-{i}").read_text()) - t0
        if tool == "runc":
            runc.delete(str(sandbox / "state"), f"hand-{i}")
        return first, done


if __name__ == "__main__":
    main()
