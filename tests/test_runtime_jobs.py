"""Jobs really run: lifecycle, contract, failure, stop, time limits, metrics and logs (issue 3)."""

from __future__ import annotations

import json
import os
import tarfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import minimal_request, read_model, unique_name, wait_for_job, wait_until

PYTORCH_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3.0-cpu-py311"


def log_messages(srv: Any, name: str) -> list[str]:
    """Every line of the job's log streams: the algorithm's and trainforge's own."""
    logs = srv.client("logs")
    streams = [s for prefix in (f"{name}/", f"{name}.trainforge/") for s in logs.describe_log_streams(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=prefix)["logStreams"]]
    return [e["message"] for s in streams for e in logs.get_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=s["logStreamName"], startFromHead=True)["events"]]


def shell_job(name: str, script: str, out: Path, **overrides: Any) -> dict[str, Any]:
    req = minimal_request(name, **overrides)
    req["AlgorithmSpecification"] = {**req["AlgorithmSpecification"], "ContainerArguments": [script]}
    req["OutputDataConfig"] = {"S3OutputPath": f"file://{out}"}
    return req


@pytest.fixture
def runner(server_factory: Any, tmp_path: Path) -> Any:
    return server_factory({"allowed_local_roots": [str(tmp_path)]})


def test_script_mode_job_completes_with_contract_metrics_and_logs(runner: Any, tmp_path: Path, s3: Any,
                                                                  bucket: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(textwrap.dedent("""
        import argparse, json, os, sys
        print("first line of user code", flush=True)
        p = argparse.ArgumentParser()
        p.add_argument("--epochs", type=int)
        p.add_argument("--lr", type=float)
        args = p.parse_args()
        train = os.environ["SM_CHANNEL_TRAIN"]
        files = sorted(os.listdir(train))
        total = sum(len(open(os.path.join(train, f), "rb").read()) for f in files)
        hps = json.loads(os.environ["SM_HPS"])
        for epoch in range(args.epochs):
            print(f"epoch={epoch} loss={1.0 / (epoch + 1):.4f}", flush=True)
        with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as f:
            json.dump({"argv": sys.argv[1:], "files": files, "bytes": total, "hps": hps,
                       "host": os.environ["SM_CURRENT_HOST"]}, f)
    """))
    tar_path = tmp_path / "sourcedir.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(src / "train.py", arcname="train.py")
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"data/train/part-{i}.csv", Body=b"x" * (10 + i))
    name = unique_name("script")
    sm = runner.client()
    sm.create_training_job(
        TrainingJobName=name, RoleArn="arn:aws:iam::000000000000:role/R",
        AlgorithmSpecification={"TrainingImage": PYTORCH_IMAGE, "TrainingInputMode": "File",
                                "MetricDefinitions": [{"Name": "loss", "Regex": r"loss=([0-9.]+)"}]},
        HyperParameters={"epochs": "3", "lr": "0.1", "sagemaker_program": '"train.py"',
                         "sagemaker_submit_directory": json.dumps(f"file://{tar_path}")},
        InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/data/train/",
            "S3DataDistributionType": "FullyReplicated"}}}],
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
    )
    desc = wait_for_job(sm, name, timeout=120)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    statuses = [t["Status"] for t in desc["SecondaryStatusTransitions"]]
    assert statuses == ["Starting", "Downloading", "Training", "Uploading", "Completed"], statuses
    assert all("EndTime" in t for t in desc["SecondaryStatusTransitions"])
    assert desc["TrainingStartTime"] <= desc["TrainingEndTime"]
    assert desc["BillableTimeInSeconds"] >= 1
    uri = desc["ModelArtifacts"]["S3ModelArtifacts"]
    assert uri == f"s3://{bucket}/out/{name}/output/model.tar.gz"
    model = json.loads(read_model(uri)["model.json"])
    assert model["argv"] == ["--epochs", "3", "--lr", "0.1"]
    assert model["files"] == ["part-0.csv", "part-1.csv", "part-2.csv"] and model["bytes"] == 33
    assert model["hps"]["epochs"] == 3 and model["host"] == "algo-1"
    final = {m["MetricName"]: m["Value"] for m in desc["FinalMetricDataList"]}
    assert final == {"loss": pytest.approx(1 / 3, abs=1e-4)}
    logs = runner.client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                        logStreamNamePrefix=f"{name}/")["logStreams"]
    assert len(streams) == 1 and streams[0]["logStreamName"].startswith(f"{name}/algo-1-")
    events = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                 logStreamName=streams[0]["logStreamName"], startFromHead=True)["events"]
    messages = [e["message"] for e in events]
    assert "first line of user code" in messages
    assert [m for m in messages if m.startswith("epoch=")] == [
        "epoch=0 loss=1.0000", "epoch=1 loss=0.5000", "epoch=2 loss=0.3333"]


def test_namespaced_instance_sees_opt_ml_and_its_host_name(runner: Any, tmp_path: Path) -> None:
    script = ("hostname > /opt/ml/model/hostname; cp /opt/ml/input/config/resourceconfig.json /opt/ml/model/; "
              "getent hosts algo-1 > /opt/ml/model/resolved")
    name = unique_name("ns")
    sm = runner.client()
    sm.create_training_job(**shell_job(name, script, tmp_path / "out"))
    desc = wait_for_job(sm, name)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    model = read_model(desc["ModelArtifacts"]["S3ModelArtifacts"])
    assert model["hostname"].decode().strip() == "algo-1"
    rc = json.loads(model["resourceconfig.json"])
    assert rc["current_host"] == "algo-1" and rc["hosts"] == ["algo-1"]
    assert b"algo-1" in model["resolved"]


def test_network_isolation_leaves_no_route_to_the_host(runner: Any, tmp_path: Path) -> None:
    port = int(os.environ["AWS_ENDPOINT_URL_S3"].rsplit(":", 1)[1])  # moto's S3, on the host's loopback
    script = (f"python3 -c \"import socket; s=socket.socket(); s.settimeout(2); "
              f"r=s.connect_ex(('127.0.0.1', {port})); open('/opt/ml/model/connect','w').write(str(r))\"")
    name = unique_name("netiso")
    sm = runner.client()
    sm.create_training_job(**shell_job(name, script, tmp_path / "out", EnableNetworkIsolation=True))
    desc = wait_for_job(sm, name)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert int(read_model(desc["ModelArtifacts"]["S3ModelArtifacts"])["connect"]) != 0
    # The same probe without isolation reaches the S3 endpoint (relayed into the instance's network):
    # the check above can fail.
    name2 = unique_name("netopen")
    sm.create_training_job(**shell_job(name2, script, tmp_path / "out"))
    desc2 = wait_for_job(sm, name2)
    assert int(read_model(desc2["ModelArtifacts"]["S3ModelArtifacts"])["connect"]) == 0


def test_failure_file_becomes_failure_reason(runner: Any, tmp_path: Path) -> None:
    name = unique_name("fail")
    sm = runner.client()
    sm.create_training_job(**shell_job(name, "printf 'bad data in row 7' > /opt/ml/output/failure; exit 3",
                                       tmp_path / "out"))
    desc = wait_for_job(sm, name)
    assert desc["TrainingJobStatus"] == "Failed" and desc["SecondaryStatus"] == "Failed"
    assert desc["FailureReason"] == "AlgorithmError: bad data in row 7"


def test_exit_code_and_stderr_tail_without_failure_file(runner: Any, tmp_path: Path) -> None:
    name = unique_name("exit")
    sm = runner.client()
    sm.create_training_job(**shell_job(name, "echo 'something broke' >&2; exit 7", tmp_path / "out"))
    desc = wait_for_job(sm, name)
    assert desc["TrainingJobStatus"] == "Failed"
    assert "7" in desc["FailureReason"] and "something broke" in desc["FailureReason"]
    assert len(desc["FailureReason"]) <= 1024


def test_stop_during_training_uploads_the_model_saved_on_sigterm(runner: Any, tmp_path: Path) -> None:
    script = ("trap 'echo saved > /opt/ml/model/on-term; exit 0' TERM; echo ready; "
              "while true; do sleep 0.1; done")
    name = unique_name("stop")
    sm = runner.client()
    sm.create_training_job(**shell_job(name, script, tmp_path / "out"))
    # "ready" is printed once the TERM handler is installed
    wait_until(lambda: "ready" in log_messages(runner, name), timeout=30, message="the script's handler")
    sm.stop_training_job(TrainingJobName=name)
    desc = wait_for_job(sm, name, timeout=30)
    assert (desc["TrainingJobStatus"], desc["SecondaryStatus"]) == ("Stopped", "Stopped")
    statuses = [t["Status"] for t in desc["SecondaryStatusTransitions"]]
    assert "Stopping" in statuses and statuses[-1] == "Stopped"
    assert read_model(desc["ModelArtifacts"]["S3ModelArtifacts"])["on-term"] == b"saved\n"
    waiter = sm.get_waiter("training_job_completed_or_stopped")
    waiter.wait(TrainingJobName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 5})


def test_max_runtime_exceeded(runner: Any, tmp_path: Path) -> None:
    name = unique_name("maxrt")
    sm = runner.client()
    sm.create_training_job(**shell_job(name, "sleep 60", tmp_path / "out",
                                       StoppingCondition={"MaxRuntimeInSeconds": 2}))
    desc = wait_for_job(sm, name, timeout=40)
    assert (desc["TrainingJobStatus"], desc["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")


def test_spot_job_ends_at_max_wait_time(runner: Any, tmp_path: Path) -> None:
    name = unique_name("spot")
    sm = runner.client()
    sm.create_training_job(**shell_job(name, "sleep 60", tmp_path / "out", EnableManagedSpotTraining=True,
                                       StoppingCondition={"MaxRuntimeInSeconds": 2, "MaxWaitTimeInSeconds": 3}))
    desc = wait_for_job(sm, name, timeout=40)
    assert (desc["TrainingJobStatus"], desc["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    # MaxWaitTimeInSeconds counts from creation, so with equal limits it is the one that ends the job.
    name2 = unique_name("spotwait")
    sm.create_training_job(**shell_job(name2, "sleep 60", tmp_path / "out", EnableManagedSpotTraining=True,
                                       StoppingCondition={"MaxRuntimeInSeconds": 3, "MaxWaitTimeInSeconds": 3}))
    desc2 = wait_for_job(sm, name2, timeout=40)
    assert (desc2["TrainingJobStatus"], desc2["SecondaryStatus"]) == ("Stopped", "MaxWaitTimeExceeded")


def test_without_namespaces_paths_point_into_the_instance_directory(server_factory: Any, tmp_path: Path) -> None:
    from botocore.exceptions import ClientError

    srv = server_factory({"allowed_local_roots": [str(tmp_path)], "isolation": "none"})
    sm = srv.client()
    name = unique_name("plain")
    sm.create_training_job(**shell_job(name, 'echo "$SAGEMAKER_BASE_DIR" > "$SM_MODEL_DIR/base"', tmp_path / "out"))
    desc = wait_for_job(sm, name)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    base = read_model(desc["ModelArtifacts"]["S3ModelArtifacts"])["base"].decode().strip()
    assert base.startswith(str(srv.data_dir)) and base.endswith("/algo-1/opt/ml")
    assert any("/opt/ml is not available" in m for m in log_messages(srv, name))
    with pytest.raises(ClientError) as err:
        sm.create_training_job(**shell_job(unique_name("plainiso"), "true", tmp_path / "out",
                                           EnableNetworkIsolation=True))
    assert "EnableNetworkIsolation is not available" in err.value.response["Error"]["Message"]


def test_several_instances_each_with_its_own_host_and_one_failing_stops_the_others(
        runner: Any, tmp_path: Path) -> None:
    sm = runner.client()
    name = unique_name("multi")
    script = ('h=$(hostname); echo "$h" > /opt/ml/model/$h; '
              'cp /opt/ml/input/config/resourceconfig.json /opt/ml/model/rc-$h.json')
    req = shell_job(name, script, tmp_path / "out")
    req["ResourceConfig"]["InstanceCount"] = 3
    sm.create_training_job(**req)
    desc = wait_for_job(sm, name)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    model = read_model(desc["ModelArtifacts"]["S3ModelArtifacts"])  # every host's model dir, merged
    assert {k for k in model if k.startswith("algo-")} == {"algo-1", "algo-2", "algo-3"}
    rc = json.loads(model["rc-algo-2.json"])
    assert rc["current_host"] == "algo-2" and rc["hosts"] == ["algo-1", "algo-2", "algo-3"]

    failing = unique_name("multifail")
    req = shell_job(failing, 'if [ "$(hostname)" = algo-2 ]; then echo broken >&2; exit 4; fi; sleep 120',
                    tmp_path / "out")
    req["ResourceConfig"]["InstanceCount"] = 3
    sm.create_training_job(**req)
    desc = wait_for_job(sm, failing, timeout=40)  # well before the others' 120 s sleep ends
    assert desc["TrainingJobStatus"] == "Failed"
    assert desc["FailureReason"].startswith("AlgorithmError") and "broken" in desc["FailureReason"]


def test_writing_past_the_volume_size_fails_the_job(runner: Any, tmp_path: Path) -> None:
    name = unique_name("volume")
    sm = runner.client()
    # a real limit at write time: the write fails in the writer (ENOSPC), which exits non-zero
    script = "head -c 1200000000 /dev/zero > /opt/ml/model/big"
    req = shell_job(name, script, tmp_path / "out")
    req["ResourceConfig"]["VolumeSizeInGB"] = 1
    sm.create_training_job(**req)
    desc = wait_for_job(sm, name, timeout=60)
    assert desc["TrainingJobStatus"] == "Failed"
    assert "VolumeSizeInGB = 1" in desc["FailureReason"]


def test_stop_right_after_create_is_a_stop(runner: Any, tmp_path: Path) -> None:
    sm = runner.client()
    names = [unique_name("quickstop") for _ in range(5)]
    for name in names:
        sm.create_training_job(**shell_job(name, "sleep 60", tmp_path / "out"))
        sm.stop_training_job(TrainingJobName=name)
    for name in names:
        desc = wait_for_job(sm, name, timeout=40)
        assert (desc["TrainingJobStatus"], desc["SecondaryStatus"]) == ("Stopped", "Stopped"), desc.get("FailureReason")
        assert desc["CreationTime"] <= desc["LastModifiedTime"]
