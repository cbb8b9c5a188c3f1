"""Nothing is lost: server crashes, agent crashes, and a crowd of jobs on little capacity (issue 3)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import instance_records, minimal_request, read_model, unique_name, wait_for_job, wait_until
from test_runtime_jobs import log_messages, shell_job


def agent_pids(data_dir: Path, name: str) -> list[int]:
    """PIDs of the living agents of job ``name``."""
    return [int(info["agent_pid"]) for info in instance_records(data_dir, name)]


def test_server_killed_during_training_then_restarted(server_factory: Any, tmp_path: Path) -> None:
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]})
    gate = tmp_path / "gate"
    script = f"echo started; while [ ! -e {gate} ]; do sleep 0.05; done; echo after-restart; echo ok > /opt/ml/model/m"
    name = unique_name("crash")
    sm = srv.client()
    sm.create_training_job(**shell_job(name, script, tmp_path / "out"))
    wait_for_job(sm, name, "Training", secondary=True, timeout=30)
    srv.kill()
    gate.write_text("go")  # training finishes while the control plane is down
    srv.start()
    sm = srv.client()
    desc = wait_for_job(sm, name, timeout=60)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    logs = srv.client("logs")
    stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                       logStreamNamePrefix=f"{name}/")["logStreams"][0]["logStreamName"]
    messages = [e["message"] for e in logs.get_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream, startFromHead=True)["events"]]
    assert messages.index("started") < messages.index("after-restart")


def test_agent_killed_fails_the_job_with_a_reason(server_factory: Any, tmp_path: Path) -> None:
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]})
    name = unique_name("agentkill")
    sm = srv.client()
    sm.create_training_job(**shell_job(name, "sleep 120", tmp_path / "out"))
    wait_for_job(sm, name, "Training", secondary=True, timeout=30)
    pids = wait_until(lambda: agent_pids(srv.data_dir, name), message="agent process")
    os.kill(pids[0], signal.SIGKILL)
    desc = wait_for_job(sm, name, timeout=30)
    assert desc["TrainingJobStatus"] == "Failed"
    assert "agent" in desc["FailureReason"] and not desc["FailureReason"].startswith("AlgorithmError")
    # no process of the instance survives its agent
    wait_until(lambda: not agent_pids(srv.data_dir, name), timeout=10, message="no agent left")


def kill_the_leader_after_its_training(srv: Any, tmp_path: Path, prefix: str) -> tuple[Any, str, Path, int, Path]:
    """A 2-instance job whose algo-2 trains until ``gate`` exists; algo-1's agent is killed with -9
    once its training has ended (it then waits for algo-2 before uploading). Returns (client, job
    name, algo-1's instance directory, the killed agent's pid, gate)."""
    gate = tmp_path / "gate"
    script = (f'h=$(hostname); if [ "$h" = algo-2 ]; then while [ ! -e {gate} ]; do sleep 0.05; done; fi; '
              f'echo "$h" > /opt/ml/model/$h')
    name = unique_name(prefix)
    req = shell_job(name, script, tmp_path / "out")
    req["ResourceConfig"]["InstanceCount"] = 2
    sm = srv.client()
    sm.create_training_job(**req)
    leader = wait_until(lambda: next(srv.data_dir.glob(f"jobs/*/*/{name}/attempt-1/algo-1/outcome.json"), None),
                        timeout=30, message="the leader's training to end").parent
    first_agent = json.loads((leader / "instance.json").read_text())["agent_pid"]
    os.kill(first_agent, signal.SIGKILL)
    return sm, name, leader, first_agent, gate


def assert_both_models_uploaded(desc: dict[str, Any]) -> None:
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert read_model(desc["ModelArtifacts"]["S3ModelArtifacts"]) == {"algo-1": b"algo-1\n", "algo-2": b"algo-2\n"}


@pytest.mark.parametrize("restart_server", [False, True], ids=["server-up", "server-restarted"])
def test_agent_killed_after_training_is_finished_by_a_new_agent(
        server_factory: Any, tmp_path: Path, restart_server: bool) -> None:
    """The leader's agent dies while it waits to upload (its training ended): the upload is resumed."""
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]})
    sm, name, leader, first_agent, gate = kill_the_leader_after_its_training(srv, tmp_path, "finish")
    if restart_server:
        srv.kill()
    gate.write_text("go")
    if restart_server:
        srv.start()
        sm = srv.client()
    assert_both_models_uploaded(wait_for_job(sm, name, timeout=60))
    assert json.loads((leader / "instance.json").read_text())["agent_pid"] != first_agent
    assert any("a new agent uploads and reports" in m for m in log_messages(srv, name))
    wait_until(lambda: not agent_pids(srv.data_dir, name), timeout=10, message="no agent left")


def test_agent_killed_is_retried_under_retry_strategy(server_factory: Any, tmp_path: Path) -> None:
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]})
    marker = tmp_path / "attempts"
    script = f"echo x >> {marker}; if [ $(wc -l < {marker}) -lt 2 ]; then sleep 120; fi"
    name = unique_name("retry")
    sm = srv.client()
    sm.create_training_job(**shell_job(name, script, tmp_path / "out", RetryStrategy={"MaximumRetryAttempts": 2}))
    wait_until(lambda: marker.exists(), timeout=30, message="first attempt running")
    pids = wait_until(lambda: agent_pids(srv.data_dir, name), message="agent process")
    os.kill(pids[0], signal.SIGKILL)
    desc = wait_for_job(sm, name, timeout=60)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    statuses = [t["Status"] for t in desc["SecondaryStatusTransitions"]]
    assert "Restarting" in statuses
    assert statuses.index("Restarting") < len(statuses) - 1 and statuses.count("Training") == 2


def test_fifty_jobs_on_four_instance_slots(server_factory: Any, tmp_path: Path) -> None:
    srv = server_factory({"allowed_local_roots": [str(tmp_path)], "max_concurrent_instances": 4})
    trace = tmp_path / "trace"
    trace.mkdir()
    (trace / "run.sh").write_text('date +%s.%N > "$1/$2.start"; sleep 0.3; date +%s.%N > "$1/$2.end"\n')
    sm = srv.client()
    names = [unique_name("crowd") for _ in range(50)]
    for n in names:
        sm.create_training_job(**shell_job(n, f"sh {trace}/run.sh {trace} {n}", tmp_path / "out"))
    saw_pending = wait_until(lambda: any(
        sm.describe_training_job(TrainingJobName=n)["SecondaryStatus"] == "Pending" for n in names[-10:]),
        timeout=30, message="a Pending job")
    assert saw_pending
    descs = [wait_for_job(sm, n, timeout=240) for n in names]
    assert [d["TrainingJobStatus"] for d in descs] == ["Completed"] * 50
    intervals = [(float((trace / f"{n}.start").read_text()), float((trace / f"{n}.end").read_text()))
                 for n in names]
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert 2 <= peak <= 4, peak
    pending = [d for d in descs if "Pending" in [t["Status"] for t in d["SecondaryStatusTransitions"]]]
    assert pending and "Waiting for capacity" in json.dumps(pending[0]["SecondaryStatusTransitions"], default=str)
    listed = sm.list_training_jobs(StatusEquals="Completed", MaxResults=100)["TrainingJobSummaries"]
    assert {s["TrainingJobName"] for s in listed} >= set(names)


def test_minimal_request_is_a_valid_job(server: Any) -> None:
    """conftest's minimal request runs to the end: the server completes it and stores its (empty) model."""
    name = unique_name("min")
    sm = server.client()
    out = f"file://{server.data_dir}/outputs"  # an allowed local root of the server
    sm.create_training_job(**minimal_request(name, OutputDataConfig={"S3OutputPath": out}))
    desc = wait_for_job(sm, name)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert [t["Status"] for t in desc["SecondaryStatusTransitions"]] == [
        "Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert desc["ModelArtifacts"]["S3ModelArtifacts"] == f"{out}/{name}/output/model.tar.gz"
    assert read_model(desc["ModelArtifacts"]["S3ModelArtifacts"]) == {}
