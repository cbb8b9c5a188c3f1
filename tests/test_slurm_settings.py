"""The ``slurm:`` section (backends/slurm/settings.py): validated at server start like the other
sections, and how ml.* types map to sbatch's resources (GRES GPUs); no Slurm needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trainforge.backends.slurm.settings import SlurmConfigError, SlurmSettings, validate


@pytest.mark.parametrize(("section", "message"), [
    ({"partiton": "debug"}, "unknown keys ['partiton']"),
    ("debug", "'slurm' must be a mapping"),
    ({"partition": 3}, "slurm.partition must be a string"),
    ({"exclusive": "yes"}, "slurm.exclusive must be true or false"),
    ({"sbatch_args": "--qos=x"}, "slurm.sbatch_args must be a list of strings"),
    ({"instance_types": {"ml.p3.2xlarge": {"gpu": 1}}}, "unknown keys ['gpu']"),
    ({"instance_types": {"ml.p3.2xlarge": {"gpus": "1"}}}, "gpus must be a whole number"),
])
def test_a_malformed_section_is_refused_naming_the_key(section: Any, message: str) -> None:
    with pytest.raises(SlurmConfigError) as info:
        validate(section)
    assert message in str(info.value)


def test_the_server_does_not_start_with_a_bad_slurm_key(tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_text(f"backend: slurm\nslurm: {{partiton: debug}}\ndata_dir: {tmp_path / 'data'}\nport: 0\n")
    done = subprocess.run([sys.executable, "-m", "trainforge.cli", "server", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode != 0
    assert "SlurmConfigError: slurm: unknown keys ['partiton']" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data" / "trainforge.db").exists()  # refused before anything was created
