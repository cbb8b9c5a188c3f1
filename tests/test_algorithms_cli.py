"""Algorithm resources through the command lines (issue 14): ``aws sagemaker create-algorithm`` and
the rest with the awscli package, the same operations with ``trainforge``, and a training job on the
algorithm created from the aws CLI, against a real server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import unique_name, wait_for_job
from test_algorithms import algorithm_job, specification
from test_builtin_xgboost import csv_bytes, dataset, upload
from test_cli_support import aws_env, run_aws, run_tf


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return aws_env(tmp_path)


def aws(server: Any, env: dict[str, str], *args: str) -> dict[str, Any]:
    result = run_aws(["--endpoint-url", server.endpoint, "--output", "json", "sagemaker", *args], env)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else {}


def test_algorithm_lifecycle_with_the_aws_cli(server: Any, env: dict[str, str], tmp_path: Path) -> None:
    name = unique_name("cli-algo")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(specification()))
    arn = aws(server, env, "create-algorithm", "--algorithm-name", name, "--algorithm-description", "from the CLI",
              "--training-specification", f"file://{spec_file}", "--tags", "Key=team,Value=ml")["AlgorithmArn"]
    assert arn.endswith(f":algorithm/{name}")
    described = aws(server, env, "describe-algorithm", "--algorithm-name", name)
    assert described["AlgorithmStatus"] == "Completed"
    assert described["TrainingSpecification"] == specification()
    listed = aws(server, env, "list-algorithms", "--name-contains", name)["AlgorithmSummaryList"]
    assert [(a["AlgorithmName"], a["AlgorithmDescription"]) for a in listed] == [(name, "from the CLI")]
    assert aws(server, env, "list-tags", "--resource-arn", arn)["Tags"] == [{"Key": "team", "Value": "ml"}]
    aws(server, env, "add-tags", "--resource-arn", arn, "--tags", "Key=env,Value=dev")
    aws(server, env, "delete-tags", "--resource-arn", arn, "--tag-keys", "team")
    assert aws(server, env, "list-tags", "--resource-arn", arn)["Tags"] == [{"Key": "env", "Value": "dev"}]
    # A refusal is the CLI's error, with the service's message.
    bad = run_aws(["--endpoint-url", server.endpoint, "sagemaker", "create-algorithm", "--algorithm-name",
                   unique_name("cli-algo"), "--training-specification", f"file://{spec_file}",
                   "--certify-for-marketplace"], env)
    assert bad.code != 0 and "ValidationException" in bad.stderr and "CertifyForMarketplace" in bad.stderr
    aws(server, env, "delete-algorithm", "--algorithm-name", name)  # a name only (the model: EntityName)
    gone = run_aws(["--endpoint-url", server.endpoint, "sagemaker", "describe-algorithm", "--algorithm-name",
                    name], env)
    assert gone.code != 0 and "does not exist" in gone.stderr, gone.stderr


def test_algorithm_with_the_trainforge_cli(server: Any, env: dict[str, str], tmp_path: Path) -> None:
    name = unique_name("tf-algo")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(specification()))
    base = ["--endpoint-url", server.endpoint, "--output", "json"]
    created = run_tf([*base, "create-algorithm", "--algorithm-name", name,
                      "--training-specification", f"file://{spec_file}"], env)
    assert created.code == 0, created.stderr
    arn = json.loads(created.stdout)["AlgorithmArn"]
    described = run_tf([*base, "describe-algorithm", "--algorithm-name", arn], env)
    assert described.code == 0, described.stderr
    assert json.loads(described.stdout)["TrainingSpecification"]["TrainingImage"] == specification()["TrainingImage"]
    deleted = run_tf([*base, "delete-algorithm", "--algorithm-name", name], env)
    assert deleted.code == 0, deleted.stderr
    missing = run_tf([*base, "describe-algorithm", "--algorithm-name", name], env)
    assert missing.code != 0 and "does not exist" in missing.stderr, missing


def test_training_job_on_an_algorithm_from_the_aws_cli(server: Any, s3: Any, bucket: str, env: dict[str, str],
                                                       tmp_path: Path) -> None:
    sm = server.client()
    algorithm = unique_name("cli-algo")
    sm.create_algorithm(AlgorithmName=algorithm, TrainingSpecification=specification())
    x, y = dataset(500, seed=41)
    upload(s3, bucket, "algo/train", {"t.csv": csv_bytes(x, y)})
    name = unique_name("cli-algo-job")
    request = algorithm_job(name, bucket, algorithm, {"eta": "0.9"})
    request_file = tmp_path / "job.json"
    request_file.write_text(json.dumps(request))
    refused = run_aws(["--endpoint-url", server.endpoint, "sagemaker", "create-training-job",
                       "--cli-input-json", f"file://{request_file}"], env)
    assert refused.code != 0 and "Hyperparameter eta: value 0.9 is outside its range" in refused.stderr, refused
    request["HyperParameters"] = {"eta": "0.2"}
    request_file.write_text(json.dumps(request))
    aws(server, env, "create-training-job", "--cli-input-json", f"file://{request_file}")
    described = wait_for_job(sm, name, timeout=180)
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    assert described["HyperParameters"]["num_round"] == "7"  # the algorithm's default
