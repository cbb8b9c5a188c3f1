"""Checkpoints, TensorBoard sync and FileSystemDataSource (issue 4)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until

from trainforge.data import CheckpointSync, DataError, file_system_mounts, restore_checkpoints


def keys(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    out = {}
    for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        out[o["Key"][len(prefix):]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


def test_restore_then_continuous_sync_then_final(s3: Any, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="ckpt/epoch-1.pt", Body=b"one")
    s3.put_object(Bucket=bucket, Key="ckpt/sub/state.json", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="ckpt-other/not-mine", Body=b"x")  # prefix is a directory
    req = {"CheckpointConfig": {"S3Uri": f"s3://{bucket}/ckpt"},
           "TensorBoardOutputConfig": {"S3OutputPath": f"s3://{bucket}/tb"},
           "DebugHookConfig": {"S3OutputPath": f"s3://{bucket}/debug"}}
    ml = tmp_path / "ml"
    assert restore_checkpoints(req, ml) == 2
    local = ml / "checkpoints"  # default LocalPath /opt/ml/checkpoints maps into the instance
    assert (local / "epoch-1.pt").read_bytes() == b"one" and (local / "sub/state.json").exists()
    assert not (local / "not-mine").exists()

    sync = CheckpointSync(req, ml, interval=0.2).start()
    (local / "epoch-2.pt").write_bytes(b"two")
    (ml / "output/tensorboard").mkdir(parents=True, exist_ok=True)
    (ml / "output/tensorboard/events.out").write_bytes(b"ev1")
    wait_until(lambda: keys(s3, bucket, "ckpt/").get("epoch-2.pt") == b"two", timeout=10,
               message="new checkpoint uploaded while training")
    wait_until(lambda: keys(s3, bucket, "tb/").get("events.out") == b"ev1", timeout=10,
               message="TensorBoard file uploaded while training")
    (ml / "output/tensors").mkdir(parents=True, exist_ok=True)
    (ml / "output/tensors/step-1.npy").write_bytes(b"t1")
    wait_until(lambda: keys(s3, bucket, "debug/").get("step-1.npy") == b"t1", timeout=10,
               message="debugger tensors uploaded while training")
    (local / "epoch-2.pt").write_bytes(b"two, changed")
    wait_until(lambda: keys(s3, bucket, "ckpt/").get("epoch-2.pt") == b"two, changed", timeout=10,
               message="changed checkpoint uploaded")
    (local / "last.pt").write_bytes(b"written just before exit")
    sync.stop(final=True)  # the final pass uploads it whatever the timing
    assert keys(s3, bucket, "ckpt/")["last.pt"] == b"written just before exit"


def test_resume_from_checkpoint_of_a_stopped_run(s3: Any, bucket: str, tmp_path: Path) -> None:
    """Run 1 writes a checkpoint and is stopped; run 2 with the same CheckpointConfig resumes from it."""
    req = {"CheckpointConfig": {"S3Uri": f"s3://{bucket}/resume/", "LocalPath": "/opt/ml/ckpt"}}
    ml1 = tmp_path / "run1"
    restore_checkpoints(req, ml1)
    sync = CheckpointSync(req, ml1).start()
    (ml1 / "ckpt").mkdir(parents=True, exist_ok=True)
    (ml1 / "ckpt/step").write_text("300")
    sync.stop(final=True)  # what the agent does on stop
    ml2 = tmp_path / "run2"
    assert restore_checkpoints(req, ml2) == 1
    assert (ml2 / "ckpt/step").read_text() == "300"


def test_checkpoint_sync_failure_is_a_data_error(tmp_path: Path) -> None:
    req = {"CheckpointConfig": {"S3Uri": f"file://{tmp_path}/forbidden/"}}
    sync = CheckpointSync(req, tmp_path / "ml", allowed_roots=[str(tmp_path / "ml")]).start()
    (tmp_path / "ml/checkpoints/x").write_text("x")
    with pytest.raises(DataError, match="outside the allowed local roots"):
        sync.stop(final=True)


def test_file_system_data_source(tmp_path: Path) -> None:
    efs = tmp_path / "efs"
    (efs / "training" / "data").mkdir(parents=True)
    req = {"InputDataConfig": [
        {"ChannelName": "train", "DataSource": {"FileSystemDataSource": {
            "FileSystemId": "fs-123", "FileSystemType": "EFS", "FileSystemAccessMode": "ro",
            "DirectoryPath": "/training/data"}}},
        {"ChannelName": "scratch", "DataSource": {"FileSystemDataSource": {
            "FileSystemId": "fs-123", "FileSystemType": "EFS", "FileSystemAccessMode": "rw",
            "DirectoryPath": "/training"}}}]}
    ml = tmp_path / "ml"
    mounts = file_system_mounts(req, ml, {"fs-123": str(efs)})
    assert [(m.channel, m.source, m.read_only, m.container_target) for m in mounts] == [
        ("train", efs / "training/data", True, "/opt/ml/input/data/train"),
        ("scratch", efs / "training", False, "/opt/ml/input/data/scratch")]
    assert mounts[0].target.is_dir()
    mounts[0].link()
    assert (ml / "input/data/train").resolve() == efs / "training/data"
    with pytest.raises(DataError, match="not configured"):
        file_system_mounts(req, ml, {})
    bad = {"InputDataConfig": [{"ChannelName": "x", "DataSource": {"FileSystemDataSource": {
        "FileSystemId": "fs-123", "FileSystemType": "EFS", "FileSystemAccessMode": "ro",
        "DirectoryPath": "/../../etc"}}}]}
    with pytest.raises(DataError, match="outside file system"):
        file_system_mounts(bad, ml, {"fs-123": str(efs)})


def test_volume_usage_while_training(tmp_path: Path) -> None:
    from trainforge.data import disk_usage, volume_error

    ml = tmp_path / "ml"
    (ml / "model").mkdir(parents=True)
    (ml / "model" / "a").write_bytes(b"x" * 100_000)
    os.link(ml / "model" / "a", ml / "model" / "a-link")  # counted once
    with open(ml / "model" / "sparse", "wb") as f:
        f.truncate(10 << 30)  # 10 GiB apparent, nothing allocated
    used = disk_usage(ml)
    assert 100_000 <= used < 200_000
    req = {"ResourceConfig": {"VolumeSizeInGB": 1}}
    assert volume_error(req, ml) is None
    with open(ml / "model" / "big", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, (1 << 30) + (64 << 20))
    err = volume_error(req, ml)
    assert err is not None and "storage volume of 1 GB" in str(err)
    (ml / "model" / "big").unlink()


def test_first_run_with_a_file_checkpoint_prefix_that_does_not_exist_yet(tmp_path: Path) -> None:
    req = {"CheckpointConfig": {"S3Uri": f"file://{tmp_path}/ckpt-not-yet"}}
    ml = tmp_path / "ml"
    assert restore_checkpoints(req, ml) == 0
    assert (ml / "checkpoints").is_dir()
