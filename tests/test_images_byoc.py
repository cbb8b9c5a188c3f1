"""Bring-your-own-container jobs: a TrainingImage pulled from an OCI registry and run as the
instance's root filesystem (images/pull.py, agent/image.py), against real registries on loopback."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import minimal_request, read_model, stop_quietly, unique_name, wait_for_job, wait_until
from tests.oci_registry import Registry, busybox_layer, file, start_registry, tools_missing, write_layout

if os.name != "posix" or os.geteuid() != 0:
    pytest.skip("container images run in the sandbox, which needs root", allow_module_level=True)
if tools_missing():
    pytest.skip(f"missing: {', '.join(tools_missing())}", allow_module_level=True)

ECR = "111122223333.dkr.ecr.us-east-1.amazonaws.com"
PROVIDER_ARN = "arn:aws:lambda:us-east-1:111122223333:function:registry-credentials"
# The image's entrypoint: reads the job's config files and its channel, writes the model.
TRAIN = """#!/bin/sh
set -e
echo "args: $*"
echo "whoami: $(id -u):$(id -g) cwd=$(pwd) greeting=$GREETING job=$TRAINING_JOB_NAME sm=${SM_MODEL_DIR:-unset} host=$(hostname)"
if [ -n "$WAIT_FOR" ]; then
  echo "waiting"
  while [ ! -e "$WAIT_FOR" ]; do sleep 0.05; done
fi
cp /opt/ml/input/config/hyperparameters.json /opt/ml/model/hps.json
cp /opt/ml/input/config/resourceconfig.json /opt/ml/model/resource-$(hostname).json
cat /opt/ml/input/data/train/* > /opt/ml/model/data.txt
echo "$*" > /opt/ml/model/args.txt
echo "$GREETING" > /opt/ml/model/env.txt
cat /etc/hosts > /opt/ml/model/hosts.txt
"""


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Registry]]:
    plain = start_registry(tmp_path_factory.mktemp("registry-plain"))
    secure = start_registry(tmp_path_factory.mktemp("registry-tls"), tls_auth=True)
    yield plain, secure
    plain.stop()
    secure.stop()


@pytest.fixture(scope="module")
def trainer(registries: tuple[Registry, Registry], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The trainer image pushed to both registries (two layers: busybox, then the program)."""
    plain, secure = registries
    layers = [busybox_layer(), busybox_layer_program()]
    layout = write_layout(tmp_path_factory.mktemp("trainer") / "layout", layers, {
        "Entrypoint": ["/usr/bin/train"], "Cmd": ["serve"], "Env": ["PATH=/usr/bin:/bin", "GREETING=hello"],
        "WorkingDir": "/work", "User": "0"})
    bare = write_layout(tmp_path_factory.mktemp("bare") / "layout", [busybox_layer()], {"Env": ["PATH=/bin"]})
    plain.push(bare, "team/bare", "1")
    user = write_layout(tmp_path_factory.mktemp("user") / "layout", layers, {
        "Entrypoint": ["/usr/bin/train"], "Env": ["PATH=/usr/bin:/bin", "GREETING=unprivileged"],
        "WorkingDir": "/tmp", "User": "trainer:trainer"})
    plain.push(user, "team/trainer-user", "1")
    secure.push(layout, "team/trainer", "2")
    return {"plain": plain.push(layout, "team/trainer", "1"), "secure": secure.push(layout, "team/trainer", "1")}


def busybox_layer_program() -> bytes:
    from tests.oci_registry import Entry, tar_layer

    return tar_layer([Entry("usr", kind=b"5", mode=0o755), Entry("usr/bin", kind=b"5", mode=0o755),
                      file("usr/bin/train", TRAIN, 0o755), Entry("work", kind=b"5", mode=0o755)])


@pytest.fixture(scope="module")
def byoc_server(registries: tuple[Registry, Registry], tmp_path_factory: pytest.TempPathFactory,
                shared_dir: Path) -> Iterator[Any]:
    from tests.conftest import ServerProcess, shared_with_instances

    plain, secure = registries
    files = tmp_path_factory.mktemp("byoc-files")
    shared_with_instances(files)
    config = {
        "allowed_local_roots": [str(files)], "sandbox_mounts": [str(files)],
        "registries": {
            "*.dkr.ecr.*.amazonaws.com": {"endpoint": plain.host},  # ECR-style references: the mirror
            secure.host: {"ca_file": secure.ca_file, "username": secure.user, "password": secure.password},
            "wrong.example.com": {"endpoint": secure.host, "ca_file": secure.ca_file, "username": secure.user,
                                  "password": "wrong"},
            "vpc.example.com": {"endpoint": secure.host, "ca_file": secure.ca_file},
            "creds-only": {"username": secure.user, "password": secure.password,
                           "credentials_provider_arn": PROVIDER_ARN},
        },
    }
    srv = ServerProcess(tmp_path_factory.mktemp("tf-byoc"), config).start()
    srv.files = files
    yield srv
    srv.stop()
    srv.kill_agents()


def request(srv: Any, name: str, image: str, **algo: Any) -> dict[str, Any]:
    data = srv.files / name / "data"
    data.mkdir(parents=True)
    (data / "part-0.txt").write_text("row one\nrow two\n")
    os.chmod(srv.files / name, 0o777)
    return minimal_request(
        name,
        AlgorithmSpecification={"TrainingImage": image, "TrainingInputMode": "File", **algo},
        HyperParameters={"epochs": "3", "lr": "0.1"},
        InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"file://{data}/", "S3DataDistributionType": "FullyReplicated"}}}],
        OutputDataConfig={"S3OutputPath": f"file://{srv.files / name / 'out'}"})


def job_log(srv: Any, name: str) -> str:
    """The job's algorithm streams and trainforge's own lines ([trainforge] ...) beside them."""
    logs = srv.client("logs")
    streams = [s for prefix in (name + "/", name + ".trainforge/") for s in logs.describe_log_streams(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=prefix)["logStreams"]]
    lines = []
    for s in streams:
        events = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=s["logStreamName"],
                                     startFromHead=True)["events"]
        lines += [e["message"] for e in events]
    return "\n".join(lines)


def test_byoc_job_runs_the_images_entrypoint_and_a_second_job_pulls_nothing(byoc_server: Any,
                                                                            registries: Any, trainer: Any) -> None:
    sm = byoc_server.client()
    plain, _ = registries
    image = f"{ECR}/team/trainer:1"  # resolved through `registries` to the plain registry
    name = unique_name("byoc")
    before = image_pulls(byoc_server)
    sm.create_training_job(**request(byoc_server, name, image))
    job = wait_for_job(sm, name, timeout=120)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    model = read_model(job["ModelArtifacts"]["S3ModelArtifacts"])
    assert json.loads(model["hps.json"]) == {"epochs": "3", "lr": "0.1"}
    assert model["data.txt"] == b"row one\nrow two\n"
    assert model["args.txt"] == b"train\n"  # ENTRYPOINT + "train" (the image's CMD is replaced)
    assert model["env.txt"] == b"hello\n"  # the image's Env
    assert json.loads(model["resource-algo-1.json"])["current_host"] == "algo-1"
    log = job_log(byoc_server, name)
    assert f"pulled the training image {image}" in log, log
    assert f"whoami: 0:0 cwd=/work greeting=hello job={name} sm=unset host=algo-1" in log, log
    pulls = plain.manifest_gets()

    # The same image again, with ContainerEntrypoint / ContainerArguments: from the cache.
    second = unique_name("byoc-entry")
    sm.create_training_job(**request(byoc_server, second, image, ContainerEntrypoint=["/bin/sh", "/usr/bin/train"],
                                     ContainerArguments=["fit", "--fast"]))
    job = wait_for_job(sm, second, timeout=120)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert read_model(job["ModelArtifacts"]["S3ModelArtifacts"])["args.txt"] == b"fit --fast\n"
    log = job_log(byoc_server, second)
    assert "is cached: nothing pulled" in log and "args: fit --fast" in log, log
    assert plain.manifest_gets() == pulls  # the registry was not asked again
    after = image_pulls(byoc_server)  # /metrics counted both look-ups
    assert {r: after.get(r, 0) - before.get(r, 0) for r in ("pulled", "cached", "failed")} == \
        {"pulled": 1, "cached": 1, "failed": 0}


def image_pulls(srv: Any) -> dict[str, float]:
    """``trainforge_image_pulls_total`` by result, from the server's /metrics."""
    from test_prometheus import scrape

    return {dict(labels)["result"]: v for (name, labels), v in scrape(srv).items()
            if name == "trainforge_image_pulls_total"}


def test_an_images_non_root_user_owns_opt_ml(byoc_server: Any, registries: Any, trainer: Any) -> None:
    """The image's ``User`` (trainer = 1000:1000 in its /etc/passwd) runs the entrypoint and can write
    /opt/ml/model and read its config and channel, as in SageMaker."""
    sm = byoc_server.client()
    plain, _ = registries
    name = unique_name("byoc-user")
    sm.create_training_job(**request(byoc_server, name, f"{plain.host}/team/trainer-user:1"))
    job = wait_for_job(sm, name, timeout=120)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    model = read_model(job["ModelArtifacts"]["S3ModelArtifacts"])
    assert json.loads(model["hps.json"]) == {"epochs": "3", "lr": "0.1"}
    assert model["data.txt"] == b"row one\nrow two\n"
    assert model["env.txt"] == b"unprivileged\n"
    assert b"algo-1" in model["hosts.txt"]  # the generated /etc/hosts is readable by the User
    assert f"whoami: 1000:1000 cwd=/tmp greeting=unprivileged job={name}" in job_log(byoc_server, name)


# The user's script in the submit directory, run by the toolkit's `train` with the image's Python.
SCRIPT = """import argparse, json, os, sys
parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int)
args = parser.parse_args()
rows = open(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "part-0.txt")).read().split()
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as f:
    json.dump({"epochs": args.epochs, "rows": rows, "python": sys.executable,
               "hosts": json.loads(os.environ["SM_HOSTS"]), "user": os.environ["SM_USER_ENTRY_POINT"]}, f)
"""


def test_an_image_with_the_sagemaker_training_toolkit_runs_script_mode(byoc_server: Any, registries: Any,
                                                                       s3: Any, bucket: str) -> None:
    """``train`` as the entry: the toolkit (pip-installed in the image) fetches the submit directory
    from S3 and runs ``sagemaker_program`` with the hyperparameters as arguments, as in SageMaker."""
    import io
    import tarfile

    from tests.python_image import toolkit_layout

    plain, _ = registries
    image = plain.push(toolkit_layout() / "layout", "team/toolkit", "1")
    code = io.BytesIO()
    with tarfile.open(fileobj=code, mode="w:gz") as tar:
        info = tarfile.TarInfo("train.py")
        info.size = len(SCRIPT.encode())
        tar.addfile(info, io.BytesIO(SCRIPT.encode()))
    s3.put_object(Bucket=bucket, Key="code/sourcedir.tar.gz", Body=code.getvalue())
    s3.put_object(Bucket=bucket, Key="data/part-0.txt", Body=b"alpha beta\n")
    name = unique_name("byoc-toolkit")
    sm = byoc_server.client()
    sm.create_training_job(**minimal_request(
        name, AlgorithmSpecification={"TrainingImage": image, "TrainingInputMode": "File"},
        HyperParameters={"epochs": "3", "sagemaker_program": '"train.py"', "sagemaker_region": '"us-east-1"',
                         "sagemaker_submit_directory": f'"s3://{bucket}/code/sourcedir.tar.gz"',
                         "sagemaker_container_log_level": "20"},
        InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/data/", "S3DataDistributionType": "FullyReplicated"}}}],
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"}))
    job = wait_for_job(sm, name, timeout=600)
    assert job["TrainingJobStatus"] == "Completed", (job.get("FailureReason"), job_log(byoc_server, name)[-3000:])
    model = json.loads(read_model(job["ModelArtifacts"]["S3ModelArtifacts"])["model.json"])
    assert model == {"epochs": 3, "rows": ["alpha", "beta"], "python": "/usr/bin/python3.11", "hosts": ["algo-1"],
                     "user": "train.py"}
    assert "Invoking script with the following command" in job_log(byoc_server, name)  # the toolkit ran it


@pytest.mark.parametrize("case", ["missing tag", "registry down", "bad credentials", "no entrypoint"])
def test_pull_failures_are_client_errors_naming_image_and_cause(byoc_server: Any, registries: Any, trainer: Any,
                                                                case: str) -> None:
    plain, _ = registries
    image, cause = {
        "missing tag": (f"{plain.host}/team/trainer:nope", "the image does not exist in the registry"),
        "registry down": ("127.0.0.1:1/team/trainer:1", "the registry cannot be reached"),
        "bad credentials": ("wrong.example.com/team/trainer:1", "the registry refused the credentials"),
        "no entrypoint": (f"{plain.host}/team/bare:1", "it has no ENTRYPOINT and no 'train' program on its PATH"),
    }[case]
    verb = "run" if case == "no entrypoint" else "pull"
    sm = byoc_server.client()
    name = unique_name("byoc-fail")
    sm.create_training_job(**request(byoc_server, name, image))
    job = wait_for_job(sm, name, timeout=120)
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"].startswith(f"ClientError: Cannot {verb} the training image '{image}'"), job
    assert "Traceback" not in job["FailureReason"]
    assert cause in job["FailureReason"], job["FailureReason"]
    # the pull happens in SecondaryStatus Downloading, with SageMaker's message (the last one shown here)
    downloading = [t for t in job["SecondaryStatusTransitions"] if t["Status"] == "Downloading"]
    assert [t["StatusMessage"] for t in downloading] == ["Downloading the training image"], job
    tmp = Path(byoc_server.data_dir) / "images" / "tmp"
    assert list(tmp.iterdir()) == []  # a failed pull leaves nothing behind


def test_authenticated_registry_over_tls_and_a_credentials_provider(byoc_server: Any, trainer: Any) -> None:
    sm = byoc_server.client()
    good = unique_name("byoc-tls")
    sm.create_training_job(**request(byoc_server, good, trainer["secure"]))
    # TrainingImageConfig Vpc: the credentials provider's ARN picks configured credentials
    vpc = unique_name("byoc-vpc")
    sm.create_training_job(**request(byoc_server, vpc, "vpc.example.com/team/trainer:1", TrainingImageConfig={
        "TrainingRepositoryAccessMode": "Vpc",
        "TrainingRepositoryAuthConfig": {"TrainingRepositoryCredentialsProviderArn": PROVIDER_ARN}}))
    for name in (good, vpc):
        job = wait_for_job(sm, name, timeout=120)
        assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
        assert read_model(job["ModelArtifacts"]["S3ModelArtifacts"])["data.txt"] == b"row one\nrow two\n"
    # without the provider, the same registry refuses (a tag not in the cache yet)
    anonymous = unique_name("byoc-anon")
    sm.create_training_job(**request(byoc_server, anonymous, "vpc.example.com/team/trainer:2",
                                     TrainingImageConfig={"TrainingRepositoryAccessMode": "Vpc"}))
    job = wait_for_job(sm, anonymous, timeout=120)
    assert job["TrainingJobStatus"] == "Failed" and "refused the credentials" in job["FailureReason"], job


def test_unknown_credentials_provider_is_refused_at_create(byoc_server: Any) -> None:
    from botocore.exceptions import ClientError

    sm = byoc_server.client()
    name = unique_name("byoc-arn")
    req = request(byoc_server, name, "vpc.example.com/team/trainer:1", TrainingImageConfig={
        "TrainingRepositoryAccessMode": "Vpc",
        "TrainingRepositoryAuthConfig": {"TrainingRepositoryCredentialsProviderArn": PROVIDER_ARN + "-other"}})
    with pytest.raises(ClientError) as caught:
        sm.create_training_job(**req)
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert PROVIDER_ARN + "-other" in caught.value.response["Error"]["Message"]


def test_two_instances_and_a_stop_mid_training(byoc_server: Any, trainer: Any) -> None:
    sm = byoc_server.client()
    pair = unique_name("byoc-pair")
    req = request(byoc_server, pair, f"{ECR}/team/trainer:1")
    req["ResourceConfig"]["InstanceCount"] = 2
    sm.create_training_job(**req)
    stopped = unique_name("byoc-stop")
    gate = byoc_server.files / stopped / "never"
    sm.create_training_job(**request(byoc_server, stopped, f"{ECR}/team/trainer:1"),
                           Environment={"WAIT_FOR": str(gate)})
    job = wait_for_job(sm, pair, timeout=120)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    model = read_model(job["ModelArtifacts"]["S3ModelArtifacts"])
    assert json.loads(model["resource-algo-1.json"])["hosts"] == ["algo-1", "algo-2"]
    wait_until(lambda: "waiting" in job_log(byoc_server, stopped), timeout=120, message="the job waits")
    sm.stop_training_job(TrainingJobName=stopped)
    job = wait_for_job(sm, stopped, timeout=60)
    assert job["TrainingJobStatus"] == "Stopped", job
    stop_quietly(sm, stopped)
