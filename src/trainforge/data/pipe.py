"""Pipe mode: one FIFO per epoch, fed by a thread per channel, nothing staged on disk.

For channel ``train`` the feeder creates ``input/data/train_0`` and opens it for writing (that
blocks until the training process opens it for reading), writes the epoch's data and closes it:
the reader sees EOF. It then unlinks ``train_0`` and creates ``train_1``, and so on, epoch after
epoch, until the session is closed. If the reader closes its end early, the next write fails
with EPIPE and that epoch ends there: the next FIFO is created at once.

What an epoch carries: the host's items for that epoch (``sources.assign`` with the epoch
number: with ShuffleConfig every epoch has its own order, and with ShardedByS3Key its own
split between hosts), in order:

- S3Prefix / ManifestFile: each object's bytes (gunzipped when CompressionType is Gzip — any
  number of gzip members); with RecordWrapperType RecordIO each object is one record
  (``recordio.py``).
- AugmentedManifestFile: for each line, its AttributeNames in order — ``-ref`` attributes as the
  referenced object's bytes (gunzipped with Gzip), others as text; with RecordIO each attribute
  is one record.

Speed: S3 objects are fetched ahead of the writer on a pool of 16 threads, as ranged GETs of
at most 16 MiB (``PART``) pinned to the listed ETag with If-Match (an object replaced between
the listing and the read fails the epoch instead of mixing versions); an object of at most
``PART`` is one request. Per-request cost, not bandwidth, is the limit on an S3-compatible
endpoint: rclone serves 16 MiB ranges at about twice the rate of 4 MiB ones, and answers a range
covering the whole object with 200, which the fast GET path takes as is (``objectstore.s3``).

Memory bound per channel: the bytes fetched or being fetched but not yet handed to the writer
are at most ``WINDOW_BYTES`` (64 MiB) in at most 64 requests — a range is submitted only when
it fits (or when nothing else is ahead) — plus the one part the writer holds (``PART``), so at
most 80 MiB. An object of unknown size (augmented-manifest references) is counted as
``UNKNOWN_SIZE`` and may exceed it by its own size.

``file://`` objects without Gzip are ``splice``d from the file into the FIFO (no copy through
user space). The FIFO's buffer is raised to 1 MiB where the kernel allows.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path
from typing import TYPE_CHECKING

from .. import objectstore
from ..objectstore import Location, ObjectStoreError
from . import recordio
from .errors import DataError
from .owner import give
from .sources import Item, assign

if TYPE_CHECKING:
    from .staging import ChannelPlan

PART = 16 * 1024 * 1024
WINDOW_BYTES = 64 * 1024 * 1024
UNKNOWN_SIZE = 4 * 1024 * 1024  # what an object of unknown size counts for in the window
F_SETPIPE_SZ = 1031


class _Stopped(Exception):
    pass


class _EarlyClose(Exception):
    pass


class _Prefetcher:
    """Fetch (location, start, end) ranges on a pool, at most ``window`` ahead; yield in order."""

    def __init__(self, specs: Iterator[tuple[Location, int, int, str | None]], roots: list[str] | None,
                 stop: threading.Event, workers: int = 16, window: int = 64) -> None:
        self.specs = specs
        self.stop = stop
        self.roots = roots
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="tf-pipe-fetch")
        self.window = window
        self.queue: deque[Future[bytes]] = deque()
        self.sizes: deque[int] = deque()
        self.ahead = 0
        self.pending: tuple[Location, int, int, str | None] | None = None
        self._fill()

    def _fetch(self, loc: Location, start: int, end: int, etag: str | None) -> bytes:
        if end < start:  # whole object of unknown size
            return objectstore.read_bytes(loc, allowed_roots=self.roots)
        return objectstore.read_range(loc, start, end, etag=etag, allowed_roots=self.roots)

    def _fill(self) -> None:
        # at most `window` requests and WINDOW_BYTES ahead of the writer
        while len(self.queue) < self.window:
            spec = self.pending or next(self.specs, None)
            if spec is None:
                return
            size = spec[2] - spec[1] + 1 if spec[2] >= spec[1] else UNKNOWN_SIZE
            if self.queue and self.ahead + size > WINDOW_BYTES:
                self.pending = spec  # submitted once the writer has taken enough
                return
            self.pending = None
            self.ahead += size
            fut = self.pool.submit(self._fetch, *spec)
            self.sizes.append(size)
            self.queue.append(fut)

    def next(self) -> bytes:
        fut = self.queue.popleft()
        self.ahead -= self.sizes.popleft()
        while True:  # wait for the bytes, but give up promptly when the session closes
            try:
                data = fut.result(timeout=0.2)
                break
            except FuturesTimeout:
                if self.stop.is_set():
                    raise _Stopped() from None
        self._fill()
        return data

    def close(self) -> None:
        for f in self.queue:
            f.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)


class PipeFeeder:
    """Feeds one Pipe-mode channel; ``start()``, then ``close()`` when training is over."""

    def __init__(self, plan: ChannelPlan, data_dir: Path, host: str, *,
                 allowed_roots: list[str] | None = None, log: Callable[[str], None] | None = None,
                 on_error: Callable[[DataError], None] | None = None) -> None:
        self.plan = plan
        self.ch = plan.channel
        self.data_dir = Path(data_dir)
        self.host = host
        self.roots = allowed_roots
        self.log = log or (lambda m: None)
        self.on_error = on_error
        self.gzip = self.ch.compression == "Gzip"
        self.recordio = self.ch.record_wrapper == "RecordIO"
        self.epoch = 0
        self.epochs_done = 0
        self.error: DataError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tf-pipe-{self.ch.name}", daemon=True)
        self._fifo: Path | None = None

    def fifo_path(self, epoch: int) -> Path:
        return self.data_dir / f"{self.ch.name}_{epoch}"

    def start(self) -> PipeFeeder:
        self._make_fifo(0)
        self._thread.start()
        return self

    def _make_fifo(self, epoch: int) -> None:
        path = self.fifo_path(epoch)
        # made and handed to the instance's user under another name, then put in place: the training
        # code, waiting for the next epoch's FIFO, never finds one it may not open yet
        tmp = path.with_name(f".{path.name}.new")
        tmp.unlink(missing_ok=True)
        os.mkfifo(tmp, 0o644)
        give(tmp)
        os.replace(tmp, path)
        self._fifo = path

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            fifo = self._fifo
            if fifo is not None:  # release a writer blocked in open()
                try:
                    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
                except OSError:
                    pass
            self._thread.join(0.05)
        if self._fifo is not None:
            self._fifo.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.epoch > 0:
                    self._make_fifo(self.epoch)
                self._feed_epoch(self.epoch)
                if self._stop.is_set():
                    break
                self.fifo_path(self.epoch).unlink(missing_ok=True)
                self.epochs_done += 1
                self.epoch += 1
        except _Stopped:
            pass
        except DataError as exc:
            self._fail(exc)
        except ObjectStoreError as exc:
            self._fail(DataError(f"Pipe channel '{self.ch.name}': {exc}"))
        except Exception as exc:  # noqa: BLE001 - reported as the channel's failure
            self._fail(DataError(f"Pipe channel '{self.ch.name}' failed: {exc}", user=False))

    def _fail(self, exc: DataError) -> None:
        self.error = exc
        self.log(f"Error: {exc}")
        if self.on_error:
            self.on_error(exc)

    def _feed_epoch(self, epoch: int) -> None:
        fifo = self.fifo_path(epoch)
        fd = os.open(fifo, os.O_WRONLY)  # blocks until the reader opens it (or close() does)
        if self._stop.is_set():
            os.close(fd)
            return
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
            try:
                fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)
            except OSError:
                pass
            items = assign(self.plan.all_items, self.ch, self.host, epoch)
            prefetch = _Prefetcher(self._specs(items), self.roots, self._stop)
            try:
                for item in items:
                    self._write_item(fd, item, prefetch)
            except _EarlyClose:
                pass
            finally:
                prefetch.close()
        finally:
            os.close(fd)

    # which (location, start, end) ranges the prefetcher fetches, in write order
    def _specs(self, items: list[Item]) -> Iterator[tuple[Location, int, int, str | None]]:
        for item in items:
            if item.attributes:
                for a in item.attributes:
                    if isinstance(a, Location):
                        yield (a, 0, -1, None)
            elif item.location is not None and not self._splices(item):
                if item.size is None:
                    yield (item.location, 0, -1, None)
                else:
                    for off in range(0, item.size, PART):
                        yield (item.location, off, min(off + PART, item.size) - 1, item.etag)

    def _splices(self, item: Item) -> bool:
        return item.location is not None and item.location.scheme == "file" and not self.gzip

    def _object_chunks(self, item: Item, prefetch: _Prefetcher) -> Iterator[bytes]:
        if item.size is None:
            yield prefetch.next()
            return
        for _off in range(0, item.size, PART):
            yield prefetch.next()

    def _write_item(self, fd: int, item: Item, prefetch: _Prefetcher) -> None:
        if item.attributes:
            parts = []
            for a in item.attributes:
                data = prefetch.next() if isinstance(a, Location) else a
                if self.gzip and isinstance(a, Location):
                    data = b"".join(_gunzip(iter([data]), str(a.uri)))
                parts.append(recordio_record(data, str(item.line_no)) if self.recordio else data)
            self._write(fd, b"".join(parts))
            return
        assert item.location is not None
        uri = item.location.uri
        if self._splices(item):
            # The path was checked against the allowed roots (and for escaping symlinks) when the
            # channel was listed; O_NOFOLLOW refuses a file swapped for a symlink since then.
            try:
                src = os.open(item.location.key, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError as exc:
                raise DataError(f"Pipe channel '{self.ch.name}': cannot read {uri}: {exc.strerror}") from exc
            try:
                size = os.fstat(src).st_size
                if self.recordio:
                    self._write(fd, recordio_header(size, uri))
                self._splice(fd, src, size)
                if self.recordio:
                    self._write(fd, recordio.padding(size))
            finally:
                os.close(src)
            return
        chunks = self._object_chunks(item, prefetch)
        if self.gzip:
            chunks = _gunzip(chunks, uri)
        if not self.recordio:
            for c in chunks:
                self._write(fd, c)
        elif not self.gzip and item.size is not None:
            self._write(fd, recordio_header(item.size, uri))
            for c in chunks:
                self._write(fd, c)
            self._write(fd, recordio.padding(item.size))
        else:
            data = b"".join(_bounded(chunks, uri))
            self._write(fd, recordio_record(data, uri))

    # ------------------------------------------------------------------------------------
    def _wait_writable(self, fd: int) -> None:
        poller = select.poll()
        poller.register(fd, select.POLLOUT | select.POLLERR)
        while not self._stop.is_set():
            events = poller.poll(200)
            if events:
                if any(ev & select.POLLERR for _, ev in events):
                    raise _EarlyClose()
                return
        raise _Stopped()

    def _write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._stop.is_set():
                raise _Stopped()
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                self._wait_writable(fd)
                continue
            except BrokenPipeError:
                raise _EarlyClose() from None
            view = view[n:]

    def _splice(self, fd: int, src: int, size: int) -> None:
        off = 0
        while off < size:
            if self._stop.is_set():
                raise _Stopped()
            try:
                n = os.splice(src, fd, min(size - off, 1 << 20), offset_src=off,
                              flags=getattr(os, "SPLICE_F_NONBLOCK", 2) | getattr(os, "SPLICE_F_MOVE", 1))
            except BlockingIOError:
                self._wait_writable(fd)
                continue
            except BrokenPipeError:
                raise _EarlyClose() from None
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOSYS):  # no splice here: plain copy
                    self._write(fd, os.pread(src, min(size - off, 1 << 20), off))
                    off += min(size - off, 1 << 20)
                    continue
                raise
            if n == 0:
                raise DataError(f"Pipe channel '{self.ch.name}': an input file shrank while being read")
            off += n


def recordio_header(size: int, what: str) -> bytes:
    """The header of a ``size``-byte record streamed after it (``recordio.header``)."""
    try:
        return recordio.header(size)
    except ValueError as exc:
        raise _too_large(what, size) from exc


def recordio_record(data: bytes, what: str) -> bytes:
    """``data`` as one whole record (``recordio.encode``)."""
    try:
        return recordio.encode(data)
    except ValueError as exc:
        raise _too_large(what, len(data)) from exc


def _too_large(what: str, size: int) -> DataError:
    return DataError(f"RecordIO: {what} is too large for one record ({size} bytes; at most "
                     f"{recordio.MAX_RECORD})")


def _bounded(chunks: Iterator[bytes], what: str) -> Iterator[bytes]:
    total = 0
    for c in chunks:
        total += len(c)
        if total > recordio.MAX_RECORD:
            raise DataError(f"RecordIO: {what} decompresses to more than {recordio.MAX_RECORD} bytes, "
                            "too large for one record")
        yield c


def _gunzip(chunks: Iterator[bytes], what: str) -> Iterator[bytes]:
    """Decompress a gzip stream (several members allowed) without holding it whole."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    started = False
    try:
        for chunk in chunks:
            data = chunk
            while data:
                started = True
                out = d.decompress(data, 1 << 20)
                if out:
                    yield out
                while d.unconsumed_tail:
                    out = d.decompress(d.unconsumed_tail, 1 << 20)
                    if out:
                        yield out
                if d.eof:
                    data = d.unused_data
                    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    started = False
                else:
                    data = b""
        if started and not d.eof:
            raise DataError(f"Gzip: {what} is truncated (CompressionType is Gzip)")
    except zlib.error as exc:
        raise DataError(f"Gzip: {what} is not valid gzip data (CompressionType is Gzip): {exc}") from exc
