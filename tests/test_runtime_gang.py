"""The gang barrier (issue 12): the instances of a multi-instance job start their user code together,
only once every one of them is ready; one that never gets ready fails the job naming it; a stop
while they wait still stops the job. The late instance is made late by the agents' test-only hold
(``TRAINFORGE_TEST_GANG_HOLD``, agent/gang.py): it waits, ready, for a file the test writes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from conftest import minimal_request, unique_name, wait_for_job, wait_until

from trainforge.agent.gang import HOLD_ENV

# the user code's first line: when it started, into the marks directory
FIRST_LINE = "date +%s.%N > {marks}/$SM_CURRENT_HOST"
CAPACITY = {"capacity_cpus": 1000, "capacity_memory_mb": 10**6}
OBSERVE_S = 3.0  # how long the test watches for a start that must not come while one instance is held


def _server(server_factory: Any, tmp_path: Path, **config: Any) -> tuple[Any, Path, Path]:
    marks, release = tmp_path / "marks", tmp_path / "release"
    marks.mkdir()
    marks.chmod(0o777)
    srv = server_factory({"allowed_local_roots": [str(tmp_path)], **CAPACITY, **config},
                         env={HOLD_ENV: f"algo-2:{release}"})
    return srv, marks, release


def _job(sm: Any, marks: Path, instances: int = 3) -> str:
    name = unique_name("gang")
    req = minimal_request(name, OutputDataConfig={"S3OutputPath": f"file://{marks.parent}/out"})
    req["AlgorithmSpecification"]["ContainerArguments"] = [FIRST_LINE.format(marks=marks)]
    req["ResourceConfig"] = {**req["ResourceConfig"], "InstanceCount": instances, "VolumeSizeInGB": 1}
    sm.create_training_job(**req)
    return name


def _started(marks: Path) -> list[str]:
    return sorted(p.name for p in marks.iterdir())


def test_no_instance_starts_before_the_late_one_is_ready(server_factory: Any, tmp_path: Path) -> None:
    srv, marks, release = _server(server_factory, tmp_path)
    sm = srv.client()
    name = _job(sm, marks)
    wait_until(lambda: Path(f"{release}.held").exists(), timeout=120, message="algo-2 held, ready")
    wait_for_job(sm, name, "Training", secondary=True, timeout=120)  # the others are past their preparation
    early = _watch(marks)
    assert early == [], f"user code started while algo-2 was not ready: {early}"
    released_at = time.time()
    release.write_text("go")
    described = wait_for_job(sm, name, timeout=120)
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    starts = {p.name: float(p.read_text()) for p in marks.iterdir()}
    assert sorted(starts) == ["algo-1", "algo-2", "algo-3"]
    assert all(t > released_at for t in starts.values()), (released_at, starts)


def _watch(marks: Path) -> list[str]:
    """The instances whose user code started within :data:`OBSERVE_S` (a bounded look: none should)."""
    until = time.monotonic() + OBSERVE_S
    while time.monotonic() < until:
        if _started(marks):
            return _started(marks)
        time.sleep(0.05)
    return _started(marks)


def test_an_instance_never_ready_fails_the_job_naming_it(server_factory: Any, tmp_path: Path) -> None:
    srv, marks, _release = _server(server_factory, tmp_path, gang_timeout_seconds=3)
    sm = srv.client()
    name = _job(sm, marks)
    described = wait_for_job(sm, name, timeout=120)
    assert described["TrainingJobStatus"] == "Failed"
    assert "gang start failed" in described["FailureReason"] and "algo-2" in described["FailureReason"], \
        described["FailureReason"]
    assert _started(marks) == []


def test_a_stop_while_the_gang_waits_stops_the_job(server_factory: Any, tmp_path: Path) -> None:
    srv, marks, release = _server(server_factory, tmp_path)
    sm = srv.client()
    name = _job(sm, marks)
    wait_until(lambda: Path(f"{release}.held").exists(), timeout=120, message="algo-2 held, ready")
    sm.stop_training_job(TrainingJobName=name)
    described = wait_for_job(sm, name, timeout=120)
    assert described["TrainingJobStatus"] == "Stopped", described.get("FailureReason")
    assert _started(marks) == []


def test_a_single_instance_job_does_not_wait(server_factory: Any, tmp_path: Path) -> None:
    """The hold names algo-2, which a 1-instance job has not; nor does its spec ask for a barrier."""
    srv, marks, _release = _server(server_factory, tmp_path, gang_timeout_seconds=1)
    sm = srv.client()
    name = _job(sm, marks, instances=1)
    described = wait_for_job(sm, name, timeout=120)
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    assert _started(marks) == ["algo-1"]
