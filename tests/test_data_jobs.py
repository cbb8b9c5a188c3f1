"""Input channels and checkpoints through real training jobs on a real server (issue 4).

Each job runs a small reader program that reads its channels the way training code does
(File/FastFile directories, Pipe FIFOs epoch after epoch) and writes a digest of what it saw into
its model; the tests compare the digest with the bytes and order they expect.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import minimal_request, read_model, unique_name, wait_for_job, wait_until

READER = r"""
import base64, hashlib, json, os, sys, time
inp = os.environ.get("SM_INPUT_DIR", "/opt/ml/input")
cfg = json.load(open(os.path.join(inp, "config", "inputdataconfig.json")))
out = {}
for ch, c in sorted(cfg.items()):
    data = os.path.join(inp, "data")
    if c["TrainingInputMode"] == "Pipe":
        epochs = []
        for e in range(2):
            path = os.path.join(data, f"{ch}_{e}")
            deadline = time.monotonic() + 60
            while not os.path.exists(path):
                assert time.monotonic() < deadline, path
                time.sleep(0.01)
            with open(path, "rb") as f:
                epochs.append(base64.b64encode(f.read()).decode())
        out[ch] = {"mode": "Pipe", "epochs": epochs}
    else:
        if c["TrainingInputMode"] == "FastFile":
            deadline = time.monotonic() + 60
            while not os.path.exists(os.path.join(data, ch + ".fastfile-complete")):
                assert time.monotonic() < deadline
                time.sleep(0.01)
        files = {}
        root = os.path.join(data, ch)
        for dirpath, _, names in os.walk(root):
            for n in names:
                p = os.path.join(dirpath, n)
                files[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
        out[ch] = {"mode": c["TrainingInputMode"], "files": files}
host = os.environ.get("SM_CURRENT_HOST", "algo-1")
with open(os.path.join(os.environ["SM_MODEL_DIR"], f"digest-{host}.json"), "w") as f:
    json.dump(out, f)
"""


def s3_channel(name: str, uri: str, mode: str, *, data_type: str = "S3Prefix", dist: str = "FullyReplicated",
               attrs: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    src: dict[str, Any] = {"S3DataType": data_type, "S3Uri": uri, "S3DataDistributionType": dist}
    if attrs:
        src["AttributeNames"] = attrs
    return {"ChannelName": name, "InputMode": mode, "DataSource": {"S3DataSource": src}, **extra}


def reader_job(name: str, bucket: str, channels: list[dict[str, Any]], script: Path | None = None,
               **overrides: Any) -> dict[str, Any]:
    """A job running ``script`` (default: the reader program) with the server's Python."""
    if script is None:
        script = SHARED[0] / "tf-data-reader.py"  # a directory the instances see (conftest shared_dir)
        script.write_text(READER)
    req = minimal_request(name, **overrides)
    req["AlgorithmSpecification"] = {**req["AlgorithmSpecification"], "ContainerEntrypoint": [sys.executable],
                                     "ContainerArguments": [str(script.resolve())]}
    req["InputDataConfig"] = channels
    req["OutputDataConfig"] = {"S3OutputPath": f"s3://{bucket}/out"}
    return req


def record(data: bytes) -> bytes:
    return b"\x0a\x23\xd7\xce" + struct.pack("<I", len(data)) + data + b"\0" * (-len(data) % 4)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


SHARED: list[Path] = []


@pytest.fixture(autouse=True)
def _shared(shared_dir: Path) -> None:
    SHARED[:] = [shared_dir]


@pytest.fixture
def runner(server_factory: Any, tmp_path: Path) -> Any:
    return server_factory({"allowed_local_roots": [str(tmp_path)]})


def test_every_source_and_mode_through_a_job(runner: Any, s3: Any, bucket: str, tmp_path: Path) -> None:
    objs = {f"data/{k}": v for k, v in {"a.csv": b"alpha\n", "b/c.csv": b"charlie\n" * 3,
                                        "d.bin": bytes(range(256)) * 9}.items()}
    for k, v in objs.items():
        s3.put_object(Bucket=bucket, Key=k, Body=v)
        s3.put_object(Bucket=bucket, Key="gz/" + k, Body=gzip.compress(v))
    s3.put_object(Bucket=bucket, Key="m.json", Body=json.dumps(
        [{"prefix": f"s3://{bucket}/data/"}, "d.bin", "a.csv"]).encode())
    lines = [{"source-ref": f"s3://{bucket}/data/a.csv", "label": 3},
             {"source-ref": f"s3://{bucket}/data/d.bin", "label": {"k": "v"}}]
    s3.put_object(Bucket=bucket, Key="aug.jsonl", Body="\n".join(map(json.dumps, lines)).encode())
    local = tmp_path / "local"
    (local / "x").mkdir(parents=True)
    (local / "x" / "one.txt").write_bytes(b"local one")
    (tmp_path / "local.manifest").write_text(json.dumps([{"prefix": f"file://{local}/"}, "x/one.txt"]))
    channels = [
        s3_channel("s3file", f"s3://{bucket}/data/", "File"),
        s3_channel("fastfile", f"s3://{bucket}/data", "FastFile"),
        s3_channel("localmanifest", f"file://{tmp_path}/local.manifest", "File", data_type="ManifestFile"),
        s3_channel("pipe", f"s3://{bucket}/data/", "Pipe"),
        s3_channel("pipegzrec", f"s3://{bucket}/gz/data/", "Pipe", CompressionType="Gzip",
                   RecordWrapperType="RecordIO"),
        s3_channel("pipemanifest", f"s3://{bucket}/m.json", "Pipe", data_type="ManifestFile"),
        s3_channel("aug", f"s3://{bucket}/aug.jsonl", "Pipe", data_type="AugmentedManifestFile",
                   attrs=["source-ref", "label"], RecordWrapperType="RecordIO"),
    ]
    name = unique_name("channels")
    sm = runner.client()
    sm.create_training_job(**reader_job(name, bucket, channels))
    desc = wait_for_job(sm, name)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    digest = json.loads(read_model(desc["ModelArtifacts"]["S3ModelArtifacts"])["digest-algo-1.json"])
    files = {k[len("data/"):]: sha(v) for k, v in objs.items()}
    assert digest["s3file"] == {"mode": "File", "files": files}
    assert digest["fastfile"] == {"mode": "FastFile", "files": files}
    assert digest["localmanifest"]["files"] == {"x/one.txt": sha(b"local one")}
    ordered = [objs[k] for k in sorted(objs)]

    def epochs(ch: str) -> list[bytes]:
        return [base64.b64decode(e) for e in digest[ch]["epochs"]]

    assert epochs("pipe") == [b"".join(ordered)] * 2
    assert epochs("pipegzrec") == [b"".join(record(v) for v in ordered)] * 2
    assert epochs("pipemanifest") == [objs["data/d.bin"] + objs["data/a.csv"]] * 2
    aug = record(objs["data/a.csv"]) + record(b"3") + record(objs["data/d.bin"]) + record(b'{"k":"v"}')
    assert epochs("aug") == [aug] * 2
    statuses = [t["Status"] for t in desc["SecondaryStatusTransitions"]]
    assert "Downloading" in statuses


def test_augmented_manifest_in_file_mode_is_refused_at_create(runner: Any, bucket: str) -> None:
    sm = runner.client()
    req = reader_job(unique_name("augfile"), bucket, [s3_channel(
        "aug", f"s3://{bucket}/aug.jsonl", "File", data_type="AugmentedManifestFile", attrs=["a"])])
    with pytest.raises(sm.exceptions.ClientError, match="AugmentedManifestFile"):
        sm.create_training_job(**req)


def test_sharded_three_instances(runner: Any, s3: Any, bucket: str) -> None:
    objs = {f"shard/{i:02d}.rec": f"record {i}".encode() for i in range(20)}
    for k, v in objs.items():
        s3.put_object(Bucket=bucket, Key=k, Body=v)
    name = unique_name("sharded")
    sm = runner.client()
    req = reader_job(name, bucket, [s3_channel("train", f"s3://{bucket}/shard/", "File", dist="ShardedByS3Key"),
                                    s3_channel("p", f"s3://{bucket}/shard/", "Pipe", dist="ShardedByS3Key",
                                               ShuffleConfig={"Seed": 5})])
    req["ResourceConfig"] = {**req["ResourceConfig"], "InstanceCount": 3, "InstanceType": "ml.t3.medium"}
    sm.create_training_job(**req)
    desc = wait_for_job(sm, name, timeout=180)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    model = read_model(desc["ModelArtifacts"]["S3ModelArtifacts"])
    digests = [json.loads(model[f"digest-algo-{i}.json"]) for i in (1, 2, 3)]
    sets = [set(d["train"]["files"]) for d in digests]
    assert set().union(*sets) == {k[len("shard/"):] for k in objs}
    assert sum(map(len, sets)) == 20 and sorted(map(len, sets)) == [6, 7, 7]
    # Pipe: every epoch the three hosts together saw every record once
    for e in range(2):
        seen = b"".join(base64.b64decode(d["p"]["epochs"][e]) for d in digests)
        assert sorted(seen.replace(b"record", b"\nrecord").split(b"\n")[1:]) == sorted(objs.values())


def test_path_escape_and_volume_overflow_fail_cleanly(runner: Any, s3: Any, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="esc.json", Body=json.dumps(
        [{"prefix": f"s3://{bucket}/ok/"}, "../../../../../escaped.txt"]).encode())
    sm = runner.client()
    name = unique_name("escape")
    sm.create_training_job(**reader_job(name, bucket, [
        s3_channel("train", f"s3://{bucket}/esc.json", "File", data_type="ManifestFile")]))
    desc = wait_for_job(sm, name)
    assert desc["TrainingJobStatus"] == "Failed"
    assert "outside the channel directory" in desc["FailureReason"]
    assert not list(tmp_path.rglob("escaped.txt")) and not list(Path(runner.data_dir).rglob("escaped.txt"))

    big = tmp_path / "big"
    big.mkdir()
    with open(big / "sparse.bin", "wb") as f:
        f.truncate(3 << 29)  # 1.5 GiB, no real disk used
    name = unique_name("volume")
    req = reader_job(name, bucket, [s3_channel("train", f"file://{big}", "File")])
    req["ResourceConfig"] = {**req["ResourceConfig"], "VolumeSizeInGB": 1}
    sm.create_training_job(**req)
    desc = wait_for_job(sm, name)
    assert desc["TrainingJobStatus"] == "Failed"
    assert "storage volume of 1 GB" in desc["FailureReason"] and "VolumeSizeInGB" in desc["FailureReason"]


def test_stopped_job_resumes_from_its_checkpoint(runner: Any, s3: Any, bucket: str, tmp_path: Path) -> None:
    ckpt = {"S3Uri": f"s3://{bucket}/ckpt/run"}
    script = ("import os, time\n"
              "d = '/opt/ml/checkpoints' if os.path.isdir('/opt/ml/checkpoints') else "
              "os.path.join(os.path.dirname(os.environ['SM_MODEL_DIR']), 'checkpoints')\n"
              "p = os.path.join(d, 'step')\n"
              "prev = open(p).read() if os.path.exists(p) else 'none'\n"
              "open(os.path.join(os.environ['SM_MODEL_DIR'], 'resumed-from'), 'w').write(prev)\n"
              "if prev == 'none':\n"
              "    os.makedirs(d, exist_ok=True)\n"
              "    open(p, 'w').write('step-300')\n"
              "    while True: time.sleep(0.1)\n")
    sm = runner.client()

    path = tmp_path / "ckpt_script.py"
    path.write_text(script)

    def job(name: str) -> dict[str, Any]:
        req = reader_job(name, bucket, [], path, CheckpointConfig=ckpt)
        req.pop("InputDataConfig")
        return req

    first = unique_name("ckpt1")
    sm.create_training_job(**job(first))
    wait_until(lambda: s3.list_objects_v2(Bucket=bucket, Prefix="ckpt/run/").get("KeyCount", 0) > 0,
               timeout=60, message="checkpoint synced up while training")
    sm.stop_training_job(TrainingJobName=first)
    assert wait_for_job(sm, first)["TrainingJobStatus"] == "Stopped"
    second = unique_name("ckpt2")
    sm.create_training_job(**job(second))
    desc = wait_for_job(sm, second)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert read_model(desc["ModelArtifacts"]["S3ModelArtifacts"])["resumed-from"] == b"step-300"
