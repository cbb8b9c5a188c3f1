"""Every command and option: the request `trainforge` sends equals the one `aws` (awscli) sends.

Both CLIs talk to the same recording HTTP endpoint on 127.0.0.1; the X-Amz-Target header and the
parsed JSON bodies are compared. The option values are generated from botocore's model, so every
member of every supported operation is exercised.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore import xform_name
from botocore.model import Shape
from botocore.paginate import TokenEncoder
from test_cli_support import Recorder, aws_env, run_aws, run_tf

from trainforge import awsmodel
from trainforge.cli.opargs import operation_spec


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    rec = Recorder().start()
    yield rec
    rec.stop()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return aws_env(tmp_path)


def sample(shape: Shape, depth: int = 0) -> Any:
    """A value of ``shape`` that botocore's client-side validation accepts."""
    kind = shape.type_name
    low = int(shape.metadata.get("min", 0) or 0)
    if kind == "structure":
        members = shape.members if depth < 4 else {k: shape.members[k] for k in shape.required_members}
        return {name: sample(m, depth + 1) for name, m in members.items()
                if m.type_name not in ("blob",) and not getattr(m, "is_document_type", False)}
    if kind == "list":
        return [sample(shape.member, depth + 1) for _ in range(max(low, 1))]
    if kind == "map":
        return {"key1": sample(shape.value, depth + 1)}
    if kind == "string":
        return shape.enum[-1] if shape.enum else "v" * max(low, 3)
    if kind in ("integer", "long"):
        return max(low, 7)
    if kind in ("float", "double"):
        return max(float(low), 2.5)
    if kind == "boolean":
        return True
    if kind == "timestamp":
        return "2024-05-06T07:08:09Z"
    return None


def cli_tokens(name: str, shape: Shape) -> list[list[str]]:
    """The ways to give one option on the command line (several for booleans and lists)."""
    flag = "--" + name
    value = sample(shape)
    if shape.type_name == "boolean":
        return [[flag], ["--no-" + name]]
    if shape.type_name == "list" and shape.member.type_name in ("string", "integer", "long"):
        return [[flag, *[str(v) for v in value]], [flag, str(value[0]), str(value[0]) + "x"]]
    if shape.type_name in ("structure", "list", "map"):
        return [[flag, json.dumps(value)]]
    return [[flag, str(value)]]


def required_tokens(operation: str, skip: str) -> list[str]:
    spec = operation_spec(operation)
    out: list[str] = []
    for arg in spec.arguments.values():
        if arg.required and arg.name != skip:
            out += cli_tokens(arg.name, arg.argument_model)[0]
    return out


def cases() -> Iterator[Any]:
    for operation in awsmodel.SUPPORTED_OPERATIONS:
        spec = operation_spec(operation)
        for arg in spec.arguments.values():
            for i, tokens in enumerate(cli_tokens(arg.name, arg.argument_model)):
                yield pytest.param(operation, arg.name, tokens, id=f"{spec.cli_name}-{arg.name}-{i}")


def compare(recorder: Recorder, env: dict[str, str], command: list[str], aws_globals: list[str] | None = None,
            tf_globals: list[str] | None = None) -> tuple[Any, Any]:
    globals_ = ["--endpoint-url", recorder.endpoint, "--region", "us-east-1"]
    recorder.take()
    aws = run_aws(globals_ + (aws_globals or []) + ["sagemaker"] + command, env)
    sent_by_aws = recorder.take()
    tf = run_tf(globals_ + (tf_globals or []) + command, env)
    sent_by_tf = recorder.take()
    assert aws.code == 0, aws.stderr
    assert tf.code == 0, tf.stderr
    assert [r.target for r in sent_by_tf] == [r.target for r in sent_by_aws]
    assert [r.body for r in sent_by_tf] == [r.body for r in sent_by_aws]
    assert sent_by_aws, "aws sent nothing"
    return sent_by_aws, sent_by_tf


@pytest.mark.parametrize(("operation", "name", "tokens"), list(cases()))
def test_every_option_sends_the_same_request(recorder: Recorder, env: dict[str, str], operation: str, name: str,
                                             tokens: list[str]) -> None:
    command = [xform_name(operation, "-")] + required_tokens(operation, skip=name) + tokens
    compare(recorder, env, command)


def test_every_model_member_is_an_option() -> None:
    for operation in awsmodel.SUPPORTED_OPERATIONS:
        shape = awsmodel.operation(operation).input_shape
        spec = operation_spec(operation)
        assert {a.member for a in spec.arguments.values()} == set(shape.members)


def test_create_with_every_option_at_once(recorder: Recorder, env: dict[str, str]) -> None:
    spec = operation_spec("CreateTrainingJob")
    command = ["create-training-job"]
    for arg in spec.arguments.values():
        command += cli_tokens(arg.name, arg.argument_model)[0]
    aws_sent, _ = compare(recorder, env, command)
    assert set(aws_sent[0].body) == {a.member for a in spec.arguments.values()}


PAGING = [
    ["list-training-jobs", "--max-items", "2"],
    ["list-training-jobs", "--page-size", "3"],
    ["list-training-jobs", "--page-size", "3", "--max-items", "1"],
    ["list-training-jobs", "--starting-token", TokenEncoder().encode({"NextToken": "tok-1"})],
    ["list-training-jobs", "--next-token", "tok-2", "--max-results", "4"],
    ["list-training-jobs", "--max-results", "4"],
    ["list-training-jobs", "--sort-by", "CreationTime", "--sort-order", "Ascending",
     "--creation-time-after", "2024-01-01T00:00:00Z", "--creation-time-before", "1700000000"],
    ["list-tags", "--resource-arn", "arn:aws:sagemaker:us-east-1:000000000000:training-job/x", "--max-items", "1"],
    ["list-tags", "--resource-arn", "arn:aws:sagemaker:us-east-1:000000000000:training-job/x", "--page-size", "50"],
]


@pytest.mark.parametrize("command", PAGING, ids=lambda c: " ".join(c[1:3]))
def test_paging_options(recorder: Recorder, env: dict[str, str], command: list[str]) -> None:
    compare(recorder, env, command)


def test_no_paginate(recorder: Recorder, env: dict[str, str]) -> None:
    compare(recorder, env, ["list-training-jobs"], aws_globals=["--no-paginate"], tf_globals=["--no-paginate"])


def test_paging_follows_next_token(recorder: Recorder, env: dict[str, str]) -> None:
    first = {"TrainingJobSummaries": [], "NextToken": "page-2"}
    recorder.responses["SageMaker.ListTrainingJobs"] = first
    try:
        # aws would loop forever on a constant NextToken; --max-items bounds both to the same calls
        aws_sent, tf_sent = compare(recorder, env, ["list-training-jobs", "--max-items", "0", "--page-size", "1"])
    finally:
        from test_cli_support import CANNED

        recorder.responses["SageMaker.ListTrainingJobs"] = CANNED["SageMaker.ListTrainingJobs"]
    assert len(tf_sent) == len(aws_sent)


GLOBALS = [
    ["--region", "eu-west-1"],
    ["--no-sign-request"],
    ["--cli-read-timeout", "5", "--cli-connect-timeout", "0"],
    ["--no-verify-ssl"],
    ["--color", "off"],
    ["--debug"],
    ["--query", "TrainingJobStatus", "--output", "text"],
]


@pytest.mark.parametrize("options", GLOBALS, ids=lambda o: o[0])
def test_global_options(recorder: Recorder, env: dict[str, str], options: list[str]) -> None:
    aws_sent, tf_sent = compare(recorder, env, ["describe-training-job", "--training-job-name", "g"],
                                aws_globals=options, tf_globals=options)
    auth = [r.headers.get("Authorization", "") for r in (aws_sent[0], tf_sent[0])]
    if "--no-sign-request" in options:
        assert auth == ["", ""]
    else:
        scopes = [a.split("Credential=")[1].split(",")[0].split("/", 2)[2] for a in auth]
        assert scopes[0] == scopes[1]
        region = options[1] if options[0] == "--region" else "us-east-1"
        assert scopes[0].startswith(region + "/sagemaker/")


def test_global_options_after_the_command(recorder: Recorder, env: dict[str, str]) -> None:
    recorder.take()
    result = run_tf(["describe-training-job", "--training-job-name", "g", "--endpoint-url", recorder.endpoint,
                     "--region", "eu-central-1"], env)
    assert result.code == 0, result.stderr
    (sent,) = recorder.take()
    assert "/eu-central-1/sagemaker/" in sent.headers["Authorization"]


def test_profile_option(recorder: Recorder, tmp_path: Path) -> None:
    env = aws_env(tmp_path)
    Path(env["AWS_CONFIG_FILE"]).write_text("[default]\nregion = us-east-1\n[profile other]\n"
                                            "region = ap-south-1\naws_access_key_id = AKIDOTHER\n"
                                            "aws_secret_access_key = s\n")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        env.pop(key)
    recorder.take()
    aws = run_aws(["--endpoint-url", recorder.endpoint, "--profile", "other", "sagemaker", "describe-training-job",
                   "--training-job-name", "p"], env)
    tf = run_tf(["--endpoint-url", recorder.endpoint, "--profile", "other", "describe-training-job",
                 "--training-job-name", "p"], env)
    assert aws.code == tf.code == 0, (aws.stderr, tf.stderr)
    a, t = recorder.take()
    for sent in (a, t):
        assert "Credential=AKIDOTHER/" in sent.headers["Authorization"]
        assert "/ap-south-1/sagemaker/" in sent.headers["Authorization"]


def test_waiter_sends_describe(recorder: Recorder, env: dict[str, str]) -> None:
    globals_ = ["--endpoint-url", recorder.endpoint, "--region", "us-east-1"]
    recorder.take()
    aws = run_aws(globals_ + ["sagemaker", "wait", "training-job-completed-or-stopped", "--training-job-name", "w"],
                  env)
    aws_sent = recorder.take()
    tf = run_tf(globals_ + ["wait", "training-job-completed-or-stopped", "--training-job-name", "w"], env)
    tf_sent = recorder.take()
    assert aws.code == tf.code == 0, (aws.stderr, tf.stderr)
    assert [(r.target, r.body) for r in tf_sent] == [(r.target, r.body) for r in aws_sent]
    assert tf.stdout == aws.stdout == ""


def test_waiter_failure_state_exits_255(recorder: Recorder, env: dict[str, str]) -> None:
    recorder.responses["SageMaker.DescribeTrainingJob"] = {**recorder.responses["SageMaker.DescribeTrainingJob"],
                                                           "TrainingJobStatus": "Failed"}
    try:
        tf = run_tf(["--endpoint-url", recorder.endpoint, "wait", "training-job-completed-or-stopped",
                     "--training-job-name", "w"], env)
    finally:
        from test_cli_support import CANNED

        recorder.responses["SageMaker.DescribeTrainingJob"] = CANNED["SageMaker.DescribeTrainingJob"]
    assert tf.code == 255
    assert "Waiter TrainingJobCompletedOrStopped failed" in tf.stderr


def test_sagemaker_prefix_is_accepted(recorder: Recorder, env: dict[str, str]) -> None:
    """`trainforge sagemaker describe-training-job ...` as copied from AWS documentation."""
    recorder.take()
    result = run_tf(["--endpoint-url", recorder.endpoint, "sagemaker", "describe-training-job",
                     "--training-job-name", "s"], env)
    assert result.code == 0, result.stderr
    assert recorder.take()[0].body == {"TrainingJobName": "s"}
