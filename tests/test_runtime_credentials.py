"""Roles and credentials: the instance gets its role's credentials only through the container
credentials endpoint, never as plain secrets; an unmapped role is refused (issue 3 item 12); a server
with a credentials file lends its own keys to no job, and credentials go only to the running attempt
of the job whose role they are (issue 9 item 9)."""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import minimal_request, read_model, unique_name, wait_for_job, wait_until
from test_runtime_jobs import shell_job

from trainforge.agent.endpoints import CREDENTIALS_PATH

ROLE = "arn:aws:iam::000000000000:role/TrainerRole"
PROBE = """
import json, os, sys, boto3
s3 = boto3.client("s3")
keys = [o["Key"] for o in s3.list_objects_v2(Bucket=sys.argv[1])["Contents"]]
creds = boto3.session.Session().get_credentials().get_frozen_credentials()
env_secrets = sorted(k for k, v in os.environ.items() if "role-secret" in v or k == "AWS_SECRET_ACCESS_KEY")
json.dump({"keys": keys, "access_key": creds.access_key, "env_secrets": env_secrets,
           "uri": os.environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
           "token": os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN")}, open("/opt/ml/model/probe.json", "w"))
"""


def test_instance_reads_s3_with_its_role_credentials_and_sees_no_secret(
        server_factory: Any, tmp_path: Path, s3: Any, bucket: str) -> None:
    srv = server_factory({"allowed_local_roots": [str(tmp_path)], "roles": {ROLE: {
        "aws_access_key_id": "ROLEKEY", "aws_secret_access_key": "role-secret"}}})
    s3.put_object(Bucket=bucket, Key="hello.txt", Body=b"hi")
    (tmp_path / "probe.py").write_text(PROBE)
    name = unique_name("creds")
    sm = srv.client()
    req = shell_job(name, f"python3 {tmp_path}/probe.py {bucket}", tmp_path / "out", RoleArn=ROLE)
    sm.create_training_job(**req)
    desc = wait_for_job(sm, name, timeout=60)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    probe = json.loads(read_model(desc["ModelArtifacts"]["S3ModelArtifacts"])["probe.json"])
    assert probe["keys"] == ["hello.txt"]
    assert probe["access_key"] == "ROLEKEY"  # the role's key, fetched from the endpoint
    assert probe["env_secrets"] == []
    assert probe["uri"] == "http://169.254.170.2/v2/credentials"  # served by the agent in the instance's network
    # the endpoint serves credentials only while the job runs
    request = urllib.request.Request(probe["uri"], headers={"Authorization": probe["token"]})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 403
    # and nothing of the secret reached the job's logs (the algorithm's streams nor trainforge's)
    logs = srv.client("logs")
    events = logs.filter_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                    logStreamNamePrefix=name)["events"]
    assert not any("role-secret" in e["message"] for e in events)


def test_unmapped_role_is_refused_at_create(server_factory: Any, tmp_path: Path) -> None:
    srv = server_factory({"roles": {ROLE: {"aws_access_key_id": "K", "aws_secret_access_key": "S"}}})
    sm = srv.client()
    name = unique_name("norole")
    with pytest.raises(ClientError) as err:
        sm.create_training_job(**minimal_request(name, RoleArn="arn:aws:iam::000000000000:role/Other"))
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "roles" in err.value.response["Error"]["Message"]


ACCOUNT_A, ACCOUNT_B = "111122223333", "444455556666"
KEYS = {"AKIDACCOUNTA": {"secret_access_key": "secret-a", "account_id": ACCOUNT_A},
        "AKIDACCOUNTB": {"secret_access_key": "secret-b", "account_id": ACCOUNT_B}}
ROLE_A = f"arn:aws:iam::{ACCOUNT_A}:role/TrainerRole"


def credentials_file(tmp_path: Path) -> str:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps(KEYS))
    return str(path)


def fetch_credentials(endpoint: str, token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(endpoint + CREDENTIALS_PATH, headers={"Authorization": token})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def spec_token(data_dir: Path, name: str, attempt: int = 1) -> str:
    """The agents' token, from the instance's spec.json once it is written whole."""
    def token() -> str | None:
        for spec in data_dir.glob(f"jobs/*/*/{name}/attempt-{attempt}/algo-1/spec.json"):
            try:
                return str(json.loads(spec.read_text())["token"])
            except (OSError, ValueError):
                return None
        return None

    return str(wait_until(token, timeout=30, message=f"attempt {attempt}'s spec"))


def refused(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    return str(err.value.response["Error"]["Message"])


def test_a_server_with_a_credentials_file_lends_its_own_keys_to_no_job(server_factory: Any, tmp_path: Path) -> None:
    """Several accounts: a job's role must be mapped in ``roles`` and be of the caller's account."""
    srv = server_factory({"credentials_file": credentials_file(tmp_path)})
    sm = srv.client(access_key="AKIDACCOUNTA", secret_key="secret-a")
    message = refused(sm.create_training_job, **minimal_request(unique_name("nokeys"), RoleArn=ROLE_A))
    assert f"RoleArn '{ROLE_A}'" in message and "'roles'" in message

    srv = server_factory({"credentials_file": credentials_file(tmp_path), "allowed_local_roots": [str(tmp_path)],
                          "roles": {ROLE_A: {"aws_access_key_id": "ROLEKEY", "aws_secret_access_key": "role-secret"}}})
    b = srv.client(access_key="AKIDACCOUNTB", secret_key="secret-b")
    message = refused(b.create_training_job, **minimal_request(unique_name("other"), RoleArn=ROLE_A))
    assert f"RoleArn '{ROLE_A}'" in message and ACCOUNT_B in message
    # the role's own account runs with the role's credentials
    a = srv.client(access_key="AKIDACCOUNTA", secret_key="secret-a")
    name, gate = unique_name("mapped"), tmp_path / "gate"
    a.create_training_job(**shell_job(name, f"while [ ! -e {gate} ]; do sleep 0.05; done", tmp_path / "out",
                                      RoleArn=ROLE_A))
    token = spec_token(srv.data_dir, name)
    wait_until(lambda: a.describe_training_job(TrainingJobName=name)["SecondaryStatus"] == "Training",
               timeout=30, message="Training")
    status, creds = fetch_credentials(srv.endpoint, token)
    assert (status, creds.get("AccessKeyId"), creds.get("SecretAccessKey")) == (200, "ROLEKEY", "role-secret")
    gate.write_text("go")
    assert wait_for_job(a, name)["TrainingJobStatus"] == "Completed"


def test_credentials_only_for_a_role_the_configuration_still_allows(server_factory: Any, tmp_path: Path) -> None:
    """The single-user default lends the server's own credentials to any role; restarted with a
    credentials file, the same running job gets none."""
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]})
    gate = tmp_path / "gate"
    name = unique_name("reconfigured")
    sm = srv.client()
    sm.create_training_job(**shell_job(name, f"while [ ! -e {gate} ]; do sleep 0.05; done", tmp_path / "out"))
    token = spec_token(srv.data_dir, name)
    wait_until(lambda: sm.describe_training_job(TrainingJobName=name)["SecondaryStatus"] == "Training",
               timeout=30, message="Training")
    status, creds = fetch_credentials(srv.endpoint, token)
    assert (status, creds.get("AccessKeyId")) == (200, "testing")  # the server's own (tests/conftest.py)
    srv.stop()
    srv.config["credentials_file"] = credentials_file(tmp_path)
    srv.start()
    status, creds = fetch_credentials(srv.endpoint, token)
    assert status == 403 and "AccessKeyId" not in creds and "'roles'" in creds["message"]
    gate.write_text("go")
    a = srv.client(access_key="AKIDACCOUNTA", secret_key="secret-a")
    assert refused(a.describe_training_job, TrainingJobName=name) == "Requested resource not found."


def test_an_earlier_attempts_token_gets_no_credentials(server_factory: Any, tmp_path: Path) -> None:
    """Each attempt's agents get a token of their own: the first attempt's agents, dead or alive,
    neither report for the job nor fetch its credentials once the second attempt runs."""
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]})
    marker, gate, script = tmp_path / "attempts", tmp_path / "gate", tmp_path / "train.sh"
    script.write_text(f"echo x >> {marker}; if [ $(wc -l < {marker}) -lt 2 ]; then sleep 120; fi; "
                      f"while [ ! -e {gate} ]; do sleep 0.05; done\n")
    name = unique_name("attempts")
    sm = srv.client()
    sm.create_training_job(**shell_job(name, f"sh {script}", tmp_path / "out",
                                       RetryStrategy={"MaximumRetryAttempts": 2}))
    first = spec_token(srv.data_dir, name)
    wait_until(marker.exists, timeout=30, message="first attempt running")
    assert fetch_credentials(srv.endpoint, first)[0] == 200
    agent = json.loads(wait_until(lambda: next(srv.data_dir.glob(
        f"jobs/*/*/{name}/attempt-1/algo-1/instance.json"), None), message="the agent").read_text())["agent_pid"]
    os.kill(agent, signal.SIGKILL)
    second = spec_token(srv.data_dir, name, attempt=2)
    wait_until(lambda: marker.exists() and len(marker.read_text().split()) == 2, timeout=30,
               message="second attempt running")
    assert second != first
    assert fetch_credentials(srv.endpoint, second)[0] == 200
    assert fetch_credentials(srv.endpoint, first)[0] == 403
    gate.write_text("go")
    assert wait_for_job(sm, name)["TrainingJobStatus"] == "Completed"
