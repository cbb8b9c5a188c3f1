"""The /opt/ml files, the environment and the command line: pure functions of the spec."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from test_agent_harness import (
    ControlPlane,
    base_request,
    control_fixture,  # noqa: F401 - the fixture "control"
    make_spec,
    run_agent,
    shell,
)

from trainforge.agent import environment, layout
from trainforge.agent.spec import Paths

HPS = {"epochs": "3", "lr": "0.1", "model-type": '"resnet"', "flag": "true", "plain": "not json",
       "nested": '{"b": 2, "a": [1, 2]}', "x": "5",
       "sagemaker_program": '"train.py"', "sagemaker_submit_directory": '"s3://b/src.tar.gz"',
       "sagemaker_container_log_level": "20", "sagemaker_mpi_enabled": "false",
       "_tuning_objective_metric": '"loss"'}


def spec_for(tmp_path: Path, isolation: str = "sandbox", **req: Any) -> dict[str, Any]:
    request = base_request("job-1", HyperParameters=HPS, **req)
    request.setdefault("InputDataConfig", [
        {"ChannelName": "validation", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/v"}}},
        {"ChannelName": "train", "InputMode": "Pipe", "ContentType": "text/csv", "RecordWrapperType": "RecordIO",
         "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/t",
                                         "S3DataDistributionType": "ShardedByS3Key"}}},
    ])
    inst = tmp_path / "job" / "algo-2"
    return {"job_name": "job-1", "job_arn": "arn:aws:sagemaker:us-east-1:000000000000:training-job/job-1",
            "region": "eu-west-1", "host": "algo-2", "hosts": ["algo-2", "algo-1", "algo-3"],
            "instance_type": "ml.m5.xlarge", "job_dir": str(tmp_path / "job"), "instance_dir": str(inst),
            "request": request, "runtime": {"command": [sys.executable, "-m", "x"], "python": sys.executable},
            "control_url": "http://127.0.0.1:8080", "token": "tok", "isolation": isolation,
            "s3_endpoint_url": "http://127.0.0.1:5000", "num_cpus": 4, "num_gpus": 1}


def test_config_files(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, CheckpointConfig={"S3Uri": "s3://b/ckpt"},
                    DebugHookConfig={"S3OutputPath": "s3://b/debug", "LocalPath": "/opt/ml/output/debug"},
                    TensorBoardOutputConfig={"S3OutputPath": "s3://b/tb"})
    files = layout.config_files(spec, Paths.of(spec))
    assert files["hyperparameters.json"] == HPS  # verbatim: strings stay strings
    assert files["inputdataconfig.json"] == {
        "validation": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated",
                       "RecordWrapperType": "None"},
        "train": {"TrainingInputMode": "Pipe", "S3DistributionType": "ShardedByS3Key",
                  "RecordWrapperType": "RecordIO", "ContentType": "text/csv"},
    }
    group = {"instance_group_name": "homogeneousCluster", "instance_type": "ml.m5.xlarge",
             "hosts": ["algo-1", "algo-2", "algo-3"]}
    assert files["resourceconfig.json"] == {
        "current_host": "algo-2", "current_instance_type": "ml.m5.xlarge",
        "current_group_name": "homogeneousCluster", "hosts": ["algo-1", "algo-2", "algo-3"],
        "instance_groups": [group], "network_interface_name": "eth0"}
    assert files["checkpointconfig.json"] == {"LocalPath": "/opt/ml/checkpoints", "S3Uri": "s3://b/ckpt"}
    assert files["debughookconfig.json"] == {"S3OutputPath": "s3://b/debug", "LocalPath": "/opt/ml/output/debug"}
    assert files["tensorboardoutputconfig.json"] == {"S3OutputPath": "s3://b/tb"}
    assert "profilerconfig.json" not in files


def test_without_namespaces_paths_point_into_the_instance(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, isolation="none", CheckpointConfig={"S3Uri": "s3://b/ckpt"})
    paths = Paths.of(spec)
    ml = str(tmp_path / "job" / "algo-2" / "opt" / "ml")
    assert paths.container_ml == ml
    assert layout.config_files(spec, paths)["checkpointconfig.json"]["LocalPath"] == ml + "/checkpoints"
    env = environment.build(spec, paths, {"PATH": "/usr/bin"})
    assert env["SAGEMAKER_BASE_DIR"] == ml
    assert env["SM_MODEL_DIR"] == ml + "/model"
    assert env["SM_CHANNEL_TRAIN"] == ml + "/input/data/train"


def test_heterogeneous_instance_groups(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, ResourceConfig={"InstanceGroups": [
        {"InstanceGroupName": "cpu", "InstanceType": "ml.c5.xlarge", "InstanceCount": 1},
        {"InstanceGroupName": "gpu", "InstanceType": "ml.g5.xlarge", "InstanceCount": 2}]})
    spec["instance_type"] = "ml.g5.xlarge"
    rc = layout.resource_config(spec)
    assert rc["instance_groups"] == [
        {"instance_group_name": "cpu", "instance_type": "ml.c5.xlarge", "hosts": ["algo-1"]},
        {"instance_group_name": "gpu", "instance_type": "ml.g5.xlarge", "hosts": ["algo-2", "algo-3"]}]
    assert rc["current_group_name"] == "gpu" and rc["current_instance_type"] == "ml.g5.xlarge"
    env = environment.sm_variables(spec, Paths.of(spec))
    assert env["SM_IS_HETERO"] == "true"
    assert json.loads(env["SM_CURRENT_INSTANCE_GROUP_HOSTS"]) == ["algo-2", "algo-3"]


def test_sm_variables(tmp_path: Path) -> None:
    spec = spec_for(tmp_path)
    env = environment.sm_variables(spec, Paths.of(spec))
    user_hps = {"epochs": 3, "lr": 0.1, "model-type": "resnet", "flag": True, "plain": "not json",
                "nested": {"b": 2, "a": [1, 2]}, "x": 5}
    assert json.loads(env["SM_HPS"]) == user_hps  # sagemaker_* and _tuning_objective_metric excluded
    assert env["SM_HPS"] == json.dumps(user_hps, sort_keys=True, separators=(",", ":"))
    assert env["SM_HP_EPOCHS"] == "3" and env["SM_HP_LR"] == "0.1"
    assert env["SM_HP_MODEL-TYPE"] == "resnet"  # hyphen kept; strings raw
    assert env["SM_HP_FLAG"] == "true" and env["SM_HP_PLAIN"] == "not json"
    assert env["SM_HP_NESTED"] == '{"a":[1,2],"b":2}'
    assert "SM_HP_SAGEMAKER_PROGRAM" not in env
    assert env["SM_CHANNELS"] == '["train","validation"]'
    assert env["SM_CHANNEL_TRAIN"] == "/opt/ml/input/data/train"
    assert env["SM_CHANNEL_VALIDATION"] == "/opt/ml/input/data/validation"
    assert json.loads(env["SM_USER_ARGS"]) == ["--epochs", "3", "--flag", "True", "--lr", "0.1",
                                                "--model-type", "resnet", "--nested", "a=[1, 2],b=2",
                                                "--plain", "not json", "-x", "5"]
    assert env["SM_HOSTS"] == '["algo-1","algo-2","algo-3"]'
    assert env["SM_CURRENT_HOST"] == "algo-2" and env["SM_CURRENT_INSTANCE_TYPE"] == "ml.m5.xlarge"
    assert env["SM_NUM_CPUS"] == "4" and env["SM_NUM_GPUS"] == "1"
    assert env["SM_MODEL_DIR"] == "/opt/ml/model" and env["SM_OUTPUT_DATA_DIR"] == "/opt/ml/output/data"
    assert env["SM_OUTPUT_DIR"] == "/opt/ml/output" and env["SM_INPUT_DIR"] == "/opt/ml/input"
    assert env["SM_INPUT_CONFIG_DIR"] == "/opt/ml/input/config"
    assert json.loads(env["SM_INPUT_DATA_CONFIG"])["train"]["TrainingInputMode"] == "Pipe"
    assert json.loads(env["SM_RESOURCE_CONFIG"])["current_host"] == "algo-2"
    assert env["SM_NETWORK_INTERFACE_NAME"] == "eth0"
    assert env["SM_USER_ENTRY_POINT"] == "train.py" and env["SM_MODULE_NAME"] == "train"
    assert env["SM_MODULE_DIR"] == "s3://b/src.tar.gz" and env["SM_LOG_LEVEL"] == "20"
    assert json.loads(env["SM_FRAMEWORK_PARAMS"]) == {"sagemaker_mpi_enabled": False}
    assert env["SM_FRAMEWORK_MODULE"] == ""
    te = json.loads(env["SM_TRAINING_ENV"])
    assert set(te) == {
        "additional_framework_parameters", "channel_input_dirs", "current_host", "current_instance_group",
        "current_instance_group_hosts", "current_instance_type", "distribution_hosts",
        "distribution_instance_groups", "framework_module", "hosts", "hyperparameters", "input_config_dir",
        "input_data_config", "input_dir", "instance_groups", "instance_groups_dict", "is_hetero", "is_master",
        "is_modelparallel_enabled", "is_smddpmprun_installed", "is_smddprun_installed", "job_name",
        "log_level", "master_hostname", "model_dir", "module_dir", "module_name", "network_interface_name",
        "num_cpus", "num_gpus", "num_neurons", "output_data_dir", "output_dir", "output_intermediate_dir",
        "resource_config", "user_entry_point"}
    assert te["hyperparameters"] == user_hps and te["master_hostname"] == "algo-1"
    assert te["is_master"] is False and te["job_name"] == "job-1"


def test_environment_layers_and_secrets(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, Environment={"MY_VAR": "1", "TRAINING_JOB_NAME": "spoofed", "MASTER_PORT": "29500"})
    host = {"PATH": "/usr/bin", "HOME": "/root", "LC_ALL": "C.UTF-8", "AWS_SECRET_ACCESS_KEY": "server-secret",
            "AWS_ACCESS_KEY_ID": "AKIASERVER", "TRAINFORGE_DATABASE_URL": "postgres://u:p@h/db"}
    env = environment.build(spec, Paths.of(spec), host)
    assert env["MY_VAR"] == "1" and env["MASTER_PORT"] == "29500"  # the request may override defaults
    assert env["TRAINING_JOB_NAME"] == "job-1"  # ...but not what the platform owns
    assert env["TRAINING_JOB_ARN"] == spec["job_arn"]
    assert env["MASTER_ADDR"] == "algo-1"
    assert env["AWS_REGION"] == "eu-west-1" and env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert env["S3_ENDPOINT_URL"] == env["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:5000"
    assert env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == "http://127.0.0.1:8080/_trainforge/agent/v1/credentials"
    assert env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] == "tok"
    assert "server-secret" not in json.dumps(env) and "AKIASERVER" not in json.dumps(env)
    assert "TRAINFORGE_DATABASE_URL" not in env
    assert env["HOME"] == "/root" and env["LC_ALL"] == "C.UTF-8"
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent) and env["PYTHONUNBUFFERED"] == "TRUE"
    assert "SAGEMAKER_BASE_DIR" not in env  # /opt/ml is real in a namespace
    isolated = spec_for(tmp_path, EnableNetworkIsolation=True)
    env2 = environment.build(isolated, Paths.of(isolated), host)
    assert "AWS_CONTAINER_CREDENTIALS_FULL_URI" not in env2 and "AWS_CONTAINER_AUTHORIZATION_TOKEN" not in env2


def test_command_line(tmp_path: Path) -> None:
    spec = spec_for(tmp_path)
    assert environment.command(spec) == [sys.executable, "-m", "x", "train"]
    spec["request"]["AlgorithmSpecification"]["ContainerArguments"] = ["--a", "1"]
    assert environment.command(spec) == [sys.executable, "-m", "x", "--a", "1"]
    spec["request"]["AlgorithmSpecification"]["ContainerEntrypoint"] = ["/bin/bash"]
    spec["request"]["AlgorithmSpecification"]["ContainerArguments"] = ["-c", "bash /opt/ml/input/data/sm_drivers/sm_train.sh"]
    assert environment.command(spec) == ["/bin/bash", "-c", "bash /opt/ml/input/data/sm_drivers/sm_train.sh"]
    del spec["request"]["AlgorithmSpecification"]["ContainerArguments"]
    spec["request"]["AlgorithmSpecification"]["ContainerEntrypoint"] = ["python3", "t.py"]
    assert environment.command(spec) == [sys.executable, "t.py", "train"]


def test_agent_writes_the_files(tmp_path: Path, control: ControlPlane) -> None:
    """The real agent lays out /opt/ml: the files' exact bytes decode to the contract's content."""
    request = base_request("job-1", HyperParameters={"a": "1", "sagemaker_program": '"t.py"'},
                           AlgorithmSpecification={"TrainingImage": "x", **shell("true")},
                           CheckpointConfig={"S3Uri": f"file://{tmp_path}/ckpt", "LocalPath": "/opt/ml/ck"})
    (tmp_path / "ckpt").mkdir()
    spec = make_spec(tmp_path, control, request=request, hosts=["algo-1"])
    assert run_agent(spec) == 0
    ml = spec.parent / "opt" / "ml"
    config = ml / "input" / "config"
    assert json.loads((config / "hyperparameters.json").read_text()) == {"a": "1", "sagemaker_program": '"t.py"'}
    assert json.loads((config / "inputdataconfig.json").read_text()) == {}
    rc = json.loads((config / "resourceconfig.json").read_text())
    assert rc["current_host"] == "algo-1" and rc["hosts"] == ["algo-1"]
    assert json.loads((config / "checkpointconfig.json").read_text()) == {
        "LocalPath": str(ml / "ck"), "S3Uri": f"file://{tmp_path}/ckpt"}  # isolation none: rewritten
    for d in ("model", "output/data", "code", "ck", "input/data"):
        assert (ml / d).is_dir(), d
    assert control.exit_event()["outcome"] == "ok"
