"""A server that crashes in the launch window (issue 9, item 1): its jobs are committed as running,
their agents started (or not), their handles never stored. After a restart on the same data
directory a living agent is adopted, a dead or never-started one fails (or retries) its job, and
no job shows a terminal status and then another.

The crash is real: the server kills itself with SIGKILL at a fault-injection point
(``TRAINFORGE_TEST_CRASH_AT``, trainforge/scheduler/faults.py) and is started again without it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError
from conftest import TERMINAL, alive, read_model, unique_name, wait_for_job, wait_until
from test_runtime_jobs import shell_job

CRASH = "TRAINFORGE_TEST_CRASH_AT"
TERMINAL_SECONDARY = {"Completed", "Failed", "Stopped", "MaxRuntimeExceeded", "MaxWaitTimeExceeded"}


def crash_while_launching(srv: Any, request: dict[str, Any]) -> None:
    """Create the job on a server armed to crash at its launch; wait for the crash, disarm it."""
    try:
        srv.client().create_training_job(**request)
    except BotoCoreError:
        pass  # the crash may cut the answer off: the job is committed before the launch starts
    assert srv.proc is not None
    wait_until(lambda: srv.proc.poll() is not None, timeout=30, message="the server to crash while launching")
    assert "test-only fault injection" in srv.log_path.read_text()
    srv.env.pop(CRASH)


def instance_dirs(srv: Any, name: str, attempt: int = 1) -> list[Path]:
    return sorted(srv.data_dir.glob(f"jobs/*/*/{name}/attempt-{attempt}/algo-*"))


def agents_in(instance_dir: Path) -> list[int]:
    """The agents of ``instance_dir``: living session leaders working there (every agent starts in
    its own session there; the processes it starts work elsewhere or are not session leaders, except
    for the instant between a child's ``setsid`` and its ``chdir``: a leader whose parent is one of
    them is such a child, not a second agent)."""
    leaders: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or os.readlink(proc / "cwd") != str(instance_dir):
                continue
            fields = (proc / "stat").read_bytes().rsplit(b")", 1)[1].split()
            parent, session = int(fields[1]), int(fields[3])
        except (OSError, ValueError, IndexError):
            continue
        if session == int(proc.name) and alive(session):
            leaders[session] = parent
    return sorted(pid for pid, parent in leaders.items() if parent not in leaders)


def recorded_agent(instance_dir: Path) -> int | None:
    """The agent pid the instance's ``instance.json`` names, once it is written."""
    try:
        return int(json.loads((instance_dir / "instance.json").read_text())["agent_pid"])
    except (OSError, ValueError, KeyError):
        return None


@contextmanager
def status_history(srv: Any, name: str) -> Iterator[list[tuple[str, str]]]:
    """(TrainingJobStatus, SecondaryStatus) of ``name`` as polled every 50 ms, while the block runs."""
    seen: list[tuple[str, str]] = []
    done = threading.Event()

    def poll() -> None:
        sm = srv.client()
        while not done.wait(0.05):
            try:
                d = sm.describe_training_job(TrainingJobName=name)
                seen.append((d["TrainingJobStatus"], d["SecondaryStatus"]))
            except BotoCoreError:  # the server is down or restarting
                pass

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join(timeout=30)


def assert_one_terminal_status(seen: list[tuple[str, str]], desc: dict[str, Any]) -> None:
    """No terminal status followed by another, neither polled nor in the transitions."""
    terminal = [i for i, (status, _) in enumerate(seen) if status in TERMINAL]
    if terminal:
        assert {s for s, _ in seen[terminal[0]:]} == {seen[terminal[0]][0]}, seen
    ends = [t["Status"] for t in desc["SecondaryStatusTransitions"] if t["Status"] in TERMINAL_SECONDARY]
    assert ends == [desc["SecondaryStatusTransitions"][-1]["Status"]], desc["SecondaryStatusTransitions"]


@pytest.mark.parametrize("retries", [0, 1], ids=["no-retry", "retry-strategy"])
def test_agents_started_in_the_launch_window_are_adopted(server_factory: Any, tmp_path: Path, retries: int) -> None:
    """Killed after its agents started, before their handles were stored: after the restart the
    same two agents (no second one) finish the job, Completed with both hosts' models; neither
    failed (without RetryStrategy) nor started again (with it)."""
    gate = tmp_path / "gate"
    script = f'while [ ! -e {gate} ]; do sleep 0.05; done; h=$(hostname); echo "$h" > /opt/ml/model/$h'
    name = unique_name("window")
    request = shell_job(name, script, tmp_path / "out",
                        **({"RetryStrategy": {"MaximumRetryAttempts": retries}} if retries else {}))
    request["ResourceConfig"]["InstanceCount"] = 2
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]}, env={CRASH: "launch-window"})
    crash_while_launching(srv, request)
    dirs = instance_dirs(srv, name)
    assert [d.name for d in dirs] == ["algo-1", "algo-2"]
    # the agents run on without a server; each is the only agent of its instance
    before = [wait_until(lambda d=d: agents_in(d), timeout=30, message=f"the agent of {d.name}") for d in dirs]
    assert [len(pids) for pids in before] == [1, 1]
    with status_history(srv, name) as seen:
        srv.start()
        sm = srv.client()
        # reconciliation has run when the server answers: the job still runs, on the same agents
        desc = sm.describe_training_job(TrainingJobName=name)
        assert desc["TrainingJobStatus"] == "InProgress", desc.get("FailureReason")
        wait_until(lambda: all(recorded_agent(d) for d in dirs), timeout=30, message="instance.json")
        assert [agents_in(d) for d in dirs] == before
        assert [recorded_agent(d) for d in dirs] == [pids[0] for pids in before]
        gate.write_text("go")
        desc = wait_for_job(sm, name, timeout=60)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert "FailureReason" not in desc
    assert read_model(desc["ModelArtifacts"]["S3ModelArtifacts"]) == {"algo-1": b"algo-1\n", "algo-2": b"algo-2\n"}
    statuses = [t["Status"] for t in desc["SecondaryStatusTransitions"]]
    assert "Restarting" not in statuses and not instance_dirs(srv, name, attempt=2), statuses
    assert_one_terminal_status(seen, desc)


def kill_agent(instance_dir: Path) -> None:
    pid = wait_until(lambda: recorded_agent(instance_dir), timeout=30, message="the agent's instance.json")
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not agents_in(instance_dir), timeout=30, message="the agent to die")


def test_agent_dead_in_the_launch_window_fails_the_job(server_factory: Any, tmp_path: Path) -> None:
    """The agent died too while the server was down: the job fails as a platform failure (no
    RetryStrategy) at once after the restart, not left running."""
    name = unique_name("window-dead")
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]}, env={CRASH: "launch-window"})
    crash_while_launching(srv, shell_job(name, "sleep 120", tmp_path / "out"))
    kill_agent(instance_dirs(srv, name)[0])
    with status_history(srv, name) as seen:
        srv.start()
        desc = wait_for_job(srv.client(), name, timeout=30)
    assert desc["TrainingJobStatus"] == "Failed"
    assert desc["FailureReason"].startswith("InternalServerError:"), desc["FailureReason"]
    assert "exited without reporting" in desc["FailureReason"]
    assert_one_terminal_status(seen, desc)


def test_agent_dead_in_the_launch_window_is_retried(server_factory: Any, tmp_path: Path) -> None:
    """The same under RetryStrategy: a second attempt runs, and completes."""
    gate = tmp_path / "gate"
    script = f"while [ ! -e {gate} ]; do sleep 0.05; done; echo ok > /opt/ml/model/m"
    name = unique_name("window-retry")
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]}, env={CRASH: "launch-window"})
    crash_while_launching(srv, shell_job(name, script, tmp_path / "out",
                                         RetryStrategy={"MaximumRetryAttempts": 1}))
    kill_agent(instance_dirs(srv, name)[0])
    gate.write_text("go")  # only the second attempt can get past it: the first one's agent is dead
    with status_history(srv, name) as seen:
        srv.start()
        desc = wait_for_job(srv.client(), name, timeout=60)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert read_model(desc["ModelArtifacts"]["S3ModelArtifacts"]) == {"m": b"ok\n"}
    restarts = [t for t in desc["SecondaryStatusTransitions"] if t["Status"] == "Restarting"]
    assert len(restarts) == 1 and "exited without reporting" in restarts[0]["StatusMessage"], restarts
    assert_one_terminal_status(seen, desc)


def test_agents_never_started_are_retried_after_the_start_grace(server_factory: Any, tmp_path: Path) -> None:
    """Killed after the launch transaction, before any agent was started: no agent ever appears,
    so once ``agent_start_grace_seconds`` has passed the instance is a platform failure (retried)."""
    name = unique_name("window-none")
    srv = server_factory({"allowed_local_roots": [str(tmp_path)], "agent_start_grace_seconds": 2},
                         env={CRASH: "launch-committed"})
    crash_while_launching(srv, shell_job(name, "echo ok > /opt/ml/model/m", tmp_path / "out",
                                         RetryStrategy={"MaximumRetryAttempts": 1}))
    assert not any(agents_in(d) for d in instance_dirs(srv, name))
    with status_history(srv, name) as seen:
        srv.start()
        desc = wait_for_job(srv.client(), name, timeout=60)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    restarts = [t for t in desc["SecondaryStatusTransitions"] if t["Status"] == "Restarting"]
    assert len(restarts) == 1 and "never started" in restarts[0]["StatusMessage"], restarts
    assert_one_terminal_status(seen, desc)
