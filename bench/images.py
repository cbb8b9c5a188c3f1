"""Bring-your-own-container start-up (issue 11). One command, prints a table.

    python bench/images.py [--mb 200] [--runs 3] [--jobs 10]

Needs root, docker-registry, skopeo, umoci, runc and a static /bin/busybox (busybox-static). Builds a
~200 MB image on this machine (a static busybox and files copied from /usr), pushes it to Debian's
docker-registry on loopback, then measures, each time beside the peer measured in the same run:

  cold  CreateTrainingJob sent -> the image's entrypoint runs, the image not cached (a new tag: the
        same layers under a new name would be found in the blob cache, so each run pushes the image
        with fresh layers), beside ``skopeo copy`` + ``umoci unpack`` of the same image by hand;
  warm  the same with the image cached, beside ``runc run`` by hand of the unpacked bundle (umoci's
        own config.json, the same entrypoint), and beside a catalog-image job (same sandbox, no
        image) to show what the image adds to the sandbox's own start. Each warm job is created
        once the one before it has ended and the server has prepared the next instance of its shape
        (config ``prepared_instances``, the default: docs/INTERNALS.md "Prepared instances"), as when a
        user's jobs come one after another; the same jobs created back to back (each as soon as the
        one before it runs: no instance prepared yet) are shown too;
  pulls 10 jobs of one new image created at once: manifests the registry served (target 1).

Target columns: cold <= 1.1 x by hand; warm <= 1.2 x runc by hand + 15 ms. Nothing is asserted.
The entrypoint records when it ran by creating a file in a directory the instances see
(``sandbox_mounts``); the bench polls for it every 2 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(HERE)]

import boto3
from botocore.config import Config as BotoConfig
from overhead import ended, prepared_for, start_server

from tests.oci_registry import Entry, busybox_layer, file, start_registry, tar_layer, write_layout

ENTRY = "#!/bin/sh\necho started > \"$MARK\"\n"


def filler(mb: int, salt: str) -> bytes:
    """A layer of ~``mb`` MB of real files from /usr (shared libraries, data), plus a salt file so
    that each image's layers are new to the registry and to the cache."""
    entries, total = [file("salt", salt)], 0
    for base in ("/usr/lib/x86_64-linux-gnu", "/usr/share", "/usr/lib", "/usr/bin"):
        for dirpath, _dirs, files in os.walk(base):
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                try:
                    data = Path(path).read_bytes()
                except OSError:
                    continue
                entries.append(Entry("data" + path, data, 0o644))
                total += len(data)
                if total >= mb * 1024 * 1024:
                    return tar_layer(entries)
    return tar_layer(entries)


def build(tmp: Path, mb: int, salt: str) -> Path:
    program = tar_layer([Entry("usr", kind=b"5", mode=0o755), Entry("usr/bin", kind=b"5", mode=0o755),
                         file("usr/bin/entry", ENTRY, 0o755)])
    return write_layout(tmp / f"layout-{salt}", [busybox_layer([file("salt0", salt)]), filler(mb, salt), program],
                        {"Entrypoint": ["/usr/bin/entry"], "Env": ["PATH=/usr/bin:/bin"]})


def wait_file(path: Path, timeout: float = 900, sm=None) -> float:
    deadline = time.monotonic() + timeout
    polls = 0
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {path}")
        polls += 1
        if sm is not None and polls % 500 == 0:
            job = sm.describe_training_job(TrainingJobName=path.name)
            if job["TrainingJobStatus"] == "Failed" and not path.exists():
                raise SystemExit(f"{path.name} failed: {job.get('FailureReason')}")
        time.sleep(0.002)
    return time.monotonic()


def after_prepared(sm, data: Path, previous: str, image: str) -> None:
    """The job before has ended and an instance is prepared for ``image``: a user's next job of the
    same kind, a moment later."""
    ended(sm, previous)
    prepared_for(data, image)


def job_start(sm, marks: Path, image: str, name: str, wait: bool = True, entry: list[str] | None = None) -> float:
    mark = marks / name
    algo = {"TrainingImage": image, "TrainingInputMode": "File"}
    if entry:
        algo |= {"ContainerEntrypoint": entry[:1], "ContainerArguments": entry[1:]}
    t0 = time.monotonic()
    sm.create_training_job(
        TrainingJobName=name, RoleArn="arn:aws:iam::000000000000:role/Bench", AlgorithmSpecification=algo,
        OutputDataConfig={"S3OutputPath": f"file://{marks}/out"}, Environment={"MARK": str(mark)},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 3600})
    return wait_file(mark, sm=sm) - t0 if wait else t0


def by_hand_pull(image: str, work: Path) -> tuple[float, Path]:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    t0 = time.monotonic()
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false", f"docker://{image}",
                    f"oci:{work}/layout:x"], check=True, capture_output=True, env={**os.environ, "HOME": str(work)})
    subprocess.run(["umoci", "--log", "error", "unpack", "--image", f"{work}/layout:x", str(work / "bundle")],
                   check=True, capture_output=True)
    return time.monotonic() - t0, work / "bundle"


def by_hand_run(bundle: Path, marks: Path, n: int) -> float:
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["/usr/bin/entry", "train"]
    cfg["mounts"].append({"destination": str(marks), "type": "bind", "source": str(marks), "options": ["rbind", "rw"]})
    (bundle / "config.json").write_text(json.dumps(cfg))
    state = Path(tempfile.mkdtemp(prefix="runc-"))
    times = []
    for i in range(n):
        mark = marks / f"hand-{i}"
        cfg["process"]["env"] = [e for e in cfg["process"]["env"] if not e.startswith("MARK=")] + [f"MARK={mark}"]
        (bundle / "config.json").write_text(json.dumps(cfg))
        t0 = time.monotonic()
        proc = subprocess.Popen(["runc", "--root", str(state), "run", "--bundle", str(bundle), f"bench-{i}"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(wait_file(mark) - t0)
        proc.wait()
    shutil.rmtree(state, ignore_errors=True)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (server data, agent logs)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-images-"))
    os.chmod(tmp, 0o755)
    marks = tmp / "marks"
    marks.mkdir(mode=0o777)
    os.chmod(marks, 0o777)
    registry = start_registry(tmp / "registry")
    server = None
    try:
        data = tmp / "data"
        data.mkdir()
        server, endpoint = start_server(data, {"sandbox_mounts": [str(marks)], "allowed_local_roots": [str(tmp)],
                                               "stop_grace_seconds": 5, "images": [
            {"image": "trainforge/command:*", "kind": "command", "entrypoint": ["/bin/sh", "-c"]}]})
        sm = boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x", config=BotoConfig(retries={"max_attempts": 0}))
        print(f"building and pushing {args.runs} images of ~{args.mb} MB ...", file=sys.stderr)
        images = [registry.push(build(tmp, args.mb, f"cold{i}"), f"bench/cold{i}", "1") for i in range(args.runs)]
        size = sum(f.stat().st_size for f in (tmp / "layout-cold0" / "blobs" / "sha256").iterdir())
        cold, hand, bundle = [], [], None
        for i, image in enumerate(images):
            seconds, bundle = by_hand_pull(image, tmp / "hand")
            hand.append(seconds)
            cold.append(job_start(sm, marks, image, f"cold-{i}"))
        back_to_back = [job_start(sm, marks, images[0], f"b2b-{i}") for i in range(args.runs * 2)]
        previous = f"b2b-{args.runs * 2 - 1}"

        def one_after_another(kind: str, image: str, entry: list[str] | None) -> list[float]:
            nonlocal previous
            times = []
            for i in range(args.runs * 2):
                after_prepared(sm, data, previous, image)
                previous = f"{kind}-{i}"
                times.append(job_start(sm, marks, image, previous, entry=entry))
            return times
        warm = one_after_another("warm", images[0], None)
        catalog_entry = ["/bin/sh", "-c", 'echo started > "$MARK"']
        previous = "catalog-first"  # the server's first job of that kind: after it, one is prepared
        job_start(sm, marks, "trainforge/command:latest", previous, entry=catalog_entry)
        catalog = one_after_another("catalog", "trainforge/command:latest", catalog_entry)
        assert bundle is not None
        runc_hand = by_hand_run(bundle, marks, args.runs * 2)
        many = registry.push(build(tmp, 20, "many"), "bench/many", "1")
        before = registry.manifest_gets()
        t0s = [job_start(sm, marks, many, f"many-{i}", wait=False) for i in range(args.jobs)]
        ends = [wait_file(marks / f"many-{i}", sm=sm) for i in range(args.jobs)]
        pulls = registry.manifest_gets() - before
        for name in [f"{kind}-{i}" for kind, n in (("cold", args.runs), ("b2b", args.runs * 2), ("warm", args.runs * 2),
                                                   ("catalog", args.runs * 2), ("many", args.jobs)) for i in range(n)]:
            ended(sm, name)  # the server releases each job's volume when it has ended
        ended(sm, "catalog-first")
        c, h, w, r, k, b = (statistics.median(x) for x in (cold, hand, warm, [runc_hand], catalog, back_to_back))
        rows = [
            ("cold start, image not cached", f"{c * 1000:.0f} ms", "skopeo copy + umoci unpack by hand",
             f"{h * 1000:.0f} ms", f"{c / h:.2f}x", "<= 1.10x"),
            ("warm start, image cached", f"{w * 1000:.0f} ms", "runc run of the bundle by hand", f"{r * 1000:.0f} ms",
             f"{w / r:.2f}x", f"<= {1.2 * r * 1000 + 15:.0f} ms"),
            ("warm start, image cached", f"{w * 1000:.0f} ms", "catalog-image job (same sandbox)",
             f"{k * 1000:.0f} ms", f"{(w - k) * 1000:+.0f} ms", "(what the image adds)"),
            ("  ... jobs back to back (none prepared)", f"{b * 1000:.0f} ms", "runc run of the bundle by hand",
             f"{r * 1000:.0f} ms", f"{b / r:.2f}x", "(for the record)"),
            (f"{args.jobs} jobs of one new image at once", f"{pulls} pull(s)", "", "", "",
             "1 pull"),
            ("  ... the last of them started after", f"{(max(ends) - min(t0s)) * 1000:.0f} ms", "", "", "", ""),
        ]
        print(f"\nimage: {size / 1e6:.0f} MB compressed in 3 layers; medians of {args.runs} cold / "
              f"{args.runs * 2} warm runs")
        widths = [max(len(str(row[i])) for row in rows + [HEADER]) for i in range(len(HEADER))]
        for row in [HEADER, tuple("-" * n for n in widths), *rows]:
            print("  ".join(str(v).ljust(n) for v, n in zip(row, widths)))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        registry.stop()
        from trainforge.sandbox.volume import release_under

        release_under(str(tmp / "data"))  # volumes of jobs the server had no time to sweep
        if args.keep:
            print(f"kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


HEADER = ("figure", "trainforge", "peer", "peer value", "ratio", "target")

if __name__ == "__main__":
    main()
