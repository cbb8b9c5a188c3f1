"""``GET /metrics``: the server's state and its API traffic in Prometheus's text format
(the ``prometheus-client`` package: its registry, metric types and exposition).

Read from the store at each scrape (every account together): jobs by status and secondary status,
the queue's length and its oldest job's wait, instances running, the machine's capacity in use and
available, and the agents' report lag (how late the newest log lines arrived). Counted as requests
pass (:class:`ApiInstruments`, an ASGI wrapper around the whole app): API requests and their
latency by operation and HTTP status code. Counted as the agents report them (:class:`Transfers`,
service/reports.py): the bytes and seconds of input staging and output upload, and image pulls.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trainforge.agent.endpoints import CREDENTIALS_PATH, GANG_PATH, REPORT_PATH
from trainforge.scheduler.capacity import CapacityModel
from trainforge.service.reports import Observation
from trainforge.store.jobs import JobStore
from trainforge.store.schema import instances, jobs, log_events

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]],
                    Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]
# How many of the newest log lines the report lag is measured over.
LAG_WINDOW = 1000
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_AGENT_PATHS = {REPORT_PATH: "AgentReport", CREDENTIALS_PATH: "AgentCredentials", GANG_PATH: "AgentGang"}


def operation_of(scope: dict[str, Any]) -> str | None:
    """The API operation a request is for (None: not an API request: pages, /metrics, health)."""
    path = scope.get("path", "")
    if path == "/" and scope.get("method") == "POST":
        for key, value in scope.get("headers", ()):
            if key == b"x-amz-target":
                return value.decode("latin-1").rpartition(".")[2][:64] or "unknown"
        return "Query"  # STS / IAM (the action is in the form body, which is not read here)
    if path.startswith("/service/"):  # CloudWatch's CBOR protocol: /service/<service>/operation/<Op>
        return path.rpartition("/")[2][:64] or "unknown"
    return _AGENT_PATHS.get(path)


class ApiInstruments:
    """ASGI: counts and times each API request by operation and status code, then passes it on."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("trainforge_api_requests", "API requests answered, by operation and HTTP status",
                                ["operation", "code"], registry=registry)
        self.latency = Histogram("trainforge_api_request_duration_seconds",
                                 "Time to answer an API request, by operation and HTTP status",
                                 ["operation", "code"], buckets=_LATENCY_BUCKETS, registry=registry)

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        op = operation_of(scope) if scope["type"] == "http" else None
        if op is None:
            return await self.app(scope, receive, send)
        status = [500]

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, sending)
        finally:
            code = str(status[0])
            self.requests.labels(op, code).inc()
            self.latency.labels(op, code).observe(time.perf_counter() - start)
        return None


class Transfers:
    """What the agents moved, as they report it (counted from this server's start)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.bytes = Counter("trainforge_staging_bytes", "Bytes moved by the instances' input staging "
                             "(download) and output upload (upload)", ["direction"], registry=registry)
        self.seconds = Counter("trainforge_staging_seconds", "Seconds spent staging inputs (download) and "
                               "uploading outputs (upload)", ["direction"], registry=registry)
        self.pulls = Counter("trainforge_image_pulls", "Container image look-ups by the instances: pulled "
                             "from the registry, found cached, or failed", ["result"], registry=registry)
        self.pull_seconds = Counter("trainforge_image_pull_seconds", "Seconds spent getting container images, "
                                    "by result", ["result"], registry=registry)
        for direction in ("download", "upload"):  # present from the start, at 0
            self.bytes.labels(direction)
            self.seconds.labels(direction)

    def observe(self, figures: Observation) -> None:
        kind, label, nbytes, seconds = figures
        if kind == "transfer":
            self.bytes.labels(label).inc(nbytes)
            self.seconds.labels(label).inc(seconds)
        else:
            self.pulls.labels(label).inc()
            self.pull_seconds.labels(label).inc(seconds)


class StoreCollector(Collector):
    """The store's figures, read at each scrape."""

    def __init__(self, store: JobStore, capacity: CapacityModel, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.capacity = capacity
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.clock()
        by_status = GaugeMetricFamily("trainforge_jobs", "Training jobs stored, by status and secondary status",
                                      labels=["status", "secondary_status"])
        with self.store.db.read() as conn:
            for status, secondary, n in conn.execute(select(jobs.c.status, jobs.c.secondary_status, func.count())
                                                     .group_by(jobs.c.status, jobs.c.secondary_status)):
                by_status.add_metric([status, secondary], n)
            queued, oldest = conn.execute(select(func.count(), func.min(jobs.c.creation_time))
                                          .where(jobs.c.phase == "queued")).one()
            running = conn.execute(select(func.count()).select_from(instances)
                                   .where(instances.c.state == "running")).scalar_one()
            recent = select(log_events.c.timestamp, log_events.c.ingestion_time).order_by(
                log_events.c.id.desc()).limit(LAG_WINDOW).subquery()
            lag = conn.execute(select(func.max(recent.c.ingestion_time - recent.c.timestamp))).scalar()
        yield by_status
        yield GaugeMetricFamily("trainforge_queue_length", "Jobs waiting for capacity or launch", value=queued)
        yield GaugeMetricFamily("trainforge_queue_oldest_pending_seconds",
                                "How long the oldest waiting job has waited (0: none waits)",
                                value=max(0.0, now - oldest) if oldest is not None else 0.0)
        yield GaugeMetricFamily("trainforge_instances_running", "Instances whose agent runs", value=running)
        in_use, total = self.capacity.in_use(self.store), self.capacity.total
        for name, unit, used, whole in (("cpus", "CPUs", in_use.cpus, total.cpus),
                                        ("memory_bytes", "memory (bytes)", in_use.memory_mb * 2**20,
                                         total.memory_mb * 2**20),
                                        ("gpus", "GPUs", in_use.gpus, total.gpus),
                                        ("instances", "instance slots", in_use.instances, total.instances)):
            family = GaugeMetricFamily(f"trainforge_capacity_{name}",
                                       f"The machine's {unit}: reserved by running jobs, and still available",
                                       labels=["state"])
            family.add_metric(["in_use"], used)
            family.add_metric(["available"], max(0.0, whole - used))
            yield family
        yield GaugeMetricFamily("trainforge_agent_report_lag_seconds",
                                f"Longest delay between a log line's time at the agent and its arrival, over the "
                                f"newest {LAG_WINDOW} lines", value=(lag or 0) / 1000.0)


class Prometheus:
    def __init__(self, store: JobStore, capacity: CapacityModel) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StoreCollector(store, capacity))
        self.transfers = Transfers(self.registry)

    def instrument(self, app: ASGIApp) -> ApiInstruments:
        return ApiInstruments(app, self.registry)

    def routes(self) -> list[Route]:
        async def metrics(_: Request) -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
        return [Route("/metrics", metrics, methods=["GET"])]
