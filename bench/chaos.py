"""Control plane under faults (issue 9): kill -9 at random instants, then count what was lost.

    python bench/chaos.py [--trials 50] [--seed S] [--faults launch,burst,upload,agent] [--stop-each-trial]

Each trial runs a small workload of short shell jobs on a real server (SQLite, local backend, the
isolation the machine allows), kills one process with SIGKILL at a random instant, restarts the
server on the same port when it was the one killed, and waits. Faults:

  launch  the server, while a launch batch is under way: 8 jobs queue behind a blocker holding the
          whole machine; the blocker is released; the kill lands uniformly within --launch-window
          seconds of the first of the 8 spec.json files appearing (the scheduler writing the batch).
          These jobs last up to 1 s + 1.5 times the server's last (re)start: some are still
          training when the restarted server reconciles.
  burst   the server, during a burst of creates from 8 threads (3 each, jobs of up to 1.5 s):
          after the k-th acknowledged create, k uniform in 0..23.
  upload  the server, while models are uploaded: 4 jobs write a 4 MB model (3 to s3:// on a moto
          server started here, 1 to file://); the kill lands uniformly within --upload-window
          seconds of the first outcome.json (the agent writes it just before its upload).
  agent   one agent (not the server), chosen at random among the living ones, at a random
          instant in the life of 6 jobs.

Columns, per fault (loss columns: target zero):
  created   CreateTrainingJob requests sent; acked: answered 200; unacked: cut by the kill
            (connection error: the job may or may not exist — either is fine; "exist" says how many
            do, and those must run like the others).
  missing   acknowledged, yet absent from ListTrainingJobs or DescribeTrainingJob after the restart.
  changed   a job whose terminal status, FailureReason or ModelArtifacts differed, later in the
            trial, from the first terminal status a monitor thread saw (it polls ListTrainingJobs
            throughout, across restarts, and describes each job when it first sees it terminal).
  stuck     not terminal --stuck-after seconds after the (re)start (then stopped).
  orphans   processes the trial's servers started (agents, fork servers, instances; see _procs.py)
            still alive once every job is terminal: counted --quiesce seconds after that, beside
            the running server and its fork server, and after the server's clean stop at the end of
            each fault (with --stop-each-trial: after a clean stop at the end of every trial).
  not done  (information, not a loss) jobs that ended Failed or Stopped: their reasons are listed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import _procs
from _monitor import Monitor, client, final_state, listed
from conftest import TERMINAL, ServerProcess, minimal_request

from trainforge.config import DEFAULT_ACCOUNT, DEFAULT_REGION

LOSS_COLUMNS = ("missing", "changed", "stuck", "orphans")


@dataclass
class Tally:
    """One fault's figures: ``counts`` by name (trials, created, acked, unacked, unacked_exist, rejected,
    missing, changed, stuck, orphans, not_done), the time it took, and what was found."""

    counts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    isolation: str = "?"
    findings: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)


class Trial:
    """One trial's jobs and what the client was told about them."""

    def __init__(self, bench: Bench, fault: str, index: int) -> None:
        self.bench = bench
        self.prefix = f"{fault}-t{index}-"
        self.acked: list[str] = []
        self.unacked: list[str] = []
        self.rejected: list[str] = []
        self.lock = threading.Lock()

    def request(self, suffix: str, script: str, *, s3: bool = False, itype: str = "ml.m5.large") -> dict[str, Any]:
        name = self.prefix + suffix
        out = f"s3://{self.bench.bucket}/out" if s3 else f"file://{self.bench.work / 'out'}"
        req = minimal_request(name, OutputDataConfig={"S3OutputPath": out},
                              StoppingCondition={"MaxRuntimeInSeconds": 120})
        req["AlgorithmSpecification"]["ContainerArguments"] = [script]
        req["ResourceConfig"] = {"InstanceType": itype, "InstanceCount": 1, "VolumeSizeInGB": 1}
        return req

    def create(self, sm: Any, req: dict[str, Any]) -> bool:
        """Send one CreateTrainingJob; False when the connection failed (the server is down)."""
        name = req["TrainingJobName"]
        try:
            sm.create_training_job(**req)
        except ClientError as exc:
            with self.lock:
                self.rejected.append(f"{name}: {exc}")
            return True
        except BotoCoreError:
            with self.lock:
                self.unacked.append(name)
            return False
        with self.lock:
            self.acked.append(name)
        return True

    def instance_dir(self, name: str) -> Path:
        return self.bench.server.data_dir / "jobs" / DEFAULT_ACCOUNT / DEFAULT_REGION / name / "attempt-1" / "algo-1"


def poll(probe: Callable[[], Any], timeout: float, interval: float = 0.002) -> Any:
    """``probe()`` until it is truthy (its value) or ``timeout`` passes (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    return None


def job_script(rng: random.Random, longest: float) -> str:
    """A short shell job: sleeps up to ``longest`` s, writes a model file. Jobs longer than a restart
    (a few seconds) are still training when the restarted server reconciles."""
    return f'sleep {rng.uniform(0.1, longest):.2f}; echo ok > "$SM_MODEL_DIR/x"'


# --- the faults: each runs its workload and its kill; True when the server was killed -----------------
def fault_launch(t: Trial, rng: random.Random, args: argparse.Namespace) -> bool:
    gate = t.bench.work / f"gate-{t.prefix}"
    os.mkfifo(gate)
    sm = t.bench.clients[0]
    t.create(sm, t.request("blocker", f"cat {gate} > /dev/null", itype="ml.m5.4xlarge"))
    # Up to 1.5 restarts long: some are still training when the restarted server reconciles.
    queued = [t.request(f"q{i}", job_script(rng, 1.0 + 1.5 * t.bench.start_seconds)) for i in range(8)]
    for req in queued:
        t.create(sm, req)
    # Release the blocker (its `cat` reads the FIFO to its end), then kill within the launch window.
    writer = poll(lambda: _open_writer(gate), timeout=30, interval=0.01)
    if writer is None:
        raise SystemExit(f"{t.prefix}blocker never started: see {t.bench.server.data_dir}")
    os.close(writer)
    specs = [t.instance_dir(r["TrainingJobName"]) / "spec.json" for r in queued]
    poll(lambda: any(p.exists() for p in specs), timeout=30, interval=0.001)
    time.sleep(rng.uniform(0, args.launch_window))
    t.bench.server.kill()
    gate.unlink()
    return True


def _open_writer(path: Path) -> int | None:
    try:
        return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader yet
        return None


def fault_burst(t: Trial, rng: random.Random, args: argparse.Namespace) -> bool:
    threads, each = len(t.bench.clients), 3
    kill_after = rng.randrange(threads * each)
    reached = threading.Event()
    start = threading.Barrier(threads + 1)
    reqs = [[t.request(f"b{n}-{k}", job_script(rng, 1.5)) for k in range(each)] for n in range(threads)]

    def creator(n: int) -> None:
        start.wait()
        for req in reqs[n]:
            if not t.create(t.bench.clients[n], req):
                return  # the server is gone: this thread stops
            if len(t.acked) >= kill_after:
                reached.set()

    workers = [threading.Thread(target=creator, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    if kill_after:
        reached.wait(30)
    t.bench.server.kill()
    for w in workers:
        w.join(60)
    return True


def fault_upload(t: Trial, rng: random.Random, args: argparse.Namespace) -> bool:
    script = f'sleep 0.{rng.randrange(1, 4)}; head -c 4000000 /dev/urandom > "$SM_MODEL_DIR/model.bin"'
    reqs = [t.request(f"u{i}", script, s3=i < 3) for i in range(4)]
    for req in reqs:
        t.create(t.bench.clients[0], req)
    outcomes = [t.instance_dir(r["TrainingJobName"]) / "outcome.json" for r in reqs]
    poll(lambda: any(p.exists() for p in outcomes), timeout=30)
    time.sleep(rng.uniform(0, args.upload_window))
    t.bench.server.kill()
    return True


def fault_agent(t: Trial, rng: random.Random, args: argparse.Namespace) -> bool:
    for i in range(6):
        t.create(t.bench.clients[0], t.request(f"a{i}", job_script(rng, 0.9)))
    time.sleep(rng.uniform(0, 0.8))
    server = t.bench.server.proc
    assert server is not None
    victims = poll(lambda: _procs.agents(server.pid), timeout=5)
    if victims:
        _procs.kill([rng.choice(victims)])
    else:
        t.bench.tally.findings.append(f"{t.prefix}: no living agent to kill (all 6 jobs had ended)")
    return False


FAULTS: dict[str, Callable[[Trial, random.Random, argparse.Namespace], bool]] = {
    "launch": fault_launch, "burst": fault_burst, "upload": fault_upload, "agent": fault_agent}


class Bench:
    """One fault's series of trials: its server (one data directory, one port), its clients, its tally."""

    def __init__(self, fault: str, work: Path, bucket: str, args: argparse.Namespace, rng: random.Random) -> None:
        self.fault, self.work, self.bucket, self.args, self.rng = fault, work / fault, bucket, args, rng
        self.tally = Tally()
        config = {"allowed_local_roots": [str(work)], "capacity_cpus": 16, "capacity_memory_mb": 10**6,
                  "instance_types": {"ml.m5.large": {"cpus": 2, "memory_mb": 1024},
                                     "ml.m5.4xlarge": {"cpus": 16, "memory_mb": 1024}},
                  "stop_grace_seconds": 5, "isolation": args.isolation}
        self.server = ServerProcess(self.work / "data", config)
        self.clients: list[Any] = []
        self.start_seconds = 3.0  # how long the last (re)start of the server took

    def start(self) -> None:
        began = time.monotonic()
        self.server.start()
        self.start_seconds = time.monotonic() - began

    def run(self) -> Tally:
        began = time.monotonic()
        for index in range(self.args.trials):
            if self.server.proc is None or self.server.proc.poll() is not None:
                self.start()
                self.clients = self.clients or [client(self.server.endpoint) for _ in range(8)]
            phases = self.trial(Trial(self, self.fault, index))
            print(f"  {self.fault} {index + 1}/{self.args.trials}: {self.progress()} ({phases})", flush=True)
        self.server.stop()
        self.settle(set())
        self.orphans(f"{self.fault}: after the clean stop at the end", set())
        banner = self.server.log_path.read_text(errors="replace")
        self.tally.isolation = banner.rsplit("isolation: ", 1)[-1].split(")")[0] if "isolation: " in banner else "?"
        self.tally.seconds = time.monotonic() - began
        return self.tally

    def progress(self) -> str:
        t = self.tally
        return " ".join(f"{k}={t.counts[k]}" for k in ("acked", "unacked", *LOSS_COLUMNS, "not_done"))

    def trial(self, t: Trial) -> str:
        """One trial; returns how long its phases took."""
        tally = self.tally
        monitor = Monitor(self.server.endpoint, t.prefix)
        monitor.start()
        marks = [time.monotonic()]
        if FAULTS[self.fault](t, self.rng, self.args):
            marks.append(time.monotonic())
            self.start()  # the same port: the running agents know it
        marks.append(time.monotonic())
        tally.counts["trials"] += 1
        tally.counts["created"] += len(t.acked) + len(t.unacked) + len(t.rejected)
        tally.counts["acked"] += len(t.acked)
        tally.counts["unacked"] += len(t.unacked)
        tally.counts["rejected"] += len(t.rejected)
        tally.findings += [f"{t.prefix}: create rejected: {r}" for r in t.rejected]
        present = listed(self.clients[0], t.prefix)
        missing = {n for n in t.acked if n not in present or not self.describe(n)}
        tracked = [n for n in present if n not in missing]
        tally.counts["unacked_exist"] += sum(1 for n in t.unacked if n in present)
        self.wait_terminal(t, monitor, tracked)
        marks.append(time.monotonic())
        server_pid = self.server.proc.pid if self.server.proc else 0
        keep = {server_pid} | _procs.forkservers(server_pid)
        self.settle(keep)  # the agents' last reports are in before the comparison
        marks.append(time.monotonic())
        self.compare(t, monitor, tracked, missing)
        if self.args.stop_each_trial:
            self.server.stop()
            keep = set()
            self.settle(keep)
        self.orphans(t.prefix + (" after the clean stop" if self.args.stop_each_trial else ""), keep)
        phases = ("workload+kill", "restart", "to terminal", "settle") if len(marks) == 5 else (
            "workload+kill", "to terminal", "settle")
        return ", ".join(f"{p} {b - a:.1f}s" for p, a, b in zip(phases, marks, marks[1:]))

    def wait_terminal(self, t: Trial, monitor: Monitor, tracked: list[str]) -> None:
        """Until every tracked job is terminal; the ones that are not by --stuck-after are stuck (stopped)."""
        def unfinished() -> list[str]:
            return [n for n in tracked if monitor.latest.get(n) not in TERMINAL]
        poll(lambda: not unfinished(), timeout=self.args.stuck_after, interval=0.1)
        stuck = unfinished()
        for name in stuck:
            d: dict[str, Any] = self.describe(name) or {}
            self.tally.findings.append(f"{t.prefix}: stuck {name}: {d.get('TrainingJobStatus')}/"
                                       f"{d.get('SecondaryStatus')} after {self.args.stuck_after:g} s")
            try:
                self.clients[0].stop_training_job(TrainingJobName=name)
            except ClientError:
                pass
        self.tally.counts["stuck"] += len(stuck)

    def compare(self, t: Trial, monitor: Monitor, tracked: list[str], missing: set[str]) -> None:
        """Every job's final state against the first terminal state the monitor saw."""
        tally = self.tally
        changed = dict(monitor.changed)
        for name in tracked:
            described = self.describe(name)
            if described is None:
                missing.add(name)
                continue
            state = final_state(described)
            first = monitor.first.get(name)
            if first is not None and first != state and name not in changed:
                changed[name] = f"first seen {first}, finally {state}"
            if state[0] != "Completed":
                tally.counts["not_done"] += 1
                tally.reasons[f"{state[0]}: {(state[1] or '')[:110]}"] += 1
        monitor.halt()
        tally.counts["missing"] += len(missing)
        tally.findings += [f"{t.prefix}: missing {n}" for n in sorted(missing)]
        tally.counts["changed"] += len(changed)
        tally.findings += [f"{t.prefix}: changed {n}: {what}" for n, what in sorted(changed.items())]

    def describe(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.clients[0].describe_training_job(TrainingJobName=name))
        except ClientError:
            return None

    def settle(self, keep: set[int]) -> None:
        """Wait (at most --quiesce s) for the processes the servers started, other than ``keep``, to end."""
        poll(lambda: not _procs.descendants(keep, reap=True), timeout=self.args.quiesce, interval=0.1)

    def orphans(self, where: str, keep: set[int]) -> None:
        """Count, name and kill the processes the servers started, other than ``keep``, still alive."""
        pids = _procs.descendants(keep, reap=True)
        self.tally.counts["orphans"] += len(pids)
        self.tally.findings += [f"{where}: orphan {pid}: {_procs.describe(pid)}" for pid in pids]
        _procs.kill(pids)
        poll(lambda: not _procs.descendants(keep, reap=True), timeout=5, interval=0.05)


def fuzz_line(work: Path, seed: int, examples: int) -> str:
    """The fuzz line: the suite's model-driven fuzz test (tests/test_api_fuzz.py, requests for the nine
    operations generated from botocore's model, each mutated once) run with this seed against its own
    server; it counts requests, 5xx answers and rejected creates that were stored anyway."""
    report = work / "fuzz.json"
    env = dict(os.environ, TRAINFORGE_FUZZ_SEED=str(seed), TRAINFORGE_FUZZ_EXAMPLES=str(examples),
               TRAINFORGE_FUZZ_REPORT=str(report))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
                          str(work / "fuzz"), str(HERE.parent / "tests" / "test_api_fuzz.py")],
                         check=False, env=env, cwd=HERE.parent, capture_output=True, text=True)
    if not report.exists():
        return f"fuzz: did not run (pytest exit {run.returncode}): {run.stdout[-300:]}"
    t = json.loads(report.read_text())
    verdict = "passed" if run.returncode == 0 else f"FAILED (pytest exit {run.returncode})"
    return (f"fuzz: {t['requests']} requests, {t['server_errors']} answered 5xx, "
            f"{t['stored_while_rejected']} creates stored while rejected (seed {seed}; {verdict})")


COLUMNS = ("trials", "created", "acked", "unacked", "missing", "changed", "stuck", "orphans", "not done")


def table(tallies: dict[str, Tally]) -> str:
    rows: list[tuple[str, ...]] = [("fault", *COLUMNS, "seconds")]
    for fault, t in tallies.items():
        c = t.counts
        rows.append((fault, *(str(c[k]) for k in ("trials", "created", "acked")),
                     f"{c['unacked']} ({c['unacked_exist']} exist)",
                     *(str(c[k]) for k in (*LOSS_COLUMNS, "not_done")), f"{t.seconds:.0f}"))
    kills = sum(t.counts["trials"] for t in tallies.values())
    rows.append(("target", f">= 200 ({kills})", "", "", "", "0", "0", "0", "0", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=50, help="kill trials per fault (default 50: 200 in all)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--faults", default=",".join(FAULTS), help="which faults, comma-separated")
    ap.add_argument("--launch-window", type=float, default=0.3, help="s after the batch's first spec.json")
    ap.add_argument("--upload-window", type=float, default=0.3, help="s after the first outcome.json")
    ap.add_argument("--stuck-after", type=float, default=60.0, help="s a job may take to end after the restart")
    ap.add_argument("--quiesce", type=float, default=5.0, help="s the trial's processes get to end")
    ap.add_argument("--stop-each-trial", action="store_true",
                    help="stop the server cleanly after every trial and count orphans then (slower)")
    ap.add_argument("--isolation", default="auto", choices=("auto", "namespace", "none"),
                    help="the servers' instance isolation (default: namespaces when the machine allows)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--fuzz-examples", type=int, default=2000, help="requests of the fuzz line")
    args = ap.parse_args()
    faults = [f for f in args.faults.split(",") if f]
    if unknown := set(faults) - set(FAULTS):
        raise SystemExit(f"unknown faults: {sorted(unknown)}; known: {list(FAULTS)}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    began = time.monotonic()
    _procs.become_subreaper()
    import shutil
    import tempfile

    from moto.server import ThreadedMotoServer

    work = Path(tempfile.mkdtemp(prefix="tf-bench-chaos-"))
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    # The servers (and through them the agents' uploads) use moto's S3 and fake keys, like the tests.
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": DEFAULT_REGION, "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}"})
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL_SAGEMAKER", "AWS_ENDPOINT_URL"):
        os.environ.pop(key, None)
    boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="chaos")
    print(f"chaos: {args.trials} trials x {faults}, seed {seed}, {os.cpu_count()} cores, work {work}", flush=True)
    tallies: dict[str, Tally] = {}
    try:
        for fault in faults:
            tallies[fault] = Bench(fault, work, "chaos", args, random.Random(f"{seed}-{fault}")).run()
        fuzz = fuzz_line(work, seed, args.fuzz_examples)
    finally:
        moto.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    isolation = ", ".join(sorted({t.isolation for t in tallies.values()}))
    print(f"\ntrainforge control plane under kill -9 (seed {seed}, {os.cpu_count()} cores, isolation: {isolation})\n")
    print(table(tallies))
    print(fuzz)
    for fault, t in tallies.items():
        if t.reasons:
            print(f"\n{fault}: jobs not Completed (information):")
            for reason, n in t.reasons.most_common(8):
                print(f"  {n:4d} x {reason}")
        if t.findings:
            print(f"\n{fault}: findings ({len(t.findings)}):")
            for line in t.findings[:15]:
                print(f"  {line}")
            if len(t.findings) > 15:
                print(f"  (+{len(t.findings) - 15} more)")
    print(f"\nelapsed {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
