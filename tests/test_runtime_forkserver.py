"""Agents forked by the agent fork server: detached, reaped, and nothing depends on the fork server
staying alive (docs/INTERNALS.md, "Control plane -> agent")."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from conftest import alive, instance_records, read_model, unique_name, wait_for_job, wait_until
from test_runtime_jobs import log_messages, shell_job
from test_runtime_recovery import assert_both_models_uploaded, kill_the_leader_after_its_training


def _stat(pid: int) -> list[str] | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data.rsplit(b")", 1)[1].decode().split()  # state, ppid, pgrp, session, ...


def fork_servers(parent: int | None = None) -> list[int]:
    """Living fork server processes (of the server ``parent``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = _stat(int(entry.name))
        if (b"trainforge.agent.forkserver" in cmdline and fields is not None and fields[0] != "Z"
                and (parent is None or int(fields[1]) == parent)):
            found.append(int(entry.name))
    return found


def agent_info(srv: Any, name: str) -> dict[str, Any]:
    return wait_until(lambda: next(iter(instance_records(srv.data_dir, name)), None), timeout=30,
                      message=f"the agent of {name}")


def signal_lines(path: Path) -> dict[str, str]:
    lines = dict(line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
    return {k: v.strip() for k, v in lines.items() if k in ("SigBlk", "SigIgn")}


def test_agent_is_forked_detached_and_survives_its_fork_server(server_factory: Any, tmp_path: Path) -> None:
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]})
    assert srv.proc is not None
    forkserver = wait_until(lambda: fork_servers(srv.proc.pid), timeout=30, message="the fork server")[0]
    gate = tmp_path / "gate"
    name = unique_name("forked")
    sm = srv.client()
    sm.create_training_job(**shell_job(name, f"while [ ! -e {gate} ]; do sleep 0.05; done; echo m > /opt/ml/model/m",
                                       tmp_path / "out"))
    agent = int(agent_info(srv, name)["agent_pid"])
    _state, ppid, pgrp, session = (_stat(agent) or ["?"] * 4)[:4]
    assert int(ppid) == forkserver  # its parent reaps it
    assert int(pgrp) == agent and int(session) == agent  # its own session, as a Popen'd agent had
    os.kill(forkserver, signal.SIGKILL)
    wait_until(lambda: not alive(forkserver), timeout=10, message="the fork server to die")
    assert alive(agent)
    gate.write_text("go")
    desc = wait_for_job(sm, name)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert read_model(desc["ModelArtifacts"]["S3ModelArtifacts"]) == {"m": b"m\n"}
    # the next job gets a new fork server
    second = unique_name("forked")
    sm.create_training_job(**shell_job(second, "echo second", tmp_path / "out"))
    desc = wait_for_job(sm, second)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert "second" in log_messages(srv, second)
    assert [p for p in fork_servers(srv.proc.pid) if p != forkserver]


def test_fork_server_outlives_a_killed_server_only_while_its_agents_run(server_factory: Any,
                                                                        tmp_path: Path) -> None:
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]})
    assert srv.proc is not None
    gate = tmp_path / "gate"
    name = unique_name("orphan")
    sm = srv.client()
    sm.create_training_job(**shell_job(name, f"while [ ! -e {gate} ]; do sleep 0.05; done", tmp_path / "out"))
    agent = int(agent_info(srv, name)["agent_pid"])
    forkserver = int((_stat(agent) or ["", "0"])[1])
    assert forkserver in fork_servers(srv.proc.pid)
    srv.kill()
    assert alive(agent) and alive(forkserver)  # it still reaps the agent
    srv.start()
    gate.write_text("go")
    desc = wait_for_job(srv.client(), name)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    wait_until(lambda: not alive(agent), timeout=30, message="the agent to exit")
    wait_until(lambda: not alive(forkserver), timeout=30, message="the old fork server to exit")


def test_agents_start_the_same_with_and_without_the_fork_server(server_factory: Any, tmp_path: Path) -> None:
    """Same signal mask and ignored signals for the training process; ``--finish`` agents too."""
    seen = {}
    for forkserver in ("1", "0"):
        srv = server_factory({"allowed_local_roots": [str(tmp_path)]},
                             env={"TRAINFORGE_AGENT_FORKSERVER": forkserver})
        assert srv.proc is not None
        pid = srv.proc.pid
        if forkserver == "1":
            wait_until(lambda p=pid: fork_servers(p), timeout=30, message="the fork server")
        out = tmp_path / f"signals-{forkserver}"
        name = unique_name("signals")
        sm = srv.client()
        sm.create_training_job(**shell_job(name, f"cat /proc/self/status > {out}; echo m > /opt/ml/model/m",
                                           tmp_path / "out"))
        desc = wait_for_job(sm, name)
        assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
        seen[forkserver] = signal_lines(out)
        assert bool(fork_servers(pid)) == (forkserver == "1")
        agent_log = next(srv.data_dir.glob(f"jobs/*/*/{name}/attempt-1/algo-1/agent.log"))
        # The agent's own stderr reaches agent.log; its summary line follows the final report, so
        # the job may read Completed an instant before the line is written.
        wait_until(lambda p=agent_log: "outcome=ok" in p.read_text(), timeout=30,
                   message="the agent's summary line in agent.log")
    assert seen["1"] == seen["0"]
    assert int(seen["1"]["SigBlk"], 16) == 0


def test_finishing_agent_is_forked_too(server_factory: Any, tmp_path: Path) -> None:
    """An agent killed after its training ended is replaced through the fork server (``--finish``)."""
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]})
    assert srv.proc is not None
    sm, name, leader, first, gate = kill_the_leader_after_its_training(srv, tmp_path, "finishfork")
    second = wait_until(lambda: (pid := json.loads((leader / "instance.json").read_text())["agent_pid"]) != first
                        and pid, timeout=30, message="the finishing agent")
    # It waits for algo-2, which trains until the gate opens: it runs now, a child of the fork server.
    fields = _stat(int(second))
    assert fields is not None and fields[0] != "Z", f"the finishing agent {second} ended before the gate"
    assert int(fields[1]) in fork_servers(srv.proc.pid)
    assert int(fields[2]) == int(fields[3]) == int(second)  # its own session, as the first agent had
    gate.write_text("go")
    assert_both_models_uploaded(wait_for_job(sm, name))
