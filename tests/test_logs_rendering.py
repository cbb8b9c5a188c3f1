"""Logs as SageMaker shows them (issue 13, part 6): the algorithm's stream holds only the training's
output, with control characters rendered as SageMaker's log agent renders them (rsyslog's ``#NNN``);
MetricDefinitions match that text; trainforge's own lines go to a stream of their own, which the
SageMaker SDK does not read and ``trainforge logs`` interleaves with the algorithm's."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerProcess, unique_name, wait_for_job
from test_cli_support import aws_env, run_tf
from test_runtime_jobs import shell_job

from trainforge.agent.logtext import render

GROUP = "/aws/sagemaker/TrainingJobs"

# What the job prints (printf's escapes: a tab, a carriage return, BEL, ESC, UTF-8 é, two bytes
# that are not UTF-8, DEL), and an empty line.
SCRIPT = (r"printf '[0]\ttrain-rmse:0.25\tvalidation-rmse:0.5\n'; "
          r"printf 'progress 10%%\rprogress 100%%\r\n'; "
          r"printf 'bell\a \033[1mbold\033[0m caf\303\251 bad\377\376 del\177 end\n'; "
          r"printf '\n'; "
          r"printf 'to stderr\tx\n' >&2")
# The CloudWatch events SageMaker's log agent makes of that output, on each host.
STDOUT_EVENTS = ["[0]#011train-rmse:0.25#011validation-rmse:0.5",
                 "progress 10%#015progress 100%#015",
                 "bell#007 #033[1mbold#033[0m café bad\ufffd\ufffd del\x7f end"]
STDERR_EVENTS = ["to stderr#011x"]
# The built-in XGBoost container's regex (written for the rendered text) and one for the raw tab.
METRICS = [{"Name": "validation:rmse",
            "Regex": r".*\[[0-9]+\].*#011validation-rmse:([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*"},
           {"Name": "raw:tab", "Regex": r"\[[0-9]+\]\ttrain-rmse:([0-9.]+)"}]


@pytest.mark.parametrize(("raw", "event"), [
    (b"[0]\ttrain-rmse:0.25", "[0]#011train-rmse:0.25"),  # XGBoost's line
    (b"a\rb\r", "a#015b#015"),  # a progress bar; a \r\n line keeps its \r
    (b"\x07\x1b[0m\x0b\x0c\x1f", "#007#033[0m#013#014#037"),  # every byte below 0x20: # + 3 octal digits
    (b"a\x00b", "a#000b"),  # a NUL inside is escaped ...
    (b"a\x00", "a"),  # ... one at the very end dropped
    (b"del\x7f", "del\x7f"),  # DEL is not escaped (rsyslog tests < 32, not iscntrl)
    ("café ✓ \u0085".encode(), "café ✓ \u0085"),  # UTF-8, a C1 control included, unchanged
    (b"bad\xff\xfe\x80", "bad\ufffd\ufffd\ufffd"),  # not UTF-8: U+FFFD each
    (b"", ""),  # no event
])
def test_the_rendering_rule(raw: bytes, event: str) -> None:
    assert render(raw) == event


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("tf-logs")
    server = ServerProcess(data, {"allowed_local_roots": [str(data)]}).start()
    yield server
    server.stop()
    server.kill_agents()


@pytest.fixture(scope="module")
def job(srv: ServerProcess) -> dict[str, Any]:
    """A finished two-instance job that printed SCRIPT on each host."""
    name = unique_name("render")
    req = shell_job(name, SCRIPT, srv.data_dir / "out",
                    ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 1})
    req["AlgorithmSpecification"]["MetricDefinitions"] = METRICS
    sm = srv.client()
    sm.create_training_job(**req)
    desc = wait_for_job(sm, name, timeout=120)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    return desc


def streams(srv: ServerProcess, prefix: str, **kw: Any) -> list[str]:
    return [s["logStreamName"] for s in srv.client("logs").describe_log_streams(
        logGroupName=GROUP, logStreamNamePrefix=prefix, **kw)["logStreams"]]


def messages(srv: ServerProcess, stream: str) -> list[str]:
    return [e["message"] for e in srv.client("logs").get_log_events(
        logGroupName=GROUP, logStreamName=stream, startFromHead=True)["events"]]


def test_algorithm_streams_hold_the_output_as_sagemaker_renders_it(srv: ServerProcess, job: dict[str, Any]) -> None:
    name = job["TrainingJobName"]
    algo = streams(srv, f"{name}/")
    assert [re.sub(r"-\d+$", "", s) for s in algo] == [f"{name}/algo-1", f"{name}/algo-2"]
    for stream in algo:
        got = messages(srv, stream)
        assert [m for m in got if m not in STDERR_EVENTS] == STDOUT_EVENTS  # no [trainforge] line, no empty one
        assert sorted(got) == sorted(STDOUT_EVENTS + STDERR_EVENTS)
    filtered = srv.client("logs").filter_log_events(logGroupName=GROUP, logStreamNamePrefix=f"{name}/")["events"]
    assert sorted(e["message"] for e in filtered) == sorted(2 * (STDOUT_EVENTS + STDERR_EVENTS))
    assert {e["logStreamName"] for e in filtered} == set(algo)


def test_a_metric_regex_written_for_sagemaker_matches_and_a_raw_tab_does_not(job: dict[str, Any]) -> None:
    final = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert final == {"validation:rmse": 0.5}


def test_trainforge_lines_have_a_stream_of_their_own(srv: ServerProcess, job: dict[str, Any]) -> None:
    name = job["TrainingJobName"]
    own = streams(srv, f"{name}.trainforge/")
    algo = streams(srv, f"{name}/")
    assert own == [s.replace("/", ".trainforge/", 1) for s in algo]  # one per instance, same host and epoch
    lines = {stream: messages(srv, stream) for stream in own}
    assert all(m.startswith("[trainforge] ") for got in lines.values() for m in got)
    assert all(any(m.startswith("[trainforge] isolation: ") for m in got) for got in lines.values())
    assert any(m.startswith("[trainforge] model uploaded to ") for m in lines[own[0]])  # algo-1 uploads
    # the prefix <job> lists both kinds side by side
    assert streams(srv, name) == sorted(own + algo)


def test_the_sdk_stream_discovery_finds_only_the_algorithm_streams(srv: ServerProcess, job: dict[str, Any]) -> None:
    """The SageMaker Python SDK's calls in ``session._flush_log_streams``: a first page of
    InstanceCount streams by name, then pages of 50 (re-asked from the start) while a
    nextToken comes back. A trainforge stream under ``<job>/`` would come back on them."""
    name = job["TrainingJobName"]
    logs = srv.client("logs")
    first = logs.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix=f"{name}/",
                                      orderBy="LogStreamName", limit=2)
    assert "nextToken" not in first
    assert [re.sub(r"-\d+$", "", s["logStreamName"]) for s in first["logStreams"]] == [
        f"{name}/algo-1", f"{name}/algo-2"]


def test_trainforge_logs_interleaves_both_marked_apart(srv: ServerProcess, job: dict[str, Any],
                                                       tmp_path: Path) -> None:
    name = job["TrainingJobName"]
    env = aws_env(tmp_path)
    result = run_tf(["--endpoint-url", srv.endpoint, "logs", name], env)
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    for host in ("algo-1", "algo-2"):
        mine = [ln for ln in lines if ln.startswith(f"[{host}] ")]
        assert [ln for ln in mine if "[trainforge]" not in ln and "to stderr" not in ln] == [
            f"[{host}] {m}" for m in STDOUT_EVENTS]
        isolation = next(i for i, ln in enumerate(mine) if ln.startswith(f"[{host}] [trainforge] isolation: "))
        first = mine.index(f"[{host}] {STDOUT_EVENTS[0]}")
        assert isolation < first  # in time order: the notice came before the training's first line
    algo1 = [ln for ln in lines if ln.startswith("[algo-1] ")]
    uploaded = next(i for i, ln in enumerate(algo1) if ln.startswith("[algo-1] [trainforge] model uploaded to "))
    assert uploaded > algo1.index(f"[algo-1] {STDOUT_EVENTS[-1]}")
    # on a colour terminal the trainforge lines are dimmed, the algorithm's are not
    colored = run_tf(["--endpoint-url", srv.endpoint, "--color", "on", "logs", name], env).stdout
    assert re.search(r"\x1b\[2(;[0-9]+)*m\[trainforge\] isolation: ", colored)
    assert "[0]#011train-rmse" in colored and not re.search(r"\x1b\[2(;[0-9]+)*m\[0\]#011train-rmse", colored)


LOGS_FOR_JOB = """
import sys
import boto3, sagemaker
boto = boto3.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
sagemaker.Session(boto_session=boto).logs_for_job(sys.argv[1], wait=False)
"""


def test_sdk_logs_for_job_prints_only_the_algorithms_lines(srv: ServerProcess, job: dict[str, Any],
                                                            s3_endpoint: str, tmp_path: Path) -> None:
    """The SageMaker SDK v2 (in its own locked environment) finds the algorithm streams only."""
    from sdk_venvs import sdk_python
    from test_sdk import sdk_environment

    env = sdk_environment(srv, s3_endpoint, tmp_path, "unused")
    done = subprocess.run([str(sdk_python("sdk2")), "-c", LOGS_FOR_JOB, job["TrainingJobName"]], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout
    for event in STDOUT_EVENTS + STDERR_EVENTS:
        assert out.count(event) == 2, (event, out)  # once per host
    assert "[trainforge]" not in out
