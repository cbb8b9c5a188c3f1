"""Prepared instances (agent/prepared.py): after a sandboxed job, the next instance of the same shape
is made while the machine is idle, and the next such job starts in it -- with its own command,
environment, credentials and nothing of the job the instance was prepared from."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import alive, read_model, unique_name, wait_for_job, wait_until
from test_runtime_jobs import shell_job

from trainforge.agent.steps import PREPARED_NOTICE
from trainforge.sandbox import rootfs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root")

# What the instance saw: its environment, its host name and hosts file, the credentials endpoint.
PROBE = r"""
import json, os, socket, urllib.request
def credentials():
    req = urllib.request.Request(os.environ["AWS_CONTAINER_CREDENTIALS_FULL_URI"],
                                 headers={"Authorization": os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"]})
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return answer.status
    except Exception as exc:
        return repr(exc)
json.dump({"env": dict(os.environ), "host": socket.gethostname(), "hosts": open("/etc/hosts").read(),
           "credentials": credentials(), "uid": os.getuid(), "cwd": os.getcwd(),
           "hps": json.load(open("/opt/ml/input/config/hyperparameters.json")),
           "ml": sorted(os.listdir("/opt/ml"))}, open("/opt/ml/model/probe.json", "w"))
"""


# Where a network-isolated instance must not get: the server, the credentials endpoint, the host.
NET_PROBE = """
import json, socket
out = {}
for what, address in (("server", ("127.0.0.1", PORT)), ("credentials", ("169.254.170.2", 80)),
                      ("gateway", ("10.0.2.2", PORT))):
    try:
        socket.create_connection(address, timeout=2).close()
        out[what] = "reached"
    except OSError as exc:
        out[what] = "refused: " + str(exc)
json.dump(out, open("/opt/ml/model/net.json", "w"))
"""


def slots(srv: Any) -> list[Path]:
    """The prepared instances of ``srv`` that are ready for a job (made, offered to the fork server)."""
    warm = Path(rootfs.roots_dir(str(srv.data_dir))) / "warm"
    return sorted(d for d in warm.glob("s*") if (d / "ready").exists()) if warm.is_dir() else []


def owner(slot: Path) -> int:
    return int(json.loads((slot / "owner").read_text())["pid"])


def job_log(srv: Any, name: str) -> list[str]:
    events = srv.client("logs").filter_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                                  logStreamNamePrefix=name)["events"]
    return [e["message"] for e in events]


def run(sm: Any, name: str, script: str, out: Path, **overrides: Any) -> dict[str, Any]:
    sm.create_training_job(**shell_job(name, script, out, **overrides))
    job = wait_for_job(sm, name, timeout=120)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    return dict(job)


@pytest.fixture
def srv(server_factory: Any, tmp_path: Path) -> Any:
    (tmp_path / "probe.py").write_text(PROBE)
    return server_factory({"allowed_local_roots": [str(tmp_path)]})


def test_the_next_job_starts_in_the_instance_prepared_after_the_last(srv: Any, tmp_path: Path) -> None:
    sm = srv.client()
    first = unique_name("prep-a")
    run(sm, first, f"python3 {tmp_path}/probe.py", tmp_path / "out",
        Environment={"SECRET_OF_A": "a-secret"}, HyperParameters={"of": "a"})
    assert PREPARED_NOTICE not in job_log(srv, first)  # the server's first job: nothing was prepared
    made = wait_until(lambda: slots(srv), timeout=60, message="an instance prepared after the first job")
    assert len(made) == 1 and alive(owner(made[0]))
    second = unique_name("prep-b")
    job = run(sm, second, f"python3 {tmp_path}/probe.py", tmp_path / "out", Environment={"OWN": "b"})
    assert PREPARED_NOTICE in job_log(srv, second)
    probe = json.loads(read_model(job["ModelArtifacts"]["S3ModelArtifacts"])["probe.json"])
    env = probe["env"]
    # the job's own environment and configuration, nothing of the job the instance was made from
    assert env["OWN"] == "b" and "SECRET_OF_A" not in env
    assert probe["hps"] == {} and "a-secret" not in json.dumps(probe)
    assert env["TRAINING_JOB_NAME"] == second
    assert probe["host"] == "algo-1" and "algo-1" in probe["hosts"]
    assert probe["credentials"] == 200  # the endpoint answers this job's token
    assert probe["uid"] == 0 and probe["cwd"] == "/opt/ml/code"
    # the container it ran in is gone with the job; another instance is prepared for the next one
    wait_until(lambda: made[0].exists() is False, timeout=60, message="the used instance removed")
    wait_until(lambda: [s for s in slots(srv) if s != made[0]], timeout=60, message="the next one prepared")


def test_a_job_of_another_shape_gets_its_own_instance(srv: Any, tmp_path: Path) -> None:
    sm = srv.client()
    run(sm, unique_name("prep-c"), "true", tmp_path / "out")
    made = wait_until(lambda: slots(srv), timeout=60, message="an instance prepared")
    other = unique_name("prep-d")
    run(sm, other, "test $(df -BG --output=size /opt/ml | tail -1 | tr -dc 0-9) -ge 2", tmp_path / "out",
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 2})
    assert PREPARED_NOTICE not in job_log(srv, other)
    assert made[0] in slots(srv) and alive(owner(made[0]))  # still waiting for a job of its shape


def test_a_job_stopped_in_a_prepared_instance_leaves_nothing(srv: Any, tmp_path: Path) -> None:
    sm = srv.client()
    run(sm, unique_name("prep-e"), "true", tmp_path / "out")
    made = wait_until(lambda: slots(srv), timeout=60, message="an instance prepared")
    name = unique_name("prep-f")
    marker = f"prepared-stop-{os.getpid()}"
    script = f"(setsid sh -c 'sleep 300' {marker} &) ; touch {tmp_path}/up; sleep 300"  # a daemon too
    sm.create_training_job(**shell_job(name, script, tmp_path / "out"))
    wait_until(lambda: (tmp_path / "up").exists(), timeout=60, message="the job's script running")
    sm.stop_training_job(TrainingJobName=name)
    job = wait_for_job(sm, name, timeout=60)
    assert job["TrainingJobStatus"] == "Stopped"
    assert PREPARED_NOTICE in job_log(srv, name)

    def leftovers() -> list[str]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                pass
        return found
    wait_until(lambda: not leftovers(), timeout=30, message="no process of the stopped instance left")
    wait_until(lambda: not made[0].exists(), timeout=60, message="the instance's directory removed")


def test_prepared_instances_end_with_their_agent_or_the_server(srv: Any, tmp_path: Path) -> None:
    sm = srv.client()
    run(sm, unique_name("prep-g"), "true", tmp_path / "out")
    first = wait_until(lambda: slots(srv), timeout=60, message="an instance prepared")[0]
    state = Path(rootfs.runc_state(rootfs.roots_dir(str(srv.data_dir))))
    created = {p.name for p in state.iterdir()}
    assert created  # its container, created and waiting
    os.kill(owner(first), signal.SIGKILL)  # its agent dies: the server's sweep removes what it left
    wait_until(lambda: not first.exists(), timeout=60, message="the dead agent's instance swept")
    wait_until(lambda: not (created & {p.name for p in state.iterdir()}), timeout=30,
               message="its container deleted")
    run(sm, unique_name("prep-h"), "true", tmp_path / "out")
    second = wait_until(lambda: slots(srv), timeout=60, message="an instance prepared again")[0]
    pid = owner(second)
    srv.stop()  # the fork server lets its idle agents go: each removes its instance
    wait_until(lambda: not alive(pid) and not second.exists(), timeout=60,
               message="the idle agent gone with its instance")


def test_a_network_isolated_job_in_a_prepared_instance_reaches_nothing(srv: Any, tmp_path: Path) -> None:
    sm = srv.client()
    run(sm, unique_name("prep-i"), "true", tmp_path / "out", EnableNetworkIsolation=True)
    wait_until(lambda: slots(srv), timeout=60, message="an isolated instance prepared")
    name = unique_name("prep-j")
    (tmp_path / "net.py").write_text(NET_PROBE.replace("PORT", str(srv.port)))
    probe = f"python3 {tmp_path}/net.py"
    job = run(sm, name, probe, tmp_path / "out", EnableNetworkIsolation=True)
    assert PREPARED_NOTICE in job_log(srv, name)
    reached = json.loads(read_model(job["ModelArtifacts"]["S3ModelArtifacts"])["net.json"])
    assert all(v.startswith("refused") for v in reached.values()), reached
