"""What the store keeps of an instance's agent (``instances.handle``, JSON), and how an agent whose
handle the store never got is found again (docs/INTERNALS.md "Handles").

A handle is one of:

- the backend's handle of a started agent (local: ``{"pid", "start_ticks", "instance_dir"}``);
- a launch in progress, ``{"instance_dir", "launched_at", "start_by"}``: written by the
  transaction that commits the launch (or asks for a finishing agent), replaced by the backend's
  handle once the agent is started. A server that dies in between leaves it behind; after the
  restart the agent is found through its own record (``instance.json``, written by the agent first
  thing) and adopted. An instance with no agent by ``start_by`` never got one;
- a launch that failed, ``{"instance_dir", "error"}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from trainforge.agent import instance_files
from trainforge.backends.base import Backend


def launching(instance_dir: Path, now: float, grace: float) -> str:
    return orjson.dumps({"instance_dir": str(instance_dir), "launched_at": now, "start_by": now + grace}).decode()


def is_launching(handle: dict[str, Any] | None) -> bool:
    """A launch in progress: the backend's handle of the agent is not stored yet."""
    return handle is not None and "start_by" in handle and "error" not in handle


def failed(instance_dir: Path, error: BaseException) -> str:
    return orjson.dumps({"instance_dir": str(instance_dir), "error": f"{type(error).__name__}: {error}"}).decode()


def load(raw: str | None) -> dict[str, Any] | None:
    return orjson.loads(raw) if raw else None


@dataclass
class Lost:
    """What became of an instance whose stored handle names no living agent: its agent is found
    (``adopt``), may still appear (neither), or is gone (``reason``)."""

    adopt: dict[str, Any] | None = None
    reason: str | None = None


def find(backend: Backend, host: str, raw: str | None, instance_dir: Path, now: float) -> Lost:
    """Look for the agent of an instance whose stored handle (``raw``) names no living agent."""
    state = instance_files.read_state(instance_dir)
    found = backend.find_agent(instance_dir, state)
    if found is not None:
        return Lost(adopt=found)
    handle = load(raw) or {}
    if handle.get("error"):
        return Lost(reason=f"InternalServerError: the trainforge agent of {host} could not be started: "
                           f"{handle['error']}")
    launched_at = handle.get("launched_at")
    appeared = launched_at is not None and state is not None and float(state.get("started") or 0) >= launched_at
    if handle.get("pid") or appeared:
        return Lost(reason=f"InternalServerError: the trainforge agent of {host} exited without reporting "
                           f"the end of the instance")
    if launched_at is not None and now < float(handle["start_by"]):
        return Lost()  # started a moment ago: it has not recorded itself yet
    return Lost(reason=f"InternalServerError: the trainforge agent of {host} never started")
