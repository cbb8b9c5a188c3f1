"""Moving bytes: parallel downloads (ranged, atomic), uploads, local hard links / reflinks / copies."""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import (
    DEFAULT_WORKERS,
    DOWNLOAD_WORKERS,
    FICLONE,
    IO_CHUNK,
    MULTIPART_THRESHOLD,
    PART_SIZE,
    STAGING_DIRNAME,
    LocalResolver,
    Location,
    ObjectInfo,
    ObjectStoreError,
    as_location,
    check_file,
    safe_join,
)
from .reading import list_entries
from .s3 import get_stream, s3_client, s3_error, transfer_manager


def _sibling_tmp(dest: Path) -> Path:
    """A hidden name beside ``dest``, to write under and then rename to ``dest``."""
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}")


def _link(src: Path, dest: Path) -> None:
    """A hard link at ``dest`` (atomic by nature); an existing ``dest`` is replaced atomically."""
    try:
        os.link(src, dest)
    except FileNotFoundError:
        if not os.path.exists(src):
            raise
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(src, dest)
    except FileExistsError:
        tmp = _sibling_tmp(dest)
        os.link(src, tmp)
        os.replace(tmp, dest)


def place_local(src: Path, dest: Path, *, link: bool = True,
                prepare: Callable[[Path], None] | None = None) -> str:
    """Put a copy of ``src`` at ``dest`` (atomically); returns "link", "reflink" or "copy".
    ``prepare`` is given a copy before it appears at ``dest`` (never a link: that is ``src`` itself)."""
    if link:
        try:
            _link(src, dest)
            return "link"
        except OSError:
            pass
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling_tmp(dest)
    try:
        with open(src, "rb") as fi, open(tmp, "wb") as fo:
            try:
                fcntl.ioctl(fo.fileno(), FICLONE, fi.fileno())
                how = "reflink"
            except OSError:
                how = "copy"
                size = os.fstat(fi.fileno()).st_size
                sent = 0
                try:
                    while sent < size:
                        n = os.copy_file_range(fi.fileno(), fo.fileno(), size - sent)
                        if n == 0:
                            break
                        sent += n
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                        raise
                    fo.seek(0)
                    fo.truncate()
                    fi.seek(0)
                    shutil.copyfileobj(fi, fo, IO_CHUNK)
        shutil.copystat(src, tmp)
        if prepare is not None:
            prepare(tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return how


class Moved:
    """Bytes this process has moved through the object store, by direction ("download", "upload"):
    the agent reports what its staging and its upload moved (``/metrics``, api/prometheus.py)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes = {"download": 0, "upload": 0}

    def add(self, direction: str, n: int) -> None:
        with self._lock:
            self._bytes[direction] += n

    def since(self, direction: str) -> Callable[[], tuple[int, float]]:
        """A measure started now: called, the bytes moved in ``direction`` since, and the seconds."""
        before, started = self._bytes[direction], time.monotonic()
        return lambda: (self._bytes[direction] - before, time.monotonic() - started)


MOVED = Moved()


@dataclass
class Transfer:
    """One object to fetch to ``dest``; ``size``/``etag`` from the listing when known."""

    source: Location
    dest: Path
    size: int | None = None
    etag: str | None = None


def download_many(transfers: list[Transfer], *, workers: int = DOWNLOAD_WORKERS,
                  allowed_roots: Iterable[str] | None = None,
                  on_bytes: Callable[[int], None] | None = None,
                  on_file: Callable[[Transfer], None] | None = None,
                  staging_dir: Path | None = None, link: bool = True,
                  cancel: threading.Event | None = None,
                  before_publish: Callable[[Path], None] | None = None) -> None:
    """Fetch every transfer, in parallel; each file appears at its destination only when complete.

    Transfers are started in list order (callers put what is needed first, first). ``on_bytes``
    and ``on_file`` are called from worker threads; ``before_publish`` is given each complete file
    (a copy, not a link) before it appears at its destination. ``staging_dir`` (same filesystem as the
    destinations) holds partial files; by default a hidden directory beside each destination.
    On failure every partial file is removed and the first error is raised.
    """
    roots = list(allowed_roots) if allowed_roots is not None else None
    engine = _Engine(workers, roots, on_bytes, on_file, staging_dir, link, cancel, before_publish)
    engine.run(transfers)


class _Engine:
    def __init__(self, workers: int, roots: list[str] | None, on_bytes: Callable[[int], None] | None,
                 on_file: Callable[[Transfer], None] | None, staging_dir: Path | None, link: bool,
                 cancel: threading.Event | None, before_publish: Callable[[Path], None] | None = None) -> None:
        self.workers = max(1, workers)
        self.roots = roots
        self.resolver = LocalResolver(roots, "input file")
        self._on_bytes = on_bytes or (lambda n: None)
        self.on_file = on_file or (lambda t: None)
        self.before_publish = before_publish
        self.staging_dir = staging_dir
        self.link = link
        self.cancel = cancel or threading.Event()
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.partials: set[Path] = set()
        self.made_dirs: set[Path] = set()  # staging directories this engine made
        self.known_dirs: set[Path] = set()  # directories known to exist
        self.tmp_prefix = uuid.uuid4().hex
        self.tmp_count = itertools.count()

    def _fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc
        self.cancel.set()

    def _dir(self, d: Path) -> None:
        """``d`` made when missing (checked once per engine)."""
        if d not in self.known_dirs:
            d.mkdir(parents=True, exist_ok=True)
            self.known_dirs.add(d)

    def _tmp_for(self, dest: Path) -> Path:
        d = self.staging_dir or dest.parent / STAGING_DIRNAME
        self._dir(d)
        tmp = d / f"{self.tmp_prefix}-{next(self.tmp_count)}.part"
        with self.lock:
            self.partials.add(tmp)
            if self.staging_dir is None:
                self.made_dirs.add(d)
        return tmp

    def _finish(self, t: Transfer, tmp: Path) -> None:
        self._dir(t.dest.parent)
        if self.before_publish is not None:
            self.before_publish(tmp)
        os.replace(tmp, t.dest)
        with self.lock:
            self.partials.discard(tmp)
        self.on_file(t)

    def run(self, transfers: list[Transfer]) -> None:
        futures: list[Future[None]] = []
        with ThreadPoolExecutor(self.workers, thread_name_prefix="tf-download") as pool:
            for t in transfers:
                if self.cancel.is_set():
                    break
                if t.source.scheme == "file":
                    futures.append(pool.submit(self._guard, self._file, t))
                elif t.size is not None and t.size > MULTIPART_THRESHOLD:
                    self._submit_ranged(pool, t, futures)
                else:
                    futures.append(pool.submit(self._guard, self._whole, t))
            for f in futures:
                f.result()
        for tmp in list(self.partials):
            tmp.unlink(missing_ok=True)
        for d in self.made_dirs:
            try:
                d.rmdir()
            except OSError:
                pass
        if self.error is not None:
            raise self.error
        if self.cancel.is_set():
            raise ObjectStoreError("download cancelled")

    def on_bytes(self, n: int) -> None:
        MOVED.add("download", n)
        self._on_bytes(n)

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        if self.cancel.is_set():
            return
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported through run()
            if isinstance(exc, ObjectStoreError):
                self._fail(exc)
            elif getattr(exc, "response", None) is not None:
                self._fail(s3_error(exc, args[0].source, "download"))
            elif isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                self._fail(ObjectStoreError(f"no space left on device while writing {args[0].dest}"))
            else:
                self._fail(ObjectStoreError(f"cannot download {args[0].source.uri}: {exc}"))

    def _file(self, t: Transfer) -> None:
        src = self.resolver.resolve(t.source.key)  # a file:// source: its key is the path
        if t.size is None:
            t.size = src.stat().st_size
        place_local(src, t.dest, link=self.link, prepare=self.before_publish)
        self.on_bytes(t.size)
        self.on_file(t)

    def _whole(self, t: Transfer) -> None:
        tmp = self._tmp_for(t.dest)
        with open(tmp, "wb") as f:  # opened first: a stream is always pumped, hence closed
            written = self._pump(get_stream(t.source, etag=t.etag), f.fileno(), 0)
        if self.cancel.is_set():
            return
        if t.size is not None and written != t.size:
            raise ObjectStoreError(f"{t.source.uri}: {written} bytes received, {t.size} listed "
                                   "(the object changed while it was being read?)")
        self._finish(t, tmp)

    def _pump(self, body: Any, fd: int, offset: int) -> int:
        readinto = getattr(body, "readinto", None)
        buf = memoryview(bytearray(IO_CHUNK)) if readinto is not None else None
        try:
            while True:
                if self.cancel.is_set():
                    return offset
                if buf is not None and readinto is not None:
                    got = readinto(buf)
                    view = buf[:got]
                else:
                    view = memoryview(body.read(IO_CHUNK))
                    got = len(view)
                if not got:
                    return offset
                while view:
                    n = os.pwrite(fd, view, offset)
                    offset += n
                    view = view[n:]
                self.on_bytes(got)
        finally:
            body.close()

    def _submit_ranged(self, pool: ThreadPoolExecutor, t: Transfer, futures: list[Future[None]]) -> None:
        assert t.size is not None
        tmp = self._tmp_for(t.dest)
        with open(tmp, "wb") as f:
            f.truncate(t.size)
        parts = [(off, min(off + PART_SIZE, t.size) - 1) for off in range(0, t.size, PART_SIZE)]
        remaining = [len(parts)]
        for start, end in parts:
            futures.append(pool.submit(self._guard, self._part, t, tmp, start, end, remaining))

    def _part(self, t: Transfer, tmp: Path, start: int, end: int, remaining: list[int]) -> None:
        fd = os.open(tmp, os.O_WRONLY)
        try:
            written = self._pump(get_stream(t.source, start=start, end=end, etag=t.etag), fd, start)
        finally:
            os.close(fd)
        if self.cancel.is_set():
            return
        if written != end + 1:
            raise ObjectStoreError(f"short read from {t.source.uri} at bytes {start}-{end}")
        with self.lock:
            remaining[0] -= 1
            done = remaining[0] == 0
        if done:
            self._finish(t, tmp)


def download_file(uri: str | Location, path: str | os.PathLike[str], *,
                  allowed_roots: Iterable[str] | None = None, link: bool = True) -> None:
    """Fetch one object to ``path`` (atomically; parent directories created)."""
    loc = as_location(uri)
    size = etag = None
    if loc.scheme == "s3":
        try:
            head = s3_client().head_object(Bucket=loc.bucket, Key=loc.key)
        except Exception as exc:
            raise s3_error(exc, loc, "download") from exc
        size, etag = int(head["ContentLength"]), head.get("ETag")
    download_many([Transfer(loc, Path(path), size, etag)], allowed_roots=allowed_roots, link=link)


def download_prefix(uri_prefix: str | Location, dest_dir: str | os.PathLike[str], *,
                    allowed_roots: Iterable[str] | None = None, link: bool = True,
                    on_bytes: Callable[[int], None] | None = None) -> list[ObjectInfo]:
    """Fetch every object under a prefix into ``dest_dir``/<relative path>; returns the listing.

    Relative paths that would escape ``dest_dir`` (``..``, absolute) raise ObjectStoreError
    before anything is written.
    """
    dest = Path(dest_dir)
    entries = list_entries(uri_prefix, allowed_roots=allowed_roots)
    transfers = [Transfer(e.location, safe_join(dest, e.rel, e.location.uri), e.size, e.etag)
                 for e in entries]
    dest.mkdir(parents=True, exist_ok=True)
    download_many(transfers, allowed_roots=allowed_roots, on_bytes=on_bytes, link=link)
    return entries


def upload_file(path: str | os.PathLike[str], uri: str | Location, *,
                allowed_roots: Iterable[str] | None = None, link: bool = True, device: int | None = None) -> None:
    """Store a local file at ``uri`` (multipart for large files)."""
    upload_many([(Path(path), as_location(uri))], allowed_roots=allowed_roots, link=link, device=device)


class NotOnVolume(OSError):
    """A file to upload from an instance is not on that instance's volume (a symlink out of it)."""


def open_on_device(path: Path, device: int) -> Any:
    """``path`` opened for reading, only if what was opened is a regular file on ``device``: a file an
    instance wrote on its own volume. Checked on the open file, so swapping in a symlink after any
    earlier check changes nothing (a hard link cannot cross filesystems)."""
    f = open(path, "rb")  # noqa: SIM115 - returned
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode) or st.st_dev != device:
        f.close()
        raise NotOnVolume(f"{path} is not a file of the instance's own (a link out of its volume?)")
    return f


def upload_tree(local_dir: str | os.PathLike[str], uri_prefix: str | Location, *,
                allowed_roots: Iterable[str] | None = None, link: bool = True,
                only: Iterable[str] | None = None, device: int | None = None) -> list[str]:
    """Store every file below ``local_dir`` at ``uri_prefix``/<relative path>, in parallel.

    ``only``: restrict to these relative paths. Symbolic links are followed (with ``device``, only
    to files on that filesystem). Returns the relative paths uploaded.
    """
    base = Path(local_dir)
    prefix = as_location(uri_prefix)
    rels = sorted(only) if only is not None else sorted(_walk_files(base))
    upload_many([(base / r, prefix.child(r)) for r in rels], allowed_roots=allowed_roots, link=link,
                device=device)
    return rels


def _walk_files(base: Path) -> Iterator[str]:
    for dirpath, _dirs, files in os.walk(base, followlinks=True):
        for name in files:
            yield os.path.relpath(os.path.join(dirpath, name), base).replace(os.sep, "/")


def upload_many(items: list[tuple[Path, Location]], *, allowed_roots: Iterable[str] | None = None,
                link: bool = True, workers: int = DEFAULT_WORKERS, device: int | None = None) -> None:
    """``device``: every source must be a regular file on that filesystem (:func:`open_on_device`;
    an instance's volume): read from the checked open file, never linked."""
    roots = list(allowed_roots) if allowed_roots is not None else None
    s3_items = [(p, loc) for p, loc in items if loc.scheme == "s3"]
    for p, loc in items:
        if loc.scheme == "file":
            dest = check_file(loc, roots, "output path")
            try:
                if device is None:
                    place_local(p, dest, link=link)
                else:
                    with open_on_device(p, device) as src:
                        place_local(Path(f"/proc/self/fd/{src.fileno()}"), dest, link=False)
                MOVED.add("upload", os.stat(dest).st_size)
            except OSError as exc:
                raise ObjectStoreError(f"cannot write {loc.uri}: {exc}") from exc
    # with ``device`` the sources are open files: a bounded number at a time
    step = OPEN_FILES_AT_ONCE if device is not None else max(1, len(s3_items))
    for start in range(0, len(s3_items), step):
        _upload_s3(s3_items[start:start + step], workers, device)


OPEN_FILES_AT_ONCE = 256


def _upload_s3(s3_items: list[tuple[Path, Location]], workers: int, device: int | None) -> None:
    opened: list[Any] = []
    try:
        sources: list[Any] = []
        for p, loc in s3_items:
            if device is None:
                sources.append(str(p))
                continue
            try:
                opened.append(open_on_device(p, device))
            except OSError as exc:
                raise ObjectStoreError(f"cannot upload {p} to {loc.uri}: {exc}") from exc
            sources.append(opened[-1])
        with transfer_manager(multipart_threshold=MULTIPART_THRESHOLD, part_size=PART_SIZE,
                              workers=workers) as mgr:
            futures = [(mgr.upload(src, loc.bucket, loc.key), loc) for src, (_p, loc) in zip(sources, s3_items)]
            first: BaseException | None = None
            for fut, loc in futures:
                try:
                    fut.result()
                    MOVED.add("upload", fut.meta.size or 0)
                except Exception as exc:  # noqa: BLE001 - first failure re-raised below
                    if first is None:
                        first = s3_error(exc, loc, "upload to")
            if first is not None:
                raise first
    finally:
        for f in opened:
            f.close()


def put_bytes(data: bytes, uri: str | Location, *, allowed_roots: Iterable[str] | None = None) -> None:
    loc = as_location(uri)
    if loc.scheme == "file":
        dest = check_file(loc, allowed_roots, "output path")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        return
    try:
        s3_client().put_object(Bucket=loc.bucket, Key=loc.key, Body=data)
    except Exception as exc:
        raise s3_error(exc, loc, "upload to") from exc
