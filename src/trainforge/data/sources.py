"""What a channel consists of: the ordered list of items an instance receives.

An *item* is one object (S3Prefix, ManifestFile) or one JSON line (AugmentedManifestFile).

- **S3Prefix**: every object under ``S3Uri`` (``objectstore.list_entries``), sorted by key; the
  local path is the key relative to the prefix's directory part (key minus prefix when the prefix
  ends in ``/``).
- **ManifestFile**: ``S3Uri`` names a JSON array ``[{"prefix": "s3://b/p/"}, "rel/1", ...]``; the
  items are ``prefix + rel`` in manifest order, local path ``rel``.
- **AugmentedManifestFile**: ``S3Uri`` names a JSON Lines file; each non-blank line is one item
  carrying its ``AttributeNames`` in order. An attribute whose name ends in ``-ref`` is a URI
  whose object bytes are sent; a string attribute is sent as its UTF-8 text; any other JSON value
  as compact JSON text. A line missing an attribute fails the channel.

Distribution (``assign``): the list is first put in its canonical order (S3Prefix: key order;
manifests: file order), then, with ``ShuffleConfig.Seed``, permuted by ``random.Random(f"{seed}:{epoch}")``
(identical on every host and in every process; Pipe mode uses epoch 0, 1, 2, …; File and
FastFile use epoch 0). ``ShardedByS3Key`` then gives host ``i`` of the ``n`` hosts that receive
the channel (``Channel.hosts``: every host, or only those of the instance groups its
InstanceGroupNames lists) the items at positions ``i, i+n, i+2n, …`` of that list: every item goes
to exactly one of those hosts, counts differ by at most one, and — because the permutation changes
per epoch — items move between hosts across Pipe epochs. Hosts beyond the number of items get an
empty channel.
"""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import objectstore
from ..objectstore import Location, ObjectStoreError
from .channels import Channel
from .errors import DataError


@dataclass
class Item:
    rel: str  # local relative path (objects); "" for augmented-manifest lines
    location: Location | None = None
    size: int | None = None
    etag: str | None = None
    # AugmentedManifestFile: per attribute, in AttributeNames order, literal bytes or a Location
    attributes: list[bytes | Location] = field(default_factory=list)
    line_no: int = 0


def list_items(ch: Channel, *, allowed_roots: list[str] | None, need_sizes: bool) -> list[Item]:
    """The channel's items in canonical order (before shuffle and sharding)."""
    assert ch.uri is not None
    try:
        if ch.data_type == "S3Prefix":
            entries = objectstore.list_entries(ch.uri, allowed_roots=allowed_roots)
            entries.sort(key=lambda e: e.location.key)
            items = [Item(e.rel, e.location, e.size, e.etag) for e in entries]
            if not items:  # SageMaker's own refusal, in its words
                raise DataError(f"ClientError: Data download failed: No S3 objects found under S3 URL "
                                f"'{ch.uri}' given in input data source (channel '{ch.name}'). Please "
                                "ensure that the bucket exists and that objects exist under that S3 prefix.")
        elif ch.data_type == "ManifestFile":
            items = _manifest_items(ch, allowed_roots)
            if need_sizes:
                _fill_sizes(items, allowed_roots)
        elif ch.data_type == "AugmentedManifestFile":
            items = _augmented_items(ch, allowed_roots)
        else:
            raise DataError(f"channel '{ch.name}': unsupported S3DataType '{ch.data_type}'")
    except ObjectStoreError as exc:
        raise DataError(f"channel '{ch.name}': {exc}") from exc
    return items


def assign(items: list[Any], ch: Channel, host: str, epoch: int = 0) -> list[Any]:
    """Host ``host``'s share: shuffle (when a seed is set) and shard the canonical list; see the module doc."""
    if host not in ch.hosts:
        raise DataError(f"channel '{ch.name}' is not received by {host} (its hosts: {', '.join(ch.hosts)})",
                        user=False)
    order = list(items)
    if ch.shuffle_seed is not None:
        random.Random(f"{ch.shuffle_seed}:{epoch}").shuffle(order)
    n_hosts = len(ch.hosts)
    if ch.distribution == "ShardedByS3Key" and n_hosts > 1:
        order = order[ch.hosts.index(host)::n_hosts]
    return order


def _manifest_items(ch: Channel, roots: list[str] | None) -> list[Item]:
    assert ch.uri is not None
    raw = objectstore.read_bytes(ch.uri, allowed_roots=roots)
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise DataError(f"channel '{ch.name}': manifest {ch.uri} is not valid JSON: {exc}") from exc
    if (not isinstance(doc, list) or not doc or not isinstance(doc[0], dict)
            or not isinstance(doc[0].get("prefix"), str)):
        raise DataError(f"channel '{ch.name}': manifest {ch.uri} must be a JSON array starting with "
                        '{"prefix": "s3://bucket/prefix/"}')
    prefix = objectstore.parse_uri(doc[0]["prefix"])
    items = []
    for entry in doc[1:]:
        if not isinstance(entry, str) or not entry:
            raise DataError(f"channel '{ch.name}': manifest {ch.uri} has a non-string entry {entry!r}")
        try:
            objectstore.safe_join(Path("/"), entry, f"manifest {ch.uri}")
        except ObjectStoreError as exc:
            raise DataError(f"channel '{ch.name}': {exc}") from exc
        items.append(Item(entry, prefix.child(entry)))
    return items


def _fill_sizes(items: list[Item], roots: list[str] | None) -> None:
    def size_of(item: Item) -> None:
        loc = item.location
        assert loc is not None
        if loc.scheme == "file":
            p = objectstore.resolve_inside(loc.key, roots, "input file")
            if not p.is_file():
                raise ObjectStoreError(f"manifest entry {loc.uri}: no such file")
            item.size = p.stat().st_size
            return
        try:
            head = objectstore.s3_client().head_object(Bucket=loc.bucket, Key=loc.key)
        except Exception as exc:
            raise ObjectStoreError(f"manifest entry {loc.uri}: no such object ({exc})") from exc
        item.size, item.etag = int(head["ContentLength"]), head.get("ETag")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(size_of, items))


def _augmented_items(ch: Channel, roots: list[str] | None) -> list[Item]:
    assert ch.uri is not None
    if not ch.attribute_names:
        raise DataError(f"channel '{ch.name}': AugmentedManifestFile needs AttributeNames")
    raw = objectstore.read_bytes(ch.uri, allowed_roots=roots)
    items = []
    for no, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise DataError(f"channel '{ch.name}': line {no} of {ch.uri} is not JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise DataError(f"channel '{ch.name}': line {no} of {ch.uri} is not a JSON object")
        attrs: list[bytes | Location] = []
        for name in ch.attribute_names:
            if name not in obj:
                raise DataError(f"channel '{ch.name}': line {no} of {ch.uri} has no attribute '{name}'")
            value = obj[name]
            if name.endswith("-ref"):
                if not isinstance(value, str):
                    raise DataError(f"channel '{ch.name}': line {no}: '{name}' must be a URI string")
                attrs.append(objectstore.parse_uri(value))
            elif isinstance(value, str):
                attrs.append(value.encode())
            else:
                attrs.append(json.dumps(value, separators=(",", ":")).encode())
        items.append(Item("", attributes=attrs, line_no=no))
    return items


def check_paths(ch: Channel, items: list[Item], dest: Path) -> list[Path]:
    """Destination of every item under ``dest``; DataError on escapes and file/dir clashes."""
    paths: list[Path] = []
    seen: dict[Path, str] = {}
    for it in items:
        try:
            p = objectstore.safe_join(dest, it.rel, it.location.uri if it.location else "")
        except ObjectStoreError as exc:
            raise DataError(f"channel '{ch.name}': {exc}") from exc
        if p in seen:
            raise DataError(f"channel '{ch.name}': objects {seen[p]} and {it.rel} map to the same "
                            f"local path {p.relative_to(dest)}")
        seen[p] = it.rel
        paths.append(p)
    dirs = {a for p in paths for a in p.relative_to(dest).parents}
    for p in paths:
        if p.relative_to(dest) in dirs:
            raise DataError(f"channel '{ch.name}': object '{p.relative_to(dest)}' is both a file and "
                            "a directory prefix of other objects")
    return paths
