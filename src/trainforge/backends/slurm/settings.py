"""The ``slurm:`` section of the server configuration (``backend: slurm``).

::

    backend: slurm
    slurm:
      partition: gpu            # required on a cluster; the fixture's is "debug"
      account: ml-team          # optional (sbatch --account)
      control_url: http://10.0.0.5:8080   # how agents on the nodes reach the control plane
                                # (default: the server's own endpoint, right on one machine)
      instance_types:           # ml.* type -> what one node of the allocation must offer
        ml.p4d.24xlarge: {cpus: 96, memory_mb: 1100000, gres: "gpu:a100:8"}
                                # (a type not mapped here: --gres=gpu:N with the GPUs of the server's
                                # own instance_types table, e.g. ml.g5.xlarge -> --gres=gpu:1)
      exclusive: true           # whole nodes (sbatch --exclusive), as an ml.* instance is a machine
      sbatch_args: []           # anything else, passed to sbatch as is
      stop_kill_after_seconds: 60  # after the stop grace, this much more for the upload, then scancel
      network: auto             # how an instance's algo-N reach the others (backends/slurm/network.py):
                                # job: the per-job link of the local backend (every node of the
                                # allocation is one machine); nodes: each instance in its node's network
                                # namespace, algo-N = the NodeAddr of the node of rank N-1 (no
                                # EnableNetworkIsolation); auto: job when the allocation is one machine

Job files (specs, logs, /opt/ml of each instance) stay in the server's data directory, which the
nodes must see at the same path (a shared file system; on one machine, trivially): it is the shared
directory the nodes stage through. Staging through an object store instead (nodes that share no
directory with the server) is not offered, and no key of this section asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainforge.config_checks import known_mapping

KNOWN = {"partition", "account", "control_url", "instance_types", "exclusive", "sbatch_args",
         "stop_kill_after_seconds", "network"}
NETWORKS = ("auto", "job", "nodes")
SHAPE_KEYS = {"cpus": int, "memory_mb": int, "gres": str, "gpus": int}


ISOLATION_REFUSED = ("EnableNetworkIsolation cannot be enforced on this server: its Slurm backend runs each "
                     "instance in its node's network namespace (slurm.network: nodes), where nothing keeps "
                     "the training code from the network. Run the job without EnableNetworkIsolation, or "
                     "on a server whose slurm.network is job.")


def isolation_refused(section: dict[str, Any]) -> str | None:
    """Why CreateTrainingJob must refuse EnableNetworkIsolation on this server, or None: with
    ``network: nodes`` an instance runs in its node's network namespace, where nothing keeps the
    training code from the network (``auto`` decides per allocation: a job it puts on the nodes'
    namespaces fails at start, backends/slurm/network.py)."""
    return ISOLATION_REFUSED if section.get("network") == "nodes" else None


class SlurmConfigError(ValueError):
    """The ``slurm:`` section of the server configuration is malformed (the server does not start)."""


def validate(section: Any) -> None:
    """Refuse a malformed ``slurm:`` section with a message naming the key, as the server's other
    sections are refused (``images``, ``registries``) at start."""
    if not isinstance(section, dict):
        raise SlurmConfigError("the config key 'slurm' must be a mapping")
    known_mapping(section, "slurm", sorted(KNOWN), SlurmConfigError)
    for key in ("partition", "account", "control_url"):
        if section.get(key) is not None and not isinstance(section[key], str):
            raise SlurmConfigError(f"slurm.{key} must be a string")
    if not isinstance(section.get("exclusive", True), bool):
        raise SlurmConfigError("slurm.exclusive must be true or false")
    args = section.get("sbatch_args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise SlurmConfigError("slurm.sbatch_args must be a list of strings")
    kill_after = section.get("stop_kill_after_seconds", 60.0)
    if isinstance(kill_after, bool) or not isinstance(kill_after, int | float) or kill_after < 0:
        raise SlurmConfigError("slurm.stop_kill_after_seconds must be a number of seconds")
    network = section.get("network", "auto")
    if network not in NETWORKS:
        raise SlurmConfigError(f"slurm.network must be one of {', '.join(NETWORKS)} (got {network!r}): "
                               "auto (the default) is job when every node of an allocation is one machine, "
                               "else nodes")
    if section.get("exclusive", True) is False and network != "job":
        # jobs sharing a node would share its network namespace (nodes), and reach each other there
        raise SlurmConfigError(f"slurm.exclusive: false needs slurm.network: job (got {network!r}): with "
                               "nodes shared between jobs, instances in a node's network namespace would "
                               "share it with other jobs' instances")
    types = section.get("instance_types", {})
    if not isinstance(types, dict):
        raise SlurmConfigError("slurm.instance_types must map ml.* instance types to resources")
    for name, shape in types.items():
        known_mapping(shape, f"slurm.instance_types[{name!r}]", SHAPE_KEYS, SlurmConfigError)
        for key, kind in SHAPE_KEYS.items():
            value = shape.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
                raise SlurmConfigError(f"slurm.instance_types[{name!r}].{key} must be "
                                       f"{'a string' if kind is str else 'a whole number'}")


@dataclass
class SlurmSettings:
    partition: str | None = None
    account: str | None = None
    control_url: str | None = None
    instance_types: dict[str, dict[str, Any]] = field(default_factory=dict)
    exclusive: bool = True
    sbatch_args: list[str] = field(default_factory=list)
    stop_kill_after_seconds: float = 60.0
    network: str = "auto"
    # the server's ``instance_types`` (ml.* type -> cpus, memory_mb, gpus): the GPUs of a type that
    # ``instance_types`` above does not map
    catalog: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(cls, section: dict[str, Any], catalog: dict[str, dict[str, Any]] | None = None) -> SlurmSettings:
        validate(section)
        return cls(**section, catalog=dict(catalog or {}))

    def resources(self, instance_type: str) -> list[str]:
        """sbatch's options for one node of ``instance_type`` (none: the whole node, --exclusive). A
        type the section does not map gets its GPUs as ``--gres=gpu:N`` (ml.p3.2xlarge: 1)."""
        shape = self.instance_types.get(instance_type)
        if shape is None:
            shape = {"gpus": int((self.catalog.get(instance_type) or {}).get("gpus") or 0)}
        args = []
        if shape.get("cpus"):
            args.append(f"--cpus-per-task={int(shape['cpus'])}")
        if shape.get("memory_mb"):
            args.append(f"--mem={int(shape['memory_mb'])}M")
        if shape.get("gres"):
            args.append(f"--gres={shape['gres']}")
        elif shape.get("gpus"):
            args.append(f"--gres=gpu:{int(shape['gpus'])}")
        return args
