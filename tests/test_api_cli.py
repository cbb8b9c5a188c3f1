"""The ``aws`` command (the awscli package) against a real server: create-training-job with the
shorthand syntax of the reference pages and with ``--cli-input-json file://...``; the output of
describe-training-job parses and matches what was sent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import ServerProcess, unique_name, wait_until

from trainforge.service.describe_defaults import fill_in

pytestmark = pytest.mark.skipif(shutil.which("aws") is None, reason="the aws CLI (awscli) is not installed")


def aws(server: ServerProcess, tmp_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        # No user configuration leaks into the test.
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-creds"),
        "AWS_PAGER": "", "AWS_MAX_ATTEMPTS": "1",
    })
    proc = subprocess.run(["aws", "--endpoint-url", server.endpoint, "--output", "json", "sagemaker", *args],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def describe(server: ServerProcess, tmp_path: Path, name: str) -> dict[str, Any]:
    out = aws(server, tmp_path, "describe-training-job", "--training-job-name", name).stdout
    return json.loads(out)


def make_bucket(s3: Any, bucket: str, *keys: str) -> None:
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "BucketAlreadyOwnedByYou", exc
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"1,2\n")


def test_create_with_shorthand_syntax(server: ServerProcess, tmp_path: Path, s3: Any) -> None:
    name = unique_name("cli-short")
    make_bucket(s3, "tf-cli-input", "train/a.csv", "val/b.csv")
    make_bucket(s3, "tf-cli-output")
    out = aws(
        server, tmp_path, "create-training-job",
        "--training-job-name", name,
        "--hyper-parameters", "epochs=3,learning_rate=0.05",
        "--algorithm-specification",
        "TrainingImage=trainforge/command:latest,TrainingInputMode=File,"
        "MetricDefinitions=[{Name=loss,Regex=loss: (.*)},{Name=acc,Regex=acc: (.*)}],"
        "EnableSageMakerMetricsTimeSeries=true,ContainerEntrypoint=/bin/sh,-c,ContainerArguments=exit 0",
        "--role-arn", "arn:aws:iam::000000000000:role/SageMakerRole",
        "--input-data-config",
        "ChannelName=train,DataSource={S3DataSource={S3DataType=S3Prefix,S3Uri=s3://tf-cli-input/train/,"
        "S3DataDistributionType=FullyReplicated}},ContentType=text/csv,InputMode=File",
        "ChannelName=validation,DataSource={S3DataSource={S3DataType=S3Prefix,S3Uri=s3://tf-cli-input/val/}}",
        "--output-data-config", "S3OutputPath=s3://tf-cli-output/out,CompressionType=NONE",
        "--resource-config", "InstanceType=ml.m5.large,InstanceCount=1,VolumeSizeInGB=10",
        "--stopping-condition", "MaxRuntimeInSeconds=3600",
        "--tags", "Key=team,Value=ml", "Key=stage,Value=test",
        "--no-enable-network-isolation",
        "--no-enable-inter-container-traffic-encryption",
        "--checkpoint-config", "S3Uri=s3://tf-cli-output/ckpt,LocalPath=/opt/ml/checkpoints",
        "--tensor-board-output-config", "S3OutputPath=s3://tf-cli-output/tb",
        "--experiment-config", "ExperimentName=cli-exp,TrialName=cli-trial",
        "--profiler-config", "S3OutputPath=s3://tf-cli-output/prof,ProfilingIntervalInMilliseconds=500,"
                             "ProfilingParameters={CPUProfilingConfig=x},DisableProfiler=false",
        "--environment", "MODE=test,LEVEL=3",
        "--retry-strategy", "MaximumRetryAttempts=2",
        "--infra-check-config", "EnableInfraCheck=false",
    ).stdout
    arn = json.loads(out)["TrainingJobArn"]
    assert arn == f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{name}"
    try:
        d = describe(server, tmp_path, name)
        assert d["TrainingJobName"] == name and d["TrainingJobArn"] == arn
        assert d["HyperParameters"] == {"epochs": "3", "learning_rate": "0.05"}
        assert d["AlgorithmSpecification"] == {
            "TrainingImage": "trainforge/command:latest", "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": "loss", "Regex": "loss: (.*)"}, {"Name": "acc", "Regex": "acc: (.*)"}],
            "EnableSageMakerMetricsTimeSeries": True, "ContainerEntrypoint": ["/bin/sh", "-c"],
            "ContainerArguments": ["exit 0"]}
        # As sent, with SageMaker's defaults for what the channels left out (describe_defaults.py).
        unset = {"CompressionType": "None", "RecordWrapperType": "None"}
        assert d["InputDataConfig"] == [
            {"ChannelName": "train", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": "s3://tf-cli-input/train/", "S3DataDistributionType": "FullyReplicated"}},
             "ContentType": "text/csv", "InputMode": "File", **unset},
            {"ChannelName": "validation", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": "s3://tf-cli-input/val/", "S3DataDistributionType": "FullyReplicated"}},
             **unset}]
        assert d["OutputDataConfig"] == {"S3OutputPath": "s3://tf-cli-output/out", "CompressionType": "NONE", "KmsKeyId": ""}
        assert d["ResourceConfig"] == {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10}
        assert d["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}
        assert d["EnableNetworkIsolation"] is False
        assert d["EnableInterContainerTrafficEncryption"] is False
        assert d["CheckpointConfig"] == {"S3Uri": "s3://tf-cli-output/ckpt", "LocalPath": "/opt/ml/checkpoints"}
        assert d["TensorBoardOutputConfig"] == {"S3OutputPath": "s3://tf-cli-output/tb"}
        assert d["ExperimentConfig"] == {"ExperimentName": "cli-exp", "TrialName": "cli-trial"}
        assert d["ProfilerConfig"] == {"S3OutputPath": "s3://tf-cli-output/prof", "ProfilingIntervalInMilliseconds": 500,
                                       "ProfilingParameters": {"CPUProfilingConfig": "x"}, "DisableProfiler": False}
        assert d["Environment"] == {"MODE": "test", "LEVEL": "3"}
        assert d["RetryStrategy"] == {"MaximumRetryAttempts": 2}
        assert d["InfraCheckConfig"] == {"EnableInfraCheck": False}
        assert d["ModelArtifacts"] == {"S3ModelArtifacts": f"s3://tf-cli-output/out/{name}/output/model/"}
        tags = json.loads(aws(server, tmp_path, "list-tags", "--resource-arn", arn).stdout)["Tags"]
        assert sorted((t["Key"], t["Value"]) for t in tags) == [("stage", "test"), ("team", "ml")]
        # The inputs exist and the command exits 0: the job completes.
        sm = server.client()
        wait_until(lambda: sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] not in
                   ("InProgress", "Stopping"), timeout=120, interval=0.2, message=f"{name} to end")
        d = describe(server, tmp_path, name)
        assert (d["TrainingJobStatus"], d.get("FailureReason")) == ("Completed", None)
    finally:
        aws(server, tmp_path, "stop-training-job", "--training-job-name", name, check=False)


def test_create_with_cli_input_json(server: ServerProcess, tmp_path: Path) -> None:
    name = unique_name("cli-json")
    request = {
        "TrainingJobName": name,
        "HyperParameters": {"sagemaker_program": "train.py", "batch-size": "64"},
        "AlgorithmSpecification": {"TrainingImage": "trainforge/command:latest", "TrainingInputMode": "Pipe",
                                   "ContainerEntrypoint": ["/bin/sh", "-c"], "ContainerArguments": ["exit 0"]},
        "RoleArn": "arn:aws:iam::000000000000:role/SageMakerRole",
        "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "ManifestFile", "S3Uri": "s3://tf-cli-input/train.manifest",
            "S3DataDistributionType": "ShardedByS3Key"}}, "CompressionType": "Gzip", "RecordWrapperType": "RecordIO",
            "ShuffleConfig": {"Seed": 7}}],
        "OutputDataConfig": {"S3OutputPath": "s3://tf-cli-output/json"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 900},
        "EnableManagedSpotTraining": True,
        "Tags": [{"Key": "origin", "Value": "cli-input-json"}],
        "DebugHookConfig": {"S3OutputPath": "s3://tf-cli-output/debug", "HookParameters": {"save_interval": "5"},
                            "CollectionConfigurations": [{"CollectionName": "weights"}]},
        "DebugRuleConfigurations": [{"RuleConfigurationName": "VanishingGradient",
                                     "RuleEvaluatorImage": "trainforge/rules:latest",
                                     "RuleParameters": {"rule_to_invoke": "VanishingGradient"}}],
    }
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    out = aws(server, tmp_path, "create-training-job", "--cli-input-json", f"file://{path}").stdout
    assert json.loads(out)["TrainingJobArn"].endswith(f":training-job/{name}")
    try:
        d = describe(server, tmp_path, name)
        for member, value in request.items():
            if member != "Tags":  # as sent, with SageMaker's defaults for what it left out
                assert d[member] == fill_in({member: value})[member], member
        assert "Tags" not in d
        assert d["SecondaryStatusTransitions"][0]["Status"] == "Starting"
        # awscli v1 prints timestamps as they came on the wire (epoch seconds).
        assert abs(float(d["CreationTime"]) - time.time()) < 600
        listed = json.loads(aws(server, tmp_path, "list-training-jobs", "--name-contains", name).stdout)
        assert [s["TrainingJobName"] for s in listed["TrainingJobSummaries"]] == [name]
    finally:
        aws(server, tmp_path, "stop-training-job", "--training-job-name", name, check=False)


def test_cli_reports_aws_errors(server: ServerProcess, tmp_path: Path) -> None:
    name = unique_name("nope")
    with pytest.raises(ClientError) as answer:
        server.client().describe_training_job(TrainingJobName=name)
    error = answer.value.response["Error"]
    assert (error["Code"], error["Message"]) == ("ValidationException", "Requested resource not found.")
    proc = aws(server, tmp_path, "describe-training-job", "--training-job-name", name, check=False)
    assert proc.returncode != 0
    assert "(ValidationException)" in proc.stderr and "Requested resource not found." in proc.stderr
    # A member trainforge cannot honour, in shorthand syntax: refused with the reason.
    name = unique_name("cli-vpc")
    proc = aws(server, tmp_path, "create-training-job", "--training-job-name", name,
               "--algorithm-specification", "TrainingImage=trainforge/command:latest,TrainingInputMode=File",
               "--role-arn", "arn:aws:iam::000000000000:role/SageMakerRole",
               "--output-data-config", "S3OutputPath=s3://tf-cli-output/out",
               "--resource-config", "InstanceType=ml.m5.large,InstanceCount=1,VolumeSizeInGB=10",
               "--stopping-condition", "MaxRuntimeInSeconds=60",
               "--vpc-config", "SecurityGroupIds=sg-0123456789abcdef0,Subnets=subnet-01234567,subnet-89abcdef",
               check=False)
    assert proc.returncode != 0
    assert "(ValidationException)" in proc.stderr and "VpcConfig is not supported by trainforge" in proc.stderr
