"""The GPU variables of an instance's environment (numbering explained in ``gpus.py``).

Apart from ``gpus.py`` and importing nothing: every agent imports it on its way to the user's code.
"""

from __future__ import annotations

# Isolations where the instance sees the host's /dev: every GPU stays visible, numbered as on the host.
HOST_DEV_ISOLATIONS = ("none",)


def visible_devices(indices: list[int], own_dev: bool = True) -> dict[str, str]:
    """``CUDA_VISIBLE_DEVICES`` / ``NVIDIA_VISIBLE_DEVICES`` of an instance given host GPUs
    ``indices``: numbered from 0 when only their nodes are in its ``/dev``, else the host's indices;
    both empty without GPUs. ``CUDA_DEVICE_ORDER=PCI_BUS_ID``: CUDA numbers as ``nvidia-smi`` does."""
    numbers = range(len(indices)) if own_dev else indices
    value = ",".join(str(n) for n in numbers)
    env = {"CUDA_VISIBLE_DEVICES": value, "NVIDIA_VISIBLE_DEVICES": value}
    if indices:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return env


def instance_variables(spec: dict[str, object]) -> dict[str, str]:
    """The variables of the instance a spec describes; none for a spec without ``gpus`` (written
    before GPUs were handed out by index: the host's variables pass through as they did)."""
    indices = spec.get("gpus")
    if not isinstance(indices, list):
        return {}
    return visible_devices([int(i) for i in indices], spec.get("isolation", "none") not in HOST_DEV_ISOLATIONS)
