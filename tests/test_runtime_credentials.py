"""Roles and credentials: the instance gets its role's credentials only through the container
credentials endpoint, never as plain secrets; an unmapped role is refused (issue 3 item 12)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import minimal_request, read_model, unique_name, wait_for_job
from test_runtime_jobs import shell_job

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
    assert probe["uri"].startswith(srv.endpoint)
    # the endpoint serves credentials only while the job runs
    request = urllib.request.Request(probe["uri"], headers={"Authorization": probe["token"]})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 403
    # and nothing of the secret reached the job's logs
    logs = srv.client("logs")
    events = logs.filter_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                    logStreamNamePrefix=f"{name}/")["events"]
    assert not any("role-secret" in e["message"] for e in events)


def test_unmapped_role_is_refused_at_create(server_factory: Any, tmp_path: Path) -> None:
    srv = server_factory({"roles": {ROLE: {"aws_access_key_id": "K", "aws_secret_access_key": "S"}}})
    sm = srv.client()
    name = unique_name("norole")
    with pytest.raises(ClientError) as err:
        sm.create_training_job(**minimal_request(name, RoleArn="arn:aws:iam::000000000000:role/Other"))
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "roles" in err.value.response["Error"]["Message"]
