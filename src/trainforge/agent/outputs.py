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
import time
from collections.abc import Callable
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


def merged_files(roots: list[str]) -> dict[str, str]:
    """Relative path → file, over ``roots`` in order (a later root wins a clash)."""
    files: dict[str, str] = {}
    for root in roots:
        if not os.path.isdir(root):
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


def write_tar_gz(files: dict[str, str], dest: str) -> None:
    import tarfile

    with tarfile.open(dest, "w:gz", compresslevel=6) as tar:
        for rel, full in files.items():
            if rel.endswith("/"):
                tar.add(full, arcname=rel.rstrip("/"), recursive=False)
            else:
                tar.add(full, arcname=rel, recursive=False)


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
    work = tempfile.mkdtemp(prefix=".upload-", dir=paths.instance_dir)
    artifacts = None
    try:
        if include_model:
            model = merged_files([os.path.join(paths.host_ml_of(h), "model") for h in hosts])
            compression = (spec["request"].get("OutputDataConfig") or {}).get("CompressionType") or "GZIP"
            if compression == "NONE":
                artifacts = f"{prefix}/model/"
                items = [(full, artifacts + rel) for rel, full in model.items() if not rel.endswith("/")]
                for full, uri in items:
                    objectstore.upload_file(full, uri, allowed_roots=roots, link=False)
            else:
                artifacts = f"{prefix}/model.tar.gz"
                tar_path = os.path.join(work, "model.tar.gz")
                write_tar_gz(model, tar_path)
                objectstore.upload_file(tar_path, artifacts, allowed_roots=roots)
            log(f"[trainforge] model uploaded to {artifacts} ({sum(1 for r in model if not r.endswith('/'))}"
                f" file(s))")
        data = merged_files([os.path.join(paths.host_ml_of(h), "output", "data") for h in hosts])
        if any(not r.endswith("/") for r in data):
            tar_path = os.path.join(work, "output.tar.gz")
            write_tar_gz(data, tar_path)
            objectstore.upload_file(tar_path, f"{prefix}/output.tar.gz", allowed_roots=roots)
            log(f"[trainforge] output data uploaded to {prefix}/output.tar.gz")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return artifacts
