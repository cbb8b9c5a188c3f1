"""S3DataSource.InstanceGroupNames through a real heterogeneous job: only the listed groups get a channel.

Each instance runs a script that writes what it sees — the entries of /opt/ml/input/data, its
inputdataconfig.json, SM_CHANNELS, SM_CHANNEL_*, SM_INPUT_DATA_CONFIG, SM_TRAINING_ENV's
channel_input_dirs, and the objects each channel gave it — into /opt/ml/model/<host>/seen.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import read_model, unique_name, wait_for_job
from test_data_jobs import reader_job, s3_channel

SEER = r"""
import json, os, time
inp = os.environ["SM_INPUT_DIR"]
data = os.path.join(inp, "data")
cfg = json.load(open(os.path.join(inp, "config", "inputdataconfig.json")))
files = {}
for ch, c in cfg.items():
    if c["TrainingInputMode"] == "Pipe":
        with open(os.path.join(data, ch + "_0"), "rb") as f:
            files[ch] = f.read().decode().split()
        continue
    if c["TrainingInputMode"] == "FastFile":
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(data, ch + ".fastfile-complete")):
            assert time.monotonic() < deadline, ch
            time.sleep(0.01)
    root = os.path.join(data, ch)
    files[ch] = sorted(os.path.relpath(os.path.join(d, n), root) for d, _, ns in os.walk(root) for n in ns)
seen = {
    "group": os.environ["SM_CURRENT_INSTANCE_GROUP"],
    "ls": sorted(os.listdir(data)),
    "inputdataconfig": sorted(cfg),
    "distribution": {ch: c["S3DistributionType"] for ch, c in cfg.items()},
    "sm_channels": json.loads(os.environ["SM_CHANNELS"]),
    "channel_vars": sorted(k for k in os.environ if k.startswith("SM_CHANNEL_")),
    "sm_input_data_config": sorted(json.loads(os.environ["SM_INPUT_DATA_CONFIG"])),
    "training_env": sorted(json.loads(os.environ["SM_TRAINING_ENV"])["channel_input_dirs"]),
    "files": files,
}
out = os.path.join(os.environ["SM_MODEL_DIR"], os.environ["SM_CURRENT_HOST"])
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "seen.json"), "w") as f:
    json.dump(seen, f)
"""


def for_groups(channel: dict[str, Any], *groups: str) -> dict[str, Any]:
    channel["DataSource"]["S3DataSource"]["InstanceGroupNames"] = list(groups)
    return channel


def test_instance_group_names_choose_who_gets_a_channel(server_factory: Any, s3: Any, bucket: str,
                                                        shared_dir: Path) -> None:
    shard = {f"shard/o{i}": f"o{i}\n".encode() for i in range(7)}
    common = {"common/x.csv": b"x\n", "common/sub/y.csv": b"y\n"}
    for key, body in {**shard, **common}.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    script = shared_dir / "tf-instance-groups.py"
    script.write_text(SEER)
    name = unique_name("groups")
    req = reader_job(name, bucket, [
        s3_channel("common", f"s3://{bucket}/common/", "File"),
        for_groups(s3_channel("bshard", f"s3://{bucket}/shard/", "File", dist="ShardedByS3Key"), "b"),
        for_groups(s3_channel("bpipe", f"s3://{bucket}/shard/", "Pipe", dist="ShardedByS3Key"), "b"),
        for_groups(s3_channel("afast", f"s3://{bucket}/common/", "FastFile"), "a"),
    ], script)
    req["ResourceConfig"] = {"VolumeSizeInGB": 1, "InstanceGroups": [
        {"InstanceGroupName": "a", "InstanceType": "ml.t3.medium", "InstanceCount": 1},
        {"InstanceGroupName": "b", "InstanceType": "ml.t3.medium", "InstanceCount": 2}]}
    sm = server_factory().client()
    sm.create_training_job(**req)
    desc = wait_for_job(sm, name, timeout=180)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    model = read_model(desc["ModelArtifacts"]["S3ModelArtifacts"])
    seen = {host: json.loads(model[f"{host}/seen.json"]) for host in ("algo-1", "algo-2", "algo-3")}
    by_group: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    for s in seen.values():
        by_group[s["group"]].append(s)
    assert [len(by_group["a"]), len(by_group["b"])] == [1, 2]

    everywhere = ["sub/y.csv", "x.csv"]
    (a,) = by_group["a"]
    assert a["inputdataconfig"] == a["sm_channels"] == a["sm_input_data_config"] == a["training_env"] == [
        "afast", "common"]
    assert a["channel_vars"] == ["SM_CHANNEL_AFAST", "SM_CHANNEL_COMMON"]
    assert not [e for e in a["ls"] if e.startswith(("bshard", "bpipe"))], a["ls"]
    assert a["files"] == {"common": everywhere, "afast": everywhere}

    for b in by_group["b"]:
        assert b["inputdataconfig"] == b["sm_channels"] == b["sm_input_data_config"] == b["training_env"] == [
            "bpipe", "bshard", "common"]
        assert b["channel_vars"] == ["SM_CHANNEL_BPIPE", "SM_CHANNEL_BSHARD", "SM_CHANNEL_COMMON"]
        assert "bshard" in b["ls"]
        assert b["distribution"] == {"bpipe": "ShardedByS3Key", "bshard": "ShardedByS3Key",
                                     "common": "FullyReplicated"}
        assert not [e for e in b["ls"] if e.startswith("afast")], b["ls"]
        assert b["files"]["common"] == everywhere
    # group b's two instances share the sharded channels' objects: disjointly and completely
    for channel in ("bshard", "bpipe"):  # File: object names; Pipe: the bodies, which are the names
        got = [set(b["files"][channel]) for b in by_group["b"]]
        assert not got[0] & got[1], (channel, got)
        assert got[0] | got[1] == {k.removeprefix("shard/") for k in shard}, (channel, got)
        assert sorted(map(len, got)) == [3, 4], (channel, got)
