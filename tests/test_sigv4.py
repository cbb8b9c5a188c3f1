"""SigV4 verification (``trainforge.api.sigv4``), with requests signed by botocore's own signer.

Unit tests drive :class:`Authenticator` directly; the end-to-end tests at the bottom go through a
real server started with a credentials file and real boto3 clients.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import hmac
import json
import re
import time
import urllib.error
import urllib.request
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from conftest import minimal_request
from starlette.datastructures import Headers

from trainforge.api.errors import InvalidSignature, MissingAuthentication, UnrecognizedClient
from trainforge.api.sigv4 import (
    MISMATCH_MESSAGE,
    MISSING_MESSAGE,
    UNKNOWN_KEY_MESSAGE,
    Authenticator,
    IncompleteSignature,
)
from trainforge.sigv4_key import signing_key

AKID = "AKIDTRAINFORGE0001"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
ACCOUNT = "111122223333"
AKID_B = "AKIDTRAINFORGE0002"
SECRET_B = "another/secret+key"
ACCOUNT_B = "444455556666"
CREDENTIALS = {
    AKID: {"secret_access_key": SECRET, "account_id": ACCOUNT},
    AKID_B: {"secret_access_key": SECRET_B, "account_id": ACCOUNT_B},
}
URL = "http://127.0.0.1:8080/"
BODY = b'{"TrainingJobName": "job-1"}'
WHEN = dt.datetime(2025, 1, 1, 0, 0, 0)  # naive UTC, as botocore's clock returns it
WHEN_EPOCH = calendar.timegm(WHEN.timetuple())
JSON_HEADERS = {
    "Content-Type": "application/x-amz-json-1.1",
    "X-Amz-Target": "SageMaker.DescribeTrainingJob",
}


class Signed:
    """A request as the server sees it: method, raw path, raw query, lowercase headers, body."""

    def __init__(self, method: str, url: str, headers: dict[str, str], body: bytes) -> None:
        parts = urlsplit(url)
        self.method = method
        self.path = parts.path or "/"
        self.query = parts.query
        self.headers = headers
        self.body = body

    def args(self) -> tuple[str, str, str, dict[str, str], bytes]:
        return self.method, self.path, self.query, self.headers, self.body

    def starlette_headers(self) -> Headers:
        return Headers(raw=[(k.encode(), v.encode()) for k, v in self.headers.items()])


def sign(
    *,
    method: str = "POST",
    url: str = URL,
    body: bytes = BODY,
    headers: dict[str, str] | None = None,
    key: str = AKID,
    secret: str = SECRET,
    token: str | None = None,
    region: str = "us-west-2",
    service: str = "sagemaker",
    when: dt.datetime = WHEN,
    presign_expires: int | None = None,
    params: dict[str, str] | None = None,
) -> Signed:
    request = AWSRequest(
        method=method,
        url=url,
        data=body,
        headers=dict(JSON_HEADERS if headers is None else headers),
        params=params or {},
    )
    credentials = Credentials(key, secret, token)
    signer: SigV4Auth
    if presign_expires is None:
        signer = SigV4Auth(credentials, service, region)
    else:
        signer = SigV4QueryAuth(credentials, service, region, expires=presign_expires)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        signer.add_auth(request)
    prepared = request.prepare()
    sent = {k.lower(): v for k, v in prepared.headers.items()}
    sent.setdefault("host", urlsplit(prepared.url).netloc)  # what the HTTP client adds on the wire
    return Signed(method, prepared.url, sent, prepared.body or b"")


def verifier(now: float = WHEN_EPOCH + 30, **kwargs: Any) -> Authenticator:
    return Authenticator(CREDENTIALS, "000000000000", "us-east-1", clock=lambda: now, **kwargs)


def replace_in_authorization(request: Signed, old: str, new: str) -> None:
    assert old in request.headers["authorization"]
    request.headers["authorization"] = request.headers["authorization"].replace(old, new)


# ---------------------------------------------------------------------------------------------
# accepted


@pytest.mark.parametrize("header_type", ["dict", "starlette"])
def test_correct_key_is_accepted_and_names_account_and_region(header_type: str) -> None:
    request = sign(region="eu-central-1")
    headers = request.headers if header_type == "dict" else request.starlette_headers()
    account, region = verifier().authenticate(
        request.method, request.path, request.query, headers, request.body
    )
    assert (account, region) == (ACCOUNT, "eu-central-1")


def test_each_key_maps_to_its_own_account() -> None:
    request = sign(key=AKID_B, secret=SECRET_B, region="ap-south-1")
    assert verifier().authenticate(*request.args()) == (ACCOUNT_B, "ap-south-1")


def test_logs_service_scope_is_accepted() -> None:
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "Logs_20140328.GetLogEvents"}
    request = sign(service="logs", headers=headers)
    assert verifier().authenticate(*request.args()) == (ACCOUNT, "us-west-2")


def test_session_token_is_a_signed_header_like_any_other() -> None:
    request = sign(token="FQoGZXIvYXdzEXAMPLETOKEN//+=")
    assert "x-amz-security-token" in request.headers
    assert "x-amz-security-token" in request.headers["authorization"]
    assert verifier().authenticate(*request.args()) == (ACCOUNT, "us-west-2")
    request.headers["x-amz-security-token"] = "another-token"
    with pytest.raises(InvalidSignature, match="does not match"):
        verifier().authenticate(*request.args())


def test_date_header_instead_of_x_amz_date() -> None:
    headers = dict(JSON_HEADERS, Date="Wed, 01 Jan 2025 00:00:00 GMT")
    request = sign(headers=headers)
    assert "x-amz-date" not in request.headers
    assert verifier().authenticate(*request.args()) == (ACCOUNT, "us-west-2")


def test_aws_published_test_vector() -> None:
    """AWS's SigV4 test suite, "get-vanilla": independent of botocore."""
    now = calendar.timegm(time.strptime("20150830T123600Z", "%Y%m%dT%H%M%SZ"))
    auth = Authenticator(
        {
            "AKIDEXAMPLE": {
                "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                "account_id": ACCOUNT,
            }
        },
        "000000000000",
        "us-east-1",
        services=["service"],
        clock=lambda: now,
    )
    headers = {
        "host": "example.amazonaws.com",
        "x-amz-date": "20150830T123600Z",
        "authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    }
    assert auth.authenticate("GET", "/", "", headers, b"") == (ACCOUNT, "us-east-1")


def test_signing_key_is_derived_once_per_scope() -> None:
    auth = verifier()
    calls = 0
    real = hmac.digest

    def counting(key: bytes, msg: bytes, digest: str) -> bytes:
        nonlocal calls
        calls += 1
        return real(key, msg, digest)

    with mock.patch("trainforge.api.sigv4.hmac.digest", counting):
        for n in range(3):
            auth.authenticate(*sign(body=b'{"n": %d}' % n).args())
        assert calls == 4  # date, region, service, terminator: once
        auth.authenticate(*sign(region="eu-west-1").args())
        assert calls == 8
    # and the derivation (the server's and the fast S3 client's) is AWS's ("derive a signing key" example)
    key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


# ---------------------------------------------------------------------------------------------
# rejected


def test_wrong_secret_is_rejected() -> None:
    request = sign(secret="not-the-secret")
    with pytest.raises(InvalidSignature) as info:
        verifier().authenticate(*request.args())
    assert info.value.message == MISMATCH_MESSAGE
    assert info.value.code == "InvalidSignatureException" and info.value.status == 403
    assert MISMATCH_MESSAGE == (
        "The request signature we calculated does not match the signature you provided. Check your AWS "
        "Secret Access Key and signing method. Consult the service documentation for details."
    )


def test_unknown_key_is_rejected() -> None:
    request = sign(key="AKIDNOBODYKNOWS")
    with pytest.raises(UnrecognizedClient) as info:
        verifier().authenticate(*request.args())
    assert (
        info.value.message == UNKNOWN_KEY_MESSAGE == "The security token included in the request is invalid."
    )
    assert info.value.code == "UnrecognizedClientException" and info.value.status == 403


def test_twenty_minute_old_date_is_rejected_with_aws_message() -> None:
    request = sign()  # signed at 2025-01-01T00:00:00Z
    with pytest.raises(InvalidSignature) as info:
        verifier(now=WHEN_EPOCH + 20 * 60).authenticate(*request.args())
    assert info.value.message == (
        "Signature expired: 20250101T000000Z is now earlier than 20250101T001500Z (20250101T002000Z - 5 min.)"
    )


def test_date_within_five_minutes_is_accepted_either_side() -> None:
    request = sign()
    assert verifier(now=WHEN_EPOCH + 299).authenticate(*request.args()) == (ACCOUNT, "us-west-2")
    assert verifier(now=WHEN_EPOCH - 299).authenticate(*request.args()) == (ACCOUNT, "us-west-2")


def test_date_in_the_future_is_rejected_with_aws_message() -> None:
    request = sign()
    with pytest.raises(InvalidSignature) as info:
        verifier(now=WHEN_EPOCH - 20 * 60).authenticate(*request.args())
    assert info.value.message == (
        "Signature not yet current: 20250101T000000Z is still later than 20241231T234500Z "
        "(20241231T234000Z + 5 min.)"
    )


def test_missing_authorization_is_rejected() -> None:
    request = sign()
    del request.headers["authorization"]
    with pytest.raises(MissingAuthentication) as info:
        verifier().authenticate(*request.args())
    assert info.value.message == MISSING_MESSAGE == "Missing Authentication Token"
    assert info.value.code == "MissingAuthenticationTokenException" and info.value.status == 403


def test_mismatched_scope_date_is_rejected() -> None:
    request = sign()
    replace_in_authorization(request, "/20250101/", "/20250102/")
    with pytest.raises(InvalidSignature) as info:
        verifier().authenticate(*request.args())
    assert info.value.message == (
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
        "'20250102' != '20250101', from '20250101T000000Z'."
    )


@pytest.mark.parametrize(
    ("service", "target", "expected"),
    [("s3", "SageMaker.DescribeTrainingJob", "sagemaker"), ("iam", "Logs_20140328.GetLogEvents", "logs")],
)
def test_wrong_service_scope_is_rejected(service: str, target: str, expected: str) -> None:
    request = sign(service=service, headers=dict(JSON_HEADERS, **{"X-Amz-Target": target}))
    with pytest.raises(InvalidSignature) as info:
        verifier().authenticate(*request.args())
    assert info.value.message == f"Credential should be scoped to correct service: '{expected}'."


def test_bad_region_and_terminator_are_rejected() -> None:
    request = sign()
    replace_in_authorization(request, "/us-west-2/", "/US West/")
    with pytest.raises(
        InvalidSignature, match="Credential should be scoped to a valid region, not 'US West'."
    ):
        verifier().authenticate(*request.args())
    request = sign()
    replace_in_authorization(request, "/aws4_request", "/aws5_request")
    with pytest.raises(InvalidSignature, match="valid terminator: 'aws4_request', not 'aws5_request'"):
        verifier().authenticate(*request.args())


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        ("Bearer abc", "Unsupported AWS 'algorithm': 'Bearer'"),
        (
            "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-west-2/sagemaker/aws4_request",
            (
                "Authorization header requires 'Signature' parameter. Authorization header requires "
                "'SignedHeaders' parameter. Authorization=AWS4-HMAC-SHA256 Credential="
            ),
        ),
        (
            "AWS4-HMAC-SHA256 Credential=x, garbage, Signature=y",
            "'garbage' not a valid key=value pair (missing equal-sign) in Authorization header",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKID/20250101, SignedHeaders=host, Signature=00",
            "Credential is malformed: 'AKID/20250101'",
        ),
    ],
)
def test_malformed_authorization_is_incomplete_signature(authorization: str, message: str) -> None:
    request = sign()
    request.headers["authorization"] = authorization
    with pytest.raises(IncompleteSignature) as info:
        verifier().authenticate(*request.args())
    assert message in info.value.message
    assert info.value.code == "IncompleteSignatureException"


def test_missing_date_is_incomplete_signature() -> None:
    request = sign()
    del request.headers["x-amz-date"]
    with pytest.raises(IncompleteSignature, match="requires existence of either a 'X-Amz-Date' or a 'Date'"):
        verifier().authenticate(*request.args())


def test_host_must_be_signed() -> None:
    request = sign()
    auth = request.headers["authorization"]
    request.headers["authorization"] = auth.replace(
        "SignedHeaders=content-type;host;", "SignedHeaders=content-type;"
    )
    with pytest.raises(InvalidSignature, match="'Host' or ':authority' must be a 'SignedHeader'"):
        verifier().authenticate(*request.args())


# ---------------------------------------------------------------------------------------------
# canonicalisation


def test_query_string_canonicalisation_with_special_characters() -> None:
    params = {
        "b": "2",
        "a key": "x/y z",
        "é": "✓",
        "tilde~dash-dot.under_": "!*'()",
        "empty": "",
        "A": "upper sorts before lower",
        "plus+sign": "1+1=2&more",
    }
    request = sign(params=params)
    # botocore signs a space as %20; its HTTP layer sends it as '+': both mean a space
    assert "%C3%A9=%E2%9C%93" in request.query and "a+key=x%2Fy+z" in request.query
    assert verifier().authenticate(*request.args()) == (ACCOUNT, "us-west-2")
    request.query = request.query.replace("+", "%20")
    assert verifier().authenticate(*request.args()) == (ACCOUNT, "us-west-2")
    # the order in which the parameters arrive does not matter: the canonical form sorts them
    request.query = "&".join(reversed(request.query.split("&")))
    assert verifier().authenticate(*request.args()) == (ACCOUNT, "us-west-2")
    # but their values do
    request.query = request.query.replace("b=2", "b=3")
    with pytest.raises(InvalidSignature, match="does not match"):
        verifier().authenticate(*request.args())


def test_query_string_in_url_and_repeated_keys() -> None:
    request = sign(url=URL + "?z=1&a=2&a=1&flag")
    assert verifier().authenticate(*request.args()) == (ACCOUNT, "us-west-2")


def test_path_is_part_of_the_signature() -> None:
    request = sign(url="http://127.0.0.1:8080/some%20dir/./x/../job")
    assert verifier().authenticate(*request.args()) == (ACCOUNT, "us-west-2")
    request.path = "/other"
    with pytest.raises(InvalidSignature, match="does not match"):
        verifier().authenticate(*request.args())


def test_body_hash_is_checked() -> None:
    request = sign(body=b'{"TrainingJobName": "mine"}')
    verifier().authenticate(*request.args())
    request.body = b'{"TrainingJobName": "yours"}'
    with pytest.raises(InvalidSignature) as info:
        verifier().authenticate(*request.args())
    assert info.value.message == MISMATCH_MESSAGE


def test_declared_content_sha256_is_used_and_must_match_the_body() -> None:
    digest = hashlib.sha256(BODY).hexdigest()
    request = sign(headers=dict(JSON_HEADERS, **{"X-Amz-Content-SHA256": digest}))
    assert verifier().authenticate(*request.args()) == (ACCOUNT, "us-west-2")
    request.body = b"{}"
    with pytest.raises(
        InvalidSignature, match="'x-amz-content-sha256' header does not match what was computed"
    ):
        verifier().authenticate(*request.args())
    unsigned = sign(headers=dict(JSON_HEADERS, **{"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}))
    with pytest.raises(InvalidSignature, match="UNSIGNED-PAYLOAD' is not accepted"):
        verifier().authenticate(*unsigned.args())


def test_unsigned_extra_headers_are_ignored() -> None:
    request = sign()
    request.headers["user-agent"] = "changed-by-a-proxy/1.0"
    request.headers["x-forwarded-for"] = "10.0.0.1"
    request.headers["x-amzn-trace-id"] = "Root=1-abc"
    assert verifier().authenticate(*request.args()) == (ACCOUNT, "us-west-2")
    # a signed one, though, is protected
    request.headers["x-amz-target"] = "SageMaker.DeleteTrainingJob"
    with pytest.raises(InvalidSignature, match="does not match"):
        verifier().authenticate(*request.args())


def test_header_value_whitespace_is_folded() -> None:
    headers = dict(JSON_HEADERS, **{"X-Custom": "  several   spaces\tand tabs  "})
    request = sign(headers=headers)
    assert request.headers["x-custom"] == "  several   spaces\tand tabs  "  # sent as is
    assert "x-custom" in request.headers["authorization"]
    assert verifier().authenticate(*request.args()) == (ACCOUNT, "us-west-2")
    # folding is not a licence to change the words
    request.headers["x-custom"] = "several spaces and tab"
    with pytest.raises(InvalidSignature, match="does not match"):
        verifier().authenticate(*request.args())
    request.headers["x-custom"] = " several spaces  and   tabs"
    verifier().authenticate(*request.args())


def test_repeated_header_values_are_comma_joined() -> None:
    request = AWSRequest(method="POST", url=URL, data=BODY, headers=dict(JSON_HEADERS))
    request.headers["X-Dup"] = "first"
    request.headers["X-Dup"] = " second "  # HTTPHeaders appends: the header now has two values
    with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN):
        SigV4Auth(Credentials(AKID, SECRET), "sagemaker", "us-west-2").add_auth(request)
    raw = [(k.lower().encode(), v.encode()) for k, v in request.headers.items()]
    raw.append((b"host", b"127.0.0.1:8080"))
    assert [v for k, v in raw if k == b"x-dup"] == [b"first", b" second "]
    assert verifier().authenticate("POST", "/", "", Headers(raw=raw), BODY) == (ACCOUNT, "us-west-2")


def test_signed_header_missing_from_request_is_a_mismatch() -> None:
    request = sign()
    del request.headers["x-amz-target"]
    with pytest.raises(InvalidSignature, match="does not match"):
        verifier().authenticate(*request.args())


# ---------------------------------------------------------------------------------------------
# presigned (query-string) authentication


def test_presigned_request_is_accepted() -> None:
    request = sign(method="GET", body=b"", headers={}, presign_expires=600, region="eu-west-1")
    assert "X-Amz-Signature=" in request.query and "authorization" not in request.headers
    assert verifier().authenticate(*request.args()) == (ACCOUNT, "eu-west-1")
    tampered = request.query.replace("X-Amz-Expires=600", "X-Amz-Expires=601")
    request.query = tampered
    with pytest.raises(InvalidSignature, match="does not match"):
        verifier().authenticate(*request.args())


def test_presigned_request_expires() -> None:
    request = sign(method="GET", body=b"", headers={}, presign_expires=600)
    verifier(now=WHEN_EPOCH + 590).authenticate(*request.args())
    with pytest.raises(InvalidSignature) as info:
        verifier(now=WHEN_EPOCH + 3600).authenticate(*request.args())
    assert info.value.message == (
        "Signature expired: 20250101T000000Z is now earlier than 20250101T005000Z (20250101T010000Z - 10 min.)"
    )


def test_presigned_and_header_together_are_refused() -> None:
    request = sign(method="GET", body=b"", headers={}, presign_expires=600)
    request.headers["authorization"] = sign().headers["authorization"]
    with pytest.raises(IncompleteSignature, match="Only one auth mechanism allowed"):
        verifier().authenticate(*request.args())


def test_presigned_missing_parameters() -> None:
    request = sign(method="GET", body=b"", headers={}, presign_expires=600)
    request.query = "&".join(p for p in request.query.split("&") if not p.startswith("X-Amz-Expires="))
    with pytest.raises(IncompleteSignature, match="requires the X-Amz-Algorithm, X-Amz-Credential"):
        verifier().authenticate(*request.args())


# ---------------------------------------------------------------------------------------------
# the embedded default: no credentials file


def test_without_credentials_any_request_is_accepted_cheaply() -> None:
    auth = Authenticator(None, "000000000000", "us-east-1")
    assert not auth.verifies_signatures
    signed = sign(secret="whatever", key="ANYKEY", region="ap-northeast-1")
    stale = sign(when=dt.datetime(2001, 1, 1))
    presigned = sign(method="GET", body=b"", headers={}, presign_expires=60, region="sa-east-1")
    with (
        mock.patch("trainforge.api.sigv4.hashlib.sha256", side_effect=AssertionError("hashed")),
        mock.patch("trainforge.api.sigv4.hmac.new", side_effect=AssertionError("hashed")),
        mock.patch("trainforge.api.sigv4.hmac.digest", side_effect=AssertionError("hashed")),
    ):
        assert auth.authenticate(*signed.args()) == ("000000000000", "ap-northeast-1")
        assert auth.authenticate("POST", "/", "", signed.starlette_headers(), b"") == (
            "000000000000",
            "ap-northeast-1",
        )
        assert auth.authenticate("POST", "/", "", {}, b"") == ("000000000000", "us-east-1")
        assert auth.authenticate(*stale.args()) == ("000000000000", "us-west-2")
        assert auth.authenticate(*presigned.args()) == ("000000000000", "sa-east-1")
        for garbage in (
            "Bearer x",
            "AWS4-HMAC-SHA256 Credential=",
            "AWS4-HMAC-SHA256 Credential=a/b/<x>/c/d",
        ):
            assert auth.authenticate("POST", "/", "", {"authorization": garbage}, b"")[1] == "us-east-1"


def test_invalid_credentials_configuration_fails_early() -> None:
    with pytest.raises(ValueError, match="no secret_access_key"):
        Authenticator({"K": {"account_id": ACCOUNT}}, "000000000000", "us-east-1")
    with pytest.raises(ValueError, match="12 digits"):
        Authenticator({"K": {"secret_access_key": "s", "account_id": "12"}}, "000000000000", "us-east-1")
    auth = Authenticator({"K": {"secret_access_key": "s"}}, "999999999999", "us-east-1")
    assert auth.verifies_signatures


# ---------------------------------------------------------------------------------------------
# end to end: a real server started with a credentials file, real boto3 clients
#
# ``server_factory`` (tests/conftest.py) starts a real server; its config names a credentials file.

E2E_REGION = "us-west-2"


@pytest.fixture
def secured_server(server_factory: Any, tmp_path: Any) -> Any:
    credentials_file = tmp_path / "credentials.json"
    credentials_file.write_text(json.dumps(CREDENTIALS))
    # Under a credentials file a job's role must be mapped, and be one of the caller's account.
    roles = {role_of(account): {"aws_access_key_id": f"ROLE{account}", "aws_secret_access_key": "role-secret"}
             for account in (ACCOUNT, ACCOUNT_B)}
    return server_factory(config={"credentials_file": str(credentials_file), "roles": roles})


def role_of(account: str) -> str:
    return f"arn:aws:iam::{account}:role/SageMakerRole"


def sagemaker_client(server: Any, key: str, secret: str, region: str = E2E_REGION) -> Any:
    return server.client(access_key=key, secret_key=secret, region=region)


def client_error(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    return info.value.response


def test_e2e_right_key_wrong_secret_unknown_key(secured_server: Any) -> None:
    good = sagemaker_client(secured_server, AKID, SECRET)
    assert good.list_training_jobs()["TrainingJobSummaries"] == []

    response = client_error(sagemaker_client(secured_server, AKID, "wrong-secret").list_training_jobs)
    assert response["Error"]["Code"] == "InvalidSignatureException"
    assert response["Error"]["Message"] == MISMATCH_MESSAGE
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403

    response = client_error(sagemaker_client(secured_server, "AKIDNOBODYKNOWS", SECRET).list_training_jobs)
    assert response["Error"]["Code"] == "UnrecognizedClientException"
    assert response["Error"]["Message"] == UNKNOWN_KEY_MESSAGE
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_e2e_twenty_minute_old_date_is_rejected(secured_server: Any) -> None:
    client = sagemaker_client(secured_server, AKID, SECRET)
    frozen = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0) - dt.timedelta(minutes=20)
    with mock.patch("botocore.auth.get_current_datetime", return_value=frozen):
        response = client_error(client.list_training_jobs)
    assert response["Error"]["Code"] == "InvalidSignatureException"
    message = response["Error"]["Message"]
    stamp = frozen.strftime("%Y%m%dT%H%M%SZ")
    assert message.startswith(f"Signature expired: {stamp} is now earlier than ")
    assert re.fullmatch(
        r"Signature expired: \d{8}T\d{6}Z is now earlier than \d{8}T\d{6}Z "
        r"\(\d{8}T\d{6}Z - 5 min\.\)",
        message,
    ), message
    # and the same client with a current clock is fine
    assert "TrainingJobSummaries" in client.list_training_jobs()


def test_e2e_missing_authentication(secured_server: Any) -> None:
    request = urllib.request.Request(
        secured_server.endpoint.rstrip("/") + "/",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "SageMaker.ListTrainingJobs"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 403
    body = json.loads(info.value.read())
    assert body["__type"].endswith("MissingAuthenticationTokenException")
    assert body["message"] == MISSING_MESSAGE


def test_e2e_account_isolation(secured_server: Any) -> None:
    a = sagemaker_client(secured_server, AKID, SECRET)
    b = sagemaker_client(secured_server, AKID_B, SECRET_B)
    arn = a.create_training_job(**minimal_request("sigv4-isolated", RoleArn=role_of(ACCOUNT)))["TrainingJobArn"]
    assert arn == f"arn:aws:sagemaker:{E2E_REGION}:{ACCOUNT}:training-job/sigv4-isolated"
    a.add_tags(ResourceArn=arn, Tags=[{"Key": "owner", "Value": "a"}])

    # B cannot describe, list, stop or tag A's job
    response = client_error(b.describe_training_job, TrainingJobName="sigv4-isolated")
    assert response["Error"]["Code"] == "ValidationException"
    assert response["Error"]["Message"] == "Requested resource not found."
    assert b.list_training_jobs()["TrainingJobSummaries"] == []
    assert b.list_training_jobs(NameContains="sigv4")["TrainingJobSummaries"] == []
    response = client_error(b.stop_training_job, TrainingJobName="sigv4-isolated")
    assert response["Error"]["Code"] == "ValidationException"
    for call, kwargs in (
        (b.add_tags, {"ResourceArn": arn, "Tags": [{"Key": "owner", "Value": "b"}]}),
        (b.list_tags, {"ResourceArn": arn}),
        (b.delete_tags, {"ResourceArn": arn, "TagKeys": ["owner"]}),
    ):
        response = client_error(call, **kwargs)
        assert response["Error"]["Code"] == "ValidationException", (call, response["Error"])

    # ... and A's job and tags are untouched
    described = a.describe_training_job(TrainingJobName="sigv4-isolated")
    assert described["TrainingJobArn"] == arn
    assert described["TrainingJobStatus"] not in ("Stopping", "Stopped")
    assert a.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "owner", "Value": "a"}]
    assert [s["TrainingJobName"] for s in a.list_training_jobs()["TrainingJobSummaries"]] == [
        "sigv4-isolated"
    ]

    # the same name is free in B's account: names are per account and region
    arn_b = b.create_training_job(**minimal_request("sigv4-isolated", RoleArn=role_of(ACCOUNT_B)))["TrainingJobArn"]
    assert arn_b == f"arn:aws:sagemaker:{E2E_REGION}:{ACCOUNT_B}:training-job/sigv4-isolated"
    # and the region of the credential scope is part of the identity too
    a_elsewhere = sagemaker_client(secured_server, AKID, SECRET, region="eu-west-1")
    assert a_elsewhere.list_training_jobs()["TrainingJobSummaries"] == []


def test_e2e_a_cached_describe_is_still_authenticated(secured_server: Any) -> None:
    """DescribeTrainingJob answers are reused while the store is unchanged (api/app.py CachedAnswers):
    the same body still needs a valid signature, and another account still sees nothing."""
    a = sagemaker_client(secured_server, AKID, SECRET)
    a.create_training_job(**minimal_request("sigv4-cached", RoleArn=role_of(ACCOUNT)))
    described = [a.describe_training_job(TrainingJobName="sigv4-cached") for _ in range(3)]
    assert {d["TrainingJobArn"] for d in described} == {
        f"arn:aws:sagemaker:{E2E_REGION}:{ACCOUNT}:training-job/sigv4-cached"}
    assert len({d["ResponseMetadata"]["RequestId"] for d in described}) == 3
    headers = described[-1]["ResponseMetadata"]["HTTPHeaders"]
    assert headers["content-type"] == "application/x-amz-json-1.1"
    assert int(headers["content-length"]) > 0
    response = client_error(sagemaker_client(secured_server, AKID, "wrong-secret").describe_training_job,
                            TrainingJobName="sigv4-cached")
    assert response["Error"]["Code"] == "InvalidSignatureException"
    response = client_error(sagemaker_client(secured_server, AKID_B, SECRET_B).describe_training_job,
                            TrainingJobName="sigv4-cached")
    assert response["Error"]["Message"] == "Requested resource not found."
    response = client_error(sagemaker_client(secured_server, AKID, SECRET, region="eu-west-1").describe_training_job,
                            TrainingJobName="sigv4-cached")
    assert response["Error"]["Message"] == "Requested resource not found."
