"""The Slurm backend's ``network`` setting (backends/slurm/network.py): ``nodes`` puts each instance,
still sandboxed, in its node's network namespace with algo-N resolving to the nodes' NodeAddr (the
fixture's nodes all have 127.0.0.1); EnableNetworkIsolation is refused where it cannot be enforced;
a bad value stops the server. ``auto`` on the fixture stays the job's link (tests/test_slurm_backend.py)."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError
from conftest import unique_name, wait_for_job
from slurm_cluster import SlurmCluster, slurm_available
from test_runtime_jobs import log_messages
from test_slurm_backend import (
    HOSTS,
    cluster,  # noqa: F401 - the module's Slurm fixture
    model_dir,
    multi,
    node_records,
    slurm,
    slurm_jobs_named,
)
from test_slurm_settings import refused_at_start

from trainforge.backends.slurm import network

needs_slurm = pytest.mark.skipif(slurm_available() is not None, reason=str(slurm_available()))

# Run in each instance: what it resolves, sees and reaches, into /opt/ml/model/<host>.json.
CHECK = r'''
import json, os, socket, time, urllib.error, urllib.request
host, hosts = os.environ["SM_CURRENT_HOST"], json.loads(os.environ["SM_HOSTS"])
out = {"resolved": {h: socket.gethostbyname(h) for h in hosts}, "netns": os.readlink("/proc/self/ns/net"),
       "uid_map": open("/proc/self/uid_map").read().split()}
try:
    open("/etc/shadow").read()
    out["shadow"] = "readable"
except OSError as exc:
    out["shadow"] = type(exc).__name__
with socket.create_connection(("127.0.0.1", int(os.environ["TEST_PORT"])), timeout=30) as c:
    c.sendall(host.encode() + b"\n")  # the test's port on the host's loopback
url = os.environ["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
out["credentials_url"] = url
for token in (os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"], "not-the-token"):
    try:
        req = urllib.request.Request(url, headers={"Authorization": token})
        with urllib.request.urlopen(req, timeout=30) as r:
            out.setdefault("credentials", []).append([r.status, json.loads(r.read()).get("AccessKeyId")])
    except urllib.error.HTTPError as exc:
        out.setdefault("credentials", []).append([exc.code, None])
port = int(os.environ["PEER_PORT"])
if host == "algo-1":
    with socket.create_server(("0.0.0.0", port)) as srv:
        srv.settimeout(120)
        peers = []
        while len(peers) < len(hosts) - 1:
            conn, _ = srv.accept()
            with conn:
                peers.append(conn.makefile().readline().strip())
    out["peers"] = sorted(peers)
else:
    deadline = time.monotonic() + 120
    while True:
        try:
            conn = socket.create_connection(("algo-1", port), timeout=10)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with conn:
        conn.sendall(host.encode() + b"\n")
json.dump(out, open(f"/opt/ml/model/{host}.json", "w"))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server(server_factory: Any, slurm_cluster: SlurmCluster, tmp_path: Path, setting: str) -> Any:
    return server_factory({"allowed_local_roots": [str(tmp_path)], "backend": "slurm",
                           "slurm": {"partition": slurm_cluster.partition, "network": setting}},
                          env={"SLURM_CONF": str(slurm_cluster.conf)})


def node_addresses(slurm_cluster: SlurmCluster, srv: Any, name: str) -> dict[str, str]:
    """host -> the NodeAddr, as scontrol reports it, of the node its task ran on (rank K-1 for algo-K)."""
    records = node_records(srv, name)
    assert [records[h]["rank"] for h in HOSTS] == [0, 1, 2]
    found = {}
    for h in HOSTS:
        line = slurm(slurm_cluster, "scontrol", "show", "node", "-o", records[h]["node"])
        found[h] = dict(t.partition("=")[::2] for t in line.split() if "=" in t)["NodeAddr"]
    return found


def run_check(srv: Any, slurm_cluster: SlurmCluster, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """A 3-instance job running CHECK, which must complete: host -> what its instance found. Each
    instance must also have reached a port the test opens on the host's loopback."""
    (tmp_path / "check.py").write_text(CHECK)
    listener = socket.create_server(("127.0.0.1", 0))  # only reachable from the host's namespace
    listener.settimeout(300)
    reached: list[str] = []

    def accept() -> None:
        while len(reached) < len(HOSTS):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                reached.append(conn.makefile().readline().strip())

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    sm = srv.client()
    name, out = unique_name("slurmnodes"), tmp_path / "out"
    env = {"T": str(tmp_path), "TEST_PORT": str(listener.getsockname()[1]), "PEER_PORT": str(_free_port())}
    try:
        sm.create_training_job(**multi(name, 'exec python3 "$T/check.py"', out, Environment=env))
        desc = wait_for_job(sm, name, timeout=300)
    finally:
        listener.close()
        thread.join(timeout=10)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    results = {h: json.loads((model_dir(out, name) / f"{h}.json").read_text()) for h in HOSTS}
    # algo-K resolves to the NodeAddr of the node of rank K-1, in every instance
    addresses = node_addresses(slurm_cluster, srv, name)
    for h in HOSTS:
        assert results[h]["resolved"] == addresses, (h, results[h]["resolved"])
    # the node's network namespace: the host's (the test's own), whose loopback port each reached
    assert {r["netns"] for r in results.values()} == {os.readlink("/proc/self/ns/net")}
    assert sorted(reached) == HOSTS
    # algo-2 and algo-3 connected to the server algo-1 opened
    assert results["algo-1"]["peers"] == ["algo-2", "algo-3"]
    # the job log says so, for each instance
    said = [m for m in log_messages(srv, name) if "network: its Slurm node's (slurm.network: nodes)" in m]
    assert len(said) == len(HOSTS), said
    # still sandboxed: its uid 0 is an unprivileged host uid, the host's secrets are out of reach
    for h in HOSTS:
        inside, outside = results[h]["uid_map"][:2]
        assert inside == "0" and outside != "0", results[h]["uid_map"]
        assert results[h]["shadow"] != "readable"
    # the credentials endpoint on the node's loopback, demanding the instance's token
    for h in HOSTS:
        url = urlsplit(results[h]["credentials_url"])  # the agent's endpoint, not the control plane's
        assert (url.hostname, url.path) == ("127.0.0.1", "/v2/credentials") and url.port != srv.port, url
        assert results[h]["credentials"] == [[200, "testing"], [403, None]], results[h]["credentials"]
    return results


@needs_slurm
def test_nodes_mode_instances_share_their_nodes_network_and_reach_each_other_by_node_address(
        server_factory: Any, cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    run_check(_server(server_factory, cluster, tmp_path, "nodes"), cluster, tmp_path)


@needs_slurm
def test_auto_on_nodes_of_several_addresses_is_the_nodes_network(server_factory: Any, tmp_path: Path) -> None:
    """Nodes with addresses of their own (127.0.0.1-3: machines of their own to the rule) make ``auto``
    the nodes' network: algo-K is the address of the node of rank K-1, each a different one; a job
    asking for EnableNetworkIsolation there fails at its start with the reason, nothing of it run."""
    spread = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    with SlurmCluster(nodes=3, addresses=spread) as spread_cluster:
        srv = _server(server_factory, spread_cluster, tmp_path, "auto")
        results = run_check(srv, spread_cluster, tmp_path)
        assert results["algo-2"]["resolved"] == dict(zip(HOSTS, spread, strict=True))
        sm = srv.client()
        name, ran = unique_name("slurmautoiso"), tmp_path / "ran"
        sm.create_training_job(**multi(name, f'touch "{ran}-$SM_CURRENT_HOST"', tmp_path / "out",
                                       EnableNetworkIsolation=True))
        desc = wait_for_job(sm, name, timeout=300)
    assert desc["TrainingJobStatus"] == "Failed"
    assert desc["FailureReason"].startswith("ClientError: EnableNetworkIsolation cannot be enforced"), desc
    assert "slurm.network: auto" in desc["FailureReason"]
    assert not list(tmp_path.glob("ran-*"))


@needs_slurm
def test_network_isolation_is_refused_when_the_nodes_namespace_is_used(
        server_factory: Any, cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    srv = _server(server_factory, cluster, tmp_path, "nodes")
    sm = srv.client()
    name = unique_name("slurmiso")
    with pytest.raises(ClientError) as info:
        sm.create_training_job(**multi(name, "true", tmp_path / "out", EnableNetworkIsolation=True))
    error = info.value.response["Error"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Code"] == "ValidationException", error
    assert "EnableNetworkIsolation cannot be enforced" in error["Message"]
    assert "slurm.network: nodes" in error["Message"]
    # nothing created: no job, no files, no Slurm job
    assert name not in [j["TrainingJobName"] for j in sm.list_training_jobs()["TrainingJobSummaries"]]
    with pytest.raises(ClientError):
        sm.describe_training_job(TrainingJobName=name)
    assert not list(srv.data_dir.glob(f"jobs/*/*/{name}"))
    assert slurm_jobs_named(cluster, name) == {}


def test_a_bad_network_value_stops_the_server(tmp_path: Path) -> None:
    stderr = refused_at_start(tmp_path, "{network: overlay}")
    assert "SlurmConfigError: slurm.network must be one of auto, job, nodes (got 'overlay')" in stderr, stderr


@pytest.mark.parametrize(("setting", "addresses", "mode", "fails"), [
    ("auto", ["127.0.0.1"] * 3, "job", False),  # the fixture: several slurmd on one machine
    ("auto", ["10.0.0.1", "10.0.0.2"], "nodes", False),
    ("nodes", ["127.0.0.1"] * 3, "nodes", False),
    ("job", ["10.0.0.1", "10.0.0.2"], "job", True),  # the per-job link cannot span machines
])
def test_one_rule_decides_the_allocations_network(setting: str, addresses: list[str], mode: str,
                                                  fails: bool) -> None:
    decided, error = network.decide(setting, addresses)
    assert decided == mode and (error is not None) == fails


def _spec(isolated: bool) -> dict[str, Any]:
    return {"host": "algo-2", "hosts": ["algo-1", "algo-2"], "runtime": {"kind": "command"},
            "request": {"EnableNetworkIsolation": isolated}}


def test_auto_resolving_to_nodes_fails_an_isolated_job_with_the_reason(tmp_path: Path) -> None:
    """What each task does with the batch step's record (``auto`` on nodes of two machines): the
    addresses, or, asked for EnableNetworkIsolation, the runtime's error that the agent fails the job
    with before it makes anything (agent/main.py)."""
    gang = str(tmp_path / "gang.json")
    network.write(network.record_path(gang), {"setting": "auto", "network": "nodes", "nodes": ["n1", "n2"],
                                              "addresses": ["10.0.0.1", "10.0.0.2"], "error": None})
    spec = _spec(False)
    network.adopt(spec, gang, 1, "n2")
    assert spec["sandbox"] == {"network": "nodes"} and "error" not in spec["runtime"]
    assert spec["host_addresses"] == {"algo-1": "10.0.0.1", "algo-2": "10.0.0.2"}
    isolated = _spec(True)
    network.adopt(isolated, gang, 1, "n2")
    assert isolated["runtime"]["error"].startswith("ClientError: EnableNetworkIsolation cannot be enforced")
    assert "slurm.network: auto" in isolated["runtime"]["error"] and "sandbox" not in isolated
    elsewhere = _spec(False)
    network.adopt(elsewhere, gang, 1, "n1")  # a task not on its rank's node: never misnamed hosts
    assert "algo-N cannot name the nodes" in elsewhere["runtime"]["error"]
