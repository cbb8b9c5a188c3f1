"""CheckpointConfig, TensorBoardOutputConfig and DebugHookConfig: restore before training, sync up while it runs.

``restore_checkpoints`` copies every object under ``CheckpointConfig.S3Uri`` (treated as a
directory: ``s3://b/ckpt`` means the keys under ``ckpt/``) to LocalPath, on every instance.

``DirectorySync`` watches a local directory and uploads
new and changed files (by size and mtime) to a prefix: a scan every ``interval`` seconds
(default 1 s); a file is uploaded once it has been unchanged for one scan (so a file being
written is not sent half-done) or, if it keeps changing, at the latest ``max_delay`` seconds
(default 10 s) after its first change was seen. New and changed files therefore reach the store
within about 2 s. ``CheckpointSync`` runs one for each of the two configs. ``stop(final=True)`` uploads everything still different, unconditionally —
the agent calls it after the training process has exited, whatever the outcome (completed,
stopped, failed). Files deleted locally are not deleted from the store (as SageMaker does).
All instances upload to the same prefix (SageMaker's behaviour; scripts usually write
checkpoints from one host only or under per-host names).

Container paths: LocalPath is a path the training process sees. A path under ``/opt/ml`` maps
into the instance's ``ml_dir``; any other path is used as it is on this machine (the agent may
pass an already-resolved ``local_path`` instead).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import objectstore
from ..objectstore import ObjectStoreError
from .errors import DataError

DEFAULT_CHECKPOINT_PATH = "/opt/ml/checkpoints"
DEFAULT_TENSORBOARD_PATH = "/opt/ml/output/tensorboard"
DEFAULT_DEBUG_TENSORS_PATH = "/opt/ml/output/tensors"  # smdebug's default out_dir


def container_path(path: str, ml_dir: Path) -> Path:
    """Where a path inside the instance (``/opt/ml/...``) lives on this machine."""
    norm = os.path.normpath(path)
    if norm == "/opt/ml" or norm.startswith("/opt/ml/"):
        return Path(ml_dir) / os.path.relpath(norm, "/opt/ml")
    return Path(norm)


def _dir_uri(uri: str) -> str:
    return uri if uri.endswith("/") else uri + "/"


def checkpoint_paths(request: dict[str, Any], ml_dir: Path) -> tuple[str, Path] | None:
    """(S3Uri as a directory, local path) of the request's CheckpointConfig, or None."""
    cfg = request.get("CheckpointConfig")
    if not cfg or not cfg.get("S3Uri"):
        return None
    return _dir_uri(cfg["S3Uri"]), container_path(cfg.get("LocalPath") or DEFAULT_CHECKPOINT_PATH, ml_dir)


def _output_dir(cfg: dict[str, Any] | None, default_local: str, ml_dir: Path) -> tuple[str, Path] | None:
    if not cfg or not cfg.get("S3OutputPath"):
        return None
    return _dir_uri(cfg["S3OutputPath"]), container_path(cfg.get("LocalPath") or default_local, ml_dir)


def tensorboard_paths(request: dict[str, Any], ml_dir: Path) -> tuple[str, Path] | None:
    return _output_dir(request.get("TensorBoardOutputConfig"), DEFAULT_TENSORBOARD_PATH, ml_dir)


def debug_hook_paths(request: dict[str, Any], ml_dir: Path) -> tuple[str, Path] | None:
    """DebugHookConfig: the tensors the debugger hook writes under LocalPath go to S3OutputPath."""
    return _output_dir(request.get("DebugHookConfig"), DEFAULT_DEBUG_TENSORS_PATH, ml_dir)


def restore_checkpoints(request: dict[str, Any], ml_dir: Path, *, allowed_roots: list[str] | None = None,
                        local_path: Path | None = None, log: Callable[[str], None] | None = None) -> int:
    """Copy the checkpoint prefix to LocalPath; returns the number of files restored."""
    paths = checkpoint_paths(request, ml_dir)
    if paths is None:
        return 0
    uri, dest = paths
    dest = local_path or dest
    dest.mkdir(parents=True, exist_ok=True)
    loc = objectstore.parse_uri(uri)
    if loc.scheme == "file" and not Path(loc.key).exists():
        return 0  # a first run: nothing saved yet (as an empty S3 prefix)
    try:
        entries = objectstore.download_prefix(uri, dest, allowed_roots=allowed_roots, link=False)
    except ObjectStoreError as exc:
        raise DataError(f"Could not restore checkpoints from {uri}: {exc}") from exc
    if entries and log:
        total = sum(e.size for e in entries)
        log(f"Restored {len(entries)} checkpoint file(s) ({total} bytes) from {uri} to {dest}")
    return len(entries)


class DirectorySync:
    """Continuously upload a local directory's new and changed files to a prefix."""

    def __init__(self, local_dir: Path, uri: str, *, allowed_roots: list[str] | None = None,
                 interval: float = 1.0, max_delay: float = 10.0,
                 log: Callable[[str], None] | None = None, device: int | None = None) -> None:
        self.local_dir = Path(local_dir)
        # an instance's volume: only its files are read, symlinks out of it are not followed
        self.device = device
        self.uri = _dir_uri(uri)
        self.allowed_roots = allowed_roots
        self.interval = interval
        self.max_delay = max_delay
        self.log = log or (lambda m: None)
        self._uploaded: dict[str, tuple[int, int]] = {}
        self._pending: dict[str, tuple[tuple[int, int], float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.errors = 0
        self.last_error: str | None = None

    def start(self) -> DirectorySync:
        self.local_dir.mkdir(parents=True, exist_ok=True)
        # What is already there (restored checkpoints) counts as uploaded.
        self._uploaded.update(self._scan())
        self._thread = threading.Thread(target=self._run, name=f"tf-sync-{self.local_dir.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, final: bool = True) -> None:
        """Stop watching; with ``final``, upload everything that differs. Raises DataError if that fails."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if final:
            self.sync(force=True, raise_errors=True)

    def _scan(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        if not self.local_dir.is_dir():
            return out
        for dirpath, _dirs, files in os.walk(self.local_dir, followlinks=self.device is None):
            for name in files:
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full)
                except OSError:
                    continue
                if self.device is not None and (st.st_dev != self.device or not stat.S_ISREG(st.st_mode)):
                    continue  # a link out of the instance's volume
                rel = os.path.relpath(full, self.local_dir).replace(os.sep, "/")
                out[rel] = (st.st_size, st.st_mtime_ns)
        return out

    def sync(self, *, force: bool = False, raise_errors: bool = False) -> list[str]:
        """One pass; returns the relative paths uploaded."""
        with self._lock:
            now = time.monotonic()
            due: list[str] = []
            for rel, sig in self._scan().items():
                if self._uploaded.get(rel) == sig:
                    self._pending.pop(rel, None)
                    continue
                prev = self._pending.get(rel)
                if force or (prev is not None and (prev[0] == sig or now - prev[1] >= self.max_delay)):
                    due.append(rel)
                    self._pending[rel] = (sig, prev[1] if prev else now)
                elif prev is None:
                    self._pending[rel] = (sig, now)
                else:
                    self._pending[rel] = (sig, prev[1])
            if not due:
                return []
            sigs = {rel: self._pending[rel][0] for rel in due}
            try:
                objectstore.upload_tree(self.local_dir, self.uri, only=due, device=self.device,
                                        allowed_roots=self.allowed_roots, link=False)
            except (ObjectStoreError, OSError) as exc:
                self.errors += 1
                self.last_error = str(exc)
                if raise_errors:
                    raise DataError(f"Could not upload {self.local_dir} to {self.uri}: {exc}") from exc
                self.log(f"Warning: syncing {self.local_dir} to {self.uri} failed, will retry: {exc}")
                return []
            for rel in due:
                self._uploaded[rel] = sigs[rel]
                self._pending.pop(rel, None)
            return due

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - the thread must survive; reported in the log
                self.log(f"Warning: sync of {self.local_dir} failed: {exc}")


class CheckpointSync:
    """Everything a job syncs up while it runs: CheckpointConfig and TensorBoardOutputConfig.

    ``CheckpointSync(request, ml_dir, allowed_roots=..., log=...)``; ``start()`` before the
    training process starts, ``stop(final=True)`` after it has exited (any outcome). A request
    with neither config makes both calls no-ops. ``stop`` raises DataError when the final upload
    fails (after trying every directory).
    """

    def __init__(self, request: dict[str, Any], ml_dir: Path, *, allowed_roots: list[str] | None = None,
                 log: Callable[[str], None] | None = None, interval: float = 1.0,
                 checkpoint_local_path: Path | None = None,
                 tensorboard_local_path: Path | None = None, debug_local_path: Path | None = None,
                 device: int | None = None) -> None:
        self.syncs: list[DirectorySync] = []
        for paths, override in ((checkpoint_paths(request, ml_dir), checkpoint_local_path),
                                (tensorboard_paths(request, ml_dir), tensorboard_local_path),
                                (debug_hook_paths(request, ml_dir), debug_local_path)):
            if paths is not None:
                self.syncs.append(DirectorySync(override or paths[1], paths[0], allowed_roots=allowed_roots,
                                                interval=interval, log=log, device=device))

    def start(self) -> CheckpointSync:
        for s in self.syncs:
            s.start()
        return self

    def stop(self, final: bool = True) -> None:
        first: DataError | None = None
        for s in self.syncs:
            try:
                s.stop(final=final)
            except DataError as exc:
                first = first or exc
        if first is not None:
            raise first
