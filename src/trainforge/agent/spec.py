"""The instance spec (docs/INTERNALS.md) as the agent reads it, and the paths derived from it."""

from __future__ import annotations

import json
import os
from typing import Any

CONTAINER_ML = "/opt/ml"
REQUIRED_KEYS = ("job_name", "job_arn", "region", "host", "hosts", "instance_dir", "request",
                 "runtime", "control_url", "token")


class SpecError(ValueError):
    """The spec is unusable (missing keys, wrong types)."""


def load(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    if not isinstance(spec, dict):
        raise SpecError(f"{path}: the spec must be a JSON object")
    return spec


def check(spec: dict[str, Any]) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in spec]
    if missing:
        raise SpecError(f"the instance spec lacks {', '.join(missing)}")
    if not isinstance(spec["hosts"], list) or spec["host"] not in spec["hosts"]:
        raise SpecError(f"the instance spec's host {spec['host']!r} is not in its hosts {spec['hosts']!r}")
    if not isinstance(spec["request"], dict):
        raise SpecError("the instance spec's request must be an object")
    if spec.get("isolation", "none") not in ("sandbox", "none"):
        raise SpecError(f"unknown isolation {spec.get('isolation')!r} (sandbox or none)")
    if spec.get("isolation") == "sandbox" and not isinstance((spec.get("sandbox") or {}).get("dir"), str):
        raise SpecError("the instance spec's sandbox lacks its dir")


class Paths:
    """Where things are, seen from the agent (host) and from the training process (container).

    (A plain class, not a dataclass: ``dataclasses`` costs milliseconds to import, and the agent
    imports only what it must before the user's code starts.)
    """

    __slots__ = ("container_ml", "host_ml", "instance_dir", "job_dir", "local_root")

    def __init__(self, instance_dir: str, job_dir: str, host_ml: str, container_ml: str,
                 local_root: str | None = None):
        self.instance_dir = instance_dir
        self.job_dir = job_dir
        self.host_ml = host_ml  # instance_dir/opt/ml on the host
        self.container_ml = container_ml  # what the training process sees: /opt/ml, or host_ml
        # in the sandbox, where the instance's paths outside /opt/ml (LocalPaths) live on the host
        self.local_root = local_root

    @classmethod
    def of(cls, spec: dict[str, Any]) -> Paths:
        instance_dir = os.path.abspath(spec["instance_dir"])
        job_dir = os.path.abspath(spec.get("job_dir") or os.path.dirname(instance_dir))
        host_ml = os.path.join(instance_dir, "opt", "ml")
        if spec.get("isolation") == "sandbox":
            return cls(instance_dir, job_dir, host_ml, CONTAINER_ML, os.path.join(instance_dir, "opt", "local"))
        return cls(instance_dir, job_dir, host_ml, host_ml)

    def volume_root_of(self, host: str) -> str:
        """Where an instance's volume is mounted in the sandbox: ``/opt/ml`` and ``local_root`` lie on it."""
        return os.path.join(self.instance_dir_of(host), "opt")

    def volume_device(self, host: str | None = None) -> int | None:
        """The filesystem of an instance's volume (this instance's by default) in the sandbox, else
        None: what the agent reads back from an instance must lie on it."""
        if self.local_root is None:
            return None
        root = self.volume_root_of(host) if host else os.path.dirname(self.host_ml)
        try:
            return os.stat(root).st_dev
        except OSError:
            return None

    def container(self, *parts: str) -> str:
        return os.path.join(self.container_ml, *parts)

    def host(self, *parts: str) -> str:
        return os.path.join(self.host_ml, *parts)

    def to_host(self, container_path: str) -> str:
        """A path as the training process sees it → the same file seen from the agent. In the
        sandbox a path outside /opt/ml is the instance's own too (under ``local_root``), never the
        host's; without it, it is the host's path."""
        p = os.path.normpath(os.path.join("/", container_path))
        for root in (CONTAINER_ML, self.container_ml):
            if p == root or p.startswith(root + "/"):
                return self.host_ml + p[len(root):]
        return self.local_root + p if self.local_root else p

    def to_container(self, path: str) -> str:
        """Rewrite a /opt/ml path for the training process (differs only without namespaces)."""
        p = os.path.normpath(path)
        if p == CONTAINER_ML or p.startswith(CONTAINER_ML + "/"):
            return self.container_ml + p[len(CONTAINER_ML):]
        return path

    def instance_dir_of(self, host: str) -> str:
        """Another host's instance directory (the job directory is shared by all hosts)."""
        return os.path.join(self.job_dir, host)

    def host_ml_of(self, host: str) -> str:
        return os.path.join(self.instance_dir_of(host), "opt", "ml")


def hosts(spec: dict[str, Any]) -> list[str]:
    """All hosts, sorted as resourceconfig.json lists them."""
    return sorted(spec["hosts"])


def leader(spec: dict[str, Any]) -> str:
    return spec["hosts"][0]


def network_isolated(spec: dict[str, Any]) -> bool:
    return bool(spec["request"].get("EnableNetworkIsolation"))


def output_prefix(spec: dict[str, Any]) -> str | None:
    """``<S3OutputPath>/<TrainingJobName>/output`` or None without OutputDataConfig."""
    out = (spec["request"].get("OutputDataConfig") or {}).get("S3OutputPath")
    if not out:
        return None
    return f"{out.rstrip('/')}/{spec['job_name']}/output"
