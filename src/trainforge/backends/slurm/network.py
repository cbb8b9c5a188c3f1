"""How the instances of one Slurm allocation reach each other (``slurm.network``: auto, job, nodes).

- ``job``: each instance in a network namespace of its own on its job's link, algo-K at
  10.200.0.(10+K), as on the local backend (:mod:`trainforge.sandbox.network`). The link is one
  machine's bridge: only possible when every node of the allocation is one machine (the test
  cluster's several slurmd on one host).
- ``nodes``: each instance keeps its sandbox (user, PID, mount namespaces, its root filesystem and
  volume) but runs in its node's network namespace; algo-K resolves (its /etc/hosts) to the address
  of the allocation's node of rank K-1. Slurm gives each job whole nodes (``--exclusive``), so two
  jobs never share a node's namespace. EnableNetworkIsolation cannot be enforced there.
- ``auto`` (the default): ``job`` when every node of the allocation has the same address (one
  machine), else ``nodes``.

The decision is made once per allocation, by the batch step before ``srun`` (:func:`record`, on the
allocation's first node): ``scontrol show hostnames`` of the allocation's node list (of each
component, in order, for a heterogeneous job: srun numbers the tasks across them so) and one
``scontrol show node`` for their ``NodeAddr``; it writes ``<gang>.net.json`` beside the gang file.
Every task then reads the same record (:func:`adopt`, from :mod:`.node`): each agent of the job
sees the same mode and addresses whatever order they start in. A task that finds the record
missing, its own node not at its rank, or EnableNetworkIsolation with ``nodes``, gets a runtime error
in its spec: its agent fails the job with that reason before anything of the instance is made.
Standard library only (the batch step runs it with ``python -S``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from typing import Any

from trainforge.backends.slurm import cli

SUFFIX = ".net.json"
ISOLATION = ("ClientError: EnableNetworkIsolation cannot be enforced for this job: its instances run in "
             "their Slurm nodes' network namespaces (slurm.network: {setting}; the allocation spans "
             "{machines} machine(s)), where nothing keeps the training code from the network. Run it "
             "without EnableNetworkIsolation, or where every node of the allocation is one machine "
             "(slurm.network: job).")


def record_path(gang_file: str) -> str:
    """Where the batch step records the allocation's network, beside the gang file."""
    return os.path.splitext(gang_file)[0] + SUFFIX


def allocation_nodes(env: dict[str, str] | os._Environ[str]) -> list[str]:
    """The allocation's node names in task order: one task per node, block-distributed, the
    components of a heterogeneous job one after the other (``srun --het-group=0,..,K-1``)."""
    groups = int(env.get("SLURM_HET_SIZE") or 0)
    lists = [env[f"SLURM_JOB_NODELIST_HET_GROUP_{k}"] for k in range(groups)] or [env["SLURM_JOB_NODELIST"]]
    return [name for nodelist in lists for name in cli.hostnames(nodelist)]


def _ip(address: str) -> str:
    """A node's NodeAddr as an IP address (it may be a host name: resolved here, on a node)."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return str(socket.getaddrinfo(address, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])


def decide(setting: str, addresses: list[str]) -> tuple[str, str | None]:
    """The network mode for an allocation whose nodes have ``addresses`` (in task order), and why the
    job cannot run, or None."""
    machines = len(set(addresses))
    if setting == "job" and machines > 1:
        return "job", (f"InternalServerError: slurm.network is job, but the job's Slurm allocation spans "
                       f"{machines} machines ({', '.join(sorted(set(addresses)))}): the per-job link is one "
                       "machine's; set slurm.network to nodes or auto")
    if setting == "nodes" or (setting == "auto" and machines > 1):
        return "nodes", None
    return "job", None


def record(argv: list[str]) -> int:
    """The batch step: ``record PATH SETTING``. Writes ``{"setting", "network", "nodes", "addresses",
    "error"}`` (or only ``{"error"}``) to PATH; always 0: srun still starts the agents, which report
    the error."""
    path, setting = argv
    try:
        names = allocation_nodes(os.environ)
        known = cli.node_addresses(names)
        addresses = [_ip(known[name]) for name in names]
        mode, error = decide(setting, addresses)
        result: dict[str, Any] = {"setting": setting, "network": mode, "nodes": names, "addresses": addresses,
                                  "error": error}
    except (OSError, KeyError, ValueError, IndexError) as exc:
        result = {"error": f"InternalServerError: the network of the Slurm allocation could not be "
                           f"determined (scontrol): {type(exc).__name__}: {exc}"}
    write(path, result)
    return 0


def write(path: str, result: dict[str, Any]) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(path + ".tmp", path)


def trivial(setting: str, instances: int) -> dict[str, Any] | None:
    """The record of an allocation whose network needs no look at its nodes (one node, not
    ``nodes``: the per-job link of one instance), or None: the batch step finds out."""
    if instances == 1 and setting != "nodes":
        return {"setting": setting, "network": "job", "error": None}
    return None


def adopt(spec: dict[str, Any], gang_file: str, rank: int, node: str | None) -> None:
    """Make the instance's spec use the allocation's network: ``nodes`` puts ``sandbox.network`` and
    the nodes' addresses (``host_addresses``) into it; an error becomes the runtime's error (the
    agent fails the job with it before it makes the instance)."""
    try:
        with open(record_path(gang_file), encoding="utf-8") as f:
            found = json.load(f)
    except (OSError, ValueError) as exc:
        found = {"error": f"InternalServerError: the batch step recorded no network for the Slurm allocation "
                          f"({exc}; see {os.path.splitext(gang_file)[0]}.out)"}
    error = found.get("error")
    if error is None and found["network"] == "nodes":
        hosts, nodes = list(spec["hosts"]), list(found["nodes"])
        if len(nodes) != len(hosts) or nodes[rank] != node or hosts[rank] != spec["host"]:
            error = (f"InternalServerError: task {rank} of the Slurm allocation runs on {node}, not on the "
                     f"node of its rank ({nodes}): algo-N cannot name the nodes")
        elif spec["request"].get("EnableNetworkIsolation"):
            error = ISOLATION.format(setting=found.get("setting"), machines=len(set(found["addresses"])))
        else:
            spec.setdefault("sandbox", {})["network"] = "nodes"
            spec["host_addresses"] = dict(zip(hosts, found["addresses"], strict=True))
    if error:
        spec["runtime"] = {**(spec.get("runtime") or {}), "error": error}
