"""Image references as Docker writes them: ``[host[:port]/]repository[:tag][@digest]``.

A first path component with a ``.`` or a ``:``, or ``localhost``, is a registry host; anything else
is Docker Hub (``docker.io``, one-component names under ``library/``). No tag and no digest means
``latest``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                   r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class ReferenceError(ValueError):
    """Not an image reference."""


@dataclass(frozen=True)
class Reference:
    host: str
    repository: str
    tag: str = ""
    digest: str = ""

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}{self.suffix}"

    @property
    def suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def on(self, host: str, prefix: str = "") -> Reference:
        """The same image under another registry host (a mirror), optionally below ``prefix``."""
        repository = f"{prefix.strip('/')}/{self.repository}" if prefix.strip("/") else self.repository
        return Reference(host, repository, self.tag, self.digest)


def parse(text: str) -> Reference:
    ref = text.strip()
    if not ref or any(c.isspace() for c in ref) or "://" in ref:
        raise ReferenceError(f"'{text}' is not a container image reference")
    digest = ""
    if "@" in ref:
        ref, digest = ref.split("@", 1)
        if not _DIGEST.match(digest):
            raise ReferenceError(f"'{text}': the digest must be sha256:<64 hex digits>")
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
        if not _HOST.match(host):
            raise ReferenceError(f"'{text}': '{host}' is not a registry host")
    else:
        host, path = DOCKER_HUB, ref
    tag = ""
    name, colon, maybe_tag = path.rpartition(":")
    if colon and "/" not in maybe_tag:
        path, tag = name, maybe_tag
        if not _TAG.match(tag):
            raise ReferenceError(f"'{text}': '{tag}' is not a valid tag")
    if host == DOCKER_HUB and "/" not in path:
        path = "library/" + path
    if not _REPOSITORY.match(path):
        raise ReferenceError(f"'{text}': '{path}' is not a valid repository name")
    if not tag and not digest:
        tag = "latest"
    return Reference(host, path, tag, digest)
