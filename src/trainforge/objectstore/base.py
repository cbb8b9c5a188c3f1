"""Locations, the error type, transfer constants and the path-safety rules."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
MULTIPART_THRESHOLD = 16 * MiB
PART_SIZE = 8 * MiB
IO_CHUNK = 1 * MiB
DEFAULT_WORKERS = min(32, max(8, 4 * (os.cpu_count() or 2)))
# GETs in flight while downloading (File and FastFile staging): most wait on the network, not the CPU.
# bench/staging.py, 2 cores: 32 instead of 8 took 1,000 × 1 MiB from 6.2 to 4.5 s and 4 × 256 MiB from
# 4.2 to 3.0 s (median of 5); memory is one 1 MiB buffer per request.
DOWNLOAD_WORKERS = 32
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


def as_location(uri: str | Location) -> Location:
    return uri if isinstance(uri, Location) else parse_uri(uri)


def resolve_inside(path: str | os.PathLike[str], roots: Iterable[str | os.PathLike[str]] | None,
                   what: str = "path") -> Path:
    """``path`` with symlinks resolved; ObjectStoreError unless it lies inside one of ``roots``.

    ``roots=None`` means unrestricted. A path that does not exist yet is resolved through its
    deepest existing ancestor.
    """
    return LocalResolver(roots, what).resolve(os.fspath(path))


class LocalResolver:
    """:func:`resolve_inside` for many paths: the roots are resolved once, and so is each
    directory; a file that is not itself a symbolic link then costs one ``lstat``."""

    def __init__(self, roots: Iterable[str | os.PathLike[str]] | None, what: str = "path") -> None:
        self.roots = None if roots is None else [os.path.realpath(r) for r in roots]
        self.what = what
        self._dirs: dict[str, str] = {}

    def resolve(self, path: str) -> Path:
        directory, name = os.path.split(path)
        real_dir = self._dirs.get(directory)
        if real_dir is None:
            real_dir = self._dirs[directory] = os.path.realpath(directory)
        plain = name not in ("", ".", "..") and not os.path.islink(path)
        real = os.path.join(real_dir, name) if plain else os.path.realpath(path)
        if self.roots is None or any(real == r or real.startswith(r.rstrip("/") + "/") for r in self.roots):
            return Path(real)
        shown = ", ".join(self.roots) or "(none configured)"
        raise ObjectStoreError(f"{self.what} {path} is outside the allowed local roots: {shown}")


def check_file(loc: Location, roots: Iterable[str] | None, what: str) -> Path:
    if loc.scheme != "file":
        return Path()
    return resolve_inside(loc.key, roots, what)


def safe_join(base: Path, rel: str, what: str = "") -> Path:
    """``base/rel`` for a slash-separated relative path; ObjectStoreError if it would escape."""
    parts = rel.replace("\\", "/").split("/")
    if rel.startswith("/") or any(p == ".." for p in parts) or not rel or rel.endswith("/"):
        label = f" ({what})" if what else ""
        raise ObjectStoreError(f"object path '{rel}'{label} would be written outside the channel "
                               f"directory {base}")
    return base.joinpath(*[p for p in parts if p not in ("", ".")])


def relative_key(prefix: str, key: str) -> str:
    """The local relative path of ``key`` listed under ``prefix`` (see the module doc)."""
    if not prefix or prefix.endswith("/"):
        return key[len(prefix):]
    if key.startswith(prefix + "/"):
        return key[len(prefix) + 1:]
    base = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
    return key[len(base):]
