"""Before training: the agent's own AWS configuration, input channels, checkpoints, file systems.

The data plane (``trainforge.data``) does the work; this module only calls it with the
instance's paths and turns its callbacks into reports. ``trainforge.data`` (and boto3 behind
``trainforge.objectstore``) is imported only when the request has something to stage or sync,
so a job without inputs starts with the standard library alone.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainforge.agent import layout
from trainforge.agent.environment import credentials_uri
from trainforge.agent.spec import Paths

# Variables that would make the agent's S3 calls use the server's own credentials, not the job's.
_SERVER_AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ROLE_ARN",
                    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")


def use_job_credentials(spec: dict[str, Any], environ: dict[str, str] | Any = None) -> None:
    """Point this process's AWS configuration at the job: its role (through the control plane's
    container-credentials endpoint), its region, the spec's S3 endpoint."""
    env = os.environ if environ is None else environ
    for key in _SERVER_AWS_KEYS:
        env.pop(key, None)
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = credentials_uri(spec)
    env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = spec["token"]
    env["AWS_DEFAULT_REGION"] = spec["region"]
    env["AWS_REGION"] = spec["region"]
    if spec.get("s3_endpoint_url"):
        env["AWS_ENDPOINT_URL_S3"] = spec["s3_endpoint_url"]
    else:
        env.pop("AWS_ENDPOINT_URL_S3", None)


def needs_data_plane(request: dict[str, Any]) -> bool:
    return bool(request.get("InputDataConfig") or (request.get("CheckpointConfig") or {}).get("S3Uri")
                or (request.get("TensorBoardOutputConfig") or {}).get("S3OutputPath"))


def allowed_roots(spec: dict[str, Any]) -> list[str] | None:
    roots = spec.get("allowed_local_roots")
    return list(roots) if roots is not None else None


class Inputs:
    """What staging left behind for the run: the input session, checkpoint sync, mounts."""

    def __init__(self) -> None:
        self.session: Any = None
        self.sync: Any = None
        self.mounts: list[tuple[str, str, bool]] = []  # (host source, container target, read-only)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


def stage(spec: dict[str, Any], paths: Paths, *, progress: Callable[[str], None],
          log: Callable[[str], None], on_error: Callable[[Exception], None]) -> Inputs:
    """Stage every channel, restore checkpoints and resolve file-system channels (blocking)."""
    from trainforge import data
    from trainforge.data.channels import parse_channel

    request = spec["request"]
    ml_dir = Path(paths.host_ml)
    roots = allowed_roots(spec)
    inputs = Inputs()
    fs_mounts = data.file_system_mounts(request, ml_dir, spec.get("file_systems") or {})
    for m in fs_mounts:
        if spec.get("isolation") == "sandbox":
            inputs.mounts.append((str(m.source), m.container_target, m.read_only))
        else:
            m.link()
            log(f"[trainforge] channel '{m.channel}': {m.target} links to {m.source}"
                + (" (read-only is not enforced without the sandbox)" if m.read_only else ""))
    channels = [parse_channel(request, channel, receivers) for channel, receivers in layout.received_channels(spec)]
    inputs.session = data.stage_inputs(request, ml_dir, spec["host"], channels, progress=progress, log=log,
                                       allowed_roots=roots, file_systems=spec.get("file_systems") or {},
                                       on_error=on_error)
    cc = layout.checkpoint_config(request, paths)
    local = Path(paths.to_host(cc["LocalPath"])) if cc else None
    data.restore_checkpoints(request, ml_dir, allowed_roots=roots, local_path=local, log=log)
    return inputs


def start_sync(spec: dict[str, Any], paths: Paths, inputs: Inputs, log: Callable[[str], None]) -> None:
    """CheckpointConfig / TensorBoardOutputConfig: upload LocalPath continuously while training."""
    request = spec["request"]
    if not ((request.get("CheckpointConfig") or {}).get("S3Uri")
            or (request.get("TensorBoardOutputConfig") or {}).get("S3OutputPath")):
        return
    from trainforge import data

    cc = layout.checkpoint_config(request, paths)
    tb = layout.tensorboard_local_path(request, paths)
    debug = (request.get("DebugHookConfig") or {}).get("LocalPath")
    inputs.sync = data.CheckpointSync(
        request, Path(paths.host_ml), allowed_roots=allowed_roots(spec), log=log,
        checkpoint_local_path=Path(paths.to_host(cc["LocalPath"])) if cc else None,
        tensorboard_local_path=Path(paths.to_host(tb)) if tb else None,
        debug_local_path=Path(paths.to_host(debug)) if debug else None,
        device=paths.volume_device()).start()


def run_staging(target: Callable[[], Any], wake: threading.Event) -> tuple[list[Any], threading.Thread]:
    """Run ``target`` in a thread; the caller waits on ``wake`` (set when it ends) or a stop."""
    box: list[Any] = []

    def work() -> None:
        try:
            box.append(target())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box.append(exc)
        wake.set()

    t = threading.Thread(target=work, name="staging", daemon=True)
    t.start()
    return box, t
