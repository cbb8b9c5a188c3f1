"""File and FastFile channels: sources, manifests, sharding, shuffle, safety and quota (issue 4)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until

from trainforge import objectstore
from trainforge.data import DataError, stage_inputs
from trainforge.data.channels import parse_channels
from trainforge.data.sources import assign, list_items


def channel(name: str, uri: str, *, data_type: str = "S3Prefix", dist: str = "FullyReplicated",
            mode: str | None = None, seed: int | None = None, attrs: list[str] | None = None,
            **extra: Any) -> dict[str, Any]:
    ch: dict[str, Any] = {"ChannelName": name, "DataSource": {"S3DataSource": {
        "S3DataType": data_type, "S3Uri": uri, "S3DataDistributionType": dist}}}
    if attrs is not None:
        ch["DataSource"]["S3DataSource"]["AttributeNames"] = attrs
    if mode:
        ch["InputMode"] = mode
    if seed is not None:
        ch["ShuffleConfig"] = {"Seed": seed}
    ch.update(extra)
    return ch


def request(*channels: dict[str, Any], mode: str = "File", volume_gb: int = 10) -> dict[str, Any]:
    return {"AlgorithmSpecification": {"TrainingInputMode": mode},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": volume_gb},
            "InputDataConfig": list(channels)}


def tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def put(s3: Any, bucket: str, objects: dict[str, bytes]) -> None:
    for k, v in objects.items():
        s3.put_object(Bucket=bucket, Key=k, Body=v)


def test_file_mode_s3prefix_with_progress(s3: Any, bucket: str, tmp_path: Path) -> None:
    objs = {f"train/part-{i:03d}.csv": os.urandom(1000 + i) for i in range(30)}
    objs["train/nested/deep/x.bin"] = os.urandom(objectstore.MULTIPART_THRESHOLD + 1)
    put(s3, bucket, objs)
    messages: list[str] = []
    session = stage_inputs(request(channel("train", f"s3://{bucket}/train")), tmp_path / "ml", 0, ["algo-1"],
                           progress=messages.append, log=print, allowed_roots=[], file_systems={})
    session.close()
    got = tree(tmp_path / "ml/input/data/train")
    assert got == {k[len("train/"):]: v for k, v in objs.items()}
    assert messages[0].startswith("Downloading input data: 0 B of 16 MiB (0%)")
    assert messages[-1] == "Downloading input data: 16 MiB of 16 MiB (100%)"
    assert not (tmp_path / "ml/input/.staging").exists()


def test_file_mode_from_file_uri_hard_links(tmp_path: Path) -> None:
    src = tmp_path / "data" / "train"
    (src / "a").mkdir(parents=True)
    for i in range(5):
        (src / "a" / f"{i}.txt").write_text(str(i))
    ml = tmp_path / "ml"
    stage_inputs(request(channel("train", f"file://{src}")), ml, 0, ["algo-1"], progress=lambda m: None,
                 log=print, allowed_roots=[str(tmp_path / "data")], file_systems={}).close()
    assert tree(ml / "input/data/train") == {f"a/{i}.txt": str(i).encode() for i in range(5)}
    assert (ml / "input/data/train/a/0.txt").stat().st_ino == (src / "a/0.txt").stat().st_ino
    with pytest.raises(DataError, match="outside the allowed local roots"):
        stage_inputs(request(channel("train", f"file://{src}")), tmp_path / "ml2", 0, ["algo-1"],
                     progress=lambda m: None, log=print, allowed_roots=[str(tmp_path / "other")], file_systems={})


def test_manifest_file_from_s3_and_file(s3: Any, bucket: str, tmp_path: Path) -> None:
    put(s3, bucket, {"imgs/a/1.jpg": b"one", "imgs/b/2.jpg": b"two", "imgs/c/3.jpg": b"three"})
    manifest = [{"prefix": f"s3://{bucket}/imgs/"}, "b/2.jpg", "a/1.jpg"]
    s3.put_object(Bucket=bucket, Key="m/train.manifest", Body=json.dumps(manifest).encode())
    ml = tmp_path / "ml"
    req = request(channel("train", f"s3://{bucket}/m/train.manifest", data_type="ManifestFile"))
    stage_inputs(req, ml, 0, ["algo-1"], progress=lambda m: None, log=print, allowed_roots=[],
                 file_systems={}).close()
    assert tree(ml / "input/data/train") == {"a/1.jpg": b"one", "b/2.jpg": b"two"}
    # the same with file:// everywhere
    src = tmp_path / "src"
    (src / "x").mkdir(parents=True)
    (src / "x" / "f").write_bytes(b"F")
    (tmp_path / "local.manifest").write_text(json.dumps([{"prefix": f"file://{src}/"}, "x/f"]))
    req = request(channel("t2", f"file://{tmp_path}/local.manifest", data_type="ManifestFile"))
    stage_inputs(req, ml, 0, ["algo-1"], progress=lambda m: None, log=print, allowed_roots=[str(tmp_path)],
                 file_systems={}).close()
    assert tree(ml / "input/data/t2") == {"x/f": b"F"}
    # a missing entry is a clear failure
    s3.put_object(Bucket=bucket, Key="m/bad.manifest",
                  Body=json.dumps([{"prefix": f"s3://{bucket}/imgs/"}, "nope.jpg"]).encode())
    with pytest.raises(DataError, match="nope.jpg"):
        stage_inputs(request(channel("bad", f"s3://{bucket}/m/bad.manifest", data_type="ManifestFile")),
                     ml, 0, ["algo-1"], progress=lambda m: None, log=print, allowed_roots=[], file_systems={})


def test_sharded_by_s3_key_three_hosts(s3: Any, bucket: str, tmp_path: Path) -> None:
    objs = {f"d/{i:03d}": f"obj{i}".encode() for i in range(31)}
    put(s3, bucket, objs)
    hosts = ["algo-1", "algo-2", "algo-3"]
    got = []
    for i in range(3):
        ml = tmp_path / hosts[i]
        stage_inputs(request(channel("train", f"s3://{bucket}/d/", dist="ShardedByS3Key")), ml, i, hosts,
                     progress=lambda m: None, log=print, allowed_roots=[], file_systems={}).close()
        got.append(tree(ml / "input/data/train"))
    names = [set(g) for g in got]
    assert set().union(*names) == {k[2:] for k in objs}
    assert sum(len(n) for n in names) == len(objs)  # no overlap
    assert sorted(len(n) for n in names) == [10, 10, 11]  # balanced by count
    for g in got:
        assert all(v == objs["d/" + k] for k, v in g.items())


def test_empty_prefix_fails_like_sagemaker(bucket: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="No S3 objects found under S3 URL"):
        stage_inputs(request(channel("train", f"s3://{bucket}/nothing/")), tmp_path / "ml", 0, ["algo-1"],
                     progress=lambda m: None, log=print, allowed_roots=[], file_systems={})


def test_more_hosts_than_objects_gives_empty_channel_and_warning(s3: Any, bucket: str, tmp_path: Path) -> None:
    put(s3, bucket, {"few/a": b"a", "few/b": b"b"})
    logs: list[str] = []
    hosts = ["algo-1", "algo-2", "algo-3"]
    stage_inputs(request(channel("train", f"s3://{bucket}/few/", dist="ShardedByS3Key")), tmp_path / "ml", 2,
                 hosts, progress=lambda m: None, log=logs.append, allowed_roots=[], file_systems={}).close()
    assert tree(tmp_path / "ml/input/data/train") == {}
    assert (tmp_path / "ml/input/data/train").is_dir()
    assert any("algo-3 receives an empty channel" in m for m in logs)


def test_shuffle_is_deterministic_per_seed(s3: Any, bucket: str) -> None:
    put(s3, bucket, {f"s/{i:02d}": b"x" for i in range(40)})

    def order(seed: int | None, host: int = 0, epoch: int = 0, dist: str = "FullyReplicated") -> list[str]:
        ch = parse_channels(request(channel("c", f"s3://{bucket}/s/", seed=seed, dist=dist)))[0]
        return [i.rel for i in assign(list_items(ch, allowed_roots=None, need_sizes=False), ch, host, 3, epoch)]

    assert order(None) == sorted(order(None))
    assert order(7) == order(7)
    assert order(7) != order(8)
    assert sorted(order(7)) == sorted(order(None))
    assert order(7, epoch=1) != order(7, epoch=0)
    # with sharding, objects move between hosts across epochs, each epoch still a partition
    shards = {e: [set(order(7, h, e, "ShardedByS3Key")) for h in range(3)] for e in (0, 1)}
    for e in (0, 1):
        assert set().union(*shards[e]) == set(order(None)) and sum(map(len, shards[e])) == 40
    assert shards[0][0] != shards[1][0]


def test_path_escape_fails_and_writes_nothing(s3: Any, bucket: str, tmp_path: Path) -> None:
    put(s3, bucket, {"esc/ok.txt": b"ok"})
    s3.put_object(Bucket=bucket, Key="m/evil.manifest",
                  Body=json.dumps([{"prefix": f"s3://{bucket}/esc/"}, "ok.txt", "../../../evil.txt"]).encode())
    ml = tmp_path / "deep" / "ml"
    req = request(channel("train", f"s3://{bucket}/m/evil.manifest", data_type="ManifestFile"))
    with pytest.raises(DataError, match="outside the channel directory"):
        stage_inputs(req, ml, 0, ["algo-1"], progress=lambda m: None, log=print, allowed_roots=[], file_systems={})
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
    # an absolute-looking key through S3Prefix
    put(s3, bucket, {"abs//etc/passwd": b"x"})
    with pytest.raises(DataError, match="outside the channel directory"):
        stage_inputs(request(channel("train", f"s3://{bucket}/abs/")), ml, 0, ["algo-1"],
                     progress=lambda m: None, log=print, allowed_roots=[], file_systems={})
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
    # a symlink in a file:// source pointing outside it
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "secret").write_text("s")
    os.symlink(tmp_path / "secret", src / "link")
    with pytest.raises(DataError, match="points outside the source"):
        stage_inputs(request(channel("train", f"file://{src}")), ml, 0, ["algo-1"], progress=lambda m: None,
                     log=print, allowed_roots=[str(tmp_path)], file_systems={})
    assert not (ml / "input/data/train/link").exists()


def test_volume_size_quota(s3: Any, bucket: str, tmp_path: Path) -> None:
    # 1 GB volume: a sparse 1.5 GiB file:// source overflows without using real disk
    src = tmp_path / "big"
    src.mkdir()
    with open(src / "huge.bin", "wb") as f:
        f.truncate(3 << 29)
    put(s3, bucket, {"q/a": b"a"})
    ml = tmp_path / "ml"
    req = request(channel("a", f"s3://{bucket}/q/"), channel("b", f"file://{src}"), volume_gb=1)
    with pytest.raises(DataError) as exc:
        stage_inputs(req, ml, 0, ["algo-1"], progress=lambda m: None, log=print, allowed_roots=[str(tmp_path)],
                     file_systems={})
    assert "storage volume of 1 GB" in str(exc.value) and "VolumeSizeInGB" in str(exc.value)
    assert not (ml / "input/data/a").exists() and not (ml / "input/data/b").exists()


def test_fastfile_files_appear_whole(s3: Any, bucket: str, tmp_path: Path) -> None:
    objs = {f"ff/{i:03d}.bin": os.urandom(50_000 + i) for i in range(40)}
    objs["ff/big/x.bin"] = os.urandom(objectstore.MULTIPART_THRESHOLD + 777)
    put(s3, bucket, objs)
    ml = tmp_path / "ml"
    session = stage_inputs(request(channel("train", f"s3://{bucket}/ff/", mode="FastFile")), ml, 0, ["algo-1"],
                           progress=lambda m: None, log=print, allowed_roots=[], file_systems={})
    d = ml / "input/data/train"
    index = json.loads((ml / "input/data/train.fastfile.json").read_text())
    assert {e["path"] for e in index} == {k[3:] for k in objs}
    assert (d / "big").is_dir()  # directories exist from the start
    # every file visible at any moment is whole
    while not (ml / "input/data/train.fastfile-complete").exists():
        for p in list(d.rglob("*")):
            if p.is_file():
                assert p.read_bytes() == objs["ff/" + str(p.relative_to(d))]
    wait_until(lambda: (ml / "input/data/train.fastfile-complete").exists(), message="FastFile done")
    assert tree(d) == {k[3:]: v for k, v in objs.items()}
    assert session.error is None
    session.close()
