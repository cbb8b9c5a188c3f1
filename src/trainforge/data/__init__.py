"""The data plane: input channels, checkpoints and TensorBoard sync for one training instance.

What the agent calls (see each module's doc for the exact semantics):

- :func:`stage_inputs` (``staging.py``) — before training: File channels downloaded, FastFile
  channels visible, Pipe FIFOs and feeders started. Returns an :class:`InputSession`; call
  ``close()`` when the training process has exited.
- :func:`file_system_mounts` (``filesystems.py``) — FileSystemDataSource channels resolved to
  ``(host directory, /opt/ml/input/data/<channel>, read_only)`` for the agent to bind-mount.
- :func:`restore_checkpoints` and :class:`CheckpointSync` (``checkpoints.py``) — CheckpointConfig
  restore before training; CheckpointConfig and TensorBoardOutputConfig sync while it runs.
- :func:`volume_error` (``volume.py``) — while training: VolumeSizeInGB against what the
  instance has written under /opt/ml (the agent polls it).
- :class:`DataError` — every failure; its message is the job's FailureReason.
"""

from __future__ import annotations

from .checkpoints import CheckpointSync, DirectorySync, container_path, restore_checkpoints
from .errors import DataError
from .filesystems import FileSystemMount, file_system_mounts
from .staging import InputSession, stage_inputs
from .volume import disk_usage, volume_error

__all__ = ["CheckpointSync", "DataError", "DirectorySync", "FileSystemMount", "InputSession",
           "container_path", "disk_usage", "file_system_mounts", "restore_checkpoints", "stage_inputs",
           "volume_error"]
