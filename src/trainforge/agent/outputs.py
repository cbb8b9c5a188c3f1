"""The job's outputs, packed and uploaded by the leader (docs/INTERNALS.md "Outputs", CONTRACT §5).

After its own training process has exited, every instance writes ``instance_dir/.exited``. The
leader (``hosts[0]``) waits for every host's marker, merges ``opt/ml/model`` of all hosts in host
order (a later host's file replaces an earlier one's of the same name) and uploads:

- ``<S3OutputPath>/<job>/output/model.tar.gz`` (names relative to the model directory, no
  ``./``), or with OutputDataConfig.CompressionType ``NONE`` every file under
  ``<S3OutputPath>/<job>/output/model/`` — that prefix (with its trailing ``/``) is then the
  ModelArtifacts URI;
- ``<S3OutputPath>/<job>/output/output.tar.gz`` from ``opt/ml/output/data`` merged the same way,
  when any host wrote something there.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainforge.agent import instance_files
from trainforge.agent.spec import Paths, output_prefix

PEER_POLL_SECONDS = 0.1


def wait_for_peers(spec: dict[str, Any], paths: Paths, until: float,
                   give_up: Callable[[], bool] = lambda: False) -> list[str]:
    """Wait for every other host's ``.exited``; returns the hosts still missing at ``until``."""
    others = [h for h in spec["hosts"] if h != spec["host"]]
    while True:
        missing = [h for h in others if not instance_files.has_exited(paths.instance_dir_of(h))]
        if not missing or time.time() >= until or give_up():
            return missing
        time.sleep(PEER_POLL_SECONDS)


def merged_files(roots: list[str], devices: list[int | None] | None = None) -> dict[str, str]:
    """Relative path → file, over ``roots`` in order (a later root wins a clash). With ``devices``
    (the instances' volumes, in the sandbox), a root that is not a directory on its volume (a
    symlink out of it) is skipped; symlinked subdirectories are never followed."""
    files: dict[str, str] = {}
    for i, root in enumerate(roots):
        device = devices[i] if devices else None
        try:
            st = os.stat(root)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or (device is not None and st.st_dev != device):
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                files[rel] = full
            for name in dirnames:  # empty directories are kept too (SageMaker's tar keeps them)
                full = os.path.join(dirpath, name)
                if not os.listdir(full):
                    files.setdefault(os.path.relpath(full, root).replace(os.sep, "/") + "/", full)
    return dict(sorted(files.items()))


def write_tar_gz(files: dict[str, str], dest: str, device_of: Callable[[str], int | None] = lambda f: None) -> None:
    """The archive of ``files``; a symlink is archived as a link (its target is never read). With
    ``device_of`` (the sandbox), a file is read only if it lies on its instance's volume."""
    import tarfile

    from trainforge.objectstore.transfer import open_on_device

    with tarfile.open(dest, "w:gz", compresslevel=6) as tar:
        for rel, full in files.items():
            device = device_of(full)
            if rel.endswith("/") or device is None or os.path.islink(full):
                tar.add(full, arcname=rel.rstrip("/"), recursive=False)
                continue
            try:
                f = open_on_device(Path(full), device)
            except OSError:
                continue  # not a regular file of the instance's own
            with f:
                tar.addfile(tar.gettarinfo(arcname=rel, fileobj=f), f)


def upload(spec: dict[str, Any], paths: Paths, *, include_model: bool = True,
           log: Callable[[str], None] = lambda m: None) -> str | None:
    """Pack and upload; returns the ModelArtifacts URI (None when no model was uploaded).

    Raises ``trainforge.objectstore.ObjectStoreError`` / ``OSError`` when an upload fails.
    """
    import shutil
    import tempfile

    from trainforge import objectstore

    prefix = output_prefix(spec)
    if prefix is None:
        return None
    roots = spec.get("allowed_local_roots")
    hosts = list(spec["hosts"])
    devices = [paths.volume_device(h) for h in hosts] if paths.local_root else None
    by_root = {paths.instance_dir_of(h): d for h, d in zip(hosts, devices or [])}

    def device_of(full: str) -> int | None:
        """The volume of the instance a file was found under (sandbox), else None."""
        return next((d for root, d in by_root.items() if full.startswith(root + os.sep)), None)

    work = tempfile.mkdtemp(prefix=".upload-", dir=paths.instance_dir)
    artifacts = None
    try:
        if include_model:
            model = merged_files([os.path.join(paths.host_ml_of(h), "model") for h in hosts], devices)
            compression = (spec["request"].get("OutputDataConfig") or {}).get("CompressionType") or "GZIP"
            if compression == "NONE":
                artifacts = f"{prefix}/model/"
                items = [(full, artifacts + rel) for rel, full in model.items() if not rel.endswith("/")]
                for full, uri in items:
                    if devices is not None and (os.path.islink(full) or not os.path.isfile(full)):
                        continue  # an instance's link is not followed
                    objectstore.upload_file(full, uri, allowed_roots=roots, link=False, device=device_of(full))
            else:
                artifacts = f"{prefix}/model.tar.gz"
                tar_path = os.path.join(work, "model.tar.gz")
                write_tar_gz(model, tar_path, device_of)
                objectstore.upload_file(tar_path, artifacts, allowed_roots=roots)
            log(f"[trainforge] model uploaded to {artifacts} ({sum(1 for r in model if not r.endswith('/'))}"
                f" file(s))")
        data = merged_files([os.path.join(paths.host_ml_of(h), "output", "data") for h in hosts], devices)
        if any(not r.endswith("/") for r in data):
            tar_path = os.path.join(work, "output.tar.gz")
            write_tar_gz(data, tar_path, device_of)
            objectstore.upload_file(tar_path, f"{prefix}/output.tar.gz", allowed_roots=roots)
            log(f"[trainforge] output data uploaded to {prefix}/output.tar.gz")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return artifacts
