"""Errors answered the way AWS answers them: unknown operations, bad bodies, oversized bodies,
missing and duplicate jobs, operations a job's status does not allow, and internal failures
(500 with no stack trace to the client, the full one in the server log).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import ServerProcess, minimal_request, stop_quietly, unique_name, wait_for_job, wait_until

NOT_FOUND = "Requested resource not found."


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    resp = exc.value.response
    return resp["Error"]["Code"], resp["Error"]["Message"], resp["ResponseMetadata"]["HTTPStatusCode"]


def local_output(srv: ServerProcess) -> dict[str, str]:
    """Outputs in the server's data directory (an allowed local root): a stopped job ends Stopped."""
    return {"S3OutputPath": f"file://{srv.data_dir}/outputs"}


def test_unknown_operation(server: ServerProcess) -> None:
    status, body = server.raw("CreateEndpoint", {"EndpointName": "e", "EndpointConfigName": "c"})
    assert status == 400 and body["__type"] == "UnknownOperationException"
    assert "CreateEndpoint" in body["message"]
    status, body = server.raw("NoSuchThing", {})
    assert status == 400 and body["__type"] == "UnknownOperationException"
    status, body = server.raw("DescribeTrainingJob", {"TrainingJobName": "x"}, prefix="Unknown_2020.")
    assert status == 400 and body["__type"] == "UnknownOperationException"
    # Through boto3 too: a real client calling an operation trainforge does not serve.
    with pytest.raises(ClientError) as exc:
        server.client().list_endpoints()
    assert _error(exc)[0] == "UnknownOperationException"


@pytest.mark.parametrize("body", [b"{not json", b'{"TrainingJobName": "x"', b"\xff\xfe", b"[1, 2]", b'"text"'])
def test_unparseable_body(server: ServerProcess, body: bytes) -> None:
    status, answer = server.raw("DescribeTrainingJob", body)
    assert status == 400
    assert answer["__type"] == "SerializationException"
    assert answer["message"]


def test_body_over_the_limit_is_refused(server: ServerProcess) -> None:
    name = unique_name("big")
    req = minimal_request(name, Environment={f"V{i}": "x" * 500 for i in range(100)},
                          HyperParameters={f"h{i}": "y" * 2500 for i in range(100)})
    req["AlgorithmSpecification"]["ContainerArguments"] = ["z" * 256] * 100
    big = json.dumps(req).encode()
    big += b" " * (1024 * 1024 + 1 - len(big))  # valid JSON, one byte over 1 MiB
    status, answer = server.raw("CreateTrainingJob", big)
    assert status == 413
    assert answer["__type"] == "RequestEntityTooLargeException"
    assert str(1024 * 1024) in answer["message"]
    status, answer = server.raw("DescribeTrainingJob", {"TrainingJobName": name})
    assert (status, answer["message"]) == (400, NOT_FOUND)
    # Just under the limit is fine.
    body = json.dumps(minimal_request(name)).encode()
    status, answer = server.raw("CreateTrainingJob", body + b" " * (1024 * 1024 - len(body)))
    assert status == 200, answer
    assert server.client().describe_training_job(TrainingJobName=name)["TrainingJobName"] == name


def test_missing_job(server: ServerProcess) -> None:
    sm = server.client()
    name = unique_name("missing")
    calls: list[Callable[[], Any]] = [
        lambda: sm.describe_training_job(TrainingJobName=name),
        lambda: sm.stop_training_job(TrainingJobName=name),
        lambda: sm.delete_training_job(TrainingJobName=name),
        lambda: sm.update_training_job(TrainingJobName=name, RemoteDebugConfig={"EnableRemoteDebug": True}),
    ]
    for call in calls:
        with pytest.raises(ClientError) as exc:
            call()
        assert _error(exc) == ("ValidationException", NOT_FOUND, 400)


def test_duplicate_name(server: ServerProcess) -> None:
    sm = server.client()
    name = unique_name("dup")
    sm.create_training_job(**minimal_request(name))
    with pytest.raises(ClientError) as exc:
        sm.create_training_job(**minimal_request(name, HyperParameters={"other": "request"}))
    code, message, status = _error(exc)
    assert (code, status) == ("ResourceInUse", 400)
    assert name in message
    assert "HyperParameters" not in sm.describe_training_job(TrainingJobName=name)  # the first one stands
    # The same name in another region is another job.
    other = server.client(region="eu-west-1")
    arn = other.create_training_job(**minimal_request(name))["TrainingJobArn"]
    assert arn == f"arn:aws:sagemaker:eu-west-1:000000000000:training-job/{name}"
    for client in (sm, other):
        stop_quietly(client, name)


def test_stop_and_delete_follow_the_status(server: ServerProcess) -> None:
    sm = server.client()
    name = unique_name("status")
    sm.create_training_job(**minimal_request(name, OutputDataConfig=local_output(server), AlgorithmSpecification={
        "TrainingImage": "trainforge/command:latest", "TrainingInputMode": "File",
        "ContainerEntrypoint": ["/bin/sh", "-c"], "ContainerArguments": ["exec sleep 60"]}))
    # Training: a stop goes through Stopping.
    wait_for_job(sm, name, "Training", secondary=True, timeout=60)
    # Not finished: it cannot be deleted.
    with pytest.raises(ClientError) as exc:
        sm.delete_training_job(TrainingJobName=name)
    code, message, status = _error(exc)
    assert (code, status) == ("ResourceInUse", 400) and "InProgress" in message
    assert sm.describe_training_job(TrainingJobName=name)["TrainingJobName"] == name
    sm.stop_training_job(TrainingJobName=name)
    desc = wait_for_job(sm, name, "Stopped")
    assert [t["Status"] for t in desc["SecondaryStatusTransitions"]][-2:] == ["Stopping", "Stopped"]
    # Finished: a stop is a ValidationException, as on AWS.
    with pytest.raises(ClientError) as exc:
        sm.stop_training_job(TrainingJobName=name)
    code, message, status = _error(exc)
    assert (code, status) == ("ValidationException", 400) and "Stopped" in message
    # Profiler settings of a finished job cannot change either.
    with pytest.raises(ClientError) as exc:
        sm.update_training_job(TrainingJobName=name, ProfilerConfig={"DisableProfiler": True})
    assert _error(exc)[0] == "ValidationException"
    sm.delete_training_job(TrainingJobName=name)
    with pytest.raises(ClientError) as exc:
        sm.describe_training_job(TrainingJobName=name)
    assert _error(exc) == ("ValidationException", NOT_FOUND, 400)


def test_completed_job_cannot_be_stopped(server: ServerProcess) -> None:
    sm = server.client()
    name = unique_name("done")
    sm.create_training_job(**minimal_request(name, OutputDataConfig=local_output(server)))
    desc = wait_for_job(sm, name)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    with pytest.raises(ClientError) as exc:
        sm.stop_training_job(TrainingJobName=name)
    code, message, _ = _error(exc)
    assert code == "ValidationException" and "Completed" in message
    sm.delete_training_job(TrainingJobName=name)


def test_internal_error_is_a_500_without_details(server_factory: Callable[..., ServerProcess]) -> None:
    srv = server_factory()
    sm = srv.client()
    name = unique_name("internal")
    sm.create_training_job(**minimal_request(name))
    # Break the store under the running server: the jobs table disappears.
    db = sqlite3.connect(Path(srv.data_dir) / "trainforge.db", timeout=30)
    db.execute("ALTER TABLE jobs RENAME TO jobs_moved_away")
    db.commit()
    db.close()
    status, answer = srv.raw("DescribeTrainingJob", {"TrainingJobName": name})
    assert status == 500
    assert answer == {"__type": "InternalFailure", "message": answer["message"]}
    text = json.dumps(answer)
    for leak in ("Traceback", "sqlalchemy", "sqlite", "jobs", 'File "'):
        assert leak not in text
    with pytest.raises(ClientError) as exc:
        sm.describe_training_job(TrainingJobName=name)
    assert _error(exc)[0] == "InternalFailure" and _error(exc)[2] == 500
    # The server log has the whole story.
    def logged() -> str:
        text = srv.log_path.read_text()
        return text if "Traceback" in text and "no such table: jobs" in text else ""

    assert "internal error answering SageMaker.DescribeTrainingJob" in wait_until(
        logged, timeout=10, message="traceback in the server log")
    # The server keeps serving once the store is back.
    db = sqlite3.connect(Path(srv.data_dir) / "trainforge.db", timeout=30)
    db.execute("ALTER TABLE jobs_moved_away RENAME TO jobs")
    db.commit()
    db.close()
    assert sm.describe_training_job(TrainingJobName=name)["TrainingJobName"] == name
