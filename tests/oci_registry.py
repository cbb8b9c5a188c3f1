"""Container registries and images for the tests, made on this machine: Debian's ``docker-registry``
(Distribution) on a loopback port, plain HTTP or htpasswd + TLS with a CA the test makes with
``openssl``; OCI images written by hand (layers are tar archives of files from this machine, such as
the static busybox of Debian's busybox-static) and pushed with ``skopeo``. Nothing comes from outside.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import reserved_port, wait_until

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "cat", "echo", "id", "pwd", "sleep", "mkdir", "ls", "env", "hostname", "touch", "rm", "test",
           "true", "false", "head", "wc", "printf", "kill", "tr", "cp")


def tools_missing() -> list[str]:
    need = ["docker-registry", "skopeo", "umoci", "openssl", "htpasswd", "runc"]
    missing = [t for t in need if shutil.which(t) is None]
    from trainforge.agent.image import elf_interpreter

    if not os.path.exists(BUSYBOX) or elf_interpreter(BUSYBOX) is not None:
        missing.append(f"a static {BUSYBOX} (busybox-static)")
    return missing


# -- images ---------------------------------------------------------------------------------------------
@dataclass
class Entry:
    """One tar member: a file (content), a directory, a symlink, a hard link, a device node."""

    name: str
    content: bytes = b""
    mode: int = 0o644
    kind: bytes = tarfile.REGTYPE
    linkname: str = ""
    uid: int = 0


def file(name: str, content: bytes | str, mode: int = 0o644) -> Entry:
    return Entry(name, content.encode() if isinstance(content, str) else content, mode)


def busybox_layer(extra: Iterable[Entry] = ()) -> bytes:
    """/bin/busybox with its applets, /usr/bin, /etc/passwd and group, /tmp; then ``extra``."""
    with open(BUSYBOX, "rb") as f:
        entries = [Entry("bin", kind=tarfile.DIRTYPE, mode=0o755), Entry("bin/busybox", f.read(), 0o755)]
    entries += [Entry(f"bin/{a}", kind=tarfile.SYMTYPE, linkname="busybox") for a in APPLETS]
    entries += [Entry("usr", kind=tarfile.DIRTYPE, mode=0o755), Entry("usr/bin", kind=tarfile.DIRTYPE, mode=0o755),
                Entry("etc", kind=tarfile.DIRTYPE, mode=0o755),
                file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\ntrainer:x:1000:1000::/home/trainer:/bin/sh\n"),
                file("etc/group", "root:x:0:\ntrainer:x:1000:\n"),
                Entry("tmp", kind=tarfile.DIRTYPE, mode=0o1777), Entry("root", kind=tarfile.DIRTYPE, mode=0o700)]
    return tar_layer([*entries, *extra])


def tar_layer(entries: Iterable[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type, info.mode, info.uid, info.gid, info.mtime = e.kind, e.mode, e.uid, e.uid, int(time.time())
            info.linkname = e.linkname
            if e.kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = 1, 3
            data = None
            if e.kind == tarfile.REGTYPE:
                info.size = len(e.content)
                data = io.BytesIO(e.content)
            tar.addfile(info, data)
    return buf.getvalue()


def write_layout(path: Path, layers: list[bytes], config: dict[str, Any], tag: str = "latest") -> Path:
    """An OCI image layout at ``path``: gzip layers, the image config (``config``: Entrypoint, Env...)."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return "sha256:" + digest

    descriptors, diff_ids = [], []
    for raw in layers:
        packed = gzip.compress(raw, compresslevel=1, mtime=0)  # fast to build; pulls decompress alike
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(packed),
                            "size": len(packed)})
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    image_config = json.dumps({"architecture": "amd64", "os": "linux", "config": config,
                               "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": put(image_config), "size": len(image_config)},
                           "layers": descriptors}).encode()
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest), "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return path


# -- registries -----------------------------------------------------------------------------------------
@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    proc: subprocess.Popen[bytes]
    root: Path
    user: str = ""
    password: str = ""
    ca_file: str = ""
    _stack: ExitStack = field(default_factory=ExitStack)

    def push(self, layout: Path, repository: str, tag: str = "latest", src_tag: str = "latest") -> str:
        argv = ["skopeo", "--insecure-policy", "copy", "--quiet"]
        if self.ca_file:
            certs = self.root / "push-certs"
            certs.mkdir(exist_ok=True)
            shutil.copyfile(self.ca_file, certs / "ca.crt")
            argv += ["--dest-cert-dir", str(certs), "--dest-creds", f"{self.user}:{self.password}"]
        else:
            argv += ["--dest-tls-verify=false"]
        argv += [f"oci:{layout}:{src_tag}", f"docker://{self.host}/{repository}:{tag}"]
        subprocess.run(argv, check=True, capture_output=True, timeout=300, env={**os.environ, "HOME": str(self.root)})
        return f"{self.host}/{repository}:{tag}"

    def manifest_gets(self) -> int:
        """How many image manifests the registry served (its access log: one per pull)."""
        text = (self.root / "registry.log").read_text(errors="replace")
        return sum(1 for line in text.splitlines()
                   if '"GET /v2/' in line and "/manifests/" in line and '" 200 ' in line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stack.close()


def start_registry(root: Path, *, tls_auth: bool = False, user: str = "puller", password: str = "s3cret") -> Registry:
    root.mkdir(parents=True, exist_ok=True)
    stack = ExitStack()
    port = stack.enter_context(reserved_port())
    host = f"127.0.0.1:{port}"
    http: dict[str, Any] = {"addr": host, "secret": "test"}
    config: dict[str, Any] = {"version": 0.1, "log": {"level": "info", "accesslog": {"disabled": False}},
                              "storage": {"filesystem": {"rootdirectory": str(root / "data")}}, "http": http}
    ca_file = ""
    if tls_auth:
        ca_file = str(make_tls(root))
        http["tls"] = {"certificate": str(root / "server.crt"), "key": str(root / "server.key")}
        htpasswd = subprocess.run(["htpasswd", "-Bbn", user, password], check=True, capture_output=True).stdout
        (root / "htpasswd").write_bytes(htpasswd)
        config["auth"] = {"htpasswd": {"realm": "trainforge-test", "path": str(root / "htpasswd")}}
    (root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    log = open(root / "registry.log", "ab")  # noqa: SIM115 - the registry's for its life
    stack.callback(log.close)
    proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"docker-registry exited: {(root / 'registry.log').read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_until(up, timeout=30, message=f"docker-registry on {host}")
    return Registry(host, proc, root, user if tls_auth else "", password if tls_auth else "", ca_file, stack)


def make_tls(root: Path) -> Path:
    """A test CA and a server certificate for 127.0.0.1 signed by it (openssl)."""
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=root, timeout=60)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=trainforge test CA",
        "-keyout", "ca.key", "-out", "ca.crt")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
        "-out", "server.csr")
    (root / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "san.cnf", "-out", "server.crt")
    return root / "ca.crt"
