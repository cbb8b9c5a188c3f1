"""FastFile mode without FUSE: training starts at once, files appear whole as they arrive.

What trainforge guarantees for a FastFile channel (and what it does not):

- ``stage_inputs`` returns as soon as the channel is listed and checked (paths, quota): the
  training process starts without waiting for the bytes.
- Every subdirectory of the channel exists from the start.
- A background fetcher downloads the host's objects in channel order (key order, or the
  ShuffleConfig order), in parallel (ranged GETs for large objects; hard links for ``file://``).
  Each file is written under a hidden staging directory (``input/.fastfile-<channel>/``) and
  renamed into ``input/data/<channel>/`` only once complete: **a file that is visible is always
  whole — a read never sees partial data**.
- Not guaranteed: that every file is visible at once. A file becomes visible when its download
  completes; a script that lists the directory before the fetcher has finished sees only the
  files done so far. ``input/data/<channel>.fastfile.json`` (beside the channel directory, so
  not part of it) lists every file the channel will hold, with sizes, at start, and the marker
  ``input/data/<channel>.fastfile-complete`` appears when all are there, for scripts that want
  to wait.

Why not FUSE: true lazy files (visible at once, bytes fetched on first read) need a FUSE
mount; libfuse is not part of this Python environment, a FUSE mount inside the per-instance
mount namespace is the agent's concern, and a Python FUSE server reads at a fraction of the
disk's speed. This mode keeps disk speed and the "never partial" guarantee instead.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .. import objectstore
from ..objectstore import ObjectStoreError, Transfer
from .errors import DataError
from .owner import give

if TYPE_CHECKING:
    from .staging import ChannelPlan


class FastFileChannel:
    def __init__(self, plan: ChannelPlan, ml_dir: Path, *, allowed_roots: list[str] | None = None,
                 workers: int = objectstore.DOWNLOAD_WORKERS, log: Callable[[str], None] | None = None,
                 on_error: Callable[[DataError], None] | None = None) -> None:
        assert plan.directory is not None
        self.plan = plan
        self.name = plan.channel.name
        self.directory = plan.directory
        self.staging = Path(ml_dir) / "input" / f".fastfile-{self.name}"
        self.index = self.directory.parent / f"{self.name}.fastfile.json"
        self.marker = self.directory.parent / f"{self.name}.fastfile-complete"
        self.roots = allowed_roots
        self.workers = workers
        self.log = log or (lambda m: None)
        self.on_error = on_error
        self.error: DataError | None = None
        self.done = threading.Event()
        self.files_done = 0
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tf-fastfile-{self.name}", daemon=True)

    def start(self) -> FastFileChannel:
        for p in self.plan.paths:
            p.parent.mkdir(parents=True, exist_ok=True)
        listing = [{"path": str(p.relative_to(self.directory)), "size": it.size}
                   for it, p in zip(self.plan.items, self.plan.paths, strict=True)]
        self.index.write_text(json.dumps(listing))
        give(self.index)
        self.marker.unlink(missing_ok=True)
        self._thread.start()
        return self

    def _file_done(self, t: Transfer) -> None:
        self.files_done += 1

    def _run(self) -> None:
        transfers = [Transfer(it.location, p, it.size, it.etag)
                     for it, p in zip(self.plan.items, self.plan.paths, strict=True) if it.location]
        try:
            objectstore.download_many(transfers, workers=self.workers, allowed_roots=self.roots,
                                      staging_dir=self.staging, on_file=self._file_done,
                                      cancel=self._cancel, before_publish=give)
            self.marker.touch()
            give(self.marker)
        except ObjectStoreError as exc:
            if not self._cancel.is_set():
                self.error = DataError(f"FastFile channel '{self.name}': {exc}")
                self.log(f"Error: {self.error}")
                if self.on_error:
                    self.on_error(self.error)
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.done.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def close(self) -> None:
        self._cancel.set()
        self._thread.join()
