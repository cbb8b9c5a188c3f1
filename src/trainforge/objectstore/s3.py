"""The S3 client (boto3, standard AWS configuration) and the fast GET path.

``s3_client()`` builds a boto3 client lazily from the standard configuration and caches it per
process and per relevant environment (endpoint, profile, credentials variables), so changing the
environment (as the agent does when it switches to the job's credentials) gives a fresh client.

``get_stream()`` is the hot path of every download. botocore spends about 3 ms of CPU per
request (endpoint rules, event hooks, parsing) — more than a 1 MiB object takes to transfer on
loopback. When a custom endpoint is configured (MinIO, Ceph, moto, rclone, any S3-compatible
store), GETs are therefore signed and sent by :mod:`.fast_s3` with the job's (refreshable)
credentials (~0.05 ms of CPU). Any non-success answer, connection error or missing credentials
falls back to the boto3 client, which then retries or raises the proper ``ClientError``: only the
happy path is shortened. Against AWS itself (no custom endpoint),
boto3 is always used (virtual-host addressing, region redirects).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import DEFAULT_WORKERS, DOWNLOAD_WORKERS, Location, ObjectStoreError

if TYPE_CHECKING:  # pragma: no cover
    from botocore.client import BaseClient

    from .fast_s3 import FastS3

_client_lock = threading.Lock()
_client_cache: dict[tuple[Any, ...], _State] = {}
_ENV_KEYS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "S3_ENDPOINT_URL", "AWS_PROFILE",
             "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
             "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
             "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")
FAST_PATH = os.environ.get("TRAINFORGE_S3_FAST_GET", "1") != "0"


@dataclass
class _State:
    client: Any
    fast: FastS3 | None  # the fast GET path (custom endpoints only)


def s3_endpoint_url() -> str | None:
    """The S3 endpoint the standard configuration selects (None = AWS's own)."""
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "S3_ENDPOINT_URL"):
        if os.environ.get(key):
            return os.environ[key].rstrip("/")
    return None


def _state() -> _State:
    cache_key = (os.getpid(),) + tuple(os.environ.get(k) for k in _ENV_KEYS)
    state = _client_cache.get(cache_key)
    if state is not None:
        return state
    with _client_lock:
        state = _client_cache.get(cache_key)
        if state is None:
            from trainforge.sitepaths import ensure_site_packages

            ensure_site_packages()
            import boto3
            from botocore.config import Config as BotoConfig

            session = boto3.session.Session()
            region = session.region_name or "us-east-1"
            endpoint = s3_endpoint_url()
            s3cfg: dict[str, Any] = {}
            if endpoint:
                # Self-hosted stores (MinIO, Ceph, moto, rclone) want path-style addressing.
                s3cfg["addressing_style"] = "path"
            cfg = BotoConfig(max_pool_connections=max(DEFAULT_WORKERS, DOWNLOAD_WORKERS) + 8,
                             retries={"max_attempts": 8, "mode": "standard"},
                             s3=s3cfg or None, signature_version="s3v4",
                             connect_timeout=10, read_timeout=120)
            client = session.client("s3", region_name=region, endpoint_url=endpoint, config=cfg)
            fast = None
            if endpoint and FAST_PATH:
                from botocore.httpsession import get_cert_path

                from .fast_s3 import FastS3

                # the CA bundle botocore's own client verifies with (AWS_CA_BUNDLE, ca_bundle, certifi)
                ca_bundle = session._session.get_config_variable("ca_bundle") or get_cert_path(True)
                fast = FastS3(endpoint, session, region, ca_bundle)
            state = _State(client, fast)
            _drop_cached()
            _client_cache[cache_key] = state
    return state


def s3_client() -> BaseClient:
    """A boto3 S3 client from the standard AWS configuration, cached per process (and per config)."""
    return _state().client


def fast_s3() -> FastS3 | None:
    """The fast path to the custom endpoint (None: AWS itself, or the fast path turned off)."""
    return _state().fast


def transfer_manager(*, multipart_threshold: int, part_size: int, workers: int) -> Any:
    """An s3transfer manager (parallel, multipart) on :func:`s3_client`; a context manager.

    Built here, after :func:`_state` loaded the site packages: in the agent (``python -S``) an upload
    may be the first S3 use of the process.
    """
    client = s3_client()
    from boto3.s3.transfer import TransferConfig, create_transfer_manager

    cfg = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=part_size,
                         max_concurrency=workers, use_threads=True)
    return create_transfer_manager(client, cfg)


def reset_client() -> None:
    """Forget the cached client (tests that change the AWS environment)."""
    with _client_lock:
        _drop_cached()


def _drop_cached() -> None:
    for state in _client_cache.values():
        if state.fast is not None:
            state.fast.close()
    _client_cache.clear()


def s3_error(exc: BaseException, loc: Location, action: str) -> ObjectStoreError:
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
    if code in ("PreconditionFailed", "412"):
        return ObjectStoreError(f"cannot {action} {loc.uri}: the object changed while it was being read")
    return ObjectStoreError(f"cannot {action} {loc.uri}: {exc}")


def get_stream(loc: Location, *, start: int | None = None, end: int | None = None,
               etag: str | None = None) -> Any:
    """A stream (``read(n)``, ``close()``) of an S3 object's bytes ``start..end`` (inclusive).

    Raises botocore's ClientError (through the boto3 fallback) on failure; callers map it with
    :func:`s3_error`.
    """
    state = _state()
    if state.fast is not None:
        body = state.fast.get(loc, start, end, etag)
        if body is not None:
            return body
    kwargs: dict[str, Any] = {"Bucket": loc.bucket, "Key": loc.key}
    if start is not None:
        kwargs["Range"] = f"bytes={start}-{'' if end is None else end}"
    if etag:
        kwargs["IfMatch"] = etag
    return state.client.get_object(**kwargs)["Body"]
