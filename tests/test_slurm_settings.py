"""The ``slurm:`` section (backends/slurm/settings.py): validated at server start like the other
sections, and how ml.* types map to sbatch's resources (GRES GPUs); no Slurm needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trainforge.backends.slurm.settings import SlurmConfigError, SlurmSettings, validate
from trainforge.config import Config


@pytest.mark.parametrize(("section", "message"), [
    ({"partiton": "debug"}, "unknown keys ['partiton']"),
    ("debug", "'slurm' must be a mapping"),
    ({"partition": 3}, "slurm.partition must be a string"),
    ({"exclusive": "yes"}, "slurm.exclusive must be true or false"),
    ({"exclusive": False}, "slurm.exclusive: false needs slurm.network: job (got 'auto')"),
    ({"exclusive": False, "network": "nodes"}, "slurm.exclusive: false needs slurm.network: job"),
    ({"sbatch_args": "--qos=x"}, "slurm.sbatch_args must be a list of strings"),
    ({"instance_types": {"ml.p3.2xlarge": {"gpu": 1}}}, "unknown keys ['gpu']"),
    ({"instance_types": {"ml.p3.2xlarge": {"gpus": "1"}}}, "gpus must be a whole number"),
])
def test_a_malformed_section_is_refused_naming_the_key(section: Any, message: str) -> None:
    with pytest.raises(SlurmConfigError) as info:
        validate(section)
    assert message in str(info.value)


def refused_at_start(tmp_path: Path, section: str) -> str:
    """The server's stderr when it is started with ``slurm: <section>``: it must not start, nor create
    anything, nor print a traceback."""
    config = tmp_path / "server.yaml"
    config.write_text(f"backend: slurm\nslurm: {section}\ndata_dir: {tmp_path / 'data'}\nport: 0\n")
    done = subprocess.run([sys.executable, "-m", "trainforge.cli", "server", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data" / "trainforge.db").exists()  # refused before anything was created
    return done.stderr


def test_the_server_does_not_start_with_a_bad_slurm_key(tmp_path: Path) -> None:
    assert "SlurmConfigError: slurm: unknown keys ['partiton']" in refused_at_start(tmp_path, "{partiton: debug}")


def test_the_server_does_not_start_with_an_unknown_backend(tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_text(f"backend: nonsense\ndata_dir: {tmp_path / 'data'}\nport: 0\n")
    with pytest.raises(ValueError, match="backend must be local or slurm, not 'nonsense'"):
        Config.load(str(config))  # refused as the configuration is read
    done = subprocess.run([sys.executable, "-m", "trainforge.cli", "server", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode != 0
    assert "backend must be local or slurm, not 'nonsense'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # refused before the data directory was created


def test_gpu_instance_types_ask_slurm_for_their_gpus_as_gres() -> None:
    catalog = {"ml.p3.2xlarge": {"cpus": 8, "memory_mb": 62464, "gpus": 1},
               "ml.p4d.24xlarge": {"cpus": 96, "memory_mb": 1179648, "gpus": 8},
               "ml.m5.large": {"cpus": 2, "memory_mb": 8192, "gpus": 0}}
    settings = SlurmSettings.from_config(
        {"instance_types": {"ml.p4d.24xlarge": {"cpus": 96, "gres": "gpu:a100:8"}}}, catalog)
    assert settings.resources("ml.p3.2xlarge") == ["--gres=gpu:1"]  # from the server's own table
    assert settings.resources("ml.p4d.24xlarge") == ["--cpus-per-task=96", "--gres=gpu:a100:8"]  # mapped
    assert settings.resources("ml.m5.large") == []  # no GPUs: the whole node, nothing more
    assert settings.resources("ml.unknown") == []


@pytest.mark.parametrize(("env", "gpus"), [
    ({"SLURM_STEP_GPUS": "2,3", "SLURM_JOB_GPUS": "0,1,2,3", "CUDA_VISIBLE_DEVICES": "0,1"}, [2, 3]),
    ({"SLURM_JOB_GPUS": "1", "CUDA_VISIBLE_DEVICES": "0"}, [1]),
    ({"CUDA_VISIBLE_DEVICES": "0,1"}, [0, 1]),
    ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, None),
    ({"CUDA_VISIBLE_DEVICES": "GPU-5d1c"}, None),
    ({}, None),
])
def test_the_agent_takes_the_gpus_slurm_gives(env: dict[str, str], gpus: list[int] | None) -> None:
    from trainforge.backends.slurm.node import slurm_gpus

    assert slurm_gpus(env) == gpus


def test_the_node_adopts_slurms_gpus_and_counts_the_run_time_from_its_start(tmp_path: Path) -> None:
    from trainforge.agent import instance_files
    from trainforge.backends.slurm.node import adopt_allocation

    # launched at 1000 with 60 s of run time; Slurm queued it 500 s; the control plane's slots said [5]
    instance_files.write_spec(tmp_path, {"deadline": 1060.0, "launched_at": 1000.0, "deadline_cap": None,
                                         "gpus": [5], "num_gpus": 1})
    adopt_allocation(str(tmp_path / "spec.json"), {"SLURM_STEP_GPUS": "0,1"}, 1500.0)
    spec = json.loads((tmp_path / "spec.json").read_text())
    assert (spec["gpus"], spec["num_gpus"], spec["deadline"]) == ([0, 1], 2, 1560.0)
    adopt_allocation(str(tmp_path / "spec.json"), {}, 1600.0)  # a later (finishing) agent: no second shift
    spec = json.loads((tmp_path / "spec.json").read_text())
    assert (spec["gpus"], spec["deadline"]) == ([], 1560.0)


def test_a_spot_jobs_wait_bound_caps_the_moved_deadline() -> None:
    from trainforge.backends.base import started_deadline

    assert started_deadline(1060.0, 1000.0, 1500.0) == 1560.0
    assert started_deadline(1060.0, 1000.0, 1500.0, cap=1200.0) == 1200.0
    assert started_deadline(1060.0, None, 1500.0) == 1060.0
