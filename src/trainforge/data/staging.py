"""``stage_inputs``: make every channel of a request available to one instance.

Order of work, all before the training process starts:

1. Take the channels this host receives (``channels.py``; the agent leaves out those whose
   InstanceGroupNames exclude its group) and resolve each one's items for this host
   (``sources.py``: listing, manifests, shuffle, sharding among the channel's hosts).
2. Check every destination path (nothing may land outside ``input/data/<channel>/``) and the
   ``VolumeSizeInGB`` quota over the bytes File and FastFile channels will store — before a
   single byte is written.
3. File channels: download everything (one shared parallel pool, progress reported through
   ``progress``). FastFile channels: start their background fetcher (``fastfile.py``). Pipe
   channels: create their first FIFO and start a feeder thread (``pipe.py``).
   FileSystemDataSource channels are not staged: see ``filesystems.py``.

Any failure raises :class:`DataError` and removes what this call created.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from .. import objectstore
from ..objectstore import ObjectStoreError, Transfer
from .channels import ONE_HOST, Channel, parse_channels
from .errors import DataError
from .progress import Progress, human
from .sources import Item, assign, check_paths, list_items

GiB = 1 << 30


@dataclass
class ChannelPlan:
    channel: Channel
    items: list[Item]  # this host's items, epoch 0, in order
    all_items: list[Item] = field(default_factory=list)  # canonical list (Pipe reshuffles per epoch)
    paths: list[Path] = field(default_factory=list)
    directory: Path | None = None

    @property
    def nbytes(self) -> int:
        return sum(i.size or 0 for i in self.items)


class InputSession:
    """What staging left running: Pipe feeders and FastFile fetchers. ``close()`` stops them."""

    def __init__(self) -> None:
        self.workers: list[Any] = []  # objects with .close()
        self.plans: dict[str, ChannelPlan] = {}
        self._closed = threading.Event()

    def add(self, worker: Any) -> None:
        self.workers.append(worker)

    @property
    def error(self) -> DataError | None:
        """The first error a background worker hit (a Pipe feeder or FastFile fetcher), if any."""
        for w in self.workers:
            err = getattr(w, "error", None)
            if err is not None:
                return err if isinstance(err, DataError) else DataError(str(err), user=False)
        return None

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for w in self.workers:
            try:
                w.close()
            except Exception:  # noqa: BLE001, S110 - closing is best effort
                pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def volume_bytes(request: dict[str, Any]) -> int | None:
    gb = (request.get("ResourceConfig") or {}).get("VolumeSizeInGB")
    return int(gb) * GiB if gb else None


def stage_inputs(request: dict[str, Any], ml_dir: Path, host: str = ONE_HOST[0],
                 channels: Sequence[Channel] | None = None, *,
                 progress: Callable[[str], None] | None = None, log: Callable[[str], None] | None = None,
                 allowed_roots: list[str] | None = None, file_systems: dict[str, str] | None = None,
                 workers: int = objectstore.DOWNLOAD_WORKERS,
                 on_error: Callable[[DataError], None] | None = None) -> InputSession:
    """Stage ``channels`` — the channels host ``host`` receives — for it; see the module doc.

    ``channels`` default to every channel of ``request``, received by ``host`` alone. Each one's
    ``hosts`` are the hosts ShardedByS3Key splits it among (the agent passes the channels
    ``layout.received_channels`` gives it, which honours S3DataSource.InstanceGroupNames).

    ``progress(message)`` receives "Downloading input data: 412 MiB of 1.0 GiB (40%)" at most
    twice a second; ``log(line)`` receives lines for the job's log (warnings). ``on_error`` is
    called (from a background thread) when a Pipe feeder or FastFile fetcher fails after this
    function has returned; the same error is then in ``InputSession.error``.
    ``file_systems`` is accepted for symmetry: FileSystemDataSource channels are resolved by
    :func:`trainforge.data.file_system_mounts`, which the agent calls to bind-mount them.
    """
    progress = progress or (lambda m: None)
    log = log or (lambda m: None)
    ml_dir = Path(ml_dir)
    data_dir = ml_dir / "input" / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    if channels is None:
        channels = parse_channels(request, [host])

    plans: list[ChannelPlan] = []
    for ch in channels:
        if ch.uri is None:  # FileSystemDataSource: mounted, not staged
            continue
        all_items = list_items(ch, allowed_roots=allowed_roots, need_sizes=True)
        mine = assign(all_items, ch, host)
        if ch.distribution == "ShardedByS3Key" and len(ch.hosts) > len(all_items) and not mine:
            log(f"Warning: channel '{ch.name}' has {len(all_items)} object(s) for {len(ch.hosts)} hosts with "
                f"ShardedByS3Key: {host} receives an empty channel")
        plan = ChannelPlan(ch, mine, all_items)
        if ch.mode in ("File", "FastFile"):
            plan.directory = data_dir / ch.name
            plan.paths = check_paths(ch, mine, plan.directory)
        plans.append(plan)

    _check_quota(request, plans)

    session = InputSession()
    created: list[Path] = []
    try:
        file_plans = [p for p in plans if p.channel.mode == "File"]
        for p in plans:
            session.plans[p.channel.name] = p
            if p.directory is not None:
                p.directory.mkdir(parents=True, exist_ok=True)
                created.append(p.directory)
        _stage_files(file_plans, ml_dir, progress, allowed_roots, workers)
        for p in plans:
            if p.channel.mode == "FastFile":
                from .fastfile import FastFileChannel

                session.add(FastFileChannel(p, ml_dir, allowed_roots=allowed_roots, workers=workers,
                                            log=log, on_error=on_error).start())
            elif p.channel.mode == "Pipe":
                from .pipe import PipeFeeder

                session.add(PipeFeeder(p, data_dir, host, allowed_roots=allowed_roots,
                                       log=log, on_error=on_error).start())
    except BaseException:
        session.close()
        for d in created:
            shutil.rmtree(d, ignore_errors=True)
        raise
    return session


def _check_quota(request: dict[str, Any], plans: list[ChannelPlan]) -> None:
    limit = volume_bytes(request)
    if limit is None:
        return
    stored = [p for p in plans if p.channel.mode in ("File", "FastFile")]
    total = sum(p.nbytes for p in stored)
    if total > limit:
        gb = (request.get("ResourceConfig") or {}).get("VolumeSizeInGB")
        per = ", ".join(f"'{p.channel.name}' {human(p.nbytes)}" for p in stored if p.nbytes)
        raise DataError(f"ClientError: Input data of {human(total)} ({per}) does not fit the instance's "
                        f"storage volume of {gb} GB (ResourceConfig.VolumeSizeInGB = {gb}); "
                        f"increase VolumeSizeInGB")


def _stage_files(plans: list[ChannelPlan], ml_dir: Path, progress: Callable[[str], None],
                 allowed_roots: list[str] | None, workers: int) -> None:
    transfers = [Transfer(it.location, path, it.size, it.etag)
                 for p in plans for it, path in zip(p.items, p.paths, strict=True)
                 if it.location is not None]
    if not plans:
        return
    total = sum(p.nbytes for p in plans)
    prog = Progress(total, progress)
    progress(prog.message())
    staging_dir = ml_dir / "input" / ".staging"
    try:
        objectstore.download_many(transfers, workers=workers, allowed_roots=allowed_roots,
                                  on_bytes=prog.add, staging_dir=staging_dir)
    except ObjectStoreError as exc:
        names = ", ".join(f"'{p.channel.name}'" for p in plans)
        raise DataError(f"Could not download input data for channel(s) {names}: {exc}") from exc
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
    prog.finish()
