"""`--output` / `--query` render as `aws` renders them; `--generate-cli-skeleton` prints what `aws` prints."""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from botocore import xform_name
from test_cli_support import Recorder, aws_env, run_aws, run_tf

from trainforge import awsmodel
from trainforge.cli.opargs import operation_spec


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    rec = Recorder().start()
    yield rec
    rec.stop()


@pytest.fixture(scope="module")
def envs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """One environment per timestamp format for the whole module (so awscli drivers are reused)."""
    return {fmt: aws_env(tmp_path_factory.mktemp(fmt), fmt) for fmt in ("iso8601", "wire")}


COMMANDS = [
    ["describe-training-job", "--training-job-name", "my-job"],
    ["list-training-jobs"],
    ["list-training-jobs", "--max-items", "2"],
    ["list-tags", "--resource-arn", "arn:aws:sagemaker:us-east-1:000000000000:training-job/my-job"],
    ["create-training-job", "--training-job-name", "n", "--role-arn", "arn:aws:iam::0:role/r",
     "--output-data-config", "S3OutputPath=s3://b/o"],
    ["stop-training-job", "--training-job-name", "n"],
    ["update-training-job", "--training-job-name", "n", "--resource-config", "KeepAlivePeriodInSeconds=60"],
    ["delete-training-job", "--training-job-name", "n"],
    ["add-tags", "--resource-arn", "arn:x", "--tags", "Key=team,Value=ml"],
    ["delete-tags", "--resource-arn", "arn:x", "--tag-keys", "team"],
]
QUERIES = [None, "TrainingJobStatus", "SecondaryStatusTransitions[].[Status,StatusMessage]",
           "TrainingJobSummaries[?TrainingJobStatus=='Completed'].TrainingJobName", "Tags[0]",
           "{name: TrainingJobName, metrics: FinalMetricDataList}", "ResourceConfig"]


def _globals(recorder: Recorder, output: str, query: str | None) -> list[str]:
    args = ["--endpoint-url", recorder.endpoint, "--region", "us-east-1", "--output", output]
    return args + (["--query", query] if query else [])


@pytest.mark.parametrize(("output", "timestamps"),
                         [("json", "iso8601"), ("text", "iso8601"), ("table", "iso8601"), ("json", "wire")])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_output_formats_match_aws(recorder: Recorder, envs: dict[str, dict[str, str]], command: list[str],
                                  output: str, timestamps: str) -> None:
    env = envs[timestamps]
    for query in QUERIES:
        args = _globals(recorder, output, query)
        aws = run_aws(args + ["sagemaker"] + command, env)
        tf = run_tf(args + command, env)
        assert (tf.code, tf.stdout) == (aws.code, aws.stdout), f"query {query!r}\n{tf.stderr}\n{aws.stderr}"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_yaml_outputs_carry_the_json_data(recorder: Recorder, envs: dict[str, dict[str, str]], command: list[str]) -> None:
    env = envs["iso8601"]
    for query in QUERIES:
        aws = run_aws(_globals(recorder, "json", query) + ["sagemaker"] + command, env)
        expected = json.loads(aws.stdout) if aws.stdout.strip() else None
        tf_yaml = run_tf(_globals(recorder, "yaml", query) + command, env)
        assert tf_yaml.code == 0, tf_yaml.stderr
        assert (yaml.safe_load(tf_yaml.stdout) if tf_yaml.stdout.strip() else None) == expected
        stream = run_tf(_globals(recorder, "yaml-stream", query) + command, env)
        assert stream.code == 0, stream.stderr
        pages = yaml.safe_load(stream.stdout)
        assert isinstance(pages, list)
        if query is None and expected is not None:
            merged: dict = {}
            for page in pages:
                for key, value in page.items():
                    merged[key] = merged.get(key, []) + value if isinstance(value, list) else value
            merged.pop("NextToken", None)
            expected.pop("NextToken", None)
            assert merged == expected


def test_yaml_is_block_style_with_sorted_keys(recorder: Recorder, envs: dict[str, dict[str, str]]) -> None:
    env = envs["iso8601"]
    out = run_tf(_globals(recorder, "yaml", None) + ["describe-training-job", "--training-job-name", "j"], env)
    keys = [line.split(":")[0] for line in out.stdout.splitlines() if line and not line.startswith((" ", "-"))]
    assert keys == sorted(keys)
    assert "CreationTime: '2023-11-14T22:13:20.123000+00:00'" in out.stdout
    assert "{" not in out.stdout


def test_output_from_profile_config(recorder: Recorder, tmp_path: Path) -> None:
    env = aws_env(tmp_path)
    Path(env["AWS_CONFIG_FILE"]).write_text("[default]\noutput = text\ncli_timestamp_format = iso8601\n")
    args = ["--endpoint-url", recorder.endpoint, "--region", "us-east-1"]
    command = ["describe-training-job", "--training-job-name", "j"]
    aws = run_aws(args + ["sagemaker"] + command, env)
    tf = run_tf(args + command, env)
    assert tf.stdout == aws.stdout
    assert not tf.stdout.lstrip().startswith("{")


@pytest.mark.parametrize("operation", awsmodel.SUPPORTED_OPERATIONS)
def test_input_skeleton_matches_aws(envs: dict[str, dict[str, str]], operation: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    env = envs["iso8601"]
    command = xform_name(operation, "-")
    monkeypatch.setattr(random, "choice", lambda seq: seq[0])  # ArgumentGenerator's enum pick
    aws = run_aws(["sagemaker", command, "--generate-cli-skeleton"], env, fresh=True)
    tf = run_tf([command, "--generate-cli-skeleton"], env)
    tf_input = run_tf([command, "--generate-cli-skeleton", "input"], env)
    assert aws.code == tf.code == tf_input.code == 0, tf.stderr
    assert tf.stdout == aws.stdout == tf_input.stdout


def _required_args(operation: str) -> list[str]:
    samples = {"TrainingJobName": "n", "RoleArn": "arn:aws:iam::0:role/r", "ResourceArn": "arn:x",
               "OutputDataConfig": "S3OutputPath=s3://b/o", "Tags": "Key=k,Value=v", "TagKeys": "k",
               "AlgorithmName": "a", "TrainingSpecification": json.dumps({
                   "TrainingImage": "x", "SupportedTrainingInstanceTypes": ["ml.m5.large"], "TrainingChannels": [
                       {"Name": "train", "SupportedContentTypes": ["text/csv"], "SupportedInputModes": ["File"]}]})}
    spec = operation_spec(operation)
    out: list[str] = []
    for arg in spec.arguments.values():
        if arg.required:
            out += [arg.cli_name, samples[arg.member]]
    return out


@pytest.mark.parametrize("output", ["json", "text", "table"])
@pytest.mark.parametrize("operation", awsmodel.SUPPORTED_OPERATIONS)
def test_output_skeleton_matches_aws(envs: dict[str, dict[str, str]], operation: str, output: str) -> None:
    env = envs["iso8601"]
    command = [xform_name(operation, "-")] + _required_args(operation) + ["--generate-cli-skeleton", "output"]
    aws = run_aws(["--output", output, "sagemaker"] + command, env, fresh=True)
    tf = run_tf(["--output", output] + command, env)
    assert tf.code == 0, tf.stderr
    if aws.code == 0:
        assert tf.stdout == aws.stdout
    else:  # awscli's stubber rejects its own sample (members with minimum values); trainforge prints it
        assert "Parameter validation failed" in aws.stderr
        if output == "json":
            assert set(json.loads(tf.stdout)) == set(awsmodel.operation(operation).output_shape.members)


def test_output_skeleton_validates_the_parameters(envs: dict[str, dict[str, str]]) -> None:
    result = run_tf(["create-training-job", "--training-job-name", "n", "--generate-cli-skeleton", "output"],
                    envs["iso8601"])
    assert result.code == 252
    assert "--role-arn" in result.stderr


@pytest.mark.parametrize("ruamel", [True, False], ids=["ruamel", "own-emitter"])
@pytest.mark.parametrize("operation", awsmodel.SUPPORTED_OPERATIONS)
def test_yaml_input_skeleton(envs: dict[str, dict[str, str]], operation: str, ruamel: bool,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    if ruamel:
        pytest.importorskip("ruamel.yaml")
    else:  # the emitter used where ruamel.yaml is not installed
        monkeypatch.setitem(sys.modules, "ruamel.yaml", None)
    env = envs["iso8601"]
    command = xform_name(operation, "-")
    monkeypatch.setattr(random, "choice", lambda seq: seq[0])
    as_json = json.loads(run_tf([command, "--generate-cli-skeleton", "input"], env).stdout)
    result = run_tf([command, "--generate-cli-skeleton", "yaml-input"], env)
    assert result.code == 0, result.stderr
    assert _json_equivalent(yaml.safe_load(result.stdout)) == as_json
    shape = awsmodel.operation(operation).input_shape
    lines = {line.split(":")[0]: line for line in result.stdout.splitlines() if not line.startswith(" ")}
    for member in shape.required_members:
        assert "# [REQUIRED]" in lines[member], lines[member]
    if operation == "ListTrainingJobs":
        assert "Valid values are: Name, CreationTime, Status." in lines["SortBy"]


def _json_equivalent(value):  # type: ignore[no-untyped-def]
    """YAML timestamps load as datetimes; the JSON skeleton has them as ISO strings."""
    import datetime

    if isinstance(value, dict):
        return {k: _json_equivalent(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_equivalent(v) for v in value]
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return value
