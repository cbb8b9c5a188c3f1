"""The AWS query protocol on the API's port: STS ``GetCallerIdentity`` and IAM ``GetRole``.

botocore's ``sts`` and ``iam`` models list only the ``query`` protocol: ``POST /`` with a
form-encoded body (``Action=GetCallerIdentity&Version=2011-06-15``, Content-Type
``application/x-www-form-urlencoded``), signed for the service ``sts`` or ``iam``; the answer is XML
(``<ActionResponse><ActionResult>...</ActionResult><ResponseMetadata>``), an error
``<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>``. The API
version in the form tells the two services apart. Any other IAM action is refused as IAM refuses
what a caller may not do (AccessDenied): the SageMaker SDK v3's role check then proceeds, saying
it could not verify the role's permissions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import Response

from trainforge.api import errors
from trainforge.service.identity import Identity

log = logging.getLogger("trainforge.api")

FORM = "application/x-www-form-urlencoded"
STS_VERSION = "2011-06-15"
IAM_VERSION = "2010-05-08"
_NAMESPACES = {STS_VERSION: "https://sts.amazonaws.com/doc/2011-06-15/",
               IAM_VERSION: "https://iam.amazonaws.com/doc/2010-05-08/"}
# The JSON protocol's names of the authentication errors, as the query protocol names them.
_QUERY_CODES = {"InvalidSignatureException": "SignatureDoesNotMatch",
                "UnrecognizedClientException": "InvalidClientTokenId",
                "MissingAuthenticationTokenException": "MissingAuthenticationToken",
                "IncompleteSignatureException": "IncompleteSignature"}


def is_form(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == FORM


def access_key_of(authorization: str | None, query_string: str) -> str | None:
    """The access key id a request is signed with (Authorization header or presigned query)."""
    for source in (authorization or "", query_string.replace("%2F", "/")):
        at = source.find("Credential=")
        if at >= 0:
            return source[at + len("Credential="):].split("/", 1)[0]
    return None


def _xml(value: Any) -> str:
    if isinstance(value, dict):
        return "".join(f"<{k}>{_xml(v)}</{k}>" for k, v in value.items())
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(str(value))


class QueryEndpoint:
    def __init__(self, authenticate: Callable[..., tuple[str, str]], max_body: int, identity: Identity,
                 request_id: Callable[[], str]) -> None:
        self.authenticate = authenticate
        self.max_body = max_body
        self.identity = identity
        self.request_id = request_id

    async def handle(self, request: Request) -> Response:
        rid = self.request_id()
        version = ""
        try:
            body = await request.body()
            if len(body) > self.max_body:
                raise errors.PayloadTooLarge(f"Request body exceeds the limit of {self.max_body} bytes.")
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            version = form.get("Version", "")
            query_string = request.scope.get("query_string", b"").decode("latin-1")
            account_id, _region = self.authenticate(
                request.method, request.scope.get("raw_path", b"/").decode("latin-1"), query_string,
                request.headers, body)
            action = form.get("Action", "")
            result = self._dispatch(version, action, form, account_id,
                                    access_key_of(request.headers.get("authorization"), query_string))
            ns = _NAMESPACES[version]
            text = (f'<{action}Response xmlns="{ns}"><{action}Result>{_xml(result)}</{action}Result>'
                    f"<ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata></{action}Response>")
            return self._xml_response(text, 200, rid)
        except errors.ServiceError as exc:
            return self._error(exc, version, rid)
        except Exception:
            log.exception("internal error answering a query-protocol request")
            return self._error(errors.internal_failure(), version, rid)

    def _dispatch(self, version: str, action: str, form: dict[str, str], account_id: str,
                  access_key: str | None) -> dict[str, Any]:
        if version == STS_VERSION and action == "GetCallerIdentity":
            return self.identity.caller_identity(account_id, access_key)
        if version == IAM_VERSION and action == "GetRole":
            if not form.get("RoleName"):
                raise errors.ServiceError("1 validation error detected: Value null at 'roleName' failed to "
                                          "satisfy constraint: Member must not be null", code="ValidationError")
            return {"Role": self.identity.get_role(account_id, form["RoleName"])}
        if version == IAM_VERSION and action:
            caller = self.identity.caller_identity(account_id, access_key)["Arn"]
            raise errors.ServiceError(f"User: {caller} is not authorized to perform: iam:{action} (trainforge "
                                      "serves only iam:GetRole)", code="AccessDenied", status=403)
        raise errors.ServiceError(f"Could not find operation {action or '(none)'} for version "
                                  f"{version or '(none)'}", code="InvalidAction")

    def _error(self, exc: errors.ServiceError, version: str, rid: str) -> Response:
        code = _QUERY_CODES.get(exc.code, exc.code)
        kind = "Receiver" if exc.status >= 500 else "Sender"
        ns = _NAMESPACES.get(version, _NAMESPACES[STS_VERSION])
        text = (f'<ErrorResponse xmlns="{ns}"><Error><Type>{kind}</Type><Code>{escape(code)}</Code>'
                f"<Message>{escape(str(exc))}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>")
        return self._xml_response(text, exc.status, rid)

    @staticmethod
    def _xml_response(text: str, status: int, rid: str) -> Response:
        return Response(text.encode(), status_code=status, media_type="text/xml",
                        headers={"x-amzn-RequestId": rid})
