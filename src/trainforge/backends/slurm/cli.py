"""The Slurm command-line tools, as the backend calls them (``sbatch``, ``squeue``, ``scontrol``,
``scancel``): no protocol of our own. ``SLURM_CONF`` and the rest come from the server's environment."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

TIMEOUT = 30.0
# squeue in the scheduler's liveness pass: a controller that does not answer holds the pass this long
STATES_TIMEOUT = 10.0
# A job in one of these may still run (or start) its tasks. UNKNOWN is ours: :data:`UNREACHABLE`.
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
          "RESIZING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "UNKNOWN"}
UNKNOWN_ID = "Invalid job id"  # how squeue refuses an id it does not know (any more)


class SlurmError(OSError):
    """A Slurm command failed."""


class SlurmUnreachable(SlurmError):
    """squeue failed for another reason than an unknown job id: the controller does not answer."""


@dataclass(frozen=True)
class JobState:
    state: str  # JobState, e.g. PENDING, RUNNING, COMPLETED, CANCELLED
    reason: str  # Slurm's reason ("Resources", "Priority", "PartitionNodeLimit", "None")

    @property
    def active(self) -> bool:
        """It may still run (or start) its tasks; so may a job of :data:`UNREACHABLE`."""
        return self.state.split()[0].rstrip("+") in ACTIVE


# A followed job's state while the controller does not answer: taken as running (its agents report to
# the control plane directly; a dead local agent is still seen), never as ended.
UNREACHABLE = JobState("UNKNOWN", "the Slurm controller does not answer")


def _run(args: list[str], timeout: float = TIMEOUT) -> str:
    try:
        done = subprocess.run(args, check=False, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmError(f"{args[0]}: {exc}") from exc
    if done.returncode != 0:
        raise SlurmError(f"{' '.join(args[:1])} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def sbatch(args: list[str], script: str) -> str:
    """Submit ``script`` with ``args``: the Slurm job id."""
    out = _run(["sbatch", "--parsable", *args, script]).strip()
    return out.split(";", 1)[0]


def states(job_ids: list[str]) -> dict[str, JobState]:
    """The state of each of ``job_ids`` that Slurm still knows (squeue shows ended jobs for a while,
    ``MinJobAge``); one squeue call for all of them. :class:`SlurmUnreachable` when Slurm cannot say
    (an unanswered query is never taken for jobs that ended)."""
    if not job_ids:
        return {}
    try:
        return _parse(_squeue(job_ids))
    except SlurmUnreachable:
        raise
    except SlurmError:
        pass  # squeue refuses the whole query when one id is unknown (aged out): ask one by one
    result = {}
    for job_id in job_ids:
        try:
            result.update(_parse(_squeue([job_id])))
        except SlurmUnreachable:
            raise
        except SlurmError:
            continue
    return result


def _squeue(job_ids: list[str]) -> str:
    try:
        return _run(["squeue", "-h", "--states=all", "-j", ",".join(job_ids), "-o", "%i|%T|%r"], STATES_TIMEOUT)
    except SlurmError as exc:
        if UNKNOWN_ID in str(exc):
            raise
        raise SlurmUnreachable(str(exc)) from exc


def submitted_as(job_name: str, script: str) -> str | None:
    """The id of the job named ``job_name`` that runs ``script`` (squeue's %o), however it went since."""
    try:
        out = _run(["squeue", "-h", "--states=all", f"--name={job_name}", "-o", "%i|%o"])
    except SlurmError:
        return None
    for line in out.splitlines():
        job_id, _, command = line.strip().partition("|")
        if command == script:
            return job_id.split("+", 1)[0]  # a heterogeneous job's components are ID+K
    return None


def _parse(out: str) -> dict[str, JobState]:
    """One state per job; a heterogeneous job's components (``ID+K``) make one: active while any
    is, with the reason of a component that has one (the others wait with reason None)."""
    result: dict[str, JobState] = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3:
            continue
        job_id, state = parts[0].split("+", 1)[0], JobState(parts[1], parts[2])
        known = result.get(job_id)
        if known is None or (state.active, state.reason != "None") > (known.active, known.reason != "None"):
            result[job_id] = state
    return result


def scancel(job_id: str, signal_name: str | None = None) -> None:
    """``scancel --signal=SIG`` reaches every task of the job's steps (the agents), not the batch
    script; without a signal the whole job ends."""
    try:
        _run(["scancel", *([f"--signal={signal_name}"] if signal_name else []), job_id])
    except SlurmError:
        pass  # it ended meanwhile


def hostnames(nodelist: str) -> list[str]:
    """The node names of a Slurm host list (``node[1-3]``), in its order: Slurm's own expansion."""
    return _run(["scontrol", "show", "hostnames", nodelist]).split()


def node_addresses(names: list[str]) -> dict[str, str]:
    """Node name -> its ``NodeAddr`` (how slurmctld reaches its slurmd), one ``scontrol`` for all."""
    found: dict[str, str] = {}
    for line in _run(["scontrol", "show", "node", "-o", ",".join(names)]).splitlines():
        fields: dict[str, str] = {}
        for token in line.split():
            key, sep, value = token.partition("=")
            if sep and key in ("NodeName", "NodeAddr"):
                fields.setdefault(key, value)
        if "NodeName" in fields and "NodeAddr" in fields:
            found[fields["NodeName"]] = fields["NodeAddr"]
    return found
