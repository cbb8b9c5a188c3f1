"""Where the CPU of dispatching no-op jobs goes (issue 10). One command, prints a table.

    python bench/dispatch_cpu.py [--jobs 100] [--perf perf]

The dispatch scene of ``bench/overhead.py`` (N no-op ``sh -c date`` jobs queued behind a job holding
the whole machine, released at once), measured in CPU rather than wall time: the machine may be
shared, and CPU is what N jobs need of it whatever else runs. ``perf record -a`` samples every CPU
(cpu-clock, 1 kHz) from the release to the last job's end; each sample is given to a process of the
server's tree (``PERF_RECORD_FORK``/``COMM`` events say which processes those are and what they ran)
and to a part: the server (its threads named by ``py-spy dump`` when installed), the fork server,
the agents' Python, and each program the agents start (by name; the first ``runc`` an agent starts
is ``runc run``, a later one ``runc delete``). The API's part (CreateTrainingJob) is the server's CPU
(``/proc/<pid>/stat``) while the N jobs are created. Figures are CPU milliseconds per job; samples
outside the server's tree (kernel threads: the loop devices, ext4) are listed apart.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import request, start_bench_server

TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")
FORK = re.compile(r"PERF_RECORD_FORK\((\d+):(\d+)\):\((\d+):(\d+)\)")
COMM = re.compile(r"PERF_RECORD_COMM(?: exec)?: (.*):(\d+)/(\d+)")
SAMPLE = re.compile(r"^\s*(.+?)\s+(\d+)/(\d+)\s+(\d+\.\d+):")
# an agent's life, from the events in its outbox: (label, the event that ends the phase)
PHASES = (("agent: fork -> Downloading", "Downloading"), ("agent: Downloading -> Training", "Training"),
          ("agent: Training -> exit event", "exit"), ("agent: after the exit event", None))


def proc_cpu_ms(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_MS


def thread_names(pid: int) -> dict[int, str]:
    """Native thread id -> Python thread name, from ``py-spy dump`` (empty without py-spy)."""
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(spy):
        return {}
    out = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60, check=False).stdout
    names = {}
    for m in re.finditer(r"Thread (0x[0-9A-Fa-f]+|\d+) \((?:active|idle)[^)]*\): \"([^\"]+)\"", out):
        ident = m.group(1)
        if not ident.startswith("0x"):
            names[int(ident)] = m.group(2)
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--perf", default="perf")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (perf.data)")
    ap.add_argument("--spy", help="also py-spy the fork server and its agents into this file (collapsed stacks)")
    ap.add_argument("--spy-server", help="also py-spy the server's threads into this file (collapsed stacks)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tf-bench-dispatch-cpu-"))
    out = work / "out"
    proc, sm = start_bench_server(work)
    perf_data = work / "perf.data"
    try:
        sm.list_training_jobs()
        blocker = request("dispatch-blocker", out,
                          "import os,time;[time.sleep(.01) for _ in iter(lambda:os.path.exists('/opt/ml/gate'),True)]")
        blocker["ResourceConfig"]["InstanceType"] = "ml.p4d.24xlarge"
        sm.create_training_job(**blocker)
        names = [f"dispatch-{i}" for i in range(args.jobs)]
        until = time.time() + 60  # the blocker's agent is up: what follows is the creates alone
        while (sm.describe_training_job(TrainingJobName="dispatch-blocker")["SecondaryStatus"] != "Training"
               and time.time() < until):
            time.sleep(0.1)
        server_before = proc_cpu_ms(proc.pid)
        for n in names:
            sm.create_training_job(**request(n, out, "date +%s.%N > /opt/ml/model/t", ["/bin/sh", "-c"]))
        create_ms = (proc_cpu_ms(proc.pid) - server_before) / args.jobs
        threads = thread_names(proc.pid)
        existing = tree(proc.pid)  # processes perf sees no fork of: the fork server, the blocker's
        gate = next((work / "data" / "jobs").glob("*/*/dispatch-blocker/attempt-*/algo-1/opt/ml"))
        perf = subprocess.Popen([args.perf, "record", "-q", "-a", "-e", "cpu-clock", "-F", "1000", "-k", "CLOCK_REALTIME", "-o",
                                 str(perf_data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        spy = None
        if args.spy:
            fs = next(pid for pid, (par, name) in existing.items() if par == proc.pid and name.startswith("python"))
            spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "-p", str(fs),
                                    "--subprocesses", "-r", "200", "-f", "raw", "--nonblocking", "-o", args.spy],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if args.spy_server:
            spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "-p",
                                    str(proc.pid), "--threads", "-r", "200", "-f", "raw", "--nonblocking", "-o",
                                    args.spy_server], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # perf is recording
        (gate / "gate").write_text("go")
        t0 = time.time()
        while sm.describe_training_job(TrainingJobName=names[-1])["TrainingJobStatus"] == "InProgress":
            time.sleep(0.2)
        for n in names:
            while sm.describe_training_job(TrainingJobName=n)["TrainingJobStatus"] == "InProgress":
                time.sleep(0.2)
        elapsed = time.time() - t0
        time.sleep(0.5)  # runc delete, after the exit is reported
        perf.send_signal(signal.SIGINT)
        perf.wait(60)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        statuses = collections.Counter(sm.describe_training_job(TrainingJobName=n)["TrainingJobStatus"]
                                       for n in names)
    finally:
        proc.terminate()
        proc.wait(30)
        from trainforge.sandbox.volume import mounted_under, release_under

        left = mounted_under(str(work))
        print(f"volumes left mounted after the server stopped: {len(left)}")
        release_under(str(work))  # never leave them to the host
    script = subprocess.run([args.perf, "script", "-i", str(perf_data), "--show-task-events", "-F",
                             "comm,pid,tid,time,event"], capture_output=True, text=True, check=False).stdout
    phases = agent_phases(work / "data" / "jobs")
    report(script, proc.pid, existing, threads, args.jobs, create_ms, elapsed, statuses, phases)
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def tree(pid: int) -> dict[int, tuple[int, str]]:
    """The living descendants of ``pid``: pid -> (parent, command name)."""
    found: dict[int, tuple[int, str]] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(c) for c in f.read().split()]
            except OSError:
                continue
            for kid in kids:
                try:
                    with open(f"/proc/{kid}/comm") as f:
                        name = f.read().strip()
                except OSError:
                    continue
                found[kid] = (p, name)
                todo.append(kid)
    return found


def agent_phases(jobs_dir: Path) -> dict[int, list[float]]:
    """Agent pid -> the times its Downloading, Training and exit events were emitted (outbox)."""
    import json

    found: dict[int, list[float]] = {}
    for outbox in jobs_dir.glob("*/*/dispatch-*/attempt-*/*/agent-outbox.jsonl"):
        try:
            pid = json.loads((outbox.parent / "instance.json").read_text())["agent_pid"]
        except (OSError, ValueError, KeyError):
            continue
        times = {}
        for line in outbox.read_text().splitlines():
            event = json.loads(line).get("event") or {}
            key = event.get("status") if event.get("type") == "status" else event.get("type")
            times.setdefault(key, event.get("time"))
        found[int(pid)] = [times.get(end) or float("inf") for _, end in PHASES[:-1]]
    return found


def report(script: str, server: int, existing: dict[int, tuple[int, str]], threads: dict[int, str], jobs: int,
           create_ms: float, elapsed: float, statuses: collections.Counter[str],
           phases: dict[int, list[float]]) -> None:
    parent: dict[int, int] = {pid: par for pid, (par, _) in existing.items()}
    comm: dict[int, str] = {pid: name for pid, (_, name) in existing.items()}
    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid, par in parent.items():
        children[par].append(pid)
    samples: list[tuple[int, int, str, float]] = []
    for line in script.splitlines():
        if "PERF_RECORD_FORK" in line:
            m = FORK.search(line)
            if m and m.group(1) != m.group(3):  # a process, not a thread
                child, par = int(m.group(1)), int(m.group(3))
                parent[child] = par
                children[par].append(child)
            continue
        if "PERF_RECORD_COMM" in line:
            m = COMM.search(line)
            if m and m.group(2) == m.group(3):
                comm[int(m.group(2))] = m.group(1)
            continue
        if "PERF_RECORD" in line:
            continue
        m = SAMPLE.match(line)
        if m:
            samples.append((int(m.group(2)), int(m.group(3)), m.group(1), float(m.group(4))))
    forkserver = next((c for c in children.get(server, []) if comm.get(c, "python3").startswith("python")), None)

    def in_tree(pid: int) -> bool:
        while pid in parent:
            if pid == server:
                return True
            pid = parent[pid]
        return pid == server

    def part(pid: int, tid: int, name: str, when: float) -> str:
        if pid == server:
            return "server: " + threads.get(tid, "other threads")
        if forkserver is not None and pid == forkserver:
            return "fork server"
        if pid == 0:
            return "(idle)"
        if not in_tree(pid):
            return "outside: " + name
        if parent.get(pid) == forkserver and name.startswith("python"):
            if pid not in phases:
                return "agent (Python), phase unknown"
            ends = phases[pid]
            return next((label for (label, _), end in zip(PHASES, ends) if when < end), PHASES[-1][0])
        if name == "runc":
            # an agent's first runc is `runc run` (through setpriv), a later one `runc delete`
            agent = pid
            while parent.get(agent) not in (forkserver, None):
                agent = parent[agent]
            runcs = [p for p in descendants(agent) if comm.get(p) == "runc" or p in runc_pids]
            return "runc run" if runcs and runcs[0] == pid else "runc delete"
        if name.startswith("runc:"):
            return "runc init"
        return "program: " + name

    def descendants(pid: int) -> list[int]:
        out = []
        for c in children.get(pid, []):
            out.append(c)
            out += descendants(c)
        return sorted(out)

    runc_pids = {p for p, _, n, _ in samples if n == "runc"}  # a runc pid's last name is runc's, or not
    counts: collections.Counter[str] = collections.Counter(part(p, t, n, w) for p, t, n, w in samples)
    total = sum(counts.values())
    idle = counts.pop("(idle)", 0)
    mine = {k: v for k, v in counts.items() if not k.startswith("outside: ")}
    outside = {k: v for k, v in counts.items() if k.startswith("outside: ")}
    print(f"\ndispatch CPU, {jobs} no-op jobs ({dict(statuses)}), released -> all Completed {elapsed:.2f} s; "
          f"{total} samples of 1 ms on {os.cpu_count()} CPUs ({idle} idle), load average "
          + " ".join(f"{v:.1f}" for v in os.getloadavg()))
    print(f"{'part':40} {'CPU ms/job':>11}")
    print(f"{'API: CreateTrainingJob (server, /proc)':40} {create_ms:11.1f}")
    for key, value in sorted(mine.items(), key=lambda kv: -kv[1]):
        print(f"{key:40} {value / jobs:11.1f}")
    print(f"{'= the server tree after the release':40} {sum(mine.values()) / jobs:11.1f}")
    print("outside the server's tree (other work on the machine, and kernel threads):")
    for key, value in sorted(outside.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {key:38} {value / jobs:11.1f}")


if __name__ == "__main__":
    main()
