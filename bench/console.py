"""The web console's speed in headless Chromium (issue 15), against a real server.

    python bench/console.py [--jobs 10000] [--log-lines 100000] [--points 50000] [--idle-seconds 20]

Stores ``--jobs`` jobs (bench/api.py's bulk loader: finished jobs and 50 running ones) and one job
with ``--log-lines`` log lines and ``--points`` metric samples (loss on algo-1, straight into the
store), starts ``python -m trainforge.server`` on them and opens the pages in Debian's Chromium
(Playwright, the system browser: nothing is downloaded), each in a fresh browser context (nothing
cached), three times, the median printed:

- the jobs page: first render (the browser's first-contentful-paint) and complete (the first page
  of jobs and the capacity line shown);
- the job page of the big job: first render, the description and newest log lines shown (the first
  screen's 100; the other 900 of the first page are laid out after the charts), and complete
  (that and every chart drawn, the chart library loaded);
- the bytes each page transferred (its weight), uncompressed and as sent;
- the server's CPU while pages stay open and nothing changes: with none open, then with 4 open
  (2 of each), per open page = the difference / 4 (from /proc/PID/stat).

Targets: 1 s for each time, 1 % CPU per open page. Nothing is asserted. For fairness on a loaded
machine, the same browser's references, in the same run and the same way (fresh context, median of 3):
a blank page's first render, and the chart library alone (a page that loads the chart library's script from
the server and nothing else: fetched and evaluated).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

BIG = "big-logs-and-metrics"
CHROMIUM = "/usr/bin/chromium"
RUNS = 3
OPEN_PAGES = 4


def load_big_job(data_dir: Path, lines: int, points: int) -> None:
    """One finished job with ``lines`` log lines (every 20th trainforge's own) and ``points`` samples."""
    import orjson
    from sqlalchemy import insert

    from trainforge.log_streams import algorithm_stream, platform_stream
    from trainforge.store.db import Database
    from trainforge.store.schema import instances, jobs, log_events, metric_samples

    db = Database(f"sqlite:///{data_dir / 'trainforge.db'}")
    t0 = time.time() - 3600
    stream = algorithm_stream(BIG, "algo-1", int(t0))
    request = {"TrainingJobName": BIG, "RoleArn": "arn:aws:iam::000000000000:role/R",
               "AlgorithmSpecification": {"TrainingImage": "trainforge/command:latest", "TrainingInputMode": "File",
                                          "MetricDefinitions": [{"Name": "loss", "Regex": "loss=(.*)"}]},
               "OutputDataConfig": {"S3OutputPath": "s3://bench/out"}, "HyperParameters": {"epochs": "50"},
               "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
               "StoppingCondition": {"MaxRuntimeInSeconds": 86400}}
    state = {"SecondaryStatusTransitions": [{"Status": "Completed", "StartTime": t0 + 3000, "EndTime": t0 + 3000,
                                             "StatusMessage": "Training job completed"}], "TrainingStartTime": t0}
    with db.write() as conn:
        job_id = conn.execute(insert(jobs).values(
            account_id="000000000000", region="us-east-1", name=BIG, status="Completed", secondary_status="Completed",
            arn=f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{BIG}", creation_time=t0,
            last_modified_time=t0 + 3000, training_end_time=t0 + 3000, request=orjson.dumps(request).decode(),
            state=orjson.dumps(state).decode(), phase="done", attempt=1, token="f" * 64)).inserted_primary_key[0]
        conn.execute(insert(instances).values(job_id=job_id, host="algo-1", attempt=1, backend="local", state="exited",
                                              outcome="ok", started_at=t0, ended_at=t0 + 3000, log_stream=stream))
    for start in range(0, lines, 20000):
        rows = [{"job_id": job_id, "stream": platform_stream(stream) if i % 20 == 0 else stream,
                 "timestamp": int((t0 + i * 3000 / lines) * 1000), "ingestion_time": int((t0 + i * 3000 / lines) * 1000),
                 "message": f"step {i} loss={1 / (1 + i / 1000):.6f} lr=0.001 throughput=1234.5 samples/s"}
                for i in range(start, min(lines, start + 20000))]
        with db.write() as conn:
            conn.execute(insert(log_events), rows)
    for start in range(0, points, 25000):
        rows = [{"job_id": job_id, "name": "loss", "timestamp": t0 + i * 3000 / points, "value": 1 / (1 + i / 1000),
                 "host": "algo-1", "kind": "algorithm"} for i in range(start, min(points, start + 25000))]
        with db.write() as conn:
            conn.execute(insert(metric_samples), rows)
    db.dispose()


def start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    cfg = data_dir / "config.json"
    cfg.write_text(json.dumps({"isolation": "none", "embedded_s3": False, "log_level": "warning"}))
    with open(data_dir / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "trainforge.server", "--port", "0", "--data-dir",
                                 str(data_dir), "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = (data_dir / "server.log").read_text()
        if "listening on " in text:
            return proc, text.split("listening on ", 1)[1].split()[0]
        if proc.poll() is not None:
            raise SystemExit(f"the server exited:\n{text}")
        time.sleep(0.1)
    raise SystemExit("the server did not start")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def page_weight(page: Any) -> tuple[int, int]:
    """(decoded, transferred) bytes of the document and everything it loaded."""
    got = page.evaluate("""() => [...performance.getEntriesByType('navigation'),
                                  ...performance.getEntriesByType('resource')]
        .filter(e => !e.name.includes('/api/events'))
        .reduce((a, e) => [a[0] + e.decodedBodySize, a[1] + e.transferSize], [0, 0])""")
    return int(got[0]), int(got[1])


def measure(browser: Any, url: str, complete: str) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(url)
    page.wait_for_function(complete, timeout=60_000)
    fcp = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? NaN")
    done = page.evaluate(f"Math.max(...({complete}).split(',').map(Number))")
    shown = page.evaluate("Number(document.body.dataset.readyAt)")
    decoded, sent = page_weight(page)
    context.close()
    return {"first": fcp / 1000, "shown": shown / 1000, "complete": done / 1000, "decoded": decoded, "sent": sent}


def reference_pages(browser: Any, base: str, chart_urls: list[str]) -> tuple[float, float]:
    """(a blank page's first render, a page loading only the chart library: its scripts evaluated), s."""
    scripts = "".join(f'<script src="{url}"></script>' for url in chart_urls)
    pages = {"/bench-blank": "<!doctype html><p>blank</p>",
             "/bench-charts": f"<!doctype html><p>library</p>{scripts}<script>window.loadedAt = performance.now()</script>"}
    times: dict[str, list[float]] = {path: [] for path in pages}
    for path, body in pages.items():
        for _ in range(RUNS):
            context = browser.new_context()
            page = context.new_page()
            # served as if by the server (same origin, so the library comes from it, uncached)
            page.route(f"{base}{path}", lambda route, _request, body=body: route.fulfill(body=body,
                                                                                     content_type="text/html"))
            page.goto(f"{base}{path}")
            page.wait_for_function("document.readyState === 'complete'", timeout=60_000)
            got = page.evaluate("window.loadedAt ?? performance.getEntriesByName('first-contentful-paint')[0]"
                                "?.startTime ?? NaN")
            times[path].append(got / 1000)
            context.close()
    return statistics.median(times["/bench-blank"]), statistics.median(times["/bench-charts"])


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def idle_cpu(browser: Any, pid: int, urls: list[str], seconds: float) -> float:
    """Server CPU % over ``seconds`` with ``urls`` open (loaded, then left alone)."""
    context = browser.new_context()
    for url in urls:
        page = context.new_page()
        page.goto(url)
        page.wait_for_function("document.body.dataset.ready", timeout=60_000)
    time.sleep(2)  # the pages' first requests are answered
    before, t = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    used = (cpu_seconds(pid) - before) / (time.monotonic() - t) * 100
    context.close()
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--log-lines", type=int, default=100_000)
    parser.add_argument("--points", type=int, default=50_000)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = parser.parse_args()
    from api import bulk_load  # bench/api.py's loader
    from playwright.sync_api import sync_playwright

    load_at_start = os.getloadavg()[0]
    data_dir = Path(tempfile.mkdtemp(prefix="tf-bench-console-"))
    print(f"loading {args.jobs:,} jobs and a job of {args.log_lines:,} log lines and {args.points:,} points ...",
          flush=True)
    bulk_load(data_dir, args.jobs)
    load_big_job(data_dir, args.log_lines, args.points)
    proc, base = start_server(data_dir)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
            jobs_page = f"{base}/console"
            job_page = f"{base}/console/jobs/{BIG}"
            from trainforge.console.assets import chart_files
            chart = chart_files()
            blank, library = reference_pages(browser, base, [f"/console/static/{chart[0]}"] if chart else [])
            jobs = median_of([measure(browser, jobs_page, "document.body.dataset.readyAt") for _ in range(RUNS)])
            job = median_of([measure(browser, job_page, "document.body.dataset.chartedAt && "
                                     "document.body.dataset.readyAt && (document.body.dataset.readyAt + ',' + "
                                     "document.body.dataset.chartedAt)") for _ in range(RUNS)])
            # idle: the scheduler's own beat first, then with the pages open
            baseline = idle_cpu(browser, proc.pid, [], args.idle_seconds)
            open_pages = idle_cpu(browser, proc.pid, [jobs_page, job_page] * (OPEN_PAGES // 2), args.idle_seconds)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    per_page = max(0.0, open_pages - baseline) / OPEN_PAGES
    rows = [
        (f"jobs page, first render ({args.jobs:,} jobs)", f"{jobs['first']:.3f} s", "≤ 1 s"),
        ("jobs page, complete (first page of 50)", f"{jobs['complete']:.3f} s", "≤ 1 s"),
        (f"job page, first render ({args.log_lines:,} lines, {args.points:,} points)", f"{job['first']:.3f} s", "≤ 1 s"),
        ("job page, description and the newest log lines shown", f"{job['shown']:.3f} s", ""),
        ("job page, complete (logs + charts)", f"{job['complete']:.3f} s", "≤ 1 s"),
        ("jobs page weight (decoded / sent)", f"{jobs['decoded'] / 1024:.0f} / {jobs['sent'] / 1024:.0f} KiB", ""),
        ("job page weight (decoded / sent)", f"{job['decoded'] / 1024:.0f} / {job['sent'] / 1024:.0f} KiB", ""),
        ("server CPU idle, no page open", f"{baseline:.2f} %", ""),
        (f"server CPU idle, {OPEN_PAGES} pages open", f"{open_pages:.2f} %", ""),
        ("server CPU idle per open page", f"{per_page:.2f} %", "≤ 1 %"),
    ]
    rows += [("reference: a blank page, first render", f"{blank:.3f} s", "same browser, same run"),
             ("reference: the chart library alone, loaded and evaluated", f"{library:.3f} s", "")]
    rows.append(("load average (1 min) at the start / at the end; this machine's cores",
                 f"{load_at_start:.1f} / {os.getloadavg()[0]:.1f}",
                 f"{os.cpu_count()} cores"))
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'value':>16}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>16}  {target}")


if __name__ == "__main__":
    main()
