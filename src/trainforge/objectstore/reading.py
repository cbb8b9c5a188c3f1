"""Listing prefixes and reading objects (whole, ranged, streamed)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, Self

from .base import Location, ObjectInfo, ObjectStoreError, as_location, check_file, relative_key
from .s3 import fast_s3, get_stream, s3_client, s3_error


def list_entries(uri_prefix: str | Location, *, allowed_roots: Iterable[str] | None = None
                 ) -> list[ObjectInfo]:
    """Every object under a prefix, sorted by key (file:// : by relative path)."""
    loc = as_location(uri_prefix)
    if loc.scheme == "s3":
        return _list_s3(loc)
    return _list_file(loc, allowed_roots)


def list_objects(uri_prefix: str | Location, *, allowed_roots: Iterable[str] | None = None
                 ) -> list[tuple[str, int]]:
    """``[(relative_path, size)]`` of every object under the prefix (see module doc for 'relative')."""
    return [(e.rel, e.size) for e in list_entries(uri_prefix, allowed_roots=allowed_roots)]


def _list_s3(loc: Location) -> list[ObjectInfo]:
    """Pages through the fast path while it answers; the rest (or an error) through boto3's paginator."""
    fast = fast_s3()
    listed: list[tuple[str, int, str | None]] = []
    token: str | None = None
    while fast is not None:
        page = fast.list_page(loc.bucket, loc.key, token)
        if page is None:
            break
        listed += page[0]
        token = page[1]
        if token is None:
            return _entries(loc, listed)
    try:
        args = {"Bucket": loc.bucket, "Prefix": loc.key, **({"ContinuationToken": token} if token else {})}
        for answer in s3_client().get_paginator("list_objects_v2").paginate(**args):
            listed += [(obj["Key"], int(obj["Size"]), obj.get("ETag")) for obj in answer.get("Contents", ())]
    except Exception as exc:  # botocore errors
        raise s3_error(exc, loc, "list") from exc
    return _entries(loc, listed)


def _entries(loc: Location, listed: list[tuple[str, int, str | None]]) -> list[ObjectInfo]:
    return [ObjectInfo(relative_key(loc.key, key), size, Location("s3", loc.bucket, key), etag)
            for key, size, etag in listed if not key.endswith("/")]


def _list_file(loc: Location, roots: Iterable[str] | None) -> list[ObjectInfo]:
    roots = list(roots) if roots is not None else None
    real = check_file(loc, roots, "input path")
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


def open_read(uri: str | Location, *, allowed_roots: Iterable[str] | None = None,
              start: int = 0) -> IO[bytes]:
    """A binary stream of the object's bytes (from byte ``start``). Close it when done."""
    loc = as_location(uri)
    if loc.scheme == "file":
        f = open(check_file(loc, allowed_roots, "input file"), "rb")  # noqa: SIM115
        if start:
            f.seek(start)
        return f
    try:
        body = get_stream(loc, start=start or None)
    except Exception as exc:
        raise s3_error(exc, loc, "read") from exc
    return _BodyReader(body)  # type: ignore[return-value]  # file-like enough: read, readinto, close


class _BodyReader:
    """Minimal file-like wrapper around an S3 body stream (read / readinto / close)."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self._body.read()
        return self._body.read(n)

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
    loc = as_location(uri)
    if loc.scheme == "file":
        fd = os.open(check_file(loc, allowed_roots, "input file"), os.O_RDONLY)
        try:
            return os.pread(fd, end - start + 1, start)
        finally:
            os.close(fd)
    try:
        body = get_stream(loc, start=start, end=end, etag=etag)
        try:
            data: bytes = body.read()
        finally:
            body.close()
    except Exception as exc:
        raise s3_error(exc, loc, "read") from exc
    if len(data) != end - start + 1:  # a shorter object, or a server that ignored the Range
        raise ObjectStoreError(f"cannot read {loc.uri}: bytes {start}-{end} asked, {len(data)} received")
    return data
