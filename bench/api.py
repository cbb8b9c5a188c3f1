"""API server speed: trainforge beside moto's server and a bare Starlette endpoint, in one run.

    python bench/api.py [--jobs 100000] [--seconds 3] [--list-requests 60]

Measures, on this machine and in this one run:

- DescribeTrainingJob and CreateTrainingJob: requests/s and p50/p99 latency at 1, 16 and 64
  concurrent clients, against (a) ``python -m trainforge.server`` (SQLite default, 100,000 jobs
  stored), (b) moto's server (``python -m moto.server``, the peer) and (c) a bare Starlette
  endpoint answering a fixed JSON body (the describe answer of (a), byte for byte) under the same
  uvicorn settings as ``trainforge server`` (the framework's ceiling);
- ListTrainingJobs p50/p99 with the 100,000 jobs, for every filter × every sort and order, each
  case walking pages with NextToken (MaxResults=100);
- the RSS of the trainforge server with 100,000 jobs (after all of the above; and its peak).

The 100,000 jobs are bulk-loaded into the store before the server starts, with ``trainforge.store``
(one SQLAlchemy Core executemany per 5,000 rows): finished jobs (Completed, Failed, Stopped) plus
50 InProgress jobs that occupy all the capacity, so the jobs the Create benchmark adds stay queued
and nothing is ever launched. Requests are unsigned (an embedded server without a credentials file
accepts any key); every server sees the same bytes.

The load generator is one process: asyncio on uvloop, raw HTTP/1.1 on keep-alive connections (one
per client; moto closes every connection, so its clients reconnect, as any client of it must). Its
CPU per request is printed: the 2 cores of this machine are shared by the client and the server
under test, so the client's share is what the server did not get. Nothing is asserted: targets are
printed beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

AUTH = (b"AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sagemaker/aws4_request, "
        b"SignedHeaders=host, Signature=00")
CONCURRENCY = (1, 16, 64)
N_RUNNING = 50
WORDS = ("resnet", "bert", "xgboost", "llama", "whisper", "yolo", "gpt", "t5")
PLAN = "arn:aws:sagemaker:us-east-1:000000000000:training-plan/bench-plan-000000000000000001"
T0 = time.time() - 90 * 86400  # the stored jobs were created over the last 90 days


# --- processes --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout} s")


def start(args: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    wait_listening(port, proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_mb(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def serve_bare(port: int, body_file: str) -> None:
    """The ceiling: POST / answers a fixed JSON body, under trainforge's uvicorn settings."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    body = Path(body_file).read_bytes()

    async def handle(_: Any) -> Response:
        return Response(body, media_type="application/x-amz-json-1.1")

    app = Starlette(routes=[Route("/", handle, methods=["POST"])])
    # The settings of trainforge.server.run.
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                  lifespan="on", loop="auto", http="auto")).run()


# --- data ---------------------------------------------------------------------------------------
def request_body(name: str) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "RoleArn": "arn:aws:iam::000000000000:role/SageMakerRole",
        "AlgorithmSpecification": {"TrainingImage": "trainforge/command:latest", "TrainingInputMode": "File",
                                   "ContainerEntrypoint": ["/bin/sh", "-c"], "ContainerArguments": ["true"]},
        "HyperParameters": {"epochs": "10", "learning_rate": "0.001", "batch_size": "64"},
        "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": "s3://bench-data/train/"}}}],
        "OutputDataConfig": {"S3OutputPath": "s3://bench-output/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }


def job_name(i: int) -> str:
    return f"{WORDS[i % len(WORDS)]}-run-{i:06d}"


def bulk_load(data_dir: Path, n: int) -> float:
    """``n`` jobs straight into the store (not through the API); returns the seconds it took."""
    import orjson
    from sqlalchemy import insert

    from trainforge.store.db import Database
    from trainforge.store.schema import jobs

    started = time.perf_counter()
    db = Database(f"sqlite:///{data_dir / 'trainforge.db'}")
    db.migrate()
    rng = random.Random(42)
    rows: list[dict[str, Any]] = []
    span = 90 * 86400
    for i in range(n):
        name = job_name(i)
        created = T0 + span * i / n
        running = i >= n - N_RUNNING
        duration = rng.uniform(60, 7200)
        end = None if running else created + duration
        status = "InProgress" if running else rng.choices(("Completed", "Failed", "Stopped"), (80, 8, 12))[0]
        secondary = "Training" if running else status
        transitions = [{"Status": "Starting", "StartTime": created, "EndTime": created + 5,
                        "StatusMessage": "Preparing the instances for training"},
                       {"Status": "Training", "StartTime": created + 5,
                        "StatusMessage": "Training image download completed. Training in progress."}]
        state: dict[str, Any] = {"SecondaryStatusTransitions": transitions, "TrainingStartTime": created + 5}
        if end is not None:
            transitions[-1]["EndTime"] = end
            transitions.append({"Status": secondary, "StartTime": end, "EndTime": end, "StatusMessage": status})
            state.update(TrainingTimeInSeconds=int(duration), BillableTimeInSeconds=int(duration))
        request = request_body(name)
        plan = PLAN if i % 50 == 7 else None
        if plan:
            request["ResourceConfig"]["TrainingPlanArn"] = plan
        rows.append({
            "account_id": "000000000000", "region": "us-east-1", "name": name,
            "arn": f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{name}",
            "status": status, "secondary_status": secondary, "creation_time": created,
            "last_modified_time": end if end is not None else created + 5, "training_end_time": end,
            "warm_pool_status": ("Available", "Terminated", "Reused")[i % 3] if i % 40 == 3 else None,
            "training_plan_arn": plan, "request": orjson.dumps(request).decode(),
            "state": orjson.dumps(state).decode(), "phase": "running" if running else "done",
            "stop_reason": None, "attempt": 1, "token": f"{i:048x}",
        })
        if len(rows) == 5000 or i == n - 1:
            with db.write() as conn:
                conn.execute(insert(jobs), rows)
            rows = []
    db.dispose()
    return time.perf_counter() - started


# --- load generator -----------------------------------------------------------------------------
class Target:
    def __init__(self, label: str, port: int) -> None:
        self.label = label
        self.port = port


def http_request(port: int, operation: str, body: bytes) -> bytes:
    return (b"POST / HTTP/1.1\r\nHost: 127.0.0.1:" + str(port).encode() +
            b"\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: SageMaker." + operation.encode() +
            b"\r\nAuthorization: " + AUTH + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection: *close", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding: *chunked", re.IGNORECASE)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    m = _LENGTH.search(head)
    if m:
        body = await reader.readexactly(int(m.group(1)))
    elif _CHUNKED.search(head):
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        body = b"".join(p[:-2] for p in parts)
    else:
        body = await reader.read()
        return status, body, True
    return status, body, bool(_CLOSE.search(head))


async def client(port: int, operation: str, bodies: Any, deadline: float, warm_until: float,
                 latencies: list[float], errors: list[str]) -> int:
    reader = writer = None
    done = 0
    while True:
        now = time.perf_counter()
        if now >= deadline:
            break
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        payload = http_request(port, operation, next(bodies))
        t = time.perf_counter()
        writer.write(payload)
        status, body, close = await read_response(reader)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - t
        if status != 200:
            errors.append(f"{status} {body[:200]!r}")
        if t >= warm_until:
            latencies.append(elapsed)
            done += 1
        if close:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()
    return done


def run_load(port: int, operation: str, bodies: Any, clients: int, seconds: float) -> dict[str, float]:
    import uvloop

    async def main() -> tuple[list[float], list[str], float, float]:
        latencies: list[float] = []
        errors: list[str] = []
        start = time.perf_counter()
        warm_until = start + min(0.5, seconds / 4)
        deadline = warm_until + seconds
        cpu0 = time.process_time()
        await asyncio.gather(*(client(port, operation, bodies, deadline, warm_until, latencies, errors)
                               for _ in range(clients)))
        return latencies, errors, time.process_time() - cpu0, deadline - warm_until

    latencies, errors, cpu, wall = uvloop.run(main())
    if errors:
        raise SystemExit(f"{operation} on port {port}: {len(errors)} errors, first: {errors[0]}")
    latencies.sort()
    n = len(latencies)
    return {"rps": n / wall, "p50": latencies[n // 2] * 1000, "p99": latencies[min(n - 1, int(n * 0.99))] * 1000,
            "n": n, "client_us": cpu / max(n, 1) * 1e6, "client_cpu": cpu / (wall + 0.5)}


def cycle(items: list[bytes]) -> Any:
    while True:
        yield from items


def creates(prefix: str) -> Any:
    i = 0
    while True:
        i += 1
        yield json.dumps(request_body(f"{prefix}-{i}")).encode()


# --- ListTrainingJobs ---------------------------------------------------------------------------
def list_cases() -> list[tuple[str, dict[str, Any]]]:
    recent = T0 + 90 * 86400 * 0.9  # the newest 10 %
    return [
        ("(none)", {}),
        ("NameContains=bert (1/8 match)", {"NameContains": "bert"}),
        ("NameContains=run-0999 (rare)", {"NameContains": "run-0999"}),
        ("StatusEquals=Completed", {"StatusEquals": "Completed"}),
        ("StatusEquals=InProgress (50)", {"StatusEquals": "InProgress"}),
        ("CreationTimeAfter=newest 10%", {"CreationTimeAfter": recent}),
        ("CreationTimeBefore=oldest 10%", {"CreationTimeBefore": T0 + 90 * 86400 * 0.1}),
        ("LastModifiedTimeAfter=newest 10%", {"LastModifiedTimeAfter": recent}),
        ("LastModifiedTimeBefore=oldest 10%", {"LastModifiedTimeBefore": T0 + 90 * 86400 * 0.1}),
        ("WarmPoolStatusEquals=Available", {"WarmPoolStatusEquals": "Available"}),
        ("TrainingPlanArnEquals (2%)", {"TrainingPlanArnEquals": PLAN}),
        ("Status+Name+time combined", {"StatusEquals": "Failed", "NameContains": "llama",
                                       "CreationTimeAfter": T0 + 90 * 86400 * 0.5}),
    ]


SORTS = [("Name", "Ascending"), ("Name", "Descending"), ("CreationTime", "Ascending"),
         ("CreationTime", "Descending"), ("Status", "Ascending"), ("Status", "Descending")]


def bench_list(port: int, requests: int) -> list[tuple[str, list[tuple[float, float]]]]:
    """Sequential requests (one client); each case walks its pages with NextToken, then starts over."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "SageMaker.ListTrainingJobs",
               "Authorization": AUTH.decode()}
    table = []
    for label, flt in list_cases():
        row = []
        for sort_by, order in SORTS:
            params = {**flt, "SortBy": sort_by, "SortOrder": order, "MaxResults": 100}
            token = None
            lat = []
            for _ in range(requests):
                body = json.dumps({**params, **({"NextToken": token} if token else {})})
                t = time.perf_counter()
                conn.request("POST", "/", body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                lat.append((time.perf_counter() - t) * 1000)
                if resp.status != 200:
                    raise SystemExit(f"ListTrainingJobs {params}: {resp.status} {data[:300]!r}")
                token = json.loads(data).get("NextToken")
            lat.sort()
            row.append((lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]))
        table.append((label, row))
    conn.close()
    return table


# --- main ---------------------------------------------------------------------------------------
def fmt_row(r: dict[str, float]) -> str:
    return f"{r['rps']:8.0f} {r['p50']:6.2f} {r['p99']:7.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per point (after warm-up)")
    parser.add_argument("--list-requests", type=int, default=60, help="requests per ListTrainingJobs case")
    parser.add_argument("--serve-bare", nargs=2, metavar=("PORT", "BODY_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(int(args.serve_bare[0]), args.serve_bare[1])
        return

    work = Path(tempfile.mkdtemp(prefix="tf-bench-api-"))
    procs: list[subprocess.Popen[bytes]] = []
    out: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        out.append(line)

    try:
        load_before = os.getloadavg()[0]
        print(f"bulk-loading {args.jobs:,} jobs ...", flush=True)
        data_dir = work / "trainforge"
        data_dir.mkdir()
        load_seconds = bulk_load(data_dir, args.jobs)

        tf_port, moto_port, bare_port = free_port(), free_port(), free_port()
        cfg = work / "config.json"
        cfg.write_text(json.dumps({"log_level": "warning"}))
        tf = start([sys.executable, "-m", "trainforge.server", "--port", str(tf_port), "--data-dir", str(data_dir),
                    "--config", str(cfg)], tf_port, work / "trainforge.log")
        procs.append(tf)
        moto = start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)], moto_port,
                     work / "moto.log")
        procs.append(moto)

        # Jobs to describe: the same names on trainforge (stored) and moto (created now).
        rng = random.Random(7)
        names = [job_name(rng.randrange(args.jobs - N_RUNNING)) for _ in range(1000)]
        for name in names:
            run_once(moto_port, "CreateTrainingJob", json.dumps(request_body(name)).encode())
        describe_answer = run_once(tf_port, "DescribeTrainingJob", json.dumps({"TrainingJobName": names[0]}).encode())
        (work / "describe.json").write_bytes(describe_answer)
        bare = start([sys.executable, __file__, "--serve-bare", str(bare_port), str(work / "describe.json")], bare_port,
                     work / "bare.log")
        procs.append(bare)
        describe_bodies = [json.dumps({"TrainingJobName": n}).encode() for n in names]

        targets = [Target("trainforge", tf_port), Target("moto", moto_port), Target("bare", bare_port)]
        results: dict[tuple[str, str, int], dict[str, float]] = {}

        def measure(operation: str) -> None:
            for clients in CONCURRENCY:
                for t in targets:
                    bodies = cycle(describe_bodies) if operation == "DescribeTrainingJob" else \
                        creates(f"bench-{t.label}-{clients}")
                    print(f"  {operation} {t.label} x{clients} ...", flush=True)
                    results[(operation, t.label, clients)] = run_load(t.port, operation, bodies, clients, args.seconds)

        # Reads first, on exactly the bulk-loaded jobs; then the creates (which add queued jobs).
        measure("DescribeTrainingJob")
        print("  ListTrainingJobs ...", flush=True)
        list_table = bench_list(tf_port, args.list_requests)
        rss, peak = rss_mb(tf.pid)
        measure("CreateTrainingJob")
        rss_after, peak_after = rss_mb(tf.pid)

        say()
        say(f"trainforge API benchmark ({os.cpu_count()} cores shared by the load generator and the server under "
            f"test; load average before the run {load_before:.1f})")
        say(f"store: SQLite (default), {args.jobs:,} jobs bulk-loaded with trainforge.store (Core executemany, "
            f"5,000 rows per statement) in {load_seconds:.1f} s")
        say("client: 1 process, asyncio + uvloop, raw HTTP/1.1 keep-alive (moto closes each connection: its "
            "clients reconnect)")
        for operation in ("DescribeTrainingJob", "CreateTrainingJob"):
            say()
            say(f"{operation}: requests/s, p50 ms, p99 ms ({args.seconds:g} s per point)")
            say(f"{'clients':>7} | {'trainforge':^23} | {'moto_server':^23} | {'bare Starlette':^23} | "
                f"{'tf/moto':>7} | {'tf/bare':>7} | client µs/req (CPU%)")
            for clients in CONCURRENCY:
                r_tf, r_moto, r_bare = (results[(operation, x, clients)] for x in ("trainforge", "moto", "bare"))
                say(f"{clients:>7} | {fmt_row(r_tf)} | {fmt_row(r_moto)} | {fmt_row(r_bare)} | "
                    f"{r_tf['rps'] / r_moto['rps']:6.1f}x | {r_tf['rps'] / r_bare['rps']:6.0%} | "
                    f"{r_tf['client_us']:.0f} ({r_tf['client_cpu']:.0%})")
            if operation == "DescribeTrainingJob":
                say("target: throughput >= 3x moto and >= 50% of bare")
        say()
        say(f"ListTrainingJobs with {args.jobs:,} jobs, MaxResults=100, {args.list_requests} requests per case "
            "walking pages with NextToken: p50/p99 ms (target p99 <= 50 ms)")
        header = " | ".join(f"{s[:8]}{'+' if o == 'Ascending' else '-'}".center(11) for s, o in SORTS)
        say(f"{'filter':<34} | {header}")
        worst = 0.0
        for label, row in list_table:
            say(f"{label:<34} | " + " | ".join(f"{p50:4.1f}/{p99:5.1f}" for p50, p99 in row))
            worst = max(worst, *(p99 for _, p99 in row))
        say(f"worst p99: {worst:.1f} ms ({'meets' if worst <= 50 else 'MISSES'} the 50 ms target)")
        say()
        say(f"trainforge server RSS with {args.jobs:,} jobs stored, after the describes and lists: {rss:.0f} MB "
            f"(peak {peak:.0f} MB); target <= 200 MB")
        say(f"... and after the creates: {rss_after:.0f} MB (peak {peak_after:.0f} MB)")
    finally:
        for proc in procs:
            stop(proc)
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def run_once(port: int, operation: str, body: bytes) -> bytes:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/", body=body, headers={"Content-Type": "application/x-amz-json-1.1",
                                                  "X-Amz-Target": "SageMaker." + operation,
                                                  "Authorization": AUTH.decode()})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.status != 200:
        raise SystemExit(f"{operation} on port {port}: {resp.status} {data[:300]!r}")
    return data


if __name__ == "__main__":
    main()
