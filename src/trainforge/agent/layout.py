"""The instance's /opt/ml tree and its input/config/*.json files (CONTRACT.md §1).

Everything but :func:`create` is a pure function of the spec and :class:`~.spec.Paths`.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

from trainforge.agent.spec import Paths, hosts

HOMOGENEOUS = "homogeneousCluster"
NETWORK_INTERFACE = "eth0"
DEFAULT_CHECKPOINT_PATH = "/opt/ml/checkpoints"
DEFAULT_TENSORBOARD_PATH = "/opt/ml/output/tensorboard"


def channel_mode(request: dict[str, Any], channel: dict[str, Any]) -> str:
    """The channel's InputMode, else the job's TrainingInputMode, else File."""
    algo = request.get("AlgorithmSpecification") or {}
    return channel.get("InputMode") or algo.get("TrainingInputMode") or "File"


class Received(NamedTuple):
    """A channel this instance receives."""

    channel: dict[str, Any]  # the request's InputDataConfig entry
    hosts: list[str]  # every host that receives it: ShardedByS3Key splits its objects among them


def receiving_hosts(spec: dict[str, Any], channel: dict[str, Any]) -> list[str]:
    """The hosts of the instance groups ``S3DataSource.InstanceGroupNames`` lists, else every host;
    in the spec's host order (the order ShardedByS3Key deals objects in)."""
    names = ((channel.get("DataSource") or {}).get("S3DataSource") or {}).get("InstanceGroupNames")
    if not names:
        return list(spec["hosts"])
    listed = {h for g in instance_groups(spec) if g["instance_group_name"] in names for h in g["hosts"]}
    return [h for h in spec["hosts"] if h in listed]


def received_channels(spec: dict[str, Any]) -> list[Received]:
    """The channels this instance receives, in request order — the one place that decides it.

    A channel whose InstanceGroupNames leaves out this instance's group does not exist here: it is
    not staged, has no directory, and is in neither inputdataconfig.json nor SM_CHANNELS.
    """
    out = []
    for channel in spec["request"].get("InputDataConfig") or []:
        receivers = receiving_hosts(spec, channel)
        if spec["host"] in receivers:
            out.append(Received(channel, receivers))
    return out


def input_data_config(spec: dict[str, Any]) -> dict[str, dict[str, str]]:
    """inputdataconfig.json: this instance's channels."""
    request = spec["request"]
    config: dict[str, dict[str, str]] = {}
    for channel, _ in received_channels(spec):
        s3 = (channel.get("DataSource") or {}).get("S3DataSource") or {}
        entry = {
            "TrainingInputMode": channel_mode(request, channel),
            "S3DistributionType": s3.get("S3DataDistributionType") or "FullyReplicated",
            "RecordWrapperType": channel.get("RecordWrapperType") or "None",
        }
        if channel.get("ContentType"):
            entry["ContentType"] = channel["ContentType"]
        config[channel["ChannelName"]] = entry
    return config


def instance_groups(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """``[{instance_group_name, instance_type, hosts}]``.

    A spec key ``instance_groups`` (same shape) wins; else the request's
    ResourceConfig.InstanceGroups get the sorted hosts in order, InstanceCount each; else one
    homogeneous group of all hosts.
    """
    if spec.get("instance_groups"):
        return [dict(g, hosts=sorted(g["hosts"])) for g in spec["instance_groups"]]
    all_hosts = hosts(spec)
    groups = (spec["request"].get("ResourceConfig") or {}).get("InstanceGroups")
    if not groups:
        return [{"instance_group_name": HOMOGENEOUS, "instance_type": _instance_type(spec),
                 "hosts": all_hosts}]
    result, i = [], 0
    for g in groups:
        n = int(g.get("InstanceCount", 1))
        result.append({"instance_group_name": g["InstanceGroupName"], "instance_type": g["InstanceType"],
                       "hosts": sorted(all_hosts[i:i + n])})
        i += n
    return result


def _instance_type(spec: dict[str, Any]) -> str:
    return spec.get("instance_type") or (spec["request"].get("ResourceConfig") or {}).get(
        "InstanceType") or "local"


def resource_config(spec: dict[str, Any]) -> dict[str, Any]:
    groups = instance_groups(spec)
    current = next((g for g in groups if spec["host"] in g["hosts"]), groups[0])
    return {
        "current_host": spec["host"],
        "current_instance_type": spec.get("instance_type") or current["instance_type"],
        "current_group_name": current["instance_group_name"],
        "hosts": hosts(spec),
        "instance_groups": groups,
        "network_interface_name": NETWORK_INTERFACE,
    }


def checkpoint_config(request: dict[str, Any], paths: Paths) -> dict[str, Any] | None:
    cc = request.get("CheckpointConfig")
    if not cc:
        return None
    local = paths.to_container(cc.get("LocalPath") or DEFAULT_CHECKPOINT_PATH)
    return {"LocalPath": local, "S3Uri": cc.get("S3Uri")}


def tensorboard_local_path(request: dict[str, Any], paths: Paths) -> str | None:
    tb = request.get("TensorBoardOutputConfig")
    if not tb:
        return None
    return paths.to_container(tb.get("LocalPath") or DEFAULT_TENSORBOARD_PATH)


def local_paths(request: dict[str, Any], paths: Paths) -> list[str]:
    """The LocalPaths the platform reads back, as the training process sees them."""
    cc = checkpoint_config(request, paths)
    tb = tensorboard_local_path(request, paths)
    debug = (request.get("DebugHookConfig") or {}).get("LocalPath")
    return [p for p in ((cc or {}).get("LocalPath"), tb, debug and paths.to_container(debug)) if p]


def config_files(spec: dict[str, Any], paths: Paths) -> dict[str, Any]:
    """File name under input/config → its JSON content."""
    request = spec["request"]
    files: dict[str, Any] = {
        "hyperparameters.json": request.get("HyperParameters") or {},
        "inputdataconfig.json": input_data_config(spec),
        "resourceconfig.json": resource_config(spec),
    }
    cc = checkpoint_config(request, paths)
    if cc is not None:
        files["checkpointconfig.json"] = cc
    for key, name in (("DebugHookConfig", "debughookconfig.json"),
                      ("TensorBoardOutputConfig", "tensorboardoutputconfig.json"),
                      ("ProfilerConfig", "profilerconfig.json")):
        if request.get(key):
            files[name] = request[key]
    return files


def directories(spec: dict[str, Any], paths: Paths) -> list[str]:
    """Host directories to create: the /opt/ml skeleton plus this instance's File and FastFile channels."""
    request = spec["request"]
    dirs = [paths.host("input", "config"), paths.host("input", "data"), paths.host("model"),
            paths.host("output", "data"), paths.host("code")]
    for channel, _ in received_channels(spec):
        if channel_mode(request, channel) != "Pipe":
            dirs.append(paths.host("input", "data", channel["ChannelName"]))
    dirs += [paths.to_host(p) for p in local_paths(request, paths)]
    return dirs


def create(spec: dict[str, Any], paths: Paths) -> None:
    for d in directories(spec, paths):
        os.makedirs(d, exist_ok=True)
    config_dir = paths.host("input", "config")
    for name, content in config_files(spec, paths).items():
        with open(os.path.join(config_dir, name), "w", encoding="utf-8") as f:
            json.dump(content, f)
