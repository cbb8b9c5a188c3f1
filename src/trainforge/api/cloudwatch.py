"""CloudWatch's wire protocols on the server's port, every one botocore's ``cloudwatch`` model lists.

* ``smithy-rpc-v2-cbor``: ``POST /service/GraniteServiceVersion20100801/operation/<Operation>``,
  ``smithy-protocol: rpc-v2-cbor``, CBOR bodies both ways (timestamps as tag 1, epoch seconds);
  the JavaScript SDK v3 speaks it. Decoded and encoded with ``cbor2``.
* ``json`` (awsJson1_0): ``POST /`` with ``X-Amz-Target: GraniteServiceVersion20100801.<Operation>``;
  botocore (boto3, the aws CLI) prefers it among the three.
* ``query``: ``POST /`` form-encoded ``Action=<Operation>&Version=2010-08-01&...`` (lists as
  ``Name.member.N``), answered in XML (``<OpResponse><OpResult>...``).

Requests are authenticated like every other (SigV4, service ``monitoring``), decoded into the
model's shapes, validated against botocore's model (api/validation.py, messages as Coral writes
them) and handed to service/cloudwatch.py. Errors come in each protocol's format: XML
``<ErrorResponse><Error><Type>Sender</Type><Code>...`` for query; ``{"__type", "message"}`` in JSON
or CBOR with the ``x-amzn-query-error: <Code>;Sender`` header of awsQueryCompatible services, so a
client sees the query error code (``ValidationError``, ``InvalidParameterValue``, ...) whatever the
protocol. The STS-like form requests of other services are left alone: a form POST is claimed only
when its ``Action`` is a CloudWatch operation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import parse_qsl
from xml.etree import ElementTree

import orjson
from botocore.model import Shape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trainforge.api import errors
from trainforge.api.app import request_id
from trainforge.api.validation import validate
from trainforge.awsmodel import all_operation_names, operation, service_model
from trainforge.service.training_jobs import Caller

log = logging.getLogger("trainforge.api.cloudwatch")

SERVICE = "cloudwatch"
TARGET_PREFIX = "GraniteServiceVersion20100801."
CBOR_PATH = "/service/GraniteServiceVersion20100801/operation/{operation}"
FORM = "application/x-www-form-urlencoded"
JSON_10 = "application/x-amz-json-1.0"
XMLNS = "http://monitoring.amazonaws.com/doc/2010-08-01/"
# The query protocol's codes for what api/errors.py names in AWS JSON's terms.
_QUERY_CODES = {"ValidationException": "ValidationError", "InternalFailure": "InternalServiceError",
                "SerializationException": "InvalidParameterValue"}
Handler = Callable[[Caller, dict[str, Any]], dict[str, Any]]


def _media_type(request: Request) -> str:
    return (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()


class CloudWatchEndpoint:
    def __init__(self, authenticate: Callable[..., tuple[str, str]], max_body: int,
                 handlers: dict[str, Handler]) -> None:
        self.authenticate = authenticate
        self.max_body = max_body
        self.handlers = handlers
        self.operations = all_operation_names(SERVICE)

    def routes(self) -> list[Route]:
        return [Route(CBOR_PATH, self.handle_cbor, methods=["POST"])]

    async def claims(self, request: Request) -> bool:
        """Whether a ``POST /`` is CloudWatch's (its JSON target, or a form whose Action is one of its
        operations)."""
        if request.headers.get("x-amz-target", "").startswith(TARGET_PREFIX):
            return True
        if _media_type(request) != FORM:
            return False
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return False
        action = dict(parse_qsl((await request.body()).decode("latin-1"))).get("Action")
        return action in self.operations

    async def handle(self, request: Request) -> Response:
        """A claimed ``POST /``: the json or the query protocol."""
        protocol = "json" if request.headers.get("x-amz-target", "").startswith(TARGET_PREFIX) else "query"
        return await self._serve(request, protocol)

    async def handle_cbor(self, request: Request) -> Response:
        return await self._serve(request, "cbor")

    async def _serve(self, request: Request, protocol: str) -> Response:
        op = ""
        try:
            body = await request.body()
            if len(body) > self.max_body:
                raise errors.PayloadTooLarge(f"Request body exceeds the limit of {self.max_body} bytes.")
            scope = request.scope
            account_id, region = self.authenticate(
                request.method, scope.get("raw_path", b"/").decode("latin-1"),
                scope.get("query_string", b"").decode("latin-1"), request.headers, body)
            op, params = self._decode(request, protocol, body)
            handler = self.handlers.get(op)
            if handler is None:
                raise errors.UnknownOperation(f"Operation {op} is not supported by trainforge"
                                              if op in self.operations else f"Unknown operation {op}")
            validate(op, params, service=SERVICE)
            result = await run_in_threadpool(handler, Caller(account_id, region), params)
            return _answer(protocol, op, result)
        except errors.ServiceError as exc:
            return _error(protocol, exc)
        except Exception:
            log.exception("internal error answering CloudWatch %s", op)
            return _error(protocol, errors.internal_failure())

    def _decode(self, request: Request, protocol: str, body: bytes) -> tuple[str, dict[str, Any]]:
        if protocol == "cbor":
            return request.path_params["operation"], _from_cbor(body)
        if protocol == "json":
            op = request.headers["x-amz-target"][len(TARGET_PREFIX):]
            try:
                params = orjson.loads(body) if body.strip() else {}
            except orjson.JSONDecodeError as exc:
                raise errors.SerializationError(f"Unable to parse the request body as JSON: {exc}") from None
            if not isinstance(params, dict):
                raise errors.SerializationError("The request body must be a JSON object.")
            return op, params
        form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        op = dict(form).get("Action", "")
        if op not in self.operations:
            raise errors.UnknownOperation(f"The action {op} is not valid for this web service.")
        shape = operation(op, SERVICE).input_shape
        return op, _from_form(shape, _tree(form), "") if shape is not None else {}


# ---- decoding -----------------------------------------------------------------------------------
def _from_cbor(body: bytes) -> dict[str, Any]:
    import cbor2  # only a CBOR request needs it

    try:
        params = cbor2.loads(body) if body else {}
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise errors.SerializationError(f"Unable to parse the request body as CBOR: {exc}") from None
    if not isinstance(params, dict):
        raise errors.SerializationError("The request body must be a CBOR map.")
    return _plain(params)


def _plain(value: Any) -> Any:
    """CBOR's values as JSON's: a tagged date as epoch seconds."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return value


def _tree(pairs: list[tuple[str, str]]) -> dict[Any, Any]:
    """Form keys split at dots into nested nodes; a node's own value is under the key None."""
    root: dict[Any, Any] = {}
    for key, value in pairs:
        node = root
        for part in key.split("."):
            node = node.setdefault(part, {})
        node[None] = value
    return root


def _from_form(shape: Shape, node: dict[Any, Any], path: str) -> Any:
    kind = shape.type_name
    if kind == "structure":
        out = {}
        for name, member in shape.members.items():  # type: ignore[attr-defined]
            wire = member.serialization.get("name", name)
            if wire in node:
                out[name] = _from_form(member, node[wire], f"{path}.{wire}" if path else wire)
        return out
    if kind == "list":
        member = shape.member  # type: ignore[attr-defined]
        items = node if shape.serialization.get("flattened") else node.get(member.serialization.get("name", "member"), {})
        indexes = sorted((int(k), k) for k in items if isinstance(k, str) and k.isdigit())
        return [_from_form(member, items[k], f"{path}.member.{i}") for i, k in indexes]
    if kind == "map":
        entries = node.get("entry", {})
        return {_from_form(shape.key, e.get("key", {}), path): _from_form(shape.value, e.get("value", {}), path)  # type: ignore[attr-defined]
                for _, e in sorted((int(k), e) for k, e in entries.items() if isinstance(k, str) and k.isdigit())}
    return _scalar(kind, node.get(None, ""), path)


def _scalar(kind: str, text: str, path: str) -> Any:
    try:
        if kind in ("integer", "long"):
            return int(text)
        if kind in ("float", "double"):
            return float(text)
    except ValueError:
        raise errors.SerializationError(f"Value '{text}' for parameter {path} is not a valid {kind}.") from None
    if kind == "boolean":
        if text not in ("true", "false"):
            raise errors.SerializationError(f"Value '{text}' for parameter {path} is not a valid boolean.")
        return text == "true"
    return text  # strings, and timestamps (ISO 8601: the validator and the service read them)


# ---- encoding -----------------------------------------------------------------------------------
def _answer(protocol: str, op: str, result: dict[str, Any]) -> Response:
    shape = operation(op, SERVICE).output_shape
    headers = {"x-amzn-RequestId": request_id()}
    if protocol == "json":
        return Response(orjson.dumps(result), media_type=JSON_10, headers=headers)
    if protocol == "cbor":
        import cbor2

        content = cbor2.dumps(_tag_timestamps(shape, result) if shape is not None else result)
        return Response(content, media_type="application/cbor", headers={**headers, "smithy-protocol": "rpc-v2-cbor"})
    root = ElementTree.Element(f"{op}Response", xmlns=XMLNS)
    if shape is not None:
        _to_xml(ElementTree.SubElement(root, shape.serialization.get("resultWrapper", f"{op}Result")), shape, result)
    ElementTree.SubElement(ElementTree.SubElement(root, "ResponseMetadata"), "RequestId").text = headers[
        "x-amzn-RequestId"]
    return Response(ElementTree.tostring(root, encoding="utf-8", xml_declaration=False), media_type="text/xml",
                    headers=headers)


def _tag_timestamps(shape: Shape, value: Any) -> Any:
    import cbor2

    kind = shape.type_name
    if kind == "structure":
        members = shape.members  # type: ignore[attr-defined]
        return {k: _tag_timestamps(members[k], v) for k, v in value.items() if k in members}
    if kind == "list":
        return [_tag_timestamps(shape.member, v) for v in value]  # type: ignore[attr-defined]
    if kind == "map":
        return {k: _tag_timestamps(shape.value, v) for k, v in value.items()}  # type: ignore[attr-defined]
    return cbor2.CBORTag(1, value) if kind == "timestamp" else value


def _iso(t: float) -> str:
    d = datetime.fromtimestamp(t, UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + (f".{d.microsecond // 1000:03d}Z" if d.microsecond else "Z")


def _to_xml(node: ElementTree.Element, shape: Shape, value: Any) -> None:
    kind = shape.type_name
    if kind == "structure":
        for name, member in shape.members.items():  # type: ignore[attr-defined]
            if value.get(name) is not None:
                _to_xml(ElementTree.SubElement(node, member.serialization.get("name", name)), member, value[name])
    elif kind == "list":
        member = shape.member  # type: ignore[attr-defined]
        for item in value:
            _to_xml(ElementTree.SubElement(node, member.serialization.get("name", "member")), member, item)
    elif kind == "map":
        for k, v in value.items():
            entry = ElementTree.SubElement(node, "entry")
            ElementTree.SubElement(entry, "key").text = str(k)
            _to_xml(ElementTree.SubElement(entry, "value"), shape.value, v)  # type: ignore[attr-defined]
    elif kind == "timestamp":
        node.text = _iso(float(value))
    elif kind == "boolean":
        node.text = "true" if value else "false"
    else:
        node.text = str(value)


def _error(protocol: str, exc: errors.ServiceError) -> Response:
    rid = request_id()
    code = _QUERY_CODES.get(exc.code, exc.code)
    fault = "Sender" if exc.status < 500 else "Receiver"
    if protocol == "query":
        if code == "UnknownOperationException":
            code = "InvalidAction"
        root = ElementTree.Element("ErrorResponse", xmlns=XMLNS)
        error = ElementTree.SubElement(root, "Error")
        for tag, text in (("Type", fault), ("Code", code), ("Message", exc.message)):
            ElementTree.SubElement(error, tag).text = text
        ElementTree.SubElement(root, "RequestId").text = rid
        return Response(ElementTree.tostring(root, encoding="utf-8"), status_code=exc.status, media_type="text/xml",
                        headers={"x-amzn-RequestId": rid})
    body = {"__type": _error_shapes().get(code, code), "message": exc.message}
    headers = {"x-amzn-RequestId": rid, "x-amzn-query-error": f"{code};{fault}"}
    if protocol == "json":
        return Response(orjson.dumps(body), status_code=exc.status, media_type=JSON_10, headers=headers)
    import cbor2

    return Response(cbor2.dumps(body), status_code=exc.status, media_type="application/cbor",
                    headers={**headers, "smithy-protocol": "rpc-v2-cbor"})


@cache
def _error_shapes() -> dict[str, str]:
    """Query error code -> the model's error shape (``com.amazonaws.cloudwatch#<Shape>``, JSON's __type)."""
    model = service_model(SERVICE)
    return {s.metadata["error"]["code"]: f"com.amazonaws.cloudwatch#{s.name}"
            for s in model.error_shapes if s.metadata.get("error", {}).get("code")}
