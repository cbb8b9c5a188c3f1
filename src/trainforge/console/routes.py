"""The console's HTTP routes, all under ``/console`` on the API's own host and port.

Pages (``static/*.html``) are served to a session; what they show comes from the JSON routes
under ``/console/api/`` (console/data.py), live through one server-sent-events stream per page
(``/console/api/events``, console/changes.py). A state change (Stop, create, sign-out) needs the
session's CSRF token in ``X-CSRF-Token`` (console/auth.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, quote

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from trainforge.api.errors import ServiceError
from trainforge.api.validation import validate
from trainforge.console.assets import SECURITY_HEADERS, Assets
from trainforge.console.auth import ConsoleAuth, Session
from trainforge.console.changes import ChangeSignal
from trainforge.console.data import ConsoleData
from trainforge.service.training_jobs import TrainingJobs

_INT_PARAMS = ("MaxResults",)
_LIST_PARAMS = ("NameContains", "StatusEquals", "SortBy", "SortOrder", "MaxResults", "NextToken",
                "CreationTimeAfter", "CreationTimeBefore", "LastModifiedTimeAfter", "LastModifiedTimeBefore")


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers={"Cache-Control": "no-store", **SECURITY_HEADERS})


def _error(exc: ServiceError) -> Response:
    return _json({"code": exc.code, "message": exc.message}, exc.status)


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


class Console:
    def __init__(self, auth: ConsoleAuth, data: ConsoleData, jobs: TrainingJobs, changes: ChangeSignal,
                 hosts: frozenset[str] = frozenset()) -> None:
        self.auth = auth
        # Without sign-in, pages answer only to these host names: a web page whose name was rebound to
        # this loopback address (DNS rebinding) gets no session, hence no CSRF token.
        self.hosts = hosts | {"127.0.0.1", "localhost", "::1"}
        self.data = data
        self.jobs = jobs
        self.changes = changes
        self.assets = Assets()

    # --- sessions ------------------------------------------------------------------------------
    def _page(self, request: Request, name: str) -> Response:
        session = self.auth.session(request)
        cookie = None
        if not self.auth.sign_in_required and request.url.hostname not in self.hosts:
            return Response(f"This console answers at {', '.join(sorted(self.hosts))}, not {request.url.hostname}.",
                            status_code=403, media_type="text/plain")
        if session is None:
            if self.auth.sign_in_required:
                return RedirectResponse("/console/signin", status_code=303)
            session, cookie = self.auth.new_session(self.auth.default)
        response = self.assets.page(name, {
            "csrf": self.auth.csrf_token(session), "account": session.caller.account_id,
            "region": session.caller.region, "who": session.access_key or "single-user",
            "signout": "yes" if self.auth.sign_in_required else "", "version": str(self.changes.version)})
        if cookie is not None:
            response.headers["set-cookie"] = self.auth.cookie_header(cookie)
        return response

    def _api(self, handler: Callable[[Request, Session], Awaitable[Response]], *,
             state_change: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = self.auth.session(request)
            if session is None:
                return _json({"code": "NotSignedIn", "message": "Sign in to the console first."}, 401)
            if state_change and not self.auth.csrf_ok(request, session):
                return _json({"code": "InvalidCsrfToken",
                              "message": "This request lacks the page's CSRF token: it was refused."}, 403)
            try:
                return await handler(request, session)
            except ServiceError as exc:
                return _error(exc)
        return endpoint

    async def sign_in_page(self, request: Request) -> Response:
        if not self.auth.sign_in_required:
            return RedirectResponse("/console", status_code=303)
        return self.assets.page("signin.html", {"error": "", "region": self.auth.default.region})

    async def sign_in(self, request: Request) -> Response:
        # the form is URL-encoded (parsed here: Starlette's form parser needs python-multipart)
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        key, secret = form.get("access_key", ""), form.get("secret_key", "")
        region = form.get("region") or self.auth.default.region
        try:
            caller = self.auth.check_secret(key, secret, region)
        except ServiceError as exc:
            page = self.assets.page("signin.html", {"error": f"Sign-in refused: {exc.message}", "region": region})
            page.status_code = 403
            return page
        _, cookie = self.auth.new_session(caller, key)
        response = RedirectResponse("/console", status_code=303)
        response.headers["set-cookie"] = self.auth.cookie_header(cookie)
        return response

    async def sign_out(self, request: Request, session: Session) -> Response:
        response = _json({})
        response.headers["set-cookie"] = self.auth.cookie_header("", clear=True)
        return response

    # --- data ------------------------------------------------------------------------------------
    async def list_jobs(self, request: Request, session: Session) -> Response:
        params: dict[str, Any] = {}
        for key in _LIST_PARAMS:
            value = request.query_params.get(key)
            if value:
                number = _int(value) if key in _INT_PARAMS else None
                params[key] = value if number is None else number
        return _json(await run_in_threadpool(self.data.job_list, session.caller, params))

    async def job(self, request: Request, session: Session) -> Response:
        return _json(await run_in_threadpool(self.data.job_detail, session.caller, request.path_params["name"]))

    async def logs(self, request: Request, session: Session) -> Response:
        q = request.query_params
        return _json(await run_in_threadpool(
            lambda: self.data.logs(session.caller, request.path_params["name"], after=_int(q.get("after")),
                                   before=_int(q.get("before")), contains=q.get("q") or None,
                                   kind=q.get("kind") or None, limit=_int(q.get("limit")) or 1000)))

    async def metrics(self, request: Request, session: Session) -> Response:
        after = _int(request.query_params.get("after"))
        return _json(await run_in_threadpool(self.data.metrics, session.caller, request.path_params["name"],
                                             after=after))

    async def stop(self, request: Request, session: Session) -> Response:
        name = request.path_params["name"]
        await run_in_threadpool(self.jobs.stop, session.caller, {"TrainingJobName": name})
        return _json({})

    async def create(self, request: Request, session: Session) -> Response:
        """CreateTrainingJob from the console's form: the API's own validation and rules, so its messages."""
        try:
            params = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            return _json({"code": "SerializationException", "message": f"The request is not JSON: {exc}"}, 400)
        if not isinstance(params, dict):
            return _json({"code": "SerializationException", "message": "The request must be a JSON object."}, 400)
        validate("CreateTrainingJob", params)
        result = await run_in_threadpool(self.jobs.create, session.caller, params)
        return _json({**result, "url": "/console/jobs/" + quote(params["TrainingJobName"])})

    async def events(self, request: Request, session: Session) -> Response:
        return StreamingResponse(self.changes.stream(_int(request.query_params.get("since"))), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    # --- routing -------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        async def jobs_page(request: Request) -> Response:
            return self._page(request, "jobs.html")

        async def job_page(request: Request) -> Response:
            return self._page(request, "job.html")

        async def create_page(request: Request) -> Response:
            return self._page(request, "create.html")

        async def static(request: Request) -> Response:
            return self.assets.response(request, request.path_params["file"])

        return [
            Route("/console", jobs_page, methods=["GET"]),
            Route("/console/", jobs_page, methods=["GET"]),
            Route("/console/jobs/{name}", job_page, methods=["GET"]),
            Route("/console/create", create_page, methods=["GET"]),
            Route("/console/signin", self.sign_in_page, methods=["GET"]),
            Route("/console/signin", self.sign_in, methods=["POST"]),
            Route("/console/static/{file}", static, methods=["GET"]),
            Route("/console/api/signout", self._api(self.sign_out, state_change=True), methods=["POST"]),
            Route("/console/api/events", self._api(self.events), methods=["GET"]),
            Route("/console/api/jobs", self._api(self.list_jobs), methods=["GET"]),
            Route("/console/api/jobs", self._api(self.create, state_change=True), methods=["POST"]),
            Route("/console/api/jobs/{name}", self._api(self.job), methods=["GET"]),
            Route("/console/api/jobs/{name}/logs", self._api(self.logs), methods=["GET"]),
            Route("/console/api/jobs/{name}/metrics", self._api(self.metrics), methods=["GET"]),
            Route("/console/api/jobs/{name}/stop", self._api(self.stop, state_change=True), methods=["POST"]),
        ]
