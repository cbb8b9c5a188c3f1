"""The Slurm backend (``backend: slurm``): see :mod:`.backend`. Imported on first use: the batch step
and the node's task import their own modules (:mod:`.network`, :mod:`.node`) without the backend's."""

from typing import Any

__all__ = ["SlurmBackend"]


def __getattr__(name: str) -> Any:
    if name == "SlurmBackend":
        from trainforge.backends.slurm.backend import SlurmBackend

        return SlurmBackend
    raise AttributeError(name)
