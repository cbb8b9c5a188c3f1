"""The Slurm backend (``backend: slurm``): see :mod:`.backend`."""

from trainforge.backends.slurm.backend import SlurmBackend

__all__ = ["SlurmBackend"]
