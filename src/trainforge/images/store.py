"""The image cache in the data directory: layers stored once, images unpacked once, LRU-evicted.

Layout of ``<data_dir>/images``::

    blobs/sha256/<hex>        every layer, config and manifest blob, content-addressed (skopeo
                              verifies each digest before it names a file after it)
    refs/<key>/               one OCI layout per pulled reference (index.json; blobs -> ../../blobs);
                              ref.json: the reference, its manifest digest, when it was pulled
    rootfs/<hex>-<uid>/       the image unpacked (umoci) for instances whose root is host ``uid``:
                              rootfs/, image.json (entrypoint, env, ...), size.json; its mtime
                              is its last use (least recently used images are evicted first)
    locks/                    flock files: one per reference (concurrent pulls of it pull once)
                              and one per unpacked image (held shared while an instance uses it)
    tmp/                      pulls and unpacks in progress (a failed one leaves nothing behind)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

DEFAULT_CACHE_GB = 50.0


def images_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "images")


def ref_key(reference: str) -> str:
    return hashlib.sha256(reference.encode()).hexdigest()[:32]


@dataclass
class Store:
    root: str

    @classmethod
    def of(cls, data_dir: str) -> Store:
        store = cls(images_dir(data_dir))
        for d in ("blobs/sha256", "refs", "rootfs", "locks", "tmp"):
            os.makedirs(os.path.join(store.root, d), mode=0o700, exist_ok=True)
        return store

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def blob(self, digest: str) -> str:
        algo, _, hexd = digest.partition(":")
        return self.path("blobs", algo, hexd)

    def read_blob(self, digest: str) -> dict[str, Any]:
        with open(self.blob(digest), encoding="utf-8") as f:
            return dict(json.load(f))

    def ref_dir(self, reference: str) -> str:
        return self.path("refs", ref_key(reference))

    @staticmethod
    def ref_lock(reference: str) -> str:
        """The lock a pull or unpack of ``reference`` holds (its layout is read while it is held)."""
        return "ref-" + ref_key(reference)

    def rootfs_dir(self, manifest_digest: str, uid: int) -> str:
        return self.path("rootfs", f"{manifest_digest.partition(':')[2]}-{uid}")

    @contextlib.contextmanager
    def locked(self, name: str, shared: bool = False, wait: bool = True) -> Iterator[bool]:
        """An flock on ``locks/<name>``; yields False (held by another) when ``wait`` is False."""
        fd = os.open(self.path("locks", name), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
            try:
                fcntl.flock(fd, flags)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def hold(self, name: str) -> int:
        """A shared lock kept until the fd is closed (an instance using an unpacked image)."""
        fd = os.open(self.path("locks", name), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        return fd

    def record(self, reference: str) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.ref_dir(reference), "ref.json"), encoding="utf-8") as f:
                return dict(json.load(f))
        except (OSError, ValueError):
            return None

    def records(self) -> list[dict[str, Any]]:
        out = []
        for key in sorted(os.listdir(self.path("refs"))):
            try:
                with open(self.path("refs", key, "ref.json"), encoding="utf-8") as f:
                    out.append(dict(json.load(f)))
            except (OSError, ValueError):
                continue
        return out

    def unpacked(self) -> list[str]:
        return sorted(os.listdir(self.path("rootfs")))

    def unpacked_of(self, manifest_digest: str) -> list[str]:
        """The names under ``rootfs/`` of the image ``manifest_digest`` unpacked (one per instance uid)."""
        prefix = manifest_digest.partition(":")[2] + "-"
        return [n for n in self.unpacked() if manifest_digest and n.startswith(prefix)]

    def sweep_tmp(self, older_than: float) -> None:
        """What pulls and unpacks killed half-way left in ``tmp/`` (a live one is younger)."""
        for name in os.listdir(self.path("tmp")):
            path = self.path("tmp", name)
            if time.time() - _mtime(path) > older_than:
                shutil.rmtree(path, ignore_errors=True)

    def touch(self, rootfs_dir: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(rootfs_dir)

    # -- sizes and eviction ----------------------------------------------------------------------
    def blobs_of(self, manifest_digest: str) -> list[str]:
        try:
            manifest = self.read_blob(manifest_digest)
        except (OSError, ValueError):
            return [manifest_digest]
        digests = [manifest_digest, str((manifest.get("config") or {}).get("digest") or "")]
        return [d for d in digests + [str(layer.get("digest")) for layer in manifest.get("layers") or []] if d]

    def size_of(self, rootfs_dir: str) -> int:
        try:
            with open(os.path.join(rootfs_dir, "size.json"), encoding="utf-8") as f:
                return int(json.load(f)["bytes"])
        except (OSError, ValueError, KeyError):
            return 0

    def total_bytes(self) -> int:
        blobs = sum(file_size(os.path.join(self.path("blobs", "sha256"), n))
                    for n in os.listdir(self.path("blobs", "sha256")))
        return blobs + sum(self.size_of(self.path("rootfs", n)) for n in self.unpacked())

    def remove(self, reference: str) -> bool:
        """Forget a reference: its layout, and its unpacked image and blobs when nothing else uses them.
        False when an instance uses the image now."""
        record = self.record(reference)
        if record is None:
            return False
        digest = str(record.get("digest") or "")
        for name in self.unpacked_of(digest):
            if not self._remove_unpacked(name, digest, keep_ref=reference):
                return False
        shutil.rmtree(self.ref_dir(reference), ignore_errors=True)
        self.collect_blobs()
        return True

    def _remove_unpacked(self, name: str, digest: str, keep_ref: str | None = None) -> bool:
        if keep_ref is not None and any(r.get("digest") == digest and r.get("reference") != keep_ref
                                        for r in self.records()):
            return True  # another reference shares the image: it stays
        return self._remove_free(name) is not None

    def _remove_free(self, name: str) -> int | None:
        """``rootfs/<name>`` removed unless an instance holds it (None); the bytes it took (0: already gone)."""
        with self.locked(name, wait=False) as free:
            if not free:
                return None
            path = self.path("rootfs", name)
            size = self.size_of(path)
            moved = self.path("tmp", f"rm-{name}-{os.getpid()}-{time.monotonic_ns()}")
            try:
                os.rename(path, moved)
            except FileNotFoundError:
                return 0  # another eviction took it first
            shutil.rmtree(moved, ignore_errors=True)
        return size

    def collect_blobs(self) -> int:
        """Blobs no reference needs any more, and what interrupted pulls left, go; the bytes freed."""
        directory = self.path("blobs", "sha256")
        freed = 0
        with self.locked("gc"):  # pulls hold it shared: no blob of a pull in progress goes
            wanted: set[str] = set()  # read under the lock: a pull that just ended is counted
            for record in self.records():
                wanted.update(d.partition(":")[2] for d in self.blobs_of(str(record.get("digest") or "")))
            for name in os.listdir(directory):
                path = os.path.join(directory, name)
                # a skopeo temporary file of a live pull is young; a killed pull's is not
                stray = len(name) != 64 and time.time() - _mtime(path) > 3600
                if (len(name) == 64 and name not in wanted) or stray:
                    size = file_size(path)
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                        freed += size
        return freed

    def evict(self, limit_bytes: int, log: Any = None) -> list[str]:
        """Least recently used images go until the cache is within ``limit_bytes``, never one in use: an
        unpacked image an instance holds (its lock, shared), nor one whose reference is being pulled or
        unpacked for another uid (the reference's lock: its layout is read until the unpack ends)."""
        evicted: list[str] = []
        total = self.total_bytes()
        if total <= limit_bytes:
            return evicted
        by_age = sorted(self.unpacked(), key=lambda n: _mtime(self.path("rootfs", n)))
        records = self.records()
        for name in by_age:
            if total <= limit_bytes:
                break
            hexd = name.rsplit("-", 1)[0]
            refs = [str(r["reference"]) for r in records if str(r.get("digest", "")).endswith(hexd)]
            with contextlib.ExitStack() as stack:
                if not all(stack.enter_context(self.locked(self.ref_lock(r), wait=False)) for r in refs):
                    continue  # a pull or unpack of the image is under way
                freed = self._remove_free(name)
                if freed is None:
                    continue
                total -= freed
                for r in refs:
                    shutil.rmtree(self.ref_dir(r), ignore_errors=True)
                    evicted.append(r)
            total -= self.collect_blobs()
            if log is not None:
                log(f"evicted {', '.join(refs) or name} from the image cache")
        return evicted


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def file_size(path: str) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0
