"""The files of one instance's directory (docs/INTERNALS.md "Files in instance_dir"): their names,
and how the agent and the control plane (scheduler, backends) read and write them.

- ``spec.json`` — the instance spec, written by the scheduler before the agent starts (the token
  is in it: mode 0600);
- ``agent.log`` — the agent's own stdout and stderr;
- ``agent-outbox.jsonl`` — the reporter's journal of events (its format is the reporter's);
- ``instance.json`` — the agent, written by the agent first thing (its handle, should the control
  plane never have stored it: ``agent_pid`` and ``agent_start_ticks``), and who to kill if it dies:
  ``{"agent_pid", "agent_start_ticks", "pid", "pgid", "isolation", "started"}``;
- ``.exited`` — ``{"exit_code", "time"}``, once the instance's training process has ended (the
  leader waits for every host's before it uploads);
- ``outcome.json`` — how the training ended, written before the upload starts, so that an agent
  started again on the instance (``--finish``) can still upload and report.

Standard library only: the agent imports it on its way to the user's code (``python -S``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, TypedDict, cast

from trainforge.agent.forkserver import start_ticks
from trainforge.agent.outcome import Outcome

SPEC = "spec.json"
AGENT_LOG = "agent.log"
OUTBOX = "agent-outbox.jsonl"
STATE = "instance.json"
EXITED = ".exited"
OUTCOME = "outcome.json"

Dir = str | os.PathLike[str]


class InstanceState(TypedDict, total=False):
    """``instance.json``: the agent, and (unless it only finishes the instance) its training process."""

    agent_pid: int
    agent_start_ticks: int | None  # with agent_pid, what tells this agent from a recycled PID
    started: float  # when the file was written
    pid: int
    pgid: int
    isolation: str


def _path(instance_dir: Dir, name: str) -> str:
    return os.path.join(os.fspath(instance_dir), name)


def _write_json(path: str, value: Any) -> None:
    """Written whole or not at all: a temporary file renamed over ``path``."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f)
    os.replace(tmp, path)


def _read_json_object(path: str) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# -- spec.json, agent-outbox.jsonl ----------------------------------------------------------------
def write_spec(instance_dir: Dir, spec: dict[str, Any]) -> None:
    """``spec.json``, readable by its owner only (the agent reads it with ``spec.load``)."""
    fd = os.open(_path(instance_dir, SPEC), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(spec, separators=(",", ":")))


def outbox_path(instance_dir: Dir) -> str:
    return _path(instance_dir, OUTBOX)


# -- instance.json -------------------------------------------------------------------------------
def write_state(instance_dir: Dir, agent_pid: int, training_pid: int | None = None,
                isolation: str = "none") -> None:
    """Without ``training_pid`` (an agent just started, or a finishing agent) there is no training
    process to kill. The training process leads its own session: its process group is its pid."""
    state: InstanceState = {"agent_pid": agent_pid, "agent_start_ticks": start_ticks(agent_pid),
                            "started": time.time()}
    if training_pid is not None:
        state.update({"pid": training_pid, "pgid": training_pid, "isolation": isolation})
    _write_json(_path(instance_dir, STATE), state)


def read_state(instance_dir: Dir) -> InstanceState | None:
    """``instance.json`` as the agent wrote it; None when there is none (yet)."""
    return cast("InstanceState | None", _read_json_object(_path(instance_dir, STATE)))


# -- .exited ---------------------------------------------------------------------------------------
def write_exited(instance_dir: Dir, exit_code: int | None, now: float | None = None) -> None:
    stamp = time.time() if now is None else now
    _write_json(_path(instance_dir, EXITED), {"exit_code": exit_code, "time": stamp})


def has_exited(instance_dir: Dir) -> bool:
    return os.path.exists(_path(instance_dir, EXITED))


# -- outcome.json ----------------------------------------------------------------------------------
def write_outcome(instance_dir: Dir, outcome: Outcome) -> None:
    _write_json(_path(instance_dir, OUTCOME), outcome.as_dict())


def read_outcome(instance_dir: Dir) -> Outcome | None:
    """The recorded outcome; None without one (the training had not ended, or the file is damaged)."""
    value = _read_json_object(_path(instance_dir, OUTCOME))
    return Outcome.from_dict(value) if value is not None and value.get("outcome") else None
