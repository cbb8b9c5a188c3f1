"""Parameter forms (shorthand, JSON, file://, fileb://, --cli-input-json/yaml) and parameter errors.

The Shorthand Syntax and JSON Syntax examples of every option on the newest reference page
(shared/spec/003_*.txt) are filled in and sent by both `aws` and `trainforge`: the requests must be
equal. Bad parameters must exit 252 with a clear message and send nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from conftest import ServerProcess, unique_name
from test_cli_support import Recorder, aws_env, run_aws, run_tf

from trainforge.cli.opargs import operation_spec

SPEC_DIR = Path(__file__).resolve().parents[2] / "shared" / "spec"
PAGE = next(iter(sorted(SPEC_DIR.glob("003_*.txt"))), None) if SPEC_DIR.is_dir() else None
LONG = "value-" + "x" * 54  # passes every minimum length (botocore checks no maximum)
REQUIRED = {"--training-job-name": "spec-job", "--role-arn": "arn:aws:iam::000000000000:role/SageMakerRole",
            "--output-data-config": "S3OutputPath=s3://bucket/out"}
PLACEHOLDERS = {"string": LONG, "integer": "7200", "long": "7200", "boolean": "true", "double": "2.5", "float": "2.5",
                "timestamp": "2024-05-06T07:08:09Z"}

needs_page = pytest.mark.skipif(PAGE is None, reason="shared/spec reference pages not present")


def page_options() -> dict[str, tuple[str, str | None, str | None]]:
    """--option → (type, shorthand example, JSON example) from the reference page."""
    assert PAGE is not None
    text = PAGE.read_text()
    parts = re.split(r"\n`(--[a-z0-9-]+)` \(([a-z]+)\)\n", text)
    out = {}
    for i in range(1, len(parts), 3):
        body = parts[i + 2]
        shorthand = re.search(r"Shorthand Syntax:\s*```\s*\n(.*?)\n```", body, re.DOTALL)
        as_json = re.search(r"JSON Syntax:\s*```\s*\n(.*?)\n```", body, re.DOTALL)
        out[parts[i]] = (parts[i + 1], shorthand.group(1) if shorthand else None, as_json.group(1) if as_json else None)
    return out


def synopsis_options() -> list[str]:
    assert PAGE is not None
    block = PAGE.read_text().split("## Synopsis", 1)[1].split("```")[1]
    return re.findall(r"--[a-z0-9-]+", block)


def fill_shorthand(example: str) -> list[str]:
    """`Key=string,Value=string ...` → argv values with the placeholders replaced."""
    example = example.replace(" ...", "")
    filled = re.sub(r"(?<==)(string|integer|long|boolean|double|float|timestamp)\b",
                    lambda m: PLACEHOLDERS[m.group(1)], example)
    filled = re.sub(r"(?<=,)string\b", LONG, filled)  # list members: ContainerEntrypoint=string,string
    return [filled]


def fill_json(example: str) -> str:
    text = re.sub(r'("[^"]*")(\|"[^"]*")+', r"\1", example)  # "Pipe"|"File" → "Pipe"
    text = text.replace("true|false", "true")
    text = re.sub(r",?\s*\.\.\.", "", text)  # list / map continuation marks
    text = re.sub(r":\s*(integer|long)\b", ": 7200", text)
    text = re.sub(r":\s*(double|float)\b", ": 2.5", text)
    text = re.sub(r":\s*timestamp\b", ': "2024-05-06T07:08:09Z"', text)
    text = text.replace('"string"', json.dumps(LONG))
    text = re.sub(r"\[\s*\"", '["', text)
    json.loads(text)  # the example itself must be valid JSON once filled
    return text


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    rec = Recorder().start()
    yield rec
    rec.stop()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return aws_env(tmp_path)


def send_both(recorder: Recorder, env: dict[str, str], args: list[str]) -> tuple[list, list]:
    base = ["--endpoint-url", recorder.endpoint, "--region", "us-east-1"]
    recorder.take()
    aws = run_aws(base + ["sagemaker", "create-training-job"] + args, env)
    aws_sent = recorder.take()
    tf = run_tf(base + ["create-training-job"] + args, env)
    tf_sent = recorder.take()
    assert aws.code == 0, aws.stderr
    assert tf.code == 0, tf.stderr
    assert [r.body for r in tf_sent] == [r.body for r in aws_sent]
    return aws_sent, tf_sent


def with_required(option: str, values: list[str]) -> list[str]:
    args: list[str] = []
    for name, value in REQUIRED.items():
        if name != option:
            args += [name, value]
    return args + [option, *values]


def example_cases(kind: str) -> Iterator[object]:
    if PAGE is None:
        return
    for option, (_, shorthand, as_json) in page_options().items():
        example = shorthand if kind == "shorthand" else as_json
        if example:
            yield pytest.param(option, example, id=option)


@needs_page
@pytest.mark.parametrize(("option", "example"), list(example_cases("shorthand")))
def test_shorthand_examples_of_the_reference_page(recorder: Recorder, env: dict[str, str], option: str,
                                                  example: str) -> None:
    aws_sent, _ = send_both(recorder, env, with_required(option, fill_shorthand(example)))
    member = next(a.member for a in operation_spec("CreateTrainingJob").arguments.values() if a.cli_name == option)
    assert member in aws_sent[0].body


@needs_page
@pytest.mark.parametrize(("option", "example"), list(example_cases("json")))
def test_json_examples_of_the_reference_page(recorder: Recorder, env: dict[str, str], option: str,
                                             example: str) -> None:
    send_both(recorder, env, with_required(option, [fill_json(example)]))


@needs_page
@pytest.mark.parametrize(("option", "example"), list(example_cases("json")))
def test_file_uri_examples_of_the_reference_page(recorder: Recorder, env: dict[str, str], tmp_path: Path,
                                                 option: str, example: str) -> None:
    path = tmp_path / "value.json"
    path.write_text(fill_json(example))
    send_both(recorder, env, with_required(option, [f"file://{path}"]))


@needs_page
def test_the_reference_page_examples_were_found() -> None:
    options = page_options()
    assert sum(1 for _, shorthand, _ in options.values() if shorthand) >= 15
    assert sum(1 for _, _, as_json in options.values() if as_json) >= 18
    assert len(synopsis_options()) >= 40


@needs_page
def test_every_synopsis_option_of_the_reference_page_is_accepted(env: dict[str, str]) -> None:
    help_text = run_tf(["create-training-job", "help"], env).stdout
    for option in synopsis_options():
        assert option in help_text, option


def test_list_shorthand_takes_several_values(recorder: Recorder, env: dict[str, str]) -> None:
    aws_sent, _ = send_both(recorder, env, with_required("--tags", ["Key=a,Value=1", "Key=b,Value=2"]))
    assert aws_sent[0].body["Tags"] == [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]


def test_quoted_and_nested_shorthand(recorder: Recorder, env: dict[str, str]) -> None:
    value = ('TrainingImage="img:1,2",TrainingInputMode=File,MetricDefinitions=[{Name=loss,Regex=\'loss=(\\d+)\'},'
             '{Name=acc,Regex="acc=([0-9.]+)"}],ContainerArguments=[a b,"c,d"]')
    aws_sent, _ = send_both(recorder, env, with_required("--algorithm-specification", [value]))
    spec = aws_sent[0].body["AlgorithmSpecification"]
    assert spec["TrainingImage"] == "img:1,2"
    assert spec["MetricDefinitions"][0]["Regex"] == "loss=(\\d+)"
    assert spec["ContainerArguments"] == ["a b", "c,d"]


def test_cli_input_json_and_command_line_override(recorder: Recorder, env: dict[str, str], tmp_path: Path) -> None:
    body = {"TrainingJobName": "from-file", "RoleArn": REQUIRED["--role-arn"],
            "OutputDataConfig": {"S3OutputPath": "s3://bucket/file"}, "HyperParameters": {"a": "1"}}
    path = tmp_path / "input.json"
    path.write_text(json.dumps(body))
    aws_sent, _ = send_both(recorder, env, ["--cli-input-json", f"file://{path}", "--training-job-name", "cli"])
    assert aws_sent[0].body["TrainingJobName"] == "cli"
    assert aws_sent[0].body["HyperParameters"] == {"a": "1"}
    send_both(recorder, env, ["--cli-input-json", json.dumps(body)])


def test_cli_input_yaml_equals_cli_input_json(recorder: Recorder, env: dict[str, str], tmp_path: Path) -> None:
    body = {"TrainingJobName": "yaml-job", "RoleArn": REQUIRED["--role-arn"],
            "OutputDataConfig": {"S3OutputPath": "s3://bucket/file"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 5}}
    as_yaml = tmp_path / "input.yaml"
    as_yaml.write_text("TrainingJobName: yaml-job\nRoleArn: arn:aws:iam::000000000000:role/SageMakerRole\n"
                       "OutputDataConfig:\n  S3OutputPath: s3://bucket/file\nResourceConfig:\n"
                       "  InstanceType: ml.m5.large\n  InstanceCount: 2\n  VolumeSizeInGB: 5\n")
    recorder.take()
    base = ["--endpoint-url", recorder.endpoint, "create-training-job"]
    assert run_tf(base + ["--cli-input-yaml", f"file://{as_yaml}"], env).code == 0
    assert run_tf(base + ["--cli-input-json", json.dumps(body)], env).code == 0
    from_yaml, from_json = recorder.take()
    assert from_yaml.body == from_json.body == body


def test_fileb_uri(recorder: Recorder, env: dict[str, str], tmp_path: Path) -> None:
    """fileb:// gives the file's bytes: fine for --cli-input-json; a string member rejects bytes (as aws does)."""
    body = {"TrainingJobName": "from-bytes", "RoleArn": REQUIRED["--role-arn"],
            "OutputDataConfig": {"S3OutputPath": "s3://bucket/file"}}
    path = tmp_path / "input.json"
    path.write_bytes(json.dumps(body).encode())
    aws_sent, _ = send_both(recorder, env, ["--cli-input-json", f"fileb://{path}"])
    assert aws_sent[0].body == body
    role = tmp_path / "role.bin"
    role.write_bytes(REQUIRED["--role-arn"].encode())
    recorder.take()
    result = run_tf(["--endpoint-url", recorder.endpoint, "create-training-job", "--training-job-name", "b",
                     "--output-data-config", "S3OutputPath=s3://b/o", "--role-arn", f"fileb://{role}"], env)
    aws = run_aws(["--endpoint-url", recorder.endpoint, "sagemaker", "create-training-job", "--training-job-name",
                   "b", "--output-data-config", "S3OutputPath=s3://b/o", "--role-arn", f"fileb://{role}"], env)
    assert result.code == 252 and aws.code != 0
    assert "Invalid type for parameter RoleArn" in result.stderr and "Invalid type for parameter RoleArn" in aws.stderr
    assert recorder.take() == []


def test_file_uri_for_a_scalar(recorder: Recorder, env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "role.txt"
    path.write_text(REQUIRED["--role-arn"])
    aws_sent, _ = send_both(recorder, env, with_required("--role-arn", [f"file://{path}"]))
    assert aws_sent[0].body["RoleArn"] == REQUIRED["--role-arn"]


AWS = None  # the expected message: what `aws sagemaker <same arguments>` prints in the same run

BAD: list[tuple[list[str], str | None]] = [
    (["create-training-job", "--role-arn", "arn:aws:iam::0:role/r", "--output-data-config", "S3OutputPath=s3://b/o"],
     AWS),
    # trainforge shows where the shorthand stopped (awscli 1.x prints "{self._error_location()}")
    (["create-training-job", "--training-job-name", "j", "--role-arn", "arn:aws:iam::000000000000:role/r",
      "--output-data-config", "S3OutputPath"],
     "Error parsing parameter '--output-data-config': Expected: '=', received: 'EOF' for input:\nS3OutputPath\n"),
    (["create-training-job", "--training-job-name", "j", "--role-arn", "arn:aws:iam::000000000000:role/r",
      "--output-data-config", "{\"S3OutputPath\":"], AWS),
    (["create-training-job", "--training-job-name", "j", "--role-arn", "arn:aws:iam::000000000000:role/r",
      "--output-data-config", "S3OutputPath=s3://b/o", "--resource-config", "Bogus=1"], AWS),
    (["create-training-job", "--training-job-name", "j", "--role-arn", "arn:aws:iam::000000000000:role/r",
      "--output-data-config", "S3OutputPath=s3://b/o", "--resource-config", "InstanceCount=many"], AWS),
    (["create-training-job", "--training-job-name", "j", "--role-arn", "short",
      "--output-data-config", "S3OutputPath=s3://b/o"], AWS),
    (["create-training-job", "--training-job-name", "j", "--role-arn", "arn:aws:iam::000000000000:role/r",
      "--output-data-config", "file:///nonexistent/trainforge/x.json"], AWS),
    (["describe-training-job", "--training-job-name", "j", "--bogus", "1"], AWS),
    (["describe-training-job", "--training-job-name", "j", "--query", "Foo[?"], AWS),
    # trainforge's own wording where aws 1.x differs or has no such option
    (["describe-training-job", "--training-job-name", "j", "--output", "xml"], "invalid choice: 'xml'"),
    (["describe-training-job", "--cli-input-json", "{not json"], "Invalid JSON received"),
    (["describe-training-job", "--cli-input-yaml", "a: [1"], "Invalid YAML received"),
    (["describe-training-job", "--cli-input-json", "{}", "--cli-input-yaml", "{}"],
     "Only one --cli-input- parameter may be specified"),
    (["describe-training-job", "--cli-input-json", "[1]"], "expecting map"),
    (["describe-training-job", "--cli-input-json", "{}"], AWS),
    (["list-training-jobs", "--max-results", "lots"], AWS),
    (["list-training-jobs", "--max-items", "x"], AWS),
    (["list-training-jobs", "--no-paginate", "--max-items", "3"], "Cannot specify --no-paginate"),
    (["list-training-jobs", "--creation-time-after", "yesterday-ish"], AWS),
    (["wait", "training-job-completed-or-stopped"], AWS),
    (["frobnicate-training-job"], "Invalid choice 'frobnicate-training-job'"),
]


def aws_message(stderr: str) -> str:
    """What `aws` said, without its usage preamble and its program name (``aws: error: ``)."""
    last = stderr.strip().split("\n\n")[-1]
    return re.sub(r"^\S*: error: ", "", last.splitlines()[-1]) if ": error: " in last else last


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a[:3])[:60] for a, _ in BAD])
def test_bad_parameters_exit_252_and_send_nothing(recorder: Recorder, env: dict[str, str], args: list[str],
                                                  message: str | None) -> None:
    recorder.take()
    if message is AWS:
        aws = run_aws(["--endpoint-url", recorder.endpoint, "sagemaker"] + args, env)
        assert aws.code != 0, aws.stdout
        message = aws_message(aws.stderr)
        assert message, aws.stderr
    result = run_tf(["--endpoint-url", recorder.endpoint] + args, env)
    assert result.code == 252, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert recorder.take() == []


def test_service_error_exits_254_with_the_aws_message(server: ServerProcess, env: dict[str, str]) -> None:
    """A service error is printed as the real `aws` prints the same answer of the same server."""
    name = unique_name("nope")
    with pytest.raises(ClientError) as answer:
        server.client().describe_training_job(TrainingJobName=name)
    error = answer.value.response["Error"]
    args = ["--endpoint-url", server.endpoint, "--region", "us-east-1"]
    tf = run_tf(args + ["describe-training-job", "--training-job-name", name], env)
    aws = run_aws(args + ["sagemaker", "describe-training-job", "--training-job-name", name], env)
    assert tf.code == 254 and aws.code != 0  # 254 as AWS CLI v2 exits on a service error (awscli 1.x: 255)
    assert tf.stdout == aws.stdout == ""
    assert tf.stderr == aws.stderr
    assert f"({error['Code']})" in tf.stderr and error["Message"] in tf.stderr


def test_unreachable_endpoint_exits_255(env: dict[str, str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_tf(["--endpoint-url", f"http://127.0.0.1:{port}", "describe-training-job",
                     "--training-job-name", "x"], env)
    assert result.code == 255
    assert "Could not connect to the endpoint URL" in result.stderr
