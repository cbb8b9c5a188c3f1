"""The instance directory's files as the agent and the control plane share them (docs/INTERNALS.md)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from trainforge.agent import instance_files
from trainforge.agent.forkserver import start_ticks
from trainforge.agent.outcome import Outcome


def test_outcome_round_trip_and_a_damaged_file_reads_as_none(tmp_path: Path) -> None:
    assert instance_files.read_outcome(tmp_path) is None
    instance_files.write_outcome(str(tmp_path), Outcome("stopped", 143, None, "MaxRuntimeExceeded"))
    assert json.loads((tmp_path / "outcome.json").read_text()) == {
        "exit_code": 143, "failure_reason": None, "outcome": "stopped", "stop_reason": "MaxRuntimeExceeded"}
    recorded = instance_files.read_outcome(tmp_path)
    assert recorded is not None and recorded.as_dict() == {
        "exit_code": 143, "failure_reason": None, "outcome": "stopped", "stop_reason": "MaxRuntimeExceeded"}
    assert not list(tmp_path.glob("*.tmp"))  # written through a temporary file renamed over it
    for damaged in ('{"outcome": "ok"', "[1]", '{"exit_code": 0}'):
        (tmp_path / "outcome.json").write_text(damaged)
        assert instance_files.read_outcome(tmp_path) is None, damaged


def test_state_exited_marker_and_spec(tmp_path: Path) -> None:
    assert instance_files.read_state(tmp_path) is None
    instance_files.write_state(tmp_path, 10, 11, "sandbox")
    state = instance_files.read_state(tmp_path)
    assert state is not None
    assert (state["agent_pid"], state["pid"], state["pgid"], state["isolation"]) == (10, 11, 11, "sandbox")
    instance_files.write_state(tmp_path, os.getpid())  # an agent just started: no training process
    state = instance_files.read_state(tmp_path)
    assert state is not None and set(state) == {"agent_pid", "agent_start_ticks", "started"}
    assert state["agent_start_ticks"] == start_ticks(os.getpid())

    assert not instance_files.has_exited(tmp_path)
    instance_files.write_exited(tmp_path, None, now=5.0)
    assert instance_files.has_exited(tmp_path)
    assert json.loads((tmp_path / ".exited").read_text()) == {"exit_code": None, "time": 5.0}

    instance_files.write_spec(tmp_path, {"token": "secret", "host": "algo-1"})
    spec_file = tmp_path / instance_files.SPEC
    assert stat.S_IMODE(spec_file.stat().st_mode) == 0o600  # the token is in it
    assert json.loads(spec_file.read_text()) == {"token": "secret", "host": "algo-1"}


def test_imports_only_the_standard_library() -> None:
    """The agent imports it before the user's code starts, under ``python -S``."""
    src = Path(instance_files.__file__).parents[2]
    code = ("import json, sys; before = set(sys.modules); import trainforge.agent.instance_files; "
            "print(json.dumps(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(src)}).stdout
    imported = json.loads(out)
    assert "trainforge.agent.instance_files" in imported
    assert [m for m in imported if m.split(".")[0] not in sys.stdlib_module_names | {"trainforge"}] == []
