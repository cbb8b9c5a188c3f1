"""Getting an image into the cache (:mod:`trainforge.images.store`) once, whoever asks at the same time.

:func:`ensure` takes the reference's lock; the first caller copies the image with ``skopeo copy``
(registry → an OCI layout under ``tmp/``, layers into the shared ``blobs/`` directory, every digest
verified), unpacks it (:mod:`trainforge.images.unpack`) and renames both into place; the callers
waiting on the lock then find it there and pull nothing. A pull that fails leaves no layout and no
unpacked image behind (skopeo writes a blob under its digest only once verified; a killed skopeo's
temporary files are collected later). A tag is resolved once: later jobs reuse the cached image
until ``trainforge images pull`` refreshes it or ``trainforge images rm`` removes it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainforge.algorithms import builtin
from trainforge.images import registries, store, unpack
from trainforge.images.reference import Reference, ReferenceError, parse

SKOPEO = "skopeo"
PULL_TIMEOUT = 3600
LAYOUT_NAME = "image"


class PullError(RuntimeError):
    """The image cannot be had: the message names the image and the cause, in AWS's manner."""


@dataclass
class Image:
    reference: str
    digest: str
    bundle: str  # rootfs/<hex>-<uid>: rootfs/ and image.json
    config: unpack.ImageConfig
    pulled: bool
    seconds: float
    lock_fd: int | None = None  # a shared lock on the unpacked image: never evicted while held

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    @property
    def rootfs(self) -> str:
        return os.path.join(self.bundle, "rootfs")


def ensure(data_dir: str, reference: str, uid: int, settings: dict[str, Any] | None = None,
           provider_arn: str | None = None, refresh: bool = False,
           log: Callable[[str], None] | None = None, hold: bool = False, cached_only: bool = False) -> Image:
    """The image ``reference`` unpacked for instances whose root is host ``uid``, pulled if needed
    (``cached_only``: :class:`PullError` instead of a pull or an unpack); with ``hold``, the image
    stays locked against eviction until :meth:`Image.release`."""
    started = time.monotonic()
    try:
        ref = parse(reference)
    except ReferenceError as exc:
        raise PullError(f"Cannot pull the training image '{reference}': {exc}") from None
    st = store.Store.of(data_dir)
    key = str(ref)
    pulled = False
    with st.locked(st.ref_lock(key)), st.locked("gc", shared=True):
        record = None if refresh else st.record(key)
        if record is None and cached_only:
            raise PullError(f"the training image '{reference}' is not cached")
        if record is None:
            record = _pull(st, ref, reference, registries_of(settings), provider_arn)
            pulled = True
        digest = str(record["digest"])
        bundle = st.rootfs_dir(digest, uid)
        # held before it is looked for: nothing evicts it between the look and the hold (nor, while
        # the reference's lock is held, its layout that the unpack reads); after, nothing evicts it
        held = st.hold(os.path.basename(bundle))
        try:
            if not os.path.isdir(bundle) and cached_only:
                raise PullError(f"the training image '{reference}' is not unpacked")
            if not os.path.isdir(bundle):
                _unpack(st, key, digest, bundle, uid, reference, log)
        except BaseException:
            os.close(held)
            raise
    st.touch(bundle)
    limit = float((settings or {}).get("image_cache_gb") or store.DEFAULT_CACHE_GB)
    if pulled:
        st.evict(int(limit * 1024 ** 3), log)
    config = unpack.ImageConfig.load(os.path.join(bundle, "image.json"))
    image = Image(key, digest, bundle, config, pulled, time.monotonic() - started, held)
    if not hold:
        image.release()
    return image


def registries_of(settings: dict[str, Any] | None) -> dict[str, Any]:
    return dict((settings or {}).get("registries") or {})


def _pull(st: store.Store, ref: Reference, shown: str, regs: dict[str, Any], provider_arn: str | None) -> dict:
    try:
        route = registries.route(ref, regs, provider_arn)
    except registries.CredentialsError as exc:
        raise PullError(f"Cannot pull the training image '{shown}': {exc}") from None
    st.sweep_tmp(PULL_TIMEOUT + 600)
    work = tempfile.mkdtemp(prefix="pull-", dir=st.path("tmp"))
    try:
        layout = os.path.join(work, "layout")
        argv = [SKOPEO, "--insecure-policy", "copy", "--quiet", "--retry-times", "2"]
        argv += ["--src-tls-verify=false"] if route.plain_http else []
        if route.ca_file:
            certs = os.path.join(work, "certs")
            os.makedirs(certs)
            shutil.copyfile(route.ca_file, os.path.join(certs, "ca.crt"))
            argv += ["--src-cert-dir", certs]
        if route.credentials is not None:
            authfile = os.path.join(work, "auth.json")
            token = base64.b64encode(":".join(route.credentials).encode()).decode()
            with open(os.open(authfile, os.O_WRONLY | os.O_CREAT, 0o600), "w", encoding="utf-8") as f:
                json.dump({"auths": {route.source.host: {"auth": token}}}, f)
            argv += ["--src-authfile", authfile]
        else:
            argv += ["--src-no-creds"]
        argv += ["--dest-shared-blob-dir", st.path("blobs"), route.transport, f"oci:{layout}:{LAYOUT_NAME}"]
        if shutil.which(SKOPEO) is None:
            raise PullError(f"Cannot pull the training image '{shown}': skopeo is not installed on the "
                            "trainforge host (Debian: apt-get install skopeo)")
        if shutil.which("setpriv"):  # an agent ended (a stop) ends its pull; the next one resumes it
            argv = ["setpriv", "--pdeathsig", "KILL", "--", *argv]
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=PULL_TIMEOUT,
                                  check=False, env=_skopeo_env(work))
        except subprocess.TimeoutExpired:
            raise PullError(f"Cannot pull the training image '{shown}': the pull took over "
                            f"{PULL_TIMEOUT} s") from None
        if done.returncode != 0:
            raise PullError(f"Cannot pull the training image '{shown}'"
                            + (f" (from {route.source})" if str(route.source) != str(ref) else "")
                            + f": {cause(done.stderr.decode(errors='replace'))}"
                            + (f". {builtin_note}" if (builtin_note := builtin.unavailable_reason(shown)) else ""))
        with open(os.path.join(layout, "index.json"), encoding="utf-8") as f:
            digest = str(json.load(f)["manifests"][0]["digest"])
        _link_blobs(layout)
        record = {"reference": str(ref), "digest": digest, "source": str(route.source), "pulled_at": time.time()}
        with open(os.path.join(layout, "ref.json"), "w", encoding="utf-8") as f:
            json.dump(record, f)
        target = st.ref_dir(str(ref))
        if os.path.isdir(target):  # a refresh: the old layout goes
            shutil.rmtree(target, ignore_errors=True)
        os.rename(layout, target)
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _link_blobs(layout: str) -> None:
    """The layout's ``blobs`` is the shared directory (``refs/<key>`` and ``tmp/<x>`` are both two
    levels below the store: one relative link serves both)."""
    blobs = os.path.join(layout, "blobs")
    if os.path.isdir(blobs) and not os.path.islink(blobs):
        shutil.rmtree(blobs)
    os.symlink(os.path.join("..", "..", "blobs"), blobs)


def _unpack(st: store.Store, key: str, digest: str, bundle: str, uid: int, shown: str,
            log: Callable[[str], None] | None) -> None:
    work = tempfile.mkdtemp(prefix="unpack-", dir=st.path("tmp"))
    try:
        staged = os.path.join(work, "bundle")
        try:
            unpack.unpack(st.ref_dir(key), LAYOUT_NAME, staged, uid)
        except unpack.UnpackError as exc:
            raise PullError(f"Cannot unpack the training image '{shown}': {exc}") from None
        found = unpack.sanitise(os.path.join(staged, "rootfs"))
        if log is not None and (found.devices or found.setid):
            log(f"image {shown}: dropped {len(found.devices)} device node(s) and the set-uid/set-gid bits "
                f"of {len(found.setid)} file(s)")
        manifest = st.read_blob(digest)
        config = unpack.ImageConfig.of(st.read_blob(str(manifest["config"]["digest"])))
        with open(os.path.join(staged, "image.json"), "w", encoding="utf-8") as f:
            json.dump(config.as_dict(), f)
        with open(os.path.join(staged, "size.json"), "w", encoding="utf-8") as f:
            json.dump({"bytes": found.bytes}, f)
        for name in os.listdir(staged):  # umoci's own config.json and mtree: not ours to use
            if name not in ("rootfs", "image.json", "size.json"):
                os.unlink(os.path.join(staged, name))
        os.chmod(staged, 0o755)
        try:
            os.rename(staged, bundle)
        except OSError:
            if not os.path.isdir(bundle):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _skopeo_env(work: str) -> dict[str, str]:
    """skopeo without the server's own registry logins or policy: HOME and XDG dirs in the pull's."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
                                                         "http_proxy", "https_proxy", "no_proxy")}
    env.update({"HOME": work, "XDG_RUNTIME_DIR": work, "XDG_CONFIG_HOME": work})
    return env


def cause(stderr: str) -> str:
    """The cause of a failed ``skopeo copy``, in a user's words (the registry's own last)."""
    text = " ".join(stderr.split())
    low = text.lower()
    if "manifest unknown" in low or "name unknown" in low or "not found" in low and "manifest" in low:
        what = "the image does not exist in the registry (manifest unknown)"
    elif "unauthorized" in low or "authentication required" in low or "denied" in low or "401" in low:
        what = "the registry refused the credentials (unauthorized)"
    elif "x509" in low or "certificate" in low or "tls" in low and "handshake" in low:
        what = "the registry's TLS certificate is not trusted"
    elif any(s in low for s in ("connection refused", "no such host", "i/o timeout", "network is unreachable",
                                "connection reset", "server misbehaving", "dial tcp")):
        what = "the registry cannot be reached"
    else:
        what = "the registry's answer"
    return f"{what}: {_fatal(stderr)[:400]}"


def _fatal(stderr: str) -> str:
    """skopeo's last error message (``level=fatal msg="..."``), else its last line."""
    found = re.findall(r'level=(?:fatal|error) msg="((?:[^"\\]|\\.)*)"', stderr)
    if found:
        return found[-1].replace('\\"', '"')
    lines = stderr.strip().splitlines()
    return lines[-1] if lines else "no message"
