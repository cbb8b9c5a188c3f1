"""No 500 on any input (issue 9): null list elements and map values, deep nesting, and AWS's JSON
error shape on every answer of the API port (unknown paths and methods, content types, targets).
"""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest
from conftest import ServerProcess, minimal_request, unique_name

JSON_11 = "application/x-amz-json-1.1"
NOT_NULL = "failed to satisfy constraint: Member must not be null"


def _send(srv: ServerProcess, method: str, path: str, headers: dict[str, str],
          body: bytes = b"") -> tuple[int, str, Any]:
    """One raw HTTP request: (status, content type, parsed JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        return resp.status, resp.getheader("content-type") or "", json.loads(payload) if payload else None
    finally:
        conn.close()


def _assert_not_stored(srv: ServerProcess, name: str) -> None:
    status, body = srv.raw("DescribeTrainingJob", {"TrainingJobName": name})
    assert (status, body["message"]) == (400, "Requested resource not found."), body


def _algorithm(**extra: Any) -> dict[str, Any]:
    return {**minimal_request("x")["AlgorithmSpecification"], **extra}


# (create overrides, the path of the null in the message)
NULL_CASES = [
    ({"Tags": [None]}, "tags.1.member"),
    ({"InputDataConfig": [None]}, "inputDataConfig.1.member"),
    ({"DebugRuleConfigurations": [None]}, "debugRuleConfigurations.1.member"),
    ({"ProfilerRuleConfigurations": [None]}, "profilerRuleConfigurations.1.member"),
    ({"DebugHookConfig": {"S3OutputPath": "s3://trainforge-test-output/debug", "CollectionConfigurations": [None]}},
     "debugHookConfig.collectionConfigurations.1.member"),
    ({"ResourceConfig": {"InstanceGroups": [None], "VolumeSizeInGB": 10}}, "resourceConfig.instanceGroups.1.member"),
    ({"AlgorithmSpecification": _algorithm(ContainerEntrypoint=[None])},
     "algorithmSpecification.containerEntrypoint.1.member"),
    ({"AlgorithmSpecification": _algorithm(ContainerArguments=["true", None])},
     "algorithmSpecification.containerArguments.2.member"),
    ({"AlgorithmSpecification": _algorithm(MetricDefinitions=[None])},
     "algorithmSpecification.metricDefinitions.1.member"),
    ({"HyperParameters": {"epochs": None}}, "hyperParameters.epochs"),
    ({"Environment": {"MODE": None}}, "environment.MODE"),
    ({"InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": "s3://trainforge-test-input/train", "AttributeNames": [None]}}}]},
     "inputDataConfig.1.member.dataSource.s3DataSource.attributeNames.1.member"),
]


@pytest.mark.parametrize(("overrides", "path"), NULL_CASES, ids=[p for _, p in NULL_CASES])
def test_null_element_is_refused_and_nothing_stored(server: ServerProcess, overrides: dict[str, Any],
                                                    path: str) -> None:
    name = unique_name("null")
    status, body = server.raw("CreateTrainingJob", minimal_request(name, **overrides))
    assert status == 400, body
    assert body == {"__type": "ValidationException",
                    "message": f"1 validation error detected: Value null at '{path}' {NOT_NULL}"}
    _assert_not_stored(server, name)


def test_null_is_reported_beside_other_errors_of_the_list(server: ServerProcess) -> None:
    name = unique_name("null")
    args = _algorithm(ContainerArguments=[None, "x" * 257])
    status, body = server.raw("CreateTrainingJob", minimal_request(name, AlgorithmSpecification=args))
    assert status == 400 and body["__type"] == "ValidationException"
    assert body["message"].startswith("2 validation errors detected: Value null at "
                                      f"'algorithmSpecification.containerArguments.1.member' {NOT_NULL}; ")
    assert "Member must have length less than or equal to 256" in body["message"]
    _assert_not_stored(server, name)


def test_tags_operations_with_nulls_and_empty_lists(server: ServerProcess) -> None:
    name = unique_name("tags")
    sm = server.client()
    arn = sm.create_training_job(**minimal_request(name, Tags=[{"Key": "team", "Value": "ml"}]))["TrainingJobArn"]
    status, body = server.raw("AddTags", {"ResourceArn": arn, "Tags": [{"Key": "a", "Value": "b"}, None]})
    assert (status, body["__type"]) == (400, "ValidationException"), body
    assert body["message"] == f"1 validation error detected: Value null at 'tags.2.member' {NOT_NULL}"
    status, body = server.raw("DeleteTags", {"ResourceArn": arn, "TagKeys": [None]})
    assert status == 400, body
    assert body["message"] == f"1 validation error detected: Value null at 'tagKeys.1.member' {NOT_NULL}"
    # An empty list is valid per the model (min 0): a success that changes nothing.
    assert sm.add_tags(ResourceArn=arn, Tags=[])["Tags"] == []
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "ml"}]


@pytest.mark.parametrize("depth", [324, 2000])
def test_deep_nesting_is_a_serialization_error(server: ServerProcess, depth: int) -> None:
    body = b'{"TrainingJobName": "x", "Foo": ' + b"[" * depth + b"1" + b"]" * depth + b"}"
    status, answer = server.raw("DescribeTrainingJob", body)
    assert status == 400, answer
    assert answer["__type"] == "SerializationException" and answer["message"]


def test_nesting_within_the_limit_is_rendered_in_the_message(server: ServerProcess) -> None:
    inner: Any = 1
    for _ in range(90):
        inner = {"k": inner}
    status, answer = server.raw("DescribeTrainingJob", {"TrainingJobName": "x", "Foo": inner})
    assert status == 400 and answer["__type"] == "ValidationException", answer
    assert "{k={k={k=" in answer["message"] and "Unknown member 'Foo'" in answer["message"]


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/no/such/path", 404), ("POST", "/no/such/path", 404), ("GET", "/", 405), ("PUT", "/", 405),
    ("DELETE", "/", 405), ("POST", "/_trainforge/health", 405), ("GET", "/_trainforge/agent/v1/report", 405),
])
def test_unknown_paths_and_methods_answer_aws_error_shape(server: ServerProcess, method: str, path: str,
                                                          status: int) -> None:
    got, content_type, body = _send(server, method, path, {"X-Amz-Target": "SageMaker.ListTrainingJobs"})
    assert (got, content_type) == (status, JSON_11)
    assert body["__type"] == "UnknownOperationException" and method in body["message"]


@pytest.mark.parametrize(("headers", "body", "code"), [
    ({"Content-Type": "text/plain"}, b"{}", "UnknownOperationException"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, b"Action=ListTrainingJobs", "UnknownOperationException"),
    ({"Content-Type": JSON_11, "X-Amz-Target": ""}, b"{}", "UnknownOperationException"),
    ({"Content-Type": JSON_11, "X-Amz-Target": "SageMaker."}, b"{}", "UnknownOperationException"),
    ({"Content-Type": JSON_11, "X-Amz-Target": "ListTrainingJobs"}, b"{}", "UnknownOperationException"),
    ({"Content-Type": JSON_11}, b"{", "SerializationException"),
    ({"Content-Type": JSON_11}, b"[{}]", "SerializationException"),
    ({"Content-Type": JSON_11}, b'{"a": 1} trailing', "SerializationException"),
], ids=["text", "form", "empty-target", "no-operation", "no-prefix", "bad-json", "array", "trailing"])
def test_bad_requests_answer_aws_error_shape(server: ServerProcess, headers: dict[str, str], body: bytes,
                                             code: str) -> None:
    headers = {"X-Amz-Target": "SageMaker.ListTrainingJobs", **headers}
    status, content_type, answer = _send(server, "POST", "/", headers, body)
    assert (status, content_type) == (400, JSON_11)
    assert answer["__type"] == code and answer["message"]


def test_missing_target_and_json_content_types(server: ServerProcess) -> None:
    status, _, answer = _send(server, "POST", "/", {"Content-Type": JSON_11}, b"{}")
    assert (status, answer["__type"]) == (400, "UnknownOperationException")
    for content_type in (None, "application/json", "application/x-amz-json-1.0",
                         "Application/X-Amz-Json-1.1; charset=UTF-8"):
        headers = {"X-Amz-Target": "SageMaker.ListTrainingJobs"}
        if content_type:
            headers["Content-Type"] = content_type
        status, _, answer = _send(server, "POST", "/", headers, b"{}")
        assert status == 200 and "TrainingJobSummaries" in answer, (content_type, answer)


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00", "2020-01-01T00:00:00z", "9999-12-31T23:59:59.999999-14:00"])
def test_list_filters_take_any_iso_timestamp_the_validator_accepts(server: ServerProcess, when: str) -> None:
    name = unique_name("when")
    server.client().create_training_job(**minimal_request(name))
    status, body = server.raw("ListTrainingJobs", {"CreationTimeAfter": when, "NameContains": name})
    assert status == 200, body
    assert [s["TrainingJobName"] for s in body["TrainingJobSummaries"]] == ([] if when.startswith("9999") else [name])
