"""What agents may report, through real servers and agents (issue 9 items 2 and 3).

A report must come from the instance and the attempt it names: each agent has a token of its own
that binds its job, attempt and host; anything else is refused (403) and changes nothing. A job
that has ended accepts no further report. An exit report cannot choose the job's ModelArtifacts.
A MetricDefinitions regex that backtracks catastrophically stalls no one: it is disabled for the
job, with a line in its log saying why, while the other definitions keep producing samples.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from conftest import unique_name, wait_for_job, wait_until
from test_runtime_credentials import spec_token
from test_runtime_jobs import log_messages, shell_job

from trainforge.agent.endpoints import REPORT_PATH

GATED = "while [ ! -e {gate} ]; do sleep 0.05; done"


def post_report(endpoint: str, token: str, events: list[dict[str, Any]], host: str = "algo-1",
                attempt: int = 1, **claims: Any) -> tuple[int, dict[str, Any]]:
    """A report as an agent posts it; a high ``seq`` so that its events are new to the server."""
    body = json.dumps({"host": host, "attempt": attempt, "seq": 1_000_000, "events": events, **claims}).encode()
    request = urllib.request.Request(endpoint + REPORT_PATH, data=body, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def failed_exit(model: str = "file:///elsewhere/model.tar.gz") -> dict[str, Any]:
    return {"type": "exit", "outcome": "algorithm", "exit_code": 3, "failure_reason": "AlgorithmError: forged",
            "stop_reason": None, "model_artifacts": model}


def unchanged(desc: dict[str, Any], status: str = "InProgress") -> bool:
    return desc["TrainingJobStatus"] == status and "FailureReason" not in desc


def test_a_report_after_the_end_is_refused(server_factory: Any, tmp_path: Path) -> None:
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]})
    sm = srv.client()
    name = unique_name("late")
    sm.create_training_job(**shell_job(name, "echo done > /opt/ml/model/m", tmp_path / "out"))
    token = spec_token(srv.data_dir, name)
    before = wait_for_job(sm, name)
    assert before["TrainingJobStatus"] == "Completed", before.get("FailureReason")
    for events in ([failed_exit()], [{"type": "status", "status": "Training", "message": "again"}],
                   [{"type": "log", "stream": "stdout", "message": "loss=1.5 after the end"}]):
        status, answer = post_report(srv.endpoint, token, events)
        assert status == 403, (events, answer)
    after = sm.describe_training_job(TrainingJobName=name)
    assert unchanged(after, "Completed"), after.get("FailureReason")
    for key in ("SecondaryStatusTransitions", "ModelArtifacts", "TrainingEndTime", "LastModifiedTime"):
        assert after[key] == before[key], key
    assert "loss=1.5 after the end" not in log_messages(srv, name)
    assert "refused a report" in srv.log_path.read_text()


def test_a_token_reports_only_for_its_own_job_and_never_chooses_the_model_uri(
        server_factory: Any, tmp_path: Path) -> None:
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]})
    sm = srv.client()
    gate = tmp_path / "gate"
    a, b = unique_name("job-a"), unique_name("job-b")
    for name in (a, b):
        sm.create_training_job(**shell_job(name, GATED.format(gate=gate) + "; echo m > /opt/ml/model/m",
                                           tmp_path / "out"))
    token_a = spec_token(srv.data_dir, a)
    for name in (a, b):
        wait_for_job(sm, name, "Training", secondary=True)
    arn_b = sm.describe_training_job(TrainingJobName=b)["TrainingJobArn"]
    # A's token, a report naming job B: refused; neither job changes.
    status, _ = post_report(srv.endpoint, token_a, [failed_exit()], job=arn_b)
    assert status == 403
    for name in (a, b):
        assert unchanged(sm.describe_training_job(TrainingJobName=name))
    # A's own instance reports its exit, with a model URI of its choosing: the job ends, and its
    # ModelArtifacts is the job's own output location all the same.
    ok = {**failed_exit("file:///elsewhere/model.tar.gz"), "outcome": "ok", "exit_code": 0, "failure_reason": None}
    assert post_report(srv.endpoint, token_a, [ok])[0] == 200
    desc_a = wait_for_job(sm, a)
    assert desc_a["ModelArtifacts"]["S3ModelArtifacts"] == f"file://{tmp_path / 'out'}/{a}/output/model.tar.gz"
    assert unchanged(sm.describe_training_job(TrainingJobName=b))
    gate.write_text("go")
    desc_b = wait_for_job(sm, b)
    assert desc_b["TrainingJobStatus"] == "Completed", desc_b.get("FailureReason")
    assert desc_b["ModelArtifacts"]["S3ModelArtifacts"] == f"file://{tmp_path / 'out'}/{b}/output/model.tar.gz"


def test_only_the_instance_and_attempt_a_token_was_given_to_may_report(
        server_factory: Any, tmp_path: Path) -> None:
    """Two instances, two attempts: the first attempt's token is refused once the second runs, and a
    token of the second attempt is refused for the other host and for another attempt."""
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]})
    sm = srv.client()
    marker, gate, script = tmp_path / "attempts", tmp_path / "gate", tmp_path / "train.sh"
    # algo-1 counts the attempts; the first one waits until its agent is killed.
    script.write_text(f'if [ "$(hostname)" = algo-1 ]; then echo x >> {marker}; '
                      f"if [ $(wc -l < {marker}) -lt 2 ]; then sleep 120; fi; fi; {GATED.format(gate=gate)}\n")
    name = unique_name("hosts")
    req = shell_job(name, f"sh {script}", tmp_path / "out", RetryStrategy={"MaximumRetryAttempts": 1})
    req["ResourceConfig"]["InstanceCount"] = 2
    sm.create_training_job(**req)
    first = spec_token(srv.data_dir, name)
    wait_until(marker.exists, timeout=30, message="the first attempt running")
    agent = json.loads(wait_until(lambda: next(srv.data_dir.glob(
        f"jobs/*/*/{name}/attempt-1/algo-1/instance.json"), None), message="the agent").read_text())["agent_pid"]
    os.kill(agent, signal.SIGKILL)  # a failure of ours: the job is tried again
    second = spec_token(srv.data_dir, name, attempt=2)
    wait_until(lambda: len(marker.read_text().split()) == 2, timeout=60, message="the second attempt running")
    wait_for_job(sm, name, "Training", secondary=True)
    before = sm.describe_training_job(TrainingJobName=name)
    for token, host, attempt in ((first, "algo-1", 1), (first, "algo-1", 2),  # an earlier attempt's token
                                 (second, "algo-2", 2),  # another host's
                                 (second, "algo-1", 1)):  # another attempt's
        status, answer = post_report(srv.endpoint, token, [failed_exit()], host=host, attempt=attempt)
        assert status in (401, 403), (host, attempt, status, answer)
        assert status == 403 or token == first
    after = sm.describe_training_job(TrainingJobName=name)
    assert unchanged(after) and after["SecondaryStatusTransitions"] == before["SecondaryStatusTransitions"]
    log = srv.log_path.read_text()
    assert f"refused a report for {name} from algo-2 (attempt 2)" in log
    gate.write_text("go")
    desc = wait_for_job(sm, name)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")


def test_a_catastrophic_metric_regex_is_disabled_and_stalls_no_one(server_factory: Any, tmp_path: Path) -> None:
    """``(a+)+$`` and ``(a|aa)+$`` against 40 ``a`` then ``!`` backtrack for minutes to years with Python's
    ``re``; the other jobs' calls are answered meanwhile, and the job completes with its other metric."""
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]})
    sm = srv.client()
    quick = srv.client(read_timeout=10)  # a server stalled by the regex would answer after far longer
    printed, gate, script = tmp_path / "printed", tmp_path / "gate", tmp_path / "train.sh"
    script.write_text(f"echo loss=0.5; echo {'a' * 40}!; touch {printed}; {GATED.format(gate=gate)}; "
                      f"echo loss=0.25\n")
    name = unique_name("regex")
    req = shell_job(name, f"sh {script}", tmp_path / "out")
    req["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": "nested", "Regex": "(a+)+$"}, {"Name": "alternation", "Regex": "(a|aa)+$"},
        {"Name": "loss", "Regex": r"loss=([0-9.]+)"}]
    sm.create_training_job(**req)
    wait_until(printed.exists, timeout=30, message="the line of a's printed")
    others = [unique_name("other") for _ in range(2)]
    for other in others:
        quick.create_training_job(**shell_job(other, "true", tmp_path / "out"))
    assert quick.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "InProgress"
    wait_until(lambda: any("'alternation'" in m and "disabled" in m for m in log_messages(srv, name)),
               timeout=30, message="the line saying the definition is disabled")
    gate.write_text("go")
    desc = wait_for_job(sm, name)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert {m["MetricName"]: m["Value"] for m in desc["FinalMetricDataList"]} == {"loss": 0.25}
    for other in others:
        assert wait_for_job(sm, other)["TrainingJobStatus"] == "Completed"
