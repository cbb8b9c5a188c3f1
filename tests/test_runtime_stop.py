"""A stop that arrives at any instant reaches the training code as SIGTERM (issue 8).

Real server (the default 120 s grace), real agents: jobs are stopped right after CreateTrainingJob,
after a few milliseconds, ... and once the script is known to be waiting. Each must end Stopped
well before the grace, not by SIGKILL, and a script that got as far as installing its SIGTERM
handler must have run it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import minimal_request, read_model, unique_name, wait_for_job, wait_until

GRACE = 120.0
BOUND = 30.0  # every stopped job must have ended within this, far below the grace
# The handler is the script's first statement; "ready" says it is installed.
SCRIPT = (
    "import os, signal, sys, time\n"
    "def on_term(*_):\n"
    "    open(os.path.join(os.environ['SM_MODEL_DIR'], 'got-sigterm'), 'w').write('saved')\n"
    "    os._exit(0)\n"
    "signal.signal(signal.SIGTERM, on_term)\n"
    "open(os.path.join(os.environ['SM_MODEL_DIR'], 'ready'), 'w').write('ready')\n"
    "while True:\n"
    "    time.sleep(0.05)\n"
)
INSTANTS = [0.0, 0.002, 0.005, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]


def python_job(name: str, script: Path, out: Path) -> dict[str, Any]:
    """The training process is the Python script itself (no shell in between)."""
    req = minimal_request(name, OutputDataConfig={"S3OutputPath": f"file://{out}"})
    req["AlgorithmSpecification"] = {**req["AlgorithmSpecification"], "ContainerArguments": ["train"],
                                      "ContainerEntrypoint": ["python3", str(script)]}
    return req


def instance_dir(srv: Any, name: str) -> Path | None:
    found = sorted((srv.data_dir / "jobs").glob(f"*/*/{name}/attempt-*/algo-1"))
    return found[-1] if found else None


def exited_code(srv: Any, name: str) -> Any:
    """The exit code the agent recorded in ``.exited``; None when no process ran (a job stopped
    while queued has no agent; an agent stopped before its handlers were set has no marker)."""
    directory = instance_dir(srv, name)
    marker = directory / ".exited" if directory else None
    if marker is None or not marker.exists():
        return None
    return json.loads(marker.read_text())["exit_code"]


def stop_at_instants(srv: Any, tmp_path: Path) -> dict[str, Any]:
    """Create one job per instant and stop it that long after its create returned; the last one
    is stopped once its script has written "ready" (the handler is certainly installed)."""
    sm = srv.client()
    script, out = tmp_path / "train.py", tmp_path / "out"
    script.write_text(SCRIPT)
    stopped: dict[str, Any] = {}
    for delay in INSTANTS:
        name = unique_name("stopat")
        sm.create_training_job(**python_job(name, script, out))
        if delay:
            time.sleep(delay)  # the instant of the stop, not a wait for a state
        sm.stop_training_job(TrainingJobName=name)
        stopped[name] = delay
    late = unique_name("stopready")
    sm.create_training_job(**python_job(late, script, out))
    wait_until(lambda: (d := instance_dir(srv, late)) is not None and (d / "opt/ml/model/ready").exists(),
               timeout=BOUND, message="the late job's script to be ready")
    sm.stop_training_job(TrainingJobName=late)
    stopped[late] = "ready"
    return stopped


def check_stopped(srv: Any, stopped: dict[str, Any]) -> None:
    sm = srv.client()
    reached = []
    started = time.monotonic()
    for name, delay in stopped.items():
        # One bound for all of them: a stop that waits out the grace fails here, it does not hang.
        left = max(1.0, BOUND - (time.monotonic() - started))
        desc = wait_for_job(sm, name, timeout=left)
        assert (desc["TrainingJobStatus"], desc["SecondaryStatus"]) == ("Stopped", "Stopped"), (delay, desc)
        code = exited_code(srv, name)
        assert code not in (137, -9), f"stopped at {delay}: SIGKILLed (exit {code})"
        model = {} if code is None else read_model(desc["ModelArtifacts"]["S3ModelArtifacts"])
        if "ready" in model:
            reached.append(delay)
            assert model.get("got-sigterm") == b"saved", f"stopped at {delay}: the handler never ran"
            assert code == 0, f"stopped at {delay}: exit {code} after the handler ran"
    assert "ready" in reached, reached  # not vacuous: at least the late stop reached the handler


@pytest.mark.parametrize("isolation", ["sandbox", "none"])
def test_a_stop_at_any_instant_reaches_the_training_code(server_factory: Any, tmp_path: Path,
                                                         isolation: str) -> None:
    if isolation == "sandbox" and os.geteuid() != 0:
        pytest.skip("namespace isolation needs root")
    srv = server_factory({"allowed_local_roots": [str(tmp_path)], "isolation": isolation,
                          "stop_grace_seconds": GRACE})
    check_stopped(srv, stop_at_instants(srv, tmp_path))
