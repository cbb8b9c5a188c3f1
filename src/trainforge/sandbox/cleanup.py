"""What the sandbox leaves behind once a job has ended: its volumes, runc's containers.

The scheduler calls :func:`sweep` with the directories of the jobs still running, every liveness
pass and once after a (re)start: every instance volume mounted under the jobs directory and every
runc container whose bundle lies there that belongs to no running job is released. So a job's
storage ends with the job (the leader has read every instance's /opt/ml by then), and nothing
outlives an agent killed with -9 or a server that crashed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from trainforge.sandbox import rootfs, runc, volume


def _owner(path: str, jobs_dir: str, live: set[str]) -> str | None:
    """The attempt directory ``path`` lies in when that job is not running, else None."""
    rel = os.path.relpath(path, jobs_dir)
    if rel.startswith(".."):
        return None
    parts = rel.split(os.sep)
    if len(parts) < 4:  # <account>/<region>/<name>/attempt-N
        return None
    attempt = os.path.join(jobs_dir, *parts[:4])
    return None if attempt in live else attempt


def sweep(jobs_dir: str, settings: dict[str, object], live_dirs: Iterable[str]) -> list[str]:
    """Release what belongs to no running job; returns the attempt directories released."""
    jobs_dir = os.path.realpath(jobs_dir)
    live = {os.path.realpath(d) for d in live_dirs}
    ended: dict[str, list[str]] = {}  # attempt -> its mount points, deepest first (one read of the table)
    for point in volume.mounted_under(jobs_dir):
        attempt = _owner(point, jobs_dir, live)
        if attempt is not None:
            ended.setdefault(attempt, []).append(point)
    for attempt, points in ended.items():
        volume.release_under(attempt, points)
    released = set(ended)
    from trainforge.agent.prepared import sweep as sweep_prepared

    _sweep_networks(settings, live, sweep_prepared(str(settings["roots"])))
    state = rootfs.runc_state(str(settings["roots"]))
    for cid in runc.containers(state):
        bundle = _bundle_of(os.path.join(state, cid, "state.json"))
        if bundle is not None and _owner(bundle, jobs_dir, live) is not None:
            runc.delete(state, cid)
            rootfs.remove_root(str(settings["roots"]), cid)
    return sorted(released)


def _sweep_networks(settings: dict[str, object], live: set[str], prepared: set[str]) -> None:
    """The networks of jobs not running, but those of prepared instances whose agent lives."""
    from trainforge.sandbox.network import cleanup_job

    base = rootfs.network_dir(str(settings["roots"]))
    try:
        keys = os.listdir(base)
    except OSError:
        return
    alive = {rootfs.job_key(d) for d in live} | prepared
    for key in keys:
        if key not in alive and os.path.isdir(os.path.join(base, key)):
            cleanup_job(base, key)


def _bundle_of(state_file: str) -> str | None:
    try:
        with open(state_file, encoding="utf-8") as f:
            labels = json.load(f).get("config", {}).get("labels") or []
    except (OSError, ValueError):
        return None
    for label in labels:
        if isinstance(label, str) and label.startswith("bundle="):
            return os.path.realpath(label[len("bundle="):])
    return None
