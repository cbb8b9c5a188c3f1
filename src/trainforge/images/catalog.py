"""What a TrainingImage (or AlgorithmName) means on a machine without Docker.

The control plane calls :func:`resolve` when it writes an instance spec; the result goes into the
spec's ``runtime`` key (:meth:`Runtime.as_spec`). The agent then runs ``runtime.command`` + ``train``
(CONTRACT.md §3) with ``runtime.python``'s directory first on ``PATH``.

Catalog entries
---------------
The server config key ``images`` holds a list of entries; they are tried before the shipped
defaults (:data:`DEFAULT_IMAGES`). An entry is a mapping::

    images:
      # a framework image run in script mode (the default kind): the SDK's sagemaker_program /
      # sagemaker_submit_directory, requirements.txt, --key value arguments
      - image: "*.dkr.ecr.*.amazonaws.com*/my-pytorch:*"   # exact URI or fnmatch glob
        python: /opt/venvs/torch                          # interpreter, or a virtualenv directory
      # a plain command image: its entrypoint is run as given (plus "train", as Docker would)
      - image: "registry.example.com/team/trainer:1.*"
        kind: command
        entrypoint: ["/opt/trainer/bin/train-entry"]
        python: /usr/bin/python3                          # optional; put first on PATH

Keys:

``image`` (required)
    The TrainingImage URI or AlgorithmName to match: compared exactly first (over all entries),
    then as a case-sensitive :func:`fnmatch.fnmatchcase` glob (entries in order, config first).
``kind``
    ``script-mode`` (default when no ``entrypoint`` is given) or ``command``.
``python``
    The interpreter that runs the code, or a virtualenv / prefix directory (``<dir>/bin/python``
    is used). Default: the server's own interpreter (``sys.executable``).
``entrypoint``
    The image's default entrypoint as an argv list (a string is split like a shell would). For
    ``script-mode`` the default is ``[<python>, "-m", "trainforge.images.script_mode"]``;
    ``command`` entries must give one. A first element ``python`` / ``python3`` means the
    entry's interpreter.

``pull``
    ``kind: pull`` makes an entry say "pull this image for real" (no other key but ``image``).

An image no entry matches is pulled from its registry (``kind`` ``pull``: :mod:`trainforge.images.pull`,
configured by the key ``registries``) when its reference names a registry host, as every TrainingImage
SageMaker accepts does (``<account>.dkr.ecr.<region>.amazonaws.com/...``, a private registry); anything
else resolves to ``Runtime(error=...)`` naming the image and the config key.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any

from trainforge.algorithms import builtin
from trainforge.images.kinds import COMMAND, PULL, SCRIPT_MODE  # apart: the agent imports them alone

KINDS = (SCRIPT_MODE, COMMAND, PULL)
SCRIPT_MODE_MODULE = "trainforge.images.script_mode"

# ECR registries of every partition: amazonaws.com, amazonaws.com.cn, and the ISO partitions.
_ECR_HOSTS = ("*.dkr.ecr.*.amazonaws.com*", "*.dkr.ecr.*.c2s.ic.gov", "*.dkr.ecr.*.sc2s.sgov.gov")

# Repository names of the SageMaker framework training images (SageMaker Python SDK,
# src/sagemaker/image_uri_config/*.json, "training" scope), all run in script mode.
FRAMEWORK_REPOSITORIES = (
    "pytorch-training",
    "pytorch-training-arm64",
    "sagemaker-pytorch",  # framework versions before 1.2
    "tensorflow-training",
    "sagemaker-tensorflow-scriptmode",  # TensorFlow 1.x script mode
    "sagemaker-scikit-learn",
    "huggingface-pytorch-training",
    "huggingface-tensorflow-training",
)


def _default_images() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for repo in FRAMEWORK_REPOSITORIES:
        for host in _ECR_HOSTS:
            # a tag (repo:tag) or a digest (repo@sha256:...)
            entries.append({"image": f"{host}/{repo}[:@]*", "kind": SCRIPT_MODE})
    # The XGBoost images: the built-in algorithm, which runs a script when sagemaker_program names one.
    for repo in builtin.XGBOOST_REPOSITORIES:
        for host in _ECR_HOSTS:
            entries.append({"image": f"{host}/{repo}[:@]*", "kind": SCRIPT_MODE,
                            "entrypoint": ["python", "-m", builtin.XGBOOST_MODULE]})
    return entries


DEFAULT_IMAGES: list[dict[str, Any]] = _default_images()


@dataclass
class Runtime:
    """How to run an image here: an entrypoint (argv) and the Python interpreter behind it."""

    image: str = ""
    entrypoint: list[str] = field(default_factory=list)
    python: str = ""
    kind: str = SCRIPT_MODE
    error: str | None = None

    @property
    def command(self) -> list[str]:
        return list(self.entrypoint)

    def as_spec(self) -> dict[str, Any]:
        """The instance spec's ``runtime`` value (docs/INTERNALS.md)."""
        return {"command": list(self.entrypoint), "python": self.python, "image": self.image,
                "kind": self.kind, "error": self.error}


class CatalogError(ValueError):
    """A malformed catalog entry (a configuration error, reported at server start)."""


def resolve(image: str, config_images: list[dict[str, Any]] | None = None) -> Runtime:
    """Map a TrainingImage URI or AlgorithmName to a :class:`Runtime` (see the module docstring)."""
    entries = list(config_images or []) + DEFAULT_IMAGES
    entry = _match(image, entries)
    if entry is None and _registry_reference(image):
        return Runtime(image=image, python="", kind=PULL)
    if entry is None:
        return Runtime(image=image, error=builtin.unavailable_reason(image) or (
            f"Image '{image}' is not in trainforge's image catalog: add it under the config key "
            f"'images' (see README)"))
    try:
        return runtime_for(image, entry)
    except CatalogError as exc:
        return Runtime(image=image, error=f"Image '{image}': {exc}")


def validate(config_images: list[dict[str, Any]]) -> None:
    """Raise :class:`CatalogError` for the first malformed entry (call it when loading the config)."""
    if not isinstance(config_images, list):
        raise CatalogError("the config key 'images' must be a list of entries")
    for i, entry in enumerate(config_images):
        try:
            runtime_for(str(entry.get("image", "")) if isinstance(entry, dict) else "", entry)
        except CatalogError as exc:
            raise CatalogError(f"images[{i}]: {exc}") from None


def runtime_for(image: str, entry: dict[str, Any]) -> Runtime:
    if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not entry["image"]:
        raise CatalogError("an entry needs a non-empty string 'image'")
    unknown = set(entry) - {"image", "kind", "python", "entrypoint"}
    if unknown:
        raise CatalogError(f"unknown keys {sorted(unknown)} (known: image, kind, python, entrypoint)")
    python = _interpreter(entry.get("python"))
    entrypoint = entry.get("entrypoint")
    kind = entry.get("kind") or (COMMAND if entrypoint else SCRIPT_MODE)
    if kind not in KINDS:
        raise CatalogError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind == PULL:
        if set(entry) - {"image", "kind"}:
            raise CatalogError("a 'pull' entry takes no other key than 'image'")
        return Runtime(image=image, python="", kind=PULL)
    if isinstance(entrypoint, str):
        entrypoint = shlex.split(entrypoint)
    if entrypoint is None:
        if kind == COMMAND:
            raise CatalogError("a 'command' entry needs an 'entrypoint'")
        entrypoint = [python, "-m", SCRIPT_MODE_MODULE]
    if not isinstance(entrypoint, list) or not entrypoint or not all(isinstance(a, str) for a in entrypoint):
        raise CatalogError("'entrypoint' must be a non-empty list of strings")
    if entrypoint[0] in ("python", "python3"):
        entrypoint = [python] + entrypoint[1:]
    return Runtime(image=image, entrypoint=list(entrypoint), python=python, kind=kind)


def _interpreter(python: Any) -> str:
    if python is None or python == "":
        return sys.executable
    if not isinstance(python, str):
        raise CatalogError("'python' must be a path")
    path = os.path.expanduser(python)
    if os.path.isdir(path):
        return os.path.join(path, "bin", "python")
    return path


def _registry_reference(image: str) -> bool:
    """Whether ``image`` is an image reference naming its registry host."""
    from trainforge.images.reference import DOCKER_HUB, ReferenceError, parse

    try:
        ref = parse(image)
    except ReferenceError:
        return False
    return ref.host != DOCKER_HUB or image.startswith(DOCKER_HUB + "/")


def _match(image: str, entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    for entry in entries:
        if isinstance(entry, dict) and entry.get("image") == image:
            return entry
    for entry in entries:
        pattern = entry.get("image") if isinstance(entry, dict) else None
        if isinstance(pattern, str) and fnmatch.fnmatchcase(image, pattern):
            return entry
    return None
