"""Server configuration: defaults, a YAML/JSON config file, and command-line overrides.

Every knob of the server lives in :class:`Config`. A config file (``--config FILE``) holds the same
keys as the dataclass fields (snake_case); command-line flags override the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_PORT = 8080
DEFAULT_ACCOUNT = "000000000000"
DEFAULT_REGION = "us-east-1"
BACKENDS = ("local", "slurm")  # backends/base.py: create_backend


def default_home() -> Path:
    return Path(os.environ.get("TRAINFORGE_HOME") or Path.home() / ".trainforge")


@dataclass
class InstanceShape:
    """What one instance of an ``ml.*`` type reserves on a machine."""

    cpus: float
    memory_mb: int
    gpus: int = 0


def _default_instance_types() -> dict[str, dict[str, Any]]:
    # vCPUs / memory of the real instance families; a machine only admits what fits its capacity.
    table = {
        "ml.m5.large": (2, 8192, 0), "ml.m5.xlarge": (4, 16384, 0), "ml.m5.2xlarge": (8, 32768, 0),
        "ml.m5.4xlarge": (16, 65536, 0), "ml.c5.xlarge": (4, 8192, 0), "ml.c5.2xlarge": (8, 16384, 0),
        "ml.c5.4xlarge": (16, 32768, 0), "ml.m4.xlarge": (4, 16384, 0), "ml.p3.2xlarge": (8, 62464, 1),
        "ml.g4dn.xlarge": (4, 16384, 1), "ml.g5.xlarge": (4, 16384, 1), "ml.g5.2xlarge": (8, 32768, 1),
        "ml.p4d.24xlarge": (96, 1179648, 8), "ml.t3.medium": (2, 4096, 0), "ml.t3.large": (2, 8192, 0),
    }
    return {k: {"cpus": c, "memory_mb": m, "gpus": g} for k, (c, m, g) in table.items()}


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: str = field(default_factory=lambda: str(default_home()))
    database_url: str | None = None
    allowed_local_roots: list[str] = field(default_factory=list)
    account_id: str = DEFAULT_ACCOUNT
    region: str = DEFAULT_REGION
    # access key id -> {"secret_access_key": ..., "account_id": ...}; None = accept any key
    credentials_file: str | None = None
    # S3: the embedded endpoint (rclone serve s3 over <data_dir>/s3, see embedded_s3.py) unless it is
    # turned off or an external endpoint is named here (or by AWS_ENDPOINT_URL_S3 in the environment).
    embedded_s3: bool = True
    embedded_s3_port: int | None = None  # None: the server's port + 1 (any free port if taken)
    s3_endpoint_url: str | None = None
    max_body_bytes: int = 1024 * 1024
    # Capacity of this machine for the local backend. None = measured (cores, memory, the NVIDIA GPUs
    # found: sandbox/gpus.py). GPUs are handed out by index, 0 … capacity_gpus - 1.
    capacity_cpus: float | None = None
    capacity_memory_mb: int | None = None
    capacity_gpus: int | None = None
    # With capacity_cpus / capacity_memory_mb unset, the machine offers its cores and its memory
    # times this (jobs on a development machine share them, as processes do).
    overcommit: float = 4.0
    # Concurrent instances cap regardless of shape (0 = no cap beyond resources).
    max_concurrent_instances: int = 0
    # ml.* type -> what one instance reserves. Types missing here reserve `default_instance`.
    instance_types: dict[str, dict[str, Any]] = field(default_factory=_default_instance_types)
    # When True, an instance reserves min(type's shape, machine capacity) so that any type runs on
    # a small machine (the embedded default); when False a type that can never fit is rejected.
    scale_instances_to_machine: bool = True
    # Image catalog entries (image-URI glob -> runtime); prepended to the shipped defaults.
    images: list[dict[str, Any]] = field(default_factory=list)
    # Registry host (or pattern) -> mirror endpoint, plain_http, ca_file, credentials (images/registries.py).
    registries: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Pulled images kept in <data_dir>/images up to this size; least recently used ones go first.
    image_cache_gb: float = 50.0
    # RoleArn -> credentials {"aws_access_key_id", "aws_secret_access_key", "aws_session_token"?,
    # "profile"?}; empty = every role uses the server's own AWS configuration.
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    # FileSystemId -> local mount point (FileSystemDataSource).
    file_systems: dict[str, str] = field(default_factory=dict)
    # Host directories every sandboxed instance sees, read-write, at the same path (a dataset cache
    # shared by the host, say). Refused when one holds or lies in the data directory.
    sandbox_mounts: list[str] = field(default_factory=list)
    # Prepared instances (local backend, sandbox): after a job that can use one, the agent fork server
    # prepares the next instance of the same shape (volume, network, a created container) while the
    # machine is otherwise idle, so that the next such job starts in it (agent/prepared.py).
    prepared_instances: bool = True
    # Where instances run: "local" (this machine) or "slurm" (a cluster; backends/slurm/settings.py lists
    # the keys of the `slurm:` section: partition, account, control_url, instance_types, sbatch_args, ...).
    backend: str = "local"
    slurm: dict[str, Any] = field(default_factory=dict)
    stop_grace_seconds: float = 120.0
    # How long after its launch an agent may take to record itself in its instance directory: a
    # server restarted in the launch window waits that long for an agent it has no handle of.
    agent_start_grace_seconds: float = 30.0
    # How long an instance of a multi-instance job, ready to start its user code, waits for the others
    # (the gang barrier, service/gang.py) before it fails the job.
    gang_timeout_seconds: float = 3600.0
    # Isolation: "auto" (the sandbox; jobs refused where there is none), "sandbox" (required), "none".
    isolation: str = "auto"
    log_level: str = "info"
    # How long CloudWatch metric samples (algorithm and instance metrics) are kept; CloudWatch's own
    # retention is 15 months (service/cloudwatch.py).
    metrics_retention_days: float = 455.0

    def __post_init__(self) -> None:
        # refused as the configuration is read: before a server opens (or creates) anything
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be {' or '.join(BACKENDS)}, not {self.backend!r}")

    # ----------------------------------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_path / 'trainforge.db'}"

    @property
    def effective_local_roots(self) -> list[Path]:
        roots = [Path(r).expanduser().resolve() for r in self.allowed_local_roots]
        if not self.allowed_local_roots:
            roots = [self.data_path.resolve(), Path.home().resolve()]
        return roots

    @property
    def endpoint_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def load_credentials(self) -> dict[str, dict[str, str]] | None:
        if not self.credentials_file:
            return None
        return _read_structured(Path(self.credentials_file))

    @classmethod
    def load(cls, path: str | None = None, **overrides: Any) -> Config:
        values: dict[str, Any] = {}
        if path:
            values.update(_read_structured(Path(path)))
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown configuration keys in {path}: {', '.join(sorted(unknown))}")
        for key, value in overrides.items():
            if value is not None and value != []:
                values[key] = value
        return cls(**values)


def _read_structured(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise TypeError(f"{path}: expected a mapping at top level")
    return data
