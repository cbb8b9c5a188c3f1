"""The Backend interface: where a job's agents run (this machine, a Slurm cluster).

The scheduler and the launcher call a backend through this interface alone, the shape submitit
gives its executors: launch a gang of agents (all the instances of one job together), signal one,
ask whether it lives, reap what ended, and find an agent again after a restart (reconcile).

A *handle* is the backend's JSON-able record of one started agent (kept in ``instances.handle``,
see ``scheduler/handles.py``); every handle carries the instance's directory as ``instance_dir``.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from trainforge.agent import instance_files

if TYPE_CHECKING:
    from trainforge.config import Config

Handle = dict[str, Any]


@dataclass(frozen=True)
class AgentLaunch:
    """One agent to start: its instance's ``spec.json``, the file its output goes to, and whether it
    only finishes an instance whose training had ended (agent ``--finish``: upload and report)."""

    spec_path: Path
    log_path: Path
    finish: bool = False


class Backend(Protocol):
    name: str
    # True when the engine queues gangs itself (Slurm): the scheduler admits every queued job at once
    # and the job waits in the engine's queue; False when the scheduler's capacity model decides.
    queues: bool
    # How the agents reach the control plane (their spec's ``control_url``); None: the server's endpoint.
    control_url: str | None

    def start(self) -> None:
        """Get ready to launch (the server starts)."""

    def close(self) -> None:
        """The server stops; agents already started run on."""

    def launch(self, gangs: list[list[AgentLaunch]]) -> list[list[Handle | OSError]]:
        """Start each gang's agents together (one gang = the instances of one job): per gang and in
        order, each agent's handle or why it did not start."""

    def signal(self, handle: Handle | None, sig: int = signal.SIGTERM) -> None:
        """Signal the agent (it forwards stops to its instance)."""

    def alive(self, handle: Handle | None) -> bool:
        """Whether the agent of ``handle`` may still report (started or about to)."""

    def reap(self) -> None:
        """Collect what ended since the last call (no zombies; the engine's state refreshed)."""

    def find_agent(self, instance_dir: str | os.PathLike[str],
                   state: instance_files.InstanceState | None) -> Handle | None:
        """Reconcile: the handle of the living agent that ``state`` (the instance's ``instance.json``,
        which every agent writes first thing) names, or None."""

    def kill_group(self, handle: Handle | None) -> None:
        """Kill what is left of an instance whose agent is gone (or is given up on)."""

    def waiting(self, handle: Handle | None) -> str | None:
        """Why the gang of ``handle`` still waits for resources in the engine's queue (the engine's
        own words), or None once it was given them (always None where the engine has no queue)."""

    def cancel(self, handle: Handle | None) -> None:
        """Give up a gang that still waits in the engine's queue (MaxPendingTimeInSeconds)."""


def started_deadline(deadline: float, launched_at: float | None, started_at: float,
                     cap: float | None = None) -> float:
    """The deadline of a gang that waited in the engine's queue (Slurm): MaxRuntimeInSeconds counts
    from when the instances start, as SageMaker counts it, so the time spent queued since the launch
    moves the deadline on, never past ``cap`` (MaxWaitTimeInSeconds from the creation, spot jobs).
    The agent (at its start on the node) and the scheduler (when the wait ends) both use it."""
    if launched_at is None:
        return deadline
    shifted = deadline + max(0.0, started_at - launched_at)
    return shifted if cap is None else max(deadline, min(shifted, cap))


def create_backend(config: Config) -> Backend:
    """The backend the server's configuration names (``backend: local`` or ``backend: slurm``; any
    other value is refused by :class:`~trainforge.config.Config` itself)."""
    if config.backend == "slurm":
        from trainforge.backends.slurm.backend import SlurmBackend

        return SlurmBackend(config)
    from trainforge.backends.local import LocalBackend

    return LocalBackend()
