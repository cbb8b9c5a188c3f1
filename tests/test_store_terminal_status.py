"""A finished job stays finished (issue 9): the lifecycle leaves it as it is, and the store refuses
any write that would move it out of its terminal status — on SQLite and on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_api_store import fresh_database

from trainforge.service import lifecycle
from trainforge.service.reports import conclude, retry
from trainforge.store.db import Database
from trainforge.store.jobs import JobRow, JobStore, TerminalStatusChange


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    url = (f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite"
           else fresh_database(request.getfixturevalue("postgres_url")))
    db = Database(url)
    db.migrate()
    yield JobStore(db)
    db.dispose()


def running_job(store: JobStore, name: str) -> JobRow:
    now = time.time()
    job = store.insert_job({
        "account_id": "000000000000", "region": "us-east-1", "name": name,
        "arn": f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{name}",
        "status": lifecycle.IN_PROGRESS, "secondary_status": "Starting", "creation_time": now,
        "last_modified_time": now, "training_end_time": None, "warm_pool_status": None,
        "training_plan_arn": None, "request": {"RetryStrategy": {"MaximumRetryAttempts": 3}},
        "state": lifecycle.new_state(now), "phase": "running", "stop_reason": None, "attempt": 1}, [])
    return job


def fail(store: JobStore, job_id: int) -> None:
    with store.locked(job_id) as (conn, locked):
        assert locked is not None
        lifecycle.finish(locked, "Failed", failure_reason="InternalServerError: gone")
        store.save(conn, locked)


def test_the_lifecycle_leaves_a_finished_job_as_it_ended(store: JobStore) -> None:
    job = running_job(store, "ends-once")
    fail(store, job.id)
    with store.locked(job.id) as (conn, locked):
        assert locked is not None
        # what a late exit report of a living agent did: Completed over Failed
        conclude(locked, [{"host": "algo-1", "outcome": "ok", "exit_code": 0, "failure_reason": None}])
        assert not lifecycle.set_secondary(locked, "Training")
        store.save(conn, locked)
    after = store.get_by_id(job.id)
    assert after is not None
    assert (after.status, after.secondary_status, after.phase) == ("Failed", "Failed", "done")
    assert after.state["FailureReason"] == "InternalServerError: gone"
    ends = [t["Status"] for t in after.state["SecondaryStatusTransitions"] if t["Status"] in lifecycle.TERMINAL_SECONDARY]
    assert ends == ["Failed"]


def test_the_store_refuses_to_move_a_job_out_of_a_terminal_status(store: JobStore) -> None:
    job = running_job(store, "no-way-back")
    fail(store, job.id)
    with pytest.raises(TerminalStatusChange), store.locked(job.id) as (conn, locked):
        assert locked is not None
        assert retry(locked, "InternalServerError: again", time.time())  # requeues it, in memory
        store.save(conn, locked)
    with pytest.raises(TerminalStatusChange), store.locked(job.id) as (conn, locked):
        assert locked is not None
        locked.status, locked.secondary_status = "Completed", "Completed"
        store.save(conn, locked)
    after = store.get_by_id(job.id)
    assert after is not None and (after.status, after.phase, after.attempt) == ("Failed", "done", 1)
    # what does not touch its status is still written (e.g. UpdateTrainingJob's members)
    with store.locked(job.id) as (conn, locked):
        assert locked is not None
        locked.warm_pool_status = "Terminated"
        store.save(conn, locked)
    after = store.get_by_id(job.id)
    assert after is not None and after.warm_pool_status == "Terminated"
