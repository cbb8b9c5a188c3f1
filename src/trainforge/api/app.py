"""The HTTP face of trainforge: AWS JSON 1.1 routing, errors, and the agents' endpoints.

``POST /`` with ``X-Amz-Target: SageMaker.<Operation>`` (or ``Logs_20140328.<Operation>``) is
dispatched to the service layer (a form-encoded body without that header is the query protocol of
STS and IAM: ``api/query.py``); every answer is JSON with AWS's error shape on failure, including
unknown paths (404) and methods (405), both ``UnknownOperationException``, and internal failures
(500 ``InternalFailure``, no details). A request must come as JSON (``Content-Type``
``application/x-amz-json-1.1``, ``-1.0`` or ``application/json``, or none); a body that is not a JSON
object, or that nests deeper than :data:`MAX_NESTING_DEPTH` (Jackson's own limit is a
``StreamReadConstraints`` setting), is a ``SerializationException``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trainforge.api import errors
from trainforge.api.query import is_form
from trainforge.api.validation import validate
from trainforge.awsmodel import SUPPORTED_OPERATIONS, all_operation_names
from trainforge.service.training_jobs import Caller

log = logging.getLogger("trainforge.api")

JSON_11 = "application/x-amz-json-1.1"
SAGEMAKER_PREFIX = "SageMaker."
LOGS_PREFIX = "Logs_20140328."
# Media types a request may declare (parameters such as charset are ignored); none at all is fine too.
_JSON_TYPES = frozenset({JSON_11, "application/x-amz-json-1.0", "application/json"})
# The deepest a request body may nest (the SageMaker inputs nest 6 deep).
MAX_NESTING_DEPTH = 100
# Read-only operations answer on the event loop (a SQLite read is ~50 µs; a thread hop costs more).
_INLINE = frozenset({"DescribeTrainingJob", "ListTrainingJobs", "ListTags"})

Handler = Callable[[Caller, dict[str, Any]], dict[str, Any]]
# Answers that depend only on the stored state and the request (no clock): reused while the
# store has not changed at all (see ReadCache).
_CACHED = frozenset({"DescribeTrainingJob"})
_CACHED_TARGETS = frozenset((SAGEMAKER_PREFIX + op).encode() for op in _CACHED)
_JSON_11_BYTES = JSON_11.encode()
# Left in the ASGI scope by CachedAnswers for the full path: (account, region), the store version.
_SCOPE_CALLER = "trainforge.caller"
_SCOPE_VERSION = "trainforge.read_version"
ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]],
                    Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]


class ReadCache:
    """Successful answers of read-only operations, keyed by (account, region, operation, body),
    valid only while the store has not changed: ``version()`` (SQLite's data_version) moves with
    every commit of any writer, and a new value empties the cache. Pollers (waiters, dashboards,
    ``trainforge wait``) then cost one PRAGMA instead of a read, a validation and an encoding."""

    def __init__(self, version: Callable[[], object | None], max_entries: int = 4096) -> None:
        self._version_of = version
        self._version: object | None = None
        self._entries: dict[tuple[str, str, str, bytes], bytes] = {}
        self.max_entries = max_entries

    def version(self) -> object | None:
        """The store's version now (None: nothing may be reused), emptying the cache if it moved."""
        v = self._version_of()
        if v != self._version:
            self._entries.clear()
            self._version = v
        return v

    def get(self, key: tuple[str, str, str, bytes]) -> bytes | None:
        """The answer kept for ``key`` (call :meth:`version` first: it drops stale answers)."""
        return self._entries.get(key)

    def put(self, key: tuple[str, str, str, bytes], body: bytes, version: object | None) -> None:
        """Keep ``body``, computed at ``version`` or later: if the store moved meanwhile, the
        next :meth:`get` sees a new version and drops it."""
        if version is None or version != self._version:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = body


def request_id() -> str:
    """A UUID-shaped request id (not a secret: ~1 µs, where uuid4() reads the OS's random source)."""
    h = f"{random.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return encoded_response(orjson.dumps(body), status, headers)


def encoded_response(content: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    hdrs = {"x-amzn-RequestId": request_id()}
    if headers:
        hdrs.update(headers)
    return Response(content, status_code=status, media_type=JSON_11, headers=hdrs)


def error_response(exc: errors.ServiceError) -> Response:
    return json_response(exc.body(), exc.status, {"x-amzn-ErrorType": exc.code})


class AwsJsonEndpoint:
    """Dispatches AWS JSON 1.1 requests to handlers keyed by operation name."""

    def __init__(self, authenticate: Callable[..., tuple[str, str]], max_body: int,
                 sagemaker: dict[str, Handler], logs: dict[str, Handler],
                 store_version: Callable[[], object | None] | None = None, others: Sequence[Any] = (),
                 query: Callable[[Request], Awaitable[Response]] | None = None) -> None:
        self.authenticate = authenticate
        # Other services' protocols at POST / (api/cloudwatch.py): async claims(request) -> bool, handle(request)
        self.others = tuple(others)
        self.query = query  # the query protocol's requests (STS, IAM: api/query.py), told by a form body
        self.max_body = max_body
        self.sagemaker = sagemaker
        self.logs = logs
        self.cache = ReadCache(store_version) if store_version is not None else None

    def cached(self, scope: dict[str, Any], raw_headers: list[tuple[bytes, bytes]], target: bytes,
               body: bytes) -> bytes | None:
        """The cached answer to this request, after authenticating it as the full path does. What
        it found out is left in ``scope`` for the full path, which then neither authenticates
        again nor reads the store's version again (:meth:`_dispatch`)."""
        assert self.cache is not None
        caller = self.authenticate(
            "POST", scope.get("raw_path", b"/").decode("latin-1"), scope.get("query_string", b"").decode(
                "latin-1"), Headers(raw=raw_headers), body)
        version = self.cache.version()
        scope[_SCOPE_CALLER], scope[_SCOPE_VERSION] = caller, version
        if version is None:
            return None
        return self.cache.get((*caller, target.decode()[len(SAGEMAKER_PREFIX):], body))

    async def handle(self, request: Request) -> Response:
        for other in self.others:
            if await other.claims(request):
                return await other.handle(request)  # type: ignore[no-any-return]
        # A form body without X-Amz-Target is the query protocol (STS, IAM); with one, a JSON request.
        if self.query is not None and "x-amz-target" not in request.headers and is_form(
                request.headers.get("content-type")):
            return await self.query(request)
        try:
            return await self._dispatch(request)
        except errors.ServiceError as exc:
            return error_response(exc)
        except Exception:
            log.exception("internal error answering %s", request.headers.get("x-amz-target"))
            return error_response(errors.internal_failure())

    async def _dispatch(self, request: Request) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise errors.PayloadTooLarge(f"Request body of {length} bytes exceeds the limit of {self.max_body} bytes.")
        body = await request.body()
        if len(body) > self.max_body:
            raise errors.PayloadTooLarge(f"Request body exceeds the limit of {self.max_body} bytes.")
        target = request.headers.get("x-amz-target", "")
        content_type = request.headers.get("content-type")
        if content_type is not None and content_type.split(";", 1)[0].strip().lower() not in _JSON_TYPES:
            raise errors.UnknownOperation(
                f"Unsupported Content-Type {content_type!r}: AWS JSON 1.1 requests are sent as {JSON_11}.")
        scope = request.scope
        account_id, region = scope.get(_SCOPE_CALLER) or self.authenticate(
            request.method, scope.get("raw_path", b"/").decode("latin-1"), scope.get(
                "query_string", b"").decode("latin-1"), request.headers, body)
        caller = Caller(account_id, region)
        if target.startswith(SAGEMAKER_PREFIX):
            op, handlers, service = target[len(SAGEMAKER_PREFIX):], self.sagemaker, "sagemaker"
        elif target.startswith(LOGS_PREFIX):
            op, handlers, service = target[len(LOGS_PREFIX):], self.logs, "logs"
        else:
            raise errors.UnknownOperation(f"Unknown target {target!r}" if target else "Missing X-Amz-Target header")
        # A request the cache could answer was looked up by CachedAnswers already (it missed):
        # the answer computed here is kept for the next one, under the version it saw before.
        version = scope.get(_SCOPE_VERSION) if service == "sagemaker" and op in _CACHED else None
        handler = handlers.get(op)
        if handler is None:
            raise errors.UnknownOperation(
                f"Operation {op} is not supported by trainforge" if service == "sagemaker"
                and op in all_operation_names() else f"Unknown operation {op}")
        params = _parse_body(body)
        if service == "sagemaker":
            validate(op, params)
        if op in _INLINE:
            result = handler(caller, params)
        else:
            result = await run_in_threadpool(handler, caller, params)
        content = orjson.dumps(result)
        if version is not None and self.cache is not None:
            self.cache.put((account_id, region, op, body), content, version)
        return encoded_response(content)


class CachedAnswers:
    """ASGI in front of Starlette: a request whose answer the read cache holds is answered here,
    without Starlette's request, routing and response objects (a poller's path: 56 -> ~25 µs).
    Everything else goes on to ``app`` untouched, the body replayed when it was read; so does any
    request the cache cannot answer, and any error (the full path then answers it in AWS's format)."""

    def __init__(self, endpoint: AwsJsonEndpoint, app: ASGIApp) -> None:
        self.endpoint = endpoint
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        cache = self.endpoint.cache
        if cache is None or scope["type"] != "http" or scope["path"] != "/" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        raw = scope["headers"]
        target = next((v for k, v in raw if k == b"x-amz-target"), None)
        if target not in _CACHED_TARGETS:
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        size, more = 0, True
        while more and size <= self.endpoint.max_body:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = bool(message.get("more_body"))
        body = b"".join(chunks)
        answer = None
        if not more and size <= self.endpoint.max_body:
            try:
                answer = self.endpoint.cached(scope, raw, target, body)
            except Exception:  # noqa: BLE001 - the full path answers (and logs) it in AWS's format
                answer = None
        if answer is not None:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", _JSON_11_BYTES), (b"content-length", str(len(answer)).encode()),
                (b"x-amzn-requestid", request_id().encode())]})
            await send({"type": "http.response.body", "body": answer})
            return None
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": more}

        return await self.app(scope, replay, send)


def _parse_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        params = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.SerializationError(f"Unable to parse the request body as JSON: {exc}") from None
    if not isinstance(params, dict):
        raise errors.SerializationError("The request body must be a JSON object.")
    if body.count(b"[") + body.count(b"{") > MAX_NESTING_DEPTH:  # only then can it nest that deep
        _check_depth(params)
    return params


def _check_depth(params: dict[str, Any]) -> None:
    """Refuse a body nested deeper than MAX_NESTING_DEPTH (walked without recursion)."""
    todo: list[tuple[Any, int]] = [(params, 1)]
    while todo:
        value, depth = todo.pop()
        if depth > MAX_NESTING_DEPTH:
            raise errors.SerializationError(
                f"Document nesting depth ({depth}) exceeds the maximum allowed ({MAX_NESTING_DEPTH}).")
        children = value.values() if value.__class__ is dict else value
        todo.extend((v, depth + 1) for v in children if v.__class__ is dict or v.__class__ is list)


async def _not_routed(request: Request, exc: Exception) -> Response:
    """An unknown path (404) or a method a path does not serve (405), in AWS's error shape."""
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    message = (f"No operation is served at {where}: AWS JSON 1.1 requests are POST / with an X-Amz-Target "
               "header." if exc.status_code == 404 else f"Method {request.method} is not allowed on "
               f"{request.url.path}.")
    response = error_response(errors.UnknownOperation(message, status=exc.status_code))
    response.headers.update(exc.headers or {})
    return response


async def _internal_failure(request: Request, exc: Exception) -> Response:
    """Anything that escaped the handlers (Starlette logs it)."""
    return error_response(errors.internal_failure())


def build_app(endpoint: AwsJsonEndpoint, extra_routes: list[Route],
              on_startup: Sequence[Callable[[], Awaitable[None] | None]],
              on_shutdown: Sequence[Callable[[], Awaitable[None] | None]]) -> CachedAnswers:
    routes = [Route("/", endpoint.handle, methods=["POST"]), *extra_routes]

    async def health(_: Request) -> Response:
        return json_response({"status": "ok"})

    routes.append(Route("/_trainforge/health", health, methods=["GET"]))
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app: Starlette):  # type: ignore[no-untyped-def]
        for fn in on_startup:
            res = fn()
            if res is not None:
                await res
        yield
        for fn in on_shutdown:
            res = fn()
            if res is not None:
                await res

    handlers = {404: _not_routed, 405: _not_routed, 500: _internal_failure}
    return CachedAnswers(endpoint, Starlette(routes=routes, lifespan=lifespan,  # type: ignore[arg-type]
                                             exception_handlers=handlers))


def sagemaker_handlers(jobs: Any, tags: Any, algorithms: Any) -> dict[str, Handler]:
    table = {
        "CreateTrainingJob": jobs.create, "DescribeTrainingJob": jobs.describe,
        "ListTrainingJobs": jobs.list, "StopTrainingJob": jobs.stop, "UpdateTrainingJob": jobs.update,
        "DeleteTrainingJob": jobs.delete, "AddTags": tags.add, "ListTags": tags.list,
        "DeleteTags": tags.delete, "CreateAlgorithm": algorithms.create,
        "DescribeAlgorithm": algorithms.describe, "ListAlgorithms": algorithms.list,
        "DeleteAlgorithm": algorithms.delete,
    }
    assert set(table) == set(SUPPORTED_OPERATIONS)
    return table
