"""A SageMaker script-mode training job from a local script: pack the source directory as
``sourcedir.tar.gz``, put it where the server can read it, and build the CreateTrainingJob request
the SageMaker Python SDK would send (hyperparameters JSON-encoded, ``sagemaker_program`` and
``sagemaker_submit_directory`` naming the entry point and the archive)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .errors import ParamError

DEFAULT_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3.0-cpu-py311"
DEFAULT_ROLE = "arn:aws:iam::000000000000:role/trainforge"
DEFAULT_INSTANCE_TYPE = "ml.m5.large"
EXCLUDED = {"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


@dataclass
class ScriptJob:
    script: str  # entry point, relative to source_dir
    source_dir: Path
    job_name: str
    channels: dict[str, str] = field(default_factory=dict)  # name -> s3:// or file:// URI
    hyperparameters: dict[str, str] = field(default_factory=dict)  # already JSON-encoded
    image: str = DEFAULT_IMAGE
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    output_uri: str = ""
    role_arn: str = DEFAULT_ROLE
    region: str = "us-east-1"
    max_runtime: int = 86400
    metric_definitions: list[dict[str, str]] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)


def job_name_for(script: str, now: float | None = None) -> str:
    stem = re.sub(r"[^a-zA-Z0-9]+", "-", Path(script).stem).strip("-") or "job"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now or time.time()))
    millis = int(((now or time.time()) % 1) * 1000)
    return f"{stem[:40]}-{stamp}-{millis:03d}"


def encode_hyperparameter(value: str) -> str:
    """As the SDK does with a Python value: JSON numbers/booleans stay as they are, text is quoted."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return json.dumps(value)
    return json.dumps(parsed) if not isinstance(parsed, str) else json.dumps(value)


def parse_pairs(pairs: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ParamError(f"{what}: expected NAME=VALUE, not {pair!r}")
        out[key] = value
    return out


def to_uri(path_or_uri: str, what: str) -> str:
    scheme = urlparse(path_or_uri).scheme
    if scheme in ("s3", "file"):
        return path_or_uri
    path = Path(path_or_uri).expanduser().resolve()
    if not path.exists():
        raise ParamError(f"{what}: {path_or_uri} does not exist")
    return path.as_uri() + ("/" if path.is_dir() else "")


def under(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def stage_channel(path: Path, destination: Path) -> Path:
    """Put a local channel where the embedded server may read it: hard links (no copy) when the
    filesystem allows, copies otherwise."""
    def link_or_copy(source: str, target: str) -> None:
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)

    if destination.exists():
        shutil.rmtree(destination)
    if path.is_dir():
        shutil.copytree(path, destination, copy_function=link_or_copy)
    else:
        destination.mkdir(parents=True)
        link_or_copy(str(path), str(destination / path.name))
    return destination


def pack(source_dir: Path, archive: Path) -> None:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(source_dir.rglob("*")):
            relative = path.relative_to(source_dir)
            if any(part in EXCLUDED for part in relative.parts) or path.resolve() == archive.resolve():
                continue
            tar.add(path, arcname=str(relative), recursive=False)


def upload_source(job: ScriptJob, uploads_dir: Path, s3_client_factory: Any = None) -> str:
    """Pack the source directory and return the URI of ``sourcedir.tar.gz``."""
    archive = uploads_dir / job.job_name / "sourcedir.tar.gz"
    pack(job.source_dir, archive)
    if job.output_uri.startswith("s3://"):
        parsed = urlparse(job.output_uri)
        key = "/".join(p for p in (parsed.path.strip("/"), job.job_name, "source", "sourcedir.tar.gz") if p)
        s3 = s3_client_factory() if s3_client_factory else _default_s3()
        s3.upload_file(str(archive), parsed.netloc, key)
        return f"s3://{parsed.netloc}/{key}"
    return archive.resolve().as_uri()


def _default_s3() -> Any:
    import boto3

    return boto3.client("s3")


def request(job: ScriptJob, submit_uri: str) -> dict[str, Any]:
    hyperparameters = dict(job.hyperparameters)
    hyperparameters.update({
        "sagemaker_program": json.dumps(job.script),
        "sagemaker_submit_directory": json.dumps(submit_uri),
        "sagemaker_container_log_level": "20",
        "sagemaker_job_name": json.dumps(job.job_name),
        "sagemaker_region": json.dumps(job.region),
    })
    algorithm: dict[str, Any] = {"TrainingImage": job.image, "TrainingInputMode": "File"}
    if job.metric_definitions:
        algorithm["MetricDefinitions"] = job.metric_definitions
    body: dict[str, Any] = {
        "TrainingJobName": job.job_name,
        "AlgorithmSpecification": algorithm,
        "RoleArn": job.role_arn,
        "HyperParameters": hyperparameters,
        "OutputDataConfig": {"S3OutputPath": job.output_uri},
        "ResourceConfig": {"InstanceType": job.instance_type, "InstanceCount": job.instance_count,
                           "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": job.max_runtime},
    }
    if job.channels:
        body["InputDataConfig"] = [
            {"ChannelName": name, "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}}
            for name, uri in job.channels.items()]
    if job.environment:
        body["Environment"] = job.environment
    return body
