"""STS GetCallerIdentity and IAM GetRole on the API port, over the query protocol (form body, XML
answer), from boto3 and the aws CLI, as the signing key's mapping says or the default account."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import ServerProcess

ACCOUNT_A, ACCOUNT_B = "111122223333", "444455556666"
USER_B = f"arn:aws:iam::{ACCOUNT_B}:user/alice"
KEYS = {"AKIDACCOUNTA": {"secret_access_key": "secret-a", "account_id": ACCOUNT_A},
        "AKIDACCOUNTB": {"secret_access_key": "secret-b", "account_id": ACCOUNT_B, "arn": USER_B,
                         "user_id": "AIDAALICE"}}
ROLE_A = f"arn:aws:iam::{ACCOUNT_A}:role/service-role/TrainerRole"
ROLE_B = f"arn:aws:iam::{ACCOUNT_B}:role/TrainerRole"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("tf-identity")
    (root / "credentials.json").write_text(json.dumps(KEYS))
    creds = {"aws_access_key_id": "x", "aws_secret_access_key": "y"}
    srv = ServerProcess(root / "data", {"credentials_file": str(root / "credentials.json"),
                                        "roles": {ROLE_A: creds, ROLE_B: creds}}).start()
    yield srv
    srv.stop()
    srv.kill_agents()  # its agents would retry their last reports to it for minutes


def _identity(answer: dict[str, Any]) -> tuple[str, str, str]:
    return answer["Account"], answer["Arn"], answer["UserId"]


def test_single_user_server_answers_the_default_account(server: ServerProcess) -> None:
    sts = server.client("sts")
    assert _identity(sts.get_caller_identity()) == ("000000000000", "arn:aws:iam::000000000000:root",
                                                    "000000000000")
    # Any role of the caller's account exists: the single-user server runs jobs with any role.
    role = server.client("iam").get_role(RoleName="SageMakerRole")["Role"]
    assert role["Arn"] == "arn:aws:iam::000000000000:role/SageMakerRole"
    assert (role["RoleName"], role["Path"], role["MaxSessionDuration"]) == ("SageMakerRole", "/", 3600)
    assert role["RoleId"].startswith("AROA") and len(role["RoleId"]) == 21
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}


def test_the_signing_keys_mapping_gives_account_and_arn(keyed: ServerProcess) -> None:
    a = keyed.client("sts", access_key="AKIDACCOUNTA", secret_key="secret-a")
    assert _identity(a.get_caller_identity()) == (ACCOUNT_A, f"arn:aws:iam::{ACCOUNT_A}:root", ACCOUNT_A)
    b = keyed.client("sts", access_key="AKIDACCOUNTB", secret_key="secret-b", region="eu-west-1")
    assert _identity(b.get_caller_identity()) == (ACCOUNT_B, USER_B, "AIDAALICE")
    with pytest.raises(ClientError) as bad:
        keyed.client("sts", access_key="AKIDACCOUNTA", secret_key="wrong").get_caller_identity()
    assert bad.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert bad.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as unknown:
        keyed.client("sts", access_key="AKIDNOBODY", secret_key="x").get_caller_identity()
    assert unknown.value.response["Error"]["Code"] == "InvalidClientTokenId"


def test_get_role_knows_the_mapped_roles_of_the_callers_account(keyed: ServerProcess) -> None:
    iam_a = keyed.client("iam", access_key="AKIDACCOUNTA", secret_key="secret-a")
    role = iam_a.get_role(RoleName="TrainerRole")["Role"]
    assert (role["Arn"], role["Path"]) == (ROLE_A, "/service-role/")
    iam_b = keyed.client("iam", access_key="AKIDACCOUNTB", secret_key="secret-b")
    assert iam_b.get_role(RoleName="TrainerRole")["Role"]["Arn"] == ROLE_B
    with pytest.raises(ClientError) as missing:
        iam_a.get_role(RoleName="SageMakerRole")
    assert missing.value.response["Error"]["Code"] == "NoSuchEntity"
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # What trainforge does not serve is refused as IAM refuses an action the caller may not perform.
    with pytest.raises(ClientError) as denied:
        iam_a.simulate_principal_policy(PolicySourceArn=ROLE_A, ActionNames=["sagemaker:CreateTrainingJob"])
    assert denied.value.response["Error"]["Code"] == "AccessDenied"


def test_the_aws_cli_reaches_sts_through_its_endpoint_variable(keyed: ServerProcess, tmp_path: Path) -> None:
    env = {**os.environ, "AWS_ENDPOINT_URL_STS": keyed.endpoint, "AWS_ACCESS_KEY_ID": "AKIDACCOUNTB",
           "AWS_SECRET_ACCESS_KEY": "secret-b", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    out = subprocess.run(["aws", "sts", "get-caller-identity"], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert _identity(json.loads(out)) == (ACCOUNT_B, USER_B, "AIDAALICE")


def test_a_query_request_without_a_known_action_is_an_xml_error(server: ServerProcess) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/", body="Action=AssumeRole&Version=2011-06-15", headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sts/aws4_request, "
                         "SignedHeaders=host, Signature=00"})
    answer = conn.getresponse()
    body = answer.read().decode()
    assert answer.status == 400 and answer.getheader("content-type").startswith("text/xml")
    assert "<Code>InvalidAction</Code>" in body and "AssumeRole" in body
