"""The image catalog: what a TrainingImage / AlgorithmName runs as on this machine."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from trainforge.images.catalog import SCRIPT_MODE_MODULE, CatalogError, resolve, validate

FRAMEWORK_IMAGES = [
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3.0-cpu-py311",
    "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:1.13.1-gpu-py39-cu117-ubuntu20.04-sagemaker",
    "727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/pytorch-training:2.0.0-cpu-py310",
    "763104351884.dkr.ecr.us-west-2.amazonaws.com/tensorflow-training:2.14.1-cpu-py310-ubuntu20.04-sagemaker",
    "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-training:2.1.0-transformers4.36.0-gpu-py310-cu121-ubuntu20.04",
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training@sha256:" + "a" * 64,
]


@pytest.mark.parametrize("image", FRAMEWORK_IMAGES)
def test_framework_images_run_script_mode_with_the_servers_python(image: str) -> None:
    rt = resolve(image, [])
    assert rt.error is None
    assert rt.kind == "script-mode"
    assert rt.python == sys.executable
    assert rt.command == [sys.executable, "-m", SCRIPT_MODE_MODULE]
    spec = rt.as_spec()
    assert spec["command"] == rt.command and spec["python"] == sys.executable and spec["image"] == image
    assert spec["error"] is None


@pytest.mark.parametrize("image", [
    "my-registry.example.com/pytorch-training:2.0",  # not an ECR registry
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.0",
    "127.0.0.1:5000/team/trainer@sha256:" + "a" * 64,
])
def test_registry_references_outside_the_catalog_are_pulled(image: str) -> None:
    rt = resolve(image, [])
    assert rt.error is None and rt.kind == "pull" and rt.command == [] and rt.image == image


@pytest.mark.parametrize("image", [
    "arn:aws:sagemaker:us-east-1:000000000000:algorithm/my-algo",
    "my-algo",  # no registry host: an algorithm name, not an image SageMaker would pull
])
def test_unknown_image_names_the_config_key(image: str) -> None:
    rt = resolve(image, [])
    assert rt.error == (f"Image '{image}' is not in trainforge's image catalog: add it under the config "
                        f"key 'images' (see README)")
    assert rt.as_spec()["error"] == rt.error


def test_config_entries_come_first_and_exact_beats_glob(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    config = [
        {"image": "*.dkr.ecr.*.amazonaws.com*/pytorch-training:*", "python": str(venv)},
        {"image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3.0-cpu-py311",
         "kind": "command", "entrypoint": "python /opt/train.py --fast"},
    ]
    glob = resolve("763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:1.0", config)
    assert glob.python == str(venv / "bin" / "python")
    assert glob.command == [str(venv / "bin" / "python"), "-m", SCRIPT_MODE_MODULE]
    exact = resolve("763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3.0-cpu-py311", config)
    assert exact.kind == "command"
    assert exact.command == [sys.executable, "/opt/train.py", "--fast"]  # "python" = the entry's interpreter


def test_command_images_and_algorithm_names() -> None:
    config = [{"image": "trainforge/command:*", "kind": "command", "entrypoint": ["/bin/sh", "-c"]},
              {"image": "my-algo", "entrypoint": ["/usr/local/bin/algo"]}]
    rt = resolve("trainforge/command:1", config)
    assert (rt.kind, rt.command, rt.error) == ("command", ["/bin/sh", "-c"], None)
    algo = resolve("my-algo", config)
    assert (algo.kind, algo.command) == ("command", ["/usr/local/bin/algo"])


@pytest.mark.parametrize("entry, message", [
    ({"kind": "command"}, "non-empty string 'image'"),
    ({"image": "x", "kind": "command"}, "needs an 'entrypoint'"),
    ({"image": "x", "kind": "docker"}, "kind must be one of"),
    ({"image": "x", "entrypoint": []}, "non-empty list"),
    ({"image": "x", "pyhton": "/usr/bin/python3"}, "unknown keys ['pyhton']"),
])
def test_malformed_entries_are_reported(entry: dict, message: str) -> None:
    with pytest.raises(CatalogError, match="images\\[0\\]: .*" + message.replace("[", "\\[").replace("]", "\\]")):
        validate([entry])
    if isinstance(entry.get("image"), str):
        assert message in (resolve(entry["image"], [entry]).error or "")
