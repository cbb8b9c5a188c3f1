"""Endpoints the agents call: reports, and the container-credentials endpoint of a job.

The credentials endpoint speaks the protocol of boto3's container credential provider
(``AWS_CONTAINER_CREDENTIALS_FULL_URI`` + ``AWS_CONTAINER_AUTHORIZATION_TOKEN``): the token
arrives raw in ``Authorization``. Credentials are served only to a living instance of the job
(an agent's own token, of the current attempt, whose instance has not reported its exit) while
the job runs.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trainforge.agent.endpoints import CREDENTIALS_PATH, GANG_PATH, REPORT_PATH
from trainforge.api.app import json_response
from trainforge.api.errors import ServiceError, ValidationError
from trainforge.config import Config
from trainforge.service.create_rules import check_role
from trainforge.service.gang import GangBarrier
from trainforge.service.reports import Reports
from trainforge.store.jobs import JobRow, JobStore

log = logging.getLogger("trainforge.agent_api")


def role_credentials(config: Config, job: JobRow) -> dict[str, str]:
    """The credentials of ``job``'s role: the configured mapping, else (the single-user default, see
    :func:`check_role`) the server's own. A role the configuration no longer allows the job (the
    server restarted with another ``roles`` or a credentials file) gets nothing."""
    role_arn = job.request.get("RoleArn", "")
    try:
        check_role(role_arn, config, job.account_id)
    except ValidationError as exc:
        raise ServiceError(exc.message, code="AccessDenied", status=403) from None
    mapped = config.roles.get(role_arn)
    if mapped and mapped.get("aws_access_key_id"):
        return {"AccessKeyId": mapped["aws_access_key_id"], "SecretAccessKey": mapped["aws_secret_access_key"],
                "Token": mapped.get("aws_session_token") or ""}
    import botocore.session

    session = botocore.session.Session(profile=(mapped or {}).get("profile"))
    creds = session.get_credentials()
    if creds is None:
        raise ServiceError("No AWS credentials are configured for this role on the trainforge server.",
                           code="InternalFailure", status=500)
    frozen = creds.get_frozen_credentials()
    return {"AccessKeyId": frozen.access_key, "SecretAccessKey": frozen.secret_key, "Token": frozen.token or ""}


def living_instance(store: JobStore, token: str) -> tuple[JobRow, dict[str, Any]] | None:
    """The running job of whose current attempt ``token`` is a living instance's, and that instance's
    row; None otherwise."""
    living = [i for i in store.instances_by_token(token) if i["state"] == "running"] if token else []
    job = store.get_by_id(living[0]["job_id"]) if living else None
    if job is None or job.phase != "running" or living[0]["attempt"] != job.attempt:
        return None
    return job, living[0]


def gang_of(store: JobStore, token: str) -> tuple[JobRow, str, frozenset[str]] | None:
    """The running job of a living instance's ``token``, that instance's host, and every host of the
    job's current attempt; None when the token is no living instance's."""
    found = living_instance(store, token)
    if found is None:
        return None
    job, instance = found
    hosts = frozenset(i["host"] for i in store.read_instances(job.id) if i["attempt"] == job.attempt)
    return job, instance["host"], hosts


def _bearer(request: Request) -> str:
    """The agent's token in ``Authorization: Bearer <token>`` ("" without one)."""
    auth = request.headers.get("authorization", "")
    return auth[7:] if auth.startswith("Bearer ") else ""


def _denied() -> Response:
    return json_response({"__type": "AccessDenied", "message": "No running instance has this token."}, 403)


def agent_routes(store: JobStore, reports: Reports, config: Config) -> list[Route]:
    barrier = GangBarrier()

    async def report(request: Request) -> Response:
        try:
            body: dict[str, Any] = orjson.loads(await request.body())
            answer = await run_in_threadpool(reports.ingest, _bearer(request), body)
        except ServiceError as exc:
            return json_response(exc.body(), exc.status)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return json_response({"__type": "SerializationException", "message": f"bad report: {exc}"}, 400)
        return json_response(answer)

    async def credentials(request: Request) -> Response:
        token = request.headers.get("authorization", "")
        found = await run_in_threadpool(living_instance, store, token)
        if found is None:
            return _denied()
        try:
            creds = await run_in_threadpool(role_credentials, config, found[0])
        except ServiceError as exc:
            return json_response(exc.body(), exc.status)
        expiry = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        creds["Expiration"] = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
        return json_response(creds)

    async def gang(request: Request) -> Response:
        """The gang barrier (service/gang.py): answers when every host is ready, or after a while."""
        found = await run_in_threadpool(gang_of, store, _bearer(request))
        if found is None:
            return _denied()
        job, host, hosts = found
        waiting = await barrier.arrive(job.id, job.attempt, host, hosts)
        return json_response({"go": not waiting, "waiting_for": waiting})

    return [Route(REPORT_PATH, report, methods=["POST"]),
            Route(CREDENTIALS_PATH, credentials, methods=["GET"]),
            Route(GANG_PATH, gang, methods=["POST"])]
