"""What depends on the store, on SQLite and on PostgreSQL: ListTrainingJobs (every filter, every sort,
both orders, pagination across more than 250 jobs, checked against a reference computed from
DescribeTrainingJob) and durability (a server killed with SIGKILL loses no acknowledged job).
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from botocore.exceptions import ClientError
from conftest import ServerProcess, minimal_request, unique_name, wait_for_job, wait_until

TRAINING_PLAN = "arn:aws:sagemaker:us-east-1:000000000000:training-plan/plan-for-list-tests-0001"
COLORS = ("alpha", "beta", "gamma", "delta")
N_JOBS = 260
SORTS = ("Name", "CreationTime", "Status")
ORDERS = ("Ascending", "Descending")


def fresh_database(cluster_url: str) -> str:
    """A new, empty database on the test PostgreSQL cluster; returns its URL."""
    import psycopg

    name = "tf_" + uuid.uuid4().hex[:12]
    with psycopg.connect(cluster_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(cluster_url)._replace(path="/" + name))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
    else:
        yield fresh_database(request.getfixturevalue("postgres_url"))


def sleeper(srv: ServerProcess, name: str, seconds: int = 120) -> dict[str, Any]:
    """A job that holds its instance slot until it is stopped (or ``seconds`` pass)."""
    return minimal_request(name, OutputDataConfig={"S3OutputPath": f"file://{srv.data_dir}/outputs"},
                           AlgorithmSpecification={
        "TrainingImage": "trainforge/command:latest", "TrainingInputMode": "File",
        "ContainerEntrypoint": ["/bin/sh", "-c"], "ContainerArguments": [f"exec sleep {seconds}"]},
        StoppingCondition={"MaxRuntimeInSeconds": seconds})


def occupy_the_only_slot(srv: ServerProcess, name: str) -> None:
    """Start a sleeper on a one-slot server and wait until it trains: every later job stays queued."""
    sm = srv.client()
    sm.create_training_job(**sleeper(srv, name))
    wait_for_job(sm, name, "Training", secondary=True, timeout=30)


def stop_and_wait(sm: Any, name: str) -> None:
    sm.stop_training_job(TrainingJobName=name)
    wait_for_job(sm, name, "Stopped")


# --- ListTrainingJobs --------------------------------------------------------------------------
def _whole_second(epoch: float) -> datetime:
    """boto3 sends timestamps as whole epoch seconds: filter bounds are whole seconds."""
    return datetime.fromtimestamp(int(epoch), tz=UTC)


def _reference(jobs: list[dict[str, Any]], params: dict[str, Any]) -> list[str]:
    def keep(d: dict[str, Any]) -> bool:
        p = params
        return all((
            "NameContains" not in p or p["NameContains"].lower() in d["TrainingJobName"].lower(),
            "StatusEquals" not in p or d["TrainingJobStatus"] == p["StatusEquals"],
            "CreationTimeAfter" not in p or d["CreationTime"] > p["CreationTimeAfter"],
            "CreationTimeBefore" not in p or d["CreationTime"] < p["CreationTimeBefore"],
            "LastModifiedTimeAfter" not in p or d["LastModifiedTime"] > p["LastModifiedTimeAfter"],
            "LastModifiedTimeBefore" not in p or d["LastModifiedTime"] < p["LastModifiedTimeBefore"],
            "WarmPoolStatusEquals" not in p or (d.get("WarmPoolStatus") or {}).get("Status") == p["WarmPoolStatusEquals"],
            "TrainingPlanArnEquals" not in p or d["ResourceConfig"].get("TrainingPlanArn") == p["TrainingPlanArnEquals"],
        ))

    sort_by = params.get("SortBy", "CreationTime")
    key: Callable[[dict[str, Any]], Any] = {
        "Name": lambda d: d["TrainingJobName"],
        "CreationTime": lambda d: (d["CreationTime"], d["TrainingJobName"]),
        "Status": lambda d: (d["TrainingJobStatus"], d["TrainingJobName"]),
    }[sort_by]
    rows = sorted(filter(keep, jobs), key=key, reverse=params.get("SortOrder") == "Descending")
    return [d["TrainingJobName"] for d in rows]


def all_pages(sm: Any, params: dict[str, Any], page_size: int, bound: int = N_JOBS + 1
              ) -> tuple[list[str], list[dict[str, Any]]]:
    """Every page of a listing: the names and the summaries, checking that a page with a token is full."""
    names: list[str] = []
    summaries: list[dict[str, Any]] = []
    token = None
    while True:
        page = sm.list_training_jobs(MaxResults=page_size, **params, **({"NextToken": token} if token else {}))
        rows = page["TrainingJobSummaries"]
        token = page.get("NextToken")
        if token:
            # A page with a token is full: never an empty (or short) page while matches remain.
            assert len(rows) == page_size, (params, len(rows))
        names += [r["TrainingJobName"] for r in rows]
        summaries += rows
        if not token:
            return names, summaries
        assert len(names) <= bound, "pagination does not end"


def _populate(sm: Any, prefix: str) -> list[str]:
    names = []
    for i in range(N_JOBS):
        name = f"{prefix}-{COLORS[i % 4]}-{i:03d}"
        sm.create_training_job(**minimal_request(name))
        names.append(name)
        if i == N_JOBS // 2:
            # Make the creation times span at least two whole seconds (boto3's filter resolution).
            second = int(time.time())
            wait_until(lambda s=second: int(time.time()) > s, timeout=2, interval=0.01, message="next second")
    return names


def test_list_every_filter_sort_and_page(server_factory: Callable[..., ServerProcess],
                                         database_url: str | None) -> None:
    srv = server_factory(config={"max_concurrent_instances": 1}, database_url=database_url)
    sm = srv.client()
    prefix = "ls" + uuid.uuid4().hex[:6]
    blocker = f"{prefix}-blocker"
    occupy_the_only_slot(srv, blocker)
    try:
        names = _populate(sm, prefix)
        for name in names[3::5]:
            sm.stop_training_job(TrainingJobName=name)  # queued: Stopped at once
        stopped = set(names[3::5])

        def settled() -> bool:
            # Every queued job has been marked Pending by the scheduler: nothing changes any more.
            summaries = [s for page in sm.get_paginator("list_training_jobs").paginate(PaginationConfig={
                "PageSize": 100}) for s in page["TrainingJobSummaries"]]
            return len(summaries) == N_JOBS + 1 and all(
                s["SecondaryStatus"] == ("Stopped" if s["TrainingJobName"] in stopped else "Pending")
                for s in summaries if s["TrainingJobName"] != blocker)

        wait_until(settled, timeout=60, interval=0.2, message="every queued job Pending")
        with ThreadPoolExecutor(4) as pool:
            jobs = list(pool.map(lambda n: sm.describe_training_job(TrainingJobName=n), [blocker, *names]))
        by_name = {d["TrainingJobName"]: d for d in jobs}
        c_secs = sorted({int(d["CreationTime"].timestamp()) for d in jobs})
        m_secs = sorted({int(d["LastModifiedTime"].timestamp()) for d in jobs})
        assert len(c_secs) >= 2 and len(m_secs) >= 2
        c1, c2 = _whole_second(c_secs[1]), _whole_second(c_secs[-1])
        m1, m2 = _whole_second(m_secs[1]), _whole_second(m_secs[-1])
        splits: list[dict[str, Any]] = [  # each keeps some jobs and drops others
            {"NameContains": "beta"},
            {"NameContains": "GaMmA-1"},
            {"StatusEquals": "InProgress"},
            {"StatusEquals": "Stopped"},
            {"CreationTimeAfter": c1},
            {"CreationTimeBefore": c2},
            {"LastModifiedTimeAfter": m1},
            {"LastModifiedTimeBefore": m2},
        ]
        for flt in splits:
            assert 0 < len(_reference(jobs, flt)) < N_JOBS + 1, flt
        # trainforge has no warm pools nor training plans (their create members are refused): these
        # filters match nothing, and must say so without a token.
        empty: list[dict[str, Any]] = [
            {"NameContains": "no-such-job"}, {"StatusEquals": "Completed"}, {"WarmPoolStatusEquals": "Available"},
            {"TrainingPlanArnEquals": TRAINING_PLAN}]
        for flt in empty:
            assert _reference(jobs, flt) == [], flt
        filters = [
            {}, *splits, *empty,
            {"CreationTimeAfter": c1, "CreationTimeBefore": c2},
            {"LastModifiedTimeAfter": m1, "LastModifiedTimeBefore": m2},
            {"NameContains": "alpha", "StatusEquals": "Stopped", "CreationTimeAfter": c1},
        ]
        for flt in filters:
            for sort_by in SORTS:
                for order in ORDERS:
                    params = {**flt, "SortBy": sort_by, "SortOrder": order}
                    want = _reference(jobs, params)
                    # Small pages: every listing takes several (27 for all the jobs, 3 or 4 when filtered).
                    page_size = 10 if not flt else max(1, min(100, len(want) // 3))
                    got, summaries = all_pages(sm, params, page_size)
                    assert got == want, (params, page_size)
                    for s in summaries[:3]:
                        d = by_name[s["TrainingJobName"]]
                        assert s["TrainingJobArn"] == d["TrainingJobArn"]
                        assert s["TrainingJobStatus"] == d["TrainingJobStatus"]
                        assert s["SecondaryStatus"] == d["SecondaryStatus"]
                        assert s["CreationTime"] == d["CreationTime"]
                        assert s["LastModifiedTime"] == d["LastModifiedTime"]
                        assert s.get("TrainingPlanArn") == d["ResourceConfig"].get("TrainingPlanArn")
        everything = _reference(jobs, {"SortBy": "Name"})
        assert all_pages(sm, {"NameContains": prefix, "SortBy": "Name"}, 100)[0] == everything
        assert len(everything) == N_JOBS + 1
        # Defaults: CreationTime, Ascending, 10 per page.
        default = sm.list_training_jobs()
        assert len(default["TrainingJobSummaries"]) == 10 and "NextToken" in default
        assert [s["TrainingJobName"] for s in default["TrainingJobSummaries"]] == \
            _reference(jobs, {"SortBy": "CreationTime", "SortOrder": "Ascending"})[:10]

        # NextToken: tampered, or replayed with other parameters, is a ValidationException.
        token = sm.list_training_jobs(MaxResults=5, NameContains="beta", SortBy="Name")["NextToken"]
        raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        raw[len(raw) // 2] ^= 0x01
        tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
        for bad, extra in ((tampered, {"NameContains": "beta", "SortBy": "Name"}),
                           (token[:-2], {"NameContains": "beta", "SortBy": "Name"}),
                           ("not-a-token", {}),
                           (token, {"NameContains": "gamma", "SortBy": "Name"}),
                           (token, {"NameContains": "beta", "SortBy": "Status"})):
            with pytest.raises(ClientError) as exc:
                sm.list_training_jobs(MaxResults=5, NextToken=bad, **extra)
            assert exc.value.response["Error"]["Code"] == "ValidationException", (bad, extra)
            assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        # The genuine token still works.
        page = sm.list_training_jobs(MaxResults=5, NameContains="beta", SortBy="Name", NextToken=token)
        assert [s["TrainingJobName"] for s in page["TrainingJobSummaries"]] == \
            _reference(jobs, {"NameContains": "beta", "SortBy": "Name"})[5:10]
    finally:
        stop_and_wait(sm, blocker)


# --- durability --------------------------------------------------------------------------------
def test_sigkill_after_acknowledged_creates_loses_nothing(server_factory: Callable[..., ServerProcess],
                                                          database_url: str | None) -> None:
    srv = server_factory(config={"max_concurrent_instances": 1}, database_url=database_url)
    sm = srv.client()
    blocker = unique_name("durable-blocker")
    occupy_the_only_slot(srv, blocker)
    acknowledged: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()
    prefix = "dur" + uuid.uuid4().hex[:6]

    def creator(t: int) -> None:
        client = srv.client()
        for i in range(1000):
            if enough.is_set():
                return
            name = f"{prefix}-{t}-{i}"
            try:
                client.create_training_job(**minimal_request(name))
            except Exception:  # noqa: BLE001 - the server was killed mid-request: not acknowledged
                return
            with lock:
                acknowledged.append(name)
                if len(acknowledged) >= 100:
                    enough.set()

    threads = [threading.Thread(target=creator, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    assert enough.wait(timeout=60), "100 creates were not acknowledged in time"
    srv.kill()  # while the other creates are in flight
    for t in threads:
        t.join(timeout=30)
    with lock:
        acked = list(acknowledged)
    assert len(acked) >= 100

    srv.start()  # same data dir, same database, same port
    sm = srv.client()
    for name in acked:
        d = sm.describe_training_job(TrainingJobName=name)
        assert d["TrainingJobName"] == name and d["TrainingJobStatus"] == "InProgress"
        assert d["AlgorithmSpecification"]["ContainerArguments"] == ["true"]
    listed = {s["TrainingJobName"] for page in sm.get_paginator("list_training_jobs").paginate(
        NameContains=prefix, PaginationConfig={"PageSize": 100}) for s in page["TrainingJobSummaries"]}
    assert set(acked) <= listed
    # The restarted server still works: new jobs, and the blocker is still known.
    sm.create_training_job(**minimal_request(f"{prefix}-after-restart"))
    assert sm.describe_training_job(TrainingJobName=blocker)["TrainingJobStatus"] == "InProgress"
    # Stop everything queued first (so nothing else gets the slot), then the blocker.
    for name in [*acked, f"{prefix}-after-restart", *(listed - set(acked))]:
        try:
            sm.stop_training_job(TrainingJobName=name)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ValidationException"
    stop_and_wait(sm, blocker)


# --- migrations --------------------------------------------------------------------------------
def _raw_describe(sm: Any, name: str) -> bytes:
    """DescribeTrainingJob's body as the server sent it (botocore's parse drops the members' order)."""
    bodies: list[bytes] = []

    def keep(http_response: Any, **_: Any) -> None:
        bodies.append(http_response.content)

    sm.meta.events.register("after-call.sagemaker.DescribeTrainingJob", keep)
    try:
        sm.describe_training_job(TrainingJobName=name)
    finally:
        sm.meta.events.unregister("after-call.sagemaker.DescribeTrainingJob", keep)
    return bodies[0]


def test_migration_0004_moves_scheduling_state_out_of_the_document(
        server_factory: Callable[..., ServerProcess], tmp_path: Path, database_url: str | None) -> None:
    """Jobs stored at revision 0003 kept the scheduler's values (``_deadline``, ``_deadline_reason``,
    ``_finishing``) and TrainingEndTime in their state document; after 0004 the same values come from
    columns: the scheduler acts on them, and DescribeTrainingJob answers the same bytes as before."""
    import orjson
    from sqlalchemy import insert, select

    from trainforge.store.db import Database
    from trainforge.store.jobs import JobStore
    from trainforge.store.schema import jobs as jobs_table

    data_dir = tmp_path / "data"
    url = database_url or f"sqlite:///{data_dir / 'trainforge.db'}"
    db = Database(url)
    db.migrate("0003")
    now = time.time()

    def transitions(*statuses: str) -> list[dict[str, Any]]:
        return [{"Status": s, "StartTime": now - 60 + i, "StatusMessage": s} for i, s in enumerate(statuses)]

    # Ended after training: its end time is in the document and in training_end_time; one host had a
    # finishing agent.
    trained = {"SecondaryStatusTransitions": transitions("Starting", "Training", "Failed"),
               "_deadline": now + 3600.123456789, "_deadline_reason": "MaxRuntimeExceeded",
               "TrainingStartTime": now - 58.5, "_finishing": ["algo-2"], "FailureReason": "AlgorithmError",
               "TrainingEndTime": now - 10.25, "TrainingTimeInSeconds": 48, "BillableTimeInSeconds": 48}
    # Stopped while queued: an end time (training_end_time) but no training, so none in the document.
    queued = {"SecondaryStatusTransitions": transitions("Starting", "Stopping", "Stopped")}
    # A spot job still training whose MaxWaitTimeInSeconds deadline passed while the server was down.
    spot = {"SecondaryStatusTransitions": transitions("Starting", "Training"),
            "_deadline": now - 120.5, "_deadline_reason": "MaxWaitTimeExceeded",
            "TrainingStartTime": now - 58}
    prefix = "mig" + uuid.uuid4().hex[:6]
    spot_name = f"{prefix}-spot"
    old = {f"{prefix}-trained": ("Failed", "done", trained, now - 10.25),
           f"{prefix}-queued": ("Stopped", "done", queued, now - 30.5),
           spot_name: ("InProgress", "running", spot, None)}
    spot_request = {"EnableManagedSpotTraining": True,
                    "StoppingCondition": {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 60}}
    with db.write() as conn:
        conn.execute(insert(jobs_table), [{
            "account_id": "000000000000", "region": "us-east-1", "name": name,
            "arn": f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{name}", "status": status,
            "secondary_status": state["SecondaryStatusTransitions"][-1]["Status"], "creation_time": now - 60,
            "last_modified_time": now - 5, "training_end_time": end, "state": orjson.dumps(state).decode(),
            "request": orjson.dumps(minimal_request(name, **(spot_request if name == spot_name else {})))
            .decode(),
            "phase": phase, "attempt": 1, "token": uuid.uuid4().hex,
        } for name, (status, phase, state, end) in old.items()])
    db.dispose()

    srv = server_factory(database_url=database_url, data_dir=data_dir)  # migrates to head
    sm = srv.client()
    store = JobStore(Database(url))
    try:
        for name, (_, _, state, end) in old.items():
            job = store.get("000000000000", "us-east-1", name)
            assert job is not None
            public = {k: v for k, v in state.items() if not k.startswith("_") and k != "TrainingEndTime"}
            if name == spot_name:  # the scheduler has ended it since, as its moved deadline says
                assert job.deadline == state["_deadline"] and job.deadline_reason == "MaxWaitTimeExceeded"
                continue
            assert list(job.state.items()) == list(public.items())
            assert job.deadline == state.get("_deadline")
            assert job.deadline_reason == state.get("_deadline_reason")
            assert job.finishing_hosts == state.get("_finishing", [])
            assert job.training_end_time == end
            # Every member the document held is answered where and as it was (orjson keeps the order).
            body = _raw_describe(sm, name)
            assert _raw_describe(sm, name) == body  # the cached answer too
            described = orjson.loads(body)
            assert not [k for k in described if k.startswith("_")]
            shown = {k: v for k, v in described.items() if k in state}
            assert list(shown.items()) == [(k, v) for k, v in state.items() if not k.startswith("_")]
            assert ("TrainingEndTime" in described) == ("TrainingEndTime" in state)

        wait_until(lambda: sm.describe_training_job(TrainingJobName=spot_name)["TrainingJobStatus"]
                   == "Stopped", timeout=30, interval=0.1, message="the overdue spot job to stop")
        described = orjson.loads(_raw_describe(sm, spot_name))
        assert described["SecondaryStatus"] == "MaxWaitTimeExceeded"
        assert list(described)[list(described).index("TrainingEndTime") + 1] == "TrainingTimeInSeconds"
        ends = {s["TrainingJobName"]: s.get("TrainingEndTime") for s in sm.list_training_jobs(
            NameContains=prefix)["TrainingJobSummaries"]}
        assert ends[f"{prefix}-trained"].timestamp() == pytest.approx(now - 10.25, abs=1e-3)
        assert ends[f"{prefix}-queued"].timestamp() == pytest.approx(now - 30.5, abs=1e-3)
        assert ends[spot_name] is not None
    finally:
        store.db.dispose()
        srv.stop()

    # And back: revision 0003 finds the values in the documents again.
    db = Database(url)
    db.migrate("0003", down=True)
    with db.read() as conn:
        states = {name: orjson.loads(text) for name, text in conn.execute(
            select(jobs_table.c.name, jobs_table.c.state).where(jobs_table.c.name.like(f"{prefix}-%")))}
    db.dispose()
    assert states[f"{prefix}-trained"] == trained and states[f"{prefix}-queued"] == queued
    assert {k: states[spot_name][k] for k in ("_deadline", "_deadline_reason")} == {
        "_deadline": spot["_deadline"], "_deadline_reason": "MaxWaitTimeExceeded"}
