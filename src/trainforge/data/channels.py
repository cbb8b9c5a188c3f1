"""A channel of the CreateTrainingJob request, parsed into what the data plane needs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import DataError

ONE_HOST = ("algo-1",)


@dataclass(frozen=True)
class Channel:
    name: str
    mode: str  # File | Pipe | FastFile (the channel's InputMode, else the job's)
    uri: str | None  # S3DataSource.S3Uri (s3:// or file://)
    data_type: str = "S3Prefix"  # S3Prefix | ManifestFile | AugmentedManifestFile
    distribution: str = "FullyReplicated"  # FullyReplicated | ShardedByS3Key
    attribute_names: tuple[str, ...] = ()
    compression: str = "None"  # None | Gzip
    record_wrapper: str = "None"  # None | RecordIO
    content_type: str | None = None
    shuffle_seed: int | None = None
    file_system: dict[str, Any] | None = field(default=None, compare=False)
    # The hosts that receive the channel, in sharding order: every host of the job, or those of the
    # instance groups its S3DataSource.InstanceGroupNames lists (the agent decides: layout.received_channels)
    hosts: tuple[str, ...] = ONE_HOST


def job_input_mode(request: dict[str, Any]) -> str:
    return (request.get("AlgorithmSpecification") or {}).get("TrainingInputMode") or "File"


def parse_channels(request: dict[str, Any], hosts: Sequence[str] = ONE_HOST) -> list[Channel]:
    """Every channel of ``request["InputDataConfig"]``, in request order, each received by ``hosts``."""
    return [parse_channel(request, raw, hosts) for raw in request.get("InputDataConfig") or []]


def parse_channel(request: dict[str, Any], raw: dict[str, Any], hosts: Sequence[str] = ONE_HOST) -> Channel:
    """One InputDataConfig entry of ``request``, received by ``hosts``."""
    name = raw["ChannelName"]
    ds = raw.get("DataSource") or {}
    s3 = ds.get("S3DataSource")
    fs = ds.get("FileSystemDataSource")
    shuffle = raw.get("ShuffleConfig") or {}
    mode = raw.get("InputMode") or job_input_mode(request)
    if s3:
        return Channel(
            name=name, mode=mode, uri=s3["S3Uri"],
            data_type=s3.get("S3DataType") or "S3Prefix",
            distribution=s3.get("S3DataDistributionType") or "FullyReplicated",
            attribute_names=tuple(s3.get("AttributeNames") or ()),
            compression=raw.get("CompressionType") or "None",
            record_wrapper=raw.get("RecordWrapperType") or "None",
            content_type=raw.get("ContentType"),
            shuffle_seed=shuffle.get("Seed") if "Seed" in shuffle else None,
            hosts=tuple(hosts),
        )
    if fs:
        return Channel(name=name, mode=mode, uri=None, data_type="FileSystem",
                       content_type=raw.get("ContentType"), file_system=dict(fs), hosts=tuple(hosts))
    raise DataError(f"channel '{name}' has no supported DataSource (S3DataSource or FileSystemDataSource)")
