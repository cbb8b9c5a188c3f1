"""Checks shared by the server configuration's sections (``slurm``, ``registries``, ...): one message
form for a section entry that is not a mapping or has keys the section does not know."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def known_mapping(value: Any, where: str, known: Iterable[str], error: type[Exception]) -> dict[str, Any]:
    """``value`` when it is a mapping whose keys are all in ``known``; else raise ``error`` naming ``where``."""
    if not isinstance(value, dict):
        raise error(f"{where} must be a mapping")
    names = list(known)
    unknown = set(value) - set(names)
    if unknown:
        raise error(f"{where}: unknown keys {sorted(unknown)} (known: {', '.join(names)})")
    return value
