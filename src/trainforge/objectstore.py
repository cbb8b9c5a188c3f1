"""The one place that talks to object storage: ``s3://`` (boto3, any endpoint) and ``file://``.

Everything else in trainforge (the agent's uploads, the data plane's staging, checkpoint sync)
goes through these functions, so endpoint selection, credentials, parallelism and the
``file://`` safety rules live here only.

S3
  The client is built lazily from the standard AWS configuration: ``AWS_ENDPOINT_URL_S3`` /
  ``AWS_ENDPOINT_URL`` (or the toolkit's ``S3_ENDPOINT_URL``), ``AWS_PROFILE`` and the shared
  config files, static keys, and container credentials (``AWS_CONTAINER_CREDENTIALS_FULL_URI`` +
  ``AWS_CONTAINER_AUTHORIZATION_TOKEN``), which botocore's default chain already understands.
  ``boto3`` is imported on first use only: importing this module stays cheap.

  Downloads use our own small engine rather than ``s3transfer``'s download path: objects larger
  than :data:`MULTIPART_THRESHOLD` are fetched as parallel ranged GETs of :data:`PART_SIZE`
  (pinned to the listed ETag with ``IfMatch``), every worker streams its body into the file with
  ``pwrite`` in 1 MiB pieces (memory is bounded by ``workers × 1 MiB``), and a file is written
  under a temporary name in a hidden directory and renamed into place only once complete: a
  reader never sees a partial file. Uploads use ``s3transfer`` (parallel, multipart).

file://
  ``file:///abs/path``. When the caller passes ``allowed_roots``, every path (source and
  destination) must resolve (symlinks followed) inside one of them, else :class:`ObjectStoreError`.
  Copies into place are hard links when source and destination share a filesystem (a training
  script that rewrites an input file in place therefore rewrites the source — the same trade-off
  SageMaker local mode makes), then a reflink (``FICLONE``), then a kernel-side copy.

S3 prefix semantics (listing): ``list_objects("s3://b/data/train")`` returns every object whose
key starts with ``data/train`` (as S3 and SageMaker do). Its relative path is the key minus the
prefix when the key continues with ``/`` after the prefix (``data/train/a.csv`` → ``a.csv``) or the
prefix ends in ``/``; otherwise (``data/train-2/b.csv``, or the prefix naming one object exactly,
``data/train.csv``) the key relative to the prefix's directory part (``train-2/b.csv``,
``train.csv``). Zero-byte "directory marker" keys ending in ``/`` are skipped.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self

if TYPE_CHECKING:  # pragma: no cover
    from botocore.client import BaseClient

MiB = 1024 * 1024
MULTIPART_THRESHOLD = 16 * MiB
PART_SIZE = 8 * MiB
IO_CHUNK = 1 * MiB
DEFAULT_WORKERS = min(32, max(8, 4 * (os.cpu_count() or 2)))
STAGING_DIRNAME = ".trainforge-partial"

FICLONE = 0x40049409  # linux/fs.h


class ObjectStoreError(Exception):
    """A storage operation failed; ``str(exc)`` is a user-readable reason."""


@dataclass(frozen=True)
class Location:
    """A parsed storage URI. For ``file`` the bucket is empty and ``key`` is the absolute path."""

    scheme: str  # "s3" | "file"
    bucket: str
    key: str

    @property
    def path(self) -> Path:
        if self.scheme != "file":
            raise ObjectStoreError(f"{self.uri} is not a file:// location")
        return Path(self.key)

    @property
    def uri(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.key}"
        return f"file://{self.key}"

    def child(self, rel: str) -> Location:
        """The location ``rel`` (slash-separated) below this one, treated as a directory."""
        rel = rel.lstrip("/")
        if self.scheme == "s3":
            base = self.key if (not self.key or self.key.endswith("/")) else self.key + "/"
            return Location("s3", self.bucket, base + rel)
        return Location("file", "", os.path.join(self.key, rel))


@dataclass(frozen=True)
class ObjectInfo:
    rel: str  # path relative to the listed prefix's directory part (see module doc)
    size: int
    location: Location
    etag: str | None = None


def parse_uri(uri: str) -> Location:
    """Parse ``s3://bucket/key`` or ``file:///absolute/path`` (``file://localhost/...`` too)."""
    if not isinstance(uri, str) or "://" not in uri:
        raise ObjectStoreError(f"'{uri}' is not an s3:// or file:// URI")
    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    if scheme == "s3":
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise ObjectStoreError(f"'{uri}' has no bucket")
        return Location("s3", bucket, key)
    if scheme == "file":
        if rest.startswith("localhost/"):
            rest = rest[len("localhost"):]
        if not rest.startswith("/"):
            raise ObjectStoreError(f"'{uri}' must be an absolute file:// path (file:///...)")
        from urllib.parse import unquote

        path = os.path.normpath(unquote(rest))
        if rest.endswith("/") and path != "/":
            path += "/"
        return Location("file", "", path)
    raise ObjectStoreError(f"'{uri}': unsupported scheme '{scheme}' (s3:// and file:// are supported)")


def _loc(uri: str | Location) -> Location:
    return uri if isinstance(uri, Location) else parse_uri(uri)


# ---------------------------------------------------------------------------------------------
# S3 client
_client_lock = threading.Lock()
_client_cache: dict[tuple[Any, ...], Any] = {}
_ENV_KEYS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "S3_ENDPOINT_URL", "AWS_PROFILE",
             "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
             "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
             "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


def s3_endpoint_url() -> str | None:
    """The S3 endpoint the standard configuration selects (None = AWS's own)."""
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "S3_ENDPOINT_URL"):
        if os.environ.get(key):
            return os.environ[key]
    return None


def s3_client() -> BaseClient:
    """A boto3 S3 client from the standard AWS configuration, cached per process (and per config)."""
    cache_key = (os.getpid(),) + tuple(os.environ.get(k) for k in _ENV_KEYS)
    client = _client_cache.get(cache_key)
    if client is not None:
        return client
    with _client_lock:
        client = _client_cache.get(cache_key)
        if client is None:
            import boto3
            from botocore.config import Config as BotoConfig

            session = boto3.session.Session()
            region = session.region_name or "us-east-1"
            endpoint = s3_endpoint_url()
            s3cfg: dict[str, Any] = {}
            if endpoint:
                # Self-hosted stores (MinIO, Ceph, moto, rclone) want path-style addressing.
                s3cfg["addressing_style"] = "path"
            cfg = BotoConfig(max_pool_connections=max(DEFAULT_WORKERS, 32) + 8,
                             retries={"max_attempts": 8, "mode": "standard"},
                             s3=s3cfg or None, signature_version="s3v4",
                             connect_timeout=10, read_timeout=120)
            client = session.client("s3", region_name=region, endpoint_url=endpoint, config=cfg)
            _client_cache.clear()
            _client_cache[cache_key] = client
    return client


def reset_client() -> None:
    """Forget the cached client (tests that change the AWS environment)."""
    with _client_lock:
        _client_cache.clear()


def _s3_error(exc: BaseException, loc: Location, action: str) -> ObjectStoreError:
    code = ""
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        code = str(resp.get("Error", {}).get("Code", ""))
    if code in ("NoSuchBucket",):
        return ObjectStoreError(f"cannot {action} {loc.uri}: the bucket '{loc.bucket}' does not exist")
    if code in ("NoSuchKey", "404", "NotFound"):
        return ObjectStoreError(f"cannot {action} {loc.uri}: no such object")
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return ObjectStoreError(f"cannot {action} {loc.uri}: access denied ({code})")
    return ObjectStoreError(f"cannot {action} {loc.uri}: {exc}")


# ---------------------------------------------------------------------------------------------
# file:// safety
def resolve_inside(path: str | os.PathLike[str], roots: Iterable[str | os.PathLike[str]] | None,
                   what: str = "path") -> Path:
    """``path`` with symlinks resolved; ObjectStoreError unless it lies inside one of ``roots``.

    ``roots=None`` means unrestricted. A path that does not exist yet is resolved through its
    deepest existing ancestor.
    """
    real = Path(os.path.realpath(path))
    if roots is None:
        return real
    root_list = [Path(os.path.realpath(r)) for r in roots]
    for root in root_list:
        if real == root or root in real.parents:
            return real
    shown = ", ".join(str(r) for r in root_list) or "(none configured)"
    raise ObjectStoreError(f"{what} {path} is outside the allowed local roots: {shown}")


def _check_file(loc: Location, roots: Iterable[str] | None, what: str) -> Path:
    if loc.scheme != "file":
        return Path()
    return resolve_inside(loc.key, roots, what)


# ---------------------------------------------------------------------------------------------
# Listing
def list_entries(uri_prefix: str | Location, *, allowed_roots: Iterable[str] | None = None
                 ) -> list[ObjectInfo]:
    """Every object under a prefix, sorted by key (file:// : by relative path)."""
    loc = _loc(uri_prefix)
    if loc.scheme == "s3":
        return _list_s3(loc)
    return _list_file(loc, allowed_roots)


def list_objects(uri_prefix: str | Location, *, allowed_roots: Iterable[str] | None = None
                 ) -> list[tuple[str, int]]:
    """``[(relative_path, size)]`` of every object under the prefix (see module doc for 'relative')."""
    return [(e.rel, e.size) for e in list_entries(uri_prefix, allowed_roots=allowed_roots)]


def _list_s3(loc: Location) -> list[ObjectInfo]:
    client = s3_client()
    out: list[ObjectInfo] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=loc.key):
            for obj in page.get("Contents", ()):
                key = obj["Key"]
                if key.endswith("/"):
                    continue
                out.append(ObjectInfo(relative_key(loc.key, key), int(obj["Size"]), Location("s3", loc.bucket, key),
                                      obj.get("ETag")))
    except Exception as exc:  # botocore errors
        raise _s3_error(exc, loc, "list") from exc
    return out


def relative_key(prefix: str, key: str) -> str:
    """The local relative path of ``key`` listed under ``prefix`` (see the module doc)."""
    if not prefix or prefix.endswith("/"):
        return key[len(prefix):]
    if key.startswith(prefix + "/"):
        return key[len(prefix) + 1:]
    base = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
    return key[len(base):]


def _list_file(loc: Location, roots: Iterable[str] | None) -> list[ObjectInfo]:
    roots = list(roots) if roots is not None else None
    real = _check_file(loc, roots, "input path")
    if real.is_file():
        return [ObjectInfo(real.name, real.stat().st_size, Location("file", "", str(real)))]
    if not real.is_dir():
        raise ObjectStoreError(f"cannot list {loc.uri}: no such file or directory")
    out: list[ObjectInfo] = []
    seen: set[tuple[int, int]] = set()

    def walk(d: Path, rel: str) -> None:
        st = d.stat()
        if (st.st_dev, st.st_ino) in seen:
            return
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            r = f"{rel}{e.name}"
            if e.is_symlink():
                target = Path(os.path.realpath(e.path))
                if target != real and real not in target.parents:
                    raise ObjectStoreError(f"{loc.uri}: symbolic link '{r}' points outside the source "
                                           f"directory (to {target})")
            if e.is_dir(follow_symlinks=True):
                walk(Path(e.path), r + "/")
            elif e.is_file(follow_symlinks=True):
                out.append(ObjectInfo(r, e.stat(follow_symlinks=True).st_size,
                                      Location("file", "", e.path)))

    walk(real, "")
    return out


# ---------------------------------------------------------------------------------------------
# Reading
def open_read(uri: str | Location, *, allowed_roots: Iterable[str] | None = None,
              start: int = 0) -> IO[bytes]:
    """A binary stream of the object's bytes (from byte ``start``). Close it when done."""
    loc = _loc(uri)
    if loc.scheme == "file":
        f = open(_check_file(loc, allowed_roots, "input file"), "rb")  # noqa: SIM115
        if start:
            f.seek(start)
        return f
    kwargs: dict[str, Any] = {"Bucket": loc.bucket, "Key": loc.key}
    if start:
        kwargs["Range"] = f"bytes={start}-"
    try:
        body = s3_client().get_object(**kwargs)["Body"]
    except Exception as exc:
        raise _s3_error(exc, loc, "read") from exc
    return _BodyReader(body)


class _BodyReader:
    """Minimal file-like wrapper around botocore's StreamingBody (read / readinto / close)."""

    def __init__(self, body: Any) -> None:
        self._body = body
        self._raw = getattr(body, "_raw_stream", None)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self._body.read()
        return self._body.read(n)

    def read1(self, n: int = -1) -> bytes:
        if self._raw is not None and n and n > 0:
            return self._raw.read1(n) if hasattr(self._raw, "read1") else self._raw.read(n)
        return self.read(n)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_bytes(uri: str | Location, *, allowed_roots: Iterable[str] | None = None) -> bytes:
    with open_read(uri, allowed_roots=allowed_roots) as f:
        return f.read()


def read_range(uri: str | Location, start: int, end: int, *, etag: str | None = None,
               allowed_roots: Iterable[str] | None = None) -> bytes:
    """Bytes ``start..end`` (inclusive) of an object, in one request."""
    loc = _loc(uri)
    if loc.scheme == "file":
        fd = os.open(_check_file(loc, allowed_roots, "input file"), os.O_RDONLY)
        try:
            return os.pread(fd, end - start + 1, start)
        finally:
            os.close(fd)
    kwargs: dict[str, Any] = {"Bucket": loc.bucket, "Key": loc.key, "Range": f"bytes={start}-{end}"}
    if etag:
        kwargs["IfMatch"] = etag
    try:
        body = s3_client().get_object(**kwargs)["Body"]
        try:
            return body.read()
        finally:
            body.close()
    except Exception as exc:
        raise _s3_error(exc, loc, "read") from exc


# ---------------------------------------------------------------------------------------------
# Placing local files
def place_local(src: Path, dest: Path, *, link: bool = True) -> str:
    """Put a copy of ``src`` at ``dest`` (atomically); returns "link", "reflink" or "copy"."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}")
            os.link(src, tmp)
            os.replace(tmp, dest)
            return "link"
        except OSError:
            pass
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}")
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
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return how


# ---------------------------------------------------------------------------------------------
# Downloading
@dataclass
class Transfer:
    """One object to fetch to ``dest``; ``size``/``etag`` from the listing when known."""

    source: Location
    dest: Path
    size: int | None = None
    etag: str | None = None


def download_many(transfers: list[Transfer], *, workers: int = DEFAULT_WORKERS,
                  allowed_roots: Iterable[str] | None = None,
                  on_bytes: Callable[[int], None] | None = None,
                  on_file: Callable[[Transfer], None] | None = None,
                  staging_dir: Path | None = None, link: bool = True,
                  cancel: threading.Event | None = None) -> None:
    """Fetch every transfer, in parallel; each file appears at its destination only when complete.

    Transfers are started in list order (callers put what is needed first, first). ``on_bytes``
    and ``on_file`` are called from worker threads. ``staging_dir`` (same filesystem as the
    destinations) holds partial files; by default a hidden directory beside each destination.
    On failure every partial file is removed and the first error is raised.
    """
    roots = list(allowed_roots) if allowed_roots is not None else None
    engine = _Engine(workers, roots, on_bytes, on_file, staging_dir, link, cancel)
    engine.run(transfers)


class _Engine:
    def __init__(self, workers: int, roots: list[str] | None, on_bytes: Callable[[int], None] | None,
                 on_file: Callable[[Transfer], None] | None, staging_dir: Path | None, link: bool,
                 cancel: threading.Event | None) -> None:
        self.workers = max(1, workers)
        self.roots = roots
        self.on_bytes = on_bytes or (lambda n: None)
        self.on_file = on_file or (lambda t: None)
        self.staging_dir = staging_dir
        self.link = link
        self.cancel = cancel or threading.Event()
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.partials: set[Path] = set()
        self.made_dirs: set[Path] = set()

    def _fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc
        self.cancel.set()

    def _tmp_for(self, dest: Path) -> Path:
        d = self.staging_dir or dest.parent / STAGING_DIRNAME
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f"{uuid.uuid4().hex}.part"
        with self.lock:
            self.partials.add(tmp)
            if self.staging_dir is None:
                self.made_dirs.add(d)
        return tmp

    def _finish(self, t: Transfer, tmp: Path) -> None:
        t.dest.parent.mkdir(parents=True, exist_ok=True)
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

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        if self.cancel.is_set():
            return
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported through run()
            if isinstance(exc, ObjectStoreError):
                self._fail(exc)
            elif getattr(exc, "response", None) is not None:
                self._fail(_s3_error(exc, args[0].source, "download"))
            elif isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                self._fail(ObjectStoreError(f"no space left on device while writing {args[0].dest}"))
            else:
                self._fail(ObjectStoreError(f"cannot download {args[0].source.uri}: {exc}"))

    def _file(self, t: Transfer) -> None:
        src = _check_file(t.source, self.roots, "input file")
        if t.size is None:
            t.size = src.stat().st_size
        place_local(src, t.dest, link=self.link)
        self.on_bytes(t.size)
        self.on_file(t)

    def _whole(self, t: Transfer) -> None:
        tmp = self._tmp_for(t.dest)
        kwargs: dict[str, Any] = {"Bucket": t.source.bucket, "Key": t.source.key}
        if t.etag:
            kwargs["IfMatch"] = t.etag
        body = s3_client().get_object(**kwargs)["Body"]
        with open(tmp, "wb") as f:
            self._pump(body, f.fileno(), 0)
        if not self.cancel.is_set():
            self._finish(t, tmp)

    def _pump(self, body: Any, fd: int, offset: int) -> int:
        try:
            while True:
                if self.cancel.is_set():
                    return offset
                chunk = body.read(IO_CHUNK)
                if not chunk:
                    return offset
                view = memoryview(chunk)
                while view:
                    n = os.pwrite(fd, view, offset)
                    offset += n
                    view = view[n:]
                self.on_bytes(len(chunk))
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
        kwargs: dict[str, Any] = {"Bucket": t.source.bucket, "Key": t.source.key,
                                  "Range": f"bytes={start}-{end}"}
        if t.etag:
            kwargs["IfMatch"] = t.etag
        body = s3_client().get_object(**kwargs)["Body"]
        fd = os.open(tmp, os.O_WRONLY)
        try:
            written = self._pump(body, fd, start)
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
    loc = _loc(uri)
    size = etag = None
    if loc.scheme == "s3":
        try:
            head = s3_client().head_object(Bucket=loc.bucket, Key=loc.key)
        except Exception as exc:
            raise _s3_error(exc, loc, "download") from exc
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


def safe_join(base: Path, rel: str, what: str = "") -> Path:
    """``base/rel`` for a slash-separated relative path; ObjectStoreError if it would escape."""
    parts = rel.replace("\\", "/").split("/")
    if rel.startswith("/") or any(p == ".." for p in parts) or not rel or rel.endswith("/"):
        label = f" ({what})" if what else ""
        raise ObjectStoreError(f"object path '{rel}'{label} would be written outside the channel "
                               f"directory {base}")
    return base.joinpath(*[p for p in parts if p not in ("", ".")])


# ---------------------------------------------------------------------------------------------
# Uploading
def upload_file(path: str | os.PathLike[str], uri: str | Location, *,
                allowed_roots: Iterable[str] | None = None, link: bool = True) -> None:
    """Store a local file at ``uri`` (multipart for large files)."""
    upload_many([(Path(path), _loc(uri))], allowed_roots=allowed_roots, link=link)


def upload_tree(local_dir: str | os.PathLike[str], uri_prefix: str | Location, *,
                allowed_roots: Iterable[str] | None = None, link: bool = True,
                only: Iterable[str] | None = None) -> list[str]:
    """Store every file below ``local_dir`` at ``uri_prefix``/<relative path>, in parallel.

    ``only``: restrict to these relative paths. Symbolic links are followed. Returns the
    relative paths uploaded.
    """
    base = Path(local_dir)
    prefix = _loc(uri_prefix)
    rels = sorted(only) if only is not None else sorted(_walk_files(base))
    upload_many([(base / r, prefix.child(r)) for r in rels], allowed_roots=allowed_roots, link=link)
    return rels


def _walk_files(base: Path) -> Iterator[str]:
    for dirpath, _dirs, files in os.walk(base, followlinks=True):
        for name in files:
            yield os.path.relpath(os.path.join(dirpath, name), base).replace(os.sep, "/")


def upload_many(items: list[tuple[Path, Location]], *, allowed_roots: Iterable[str] | None = None,
                link: bool = True, workers: int = DEFAULT_WORKERS) -> None:
    roots = list(allowed_roots) if allowed_roots is not None else None
    s3_items = [(p, loc) for p, loc in items if loc.scheme == "s3"]
    for p, loc in items:
        if loc.scheme == "file":
            dest = _check_file(loc, roots, "output path")
            try:
                place_local(p, dest, link=link)
            except OSError as exc:
                raise ObjectStoreError(f"cannot write {loc.uri}: {exc}") from exc
    if not s3_items:
        return
    from boto3.s3.transfer import TransferConfig, create_transfer_manager

    cfg = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=PART_SIZE,
                         max_concurrency=workers, use_threads=True)
    with create_transfer_manager(s3_client(), cfg) as mgr:
        futures = [(mgr.upload(str(p), loc.bucket, loc.key), loc) for p, loc in s3_items]
        first: BaseException | None = None
        for fut, loc in futures:
            try:
                fut.result()
            except Exception as exc:  # noqa: BLE001 - first failure re-raised below
                if first is None:
                    first = _s3_error(exc, loc, "upload to")
        if first is not None:
            raise first


def put_bytes(data: bytes, uri: str | Location, *, allowed_roots: Iterable[str] | None = None) -> None:
    loc = _loc(uri)
    if loc.scheme == "file":
        dest = _check_file(loc, allowed_roots, "output path")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        return
    try:
        s3_client().put_object(Bucket=loc.bucket, Key=loc.key, Body=data)
    except Exception as exc:
        raise _s3_error(exc, loc, "upload to") from exc
