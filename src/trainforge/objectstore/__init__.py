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

from .base import (
                   DEFAULT_WORKERS,
                   DOWNLOAD_WORKERS,
                   IO_CHUNK,
                   MULTIPART_THRESHOLD,
                   PART_SIZE,
                   STAGING_DIRNAME,
                   Location,
                   ObjectInfo,
                   ObjectStoreError,
                   as_location,
                   check_file,
                   parse_uri,
                   relative_key,
                   resolve_inside,
                   safe_join,
)
from .reading import list_entries, list_objects, open_read, read_bytes, read_range
from .s3 import get_stream, reset_client, s3_client, s3_endpoint_url, s3_error
from .transfer import (
                   Transfer,
                   download_file,
                   download_many,
                   download_prefix,
                   place_local,
                   put_bytes,
                   upload_file,
                   upload_many,
                   upload_tree,
)

__all__ = [
    "DEFAULT_WORKERS", "DOWNLOAD_WORKERS", "IO_CHUNK", "MULTIPART_THRESHOLD", "PART_SIZE", "STAGING_DIRNAME", "Location",
    "ObjectInfo", "ObjectStoreError", "Transfer", "as_location", "check_file", "download_file",
    "download_many", "download_prefix", "get_stream", "list_entries", "list_objects", "open_read",
    "parse_uri", "place_local", "put_bytes", "read_bytes", "read_range", "relative_key", "reset_client",
    "resolve_inside", "s3_client", "s3_endpoint_url", "s3_error", "safe_join", "upload_file",
    "upload_many", "upload_tree",
]
