"""ListTrainingJobs NameContains through the trigram name index (migration 0003), on SQLite and on
PostgreSQL: rare and common substrings of every length, every sort and order, across pages, against a
reference computed here; the index follows deletes and re-creates; migration 0003 indexes the jobs
stored before it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from conftest import ServerProcess, minimal_request, wait_for_job
from sqlalchemy import insert, text
from test_api_store import all_pages, database_url, occupy_the_only_slot, stop_and_wait  # noqa: F401

SORTS = ("Name", "CreationTime", "Status")
ORDERS = ("Ascending", "Descending")
N_JOBS = 260
# Words with hyphens, digits and both cases: substrings of them match a handful of the names.
WORDS = ("a1-b2", "Run-0", "xgb", "t5-Large", "q-9q", "bert7", "Z-z")


def job_names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{WORDS[i % len(WORDS)]}-{i:03d}" for i in range(n)]


def reference(jobs: list[dict[str, Any]], substring: str, sort_by: str, order: str) -> list[str]:
    """Case-insensitive substring match (as SageMaker and the store before the index), sorted."""
    key: Callable[[dict[str, Any]], Any] = {
        "Name": lambda d: d["TrainingJobName"],
        "CreationTime": lambda d: (d["CreationTime"], d["TrainingJobName"]),
        "Status": lambda d: (d["TrainingJobStatus"], d["TrainingJobName"]),
    }[sort_by]
    rows = [d for d in jobs if substring.lower() in d["TrainingJobName"].lower()]
    return [d["TrainingJobName"] for d in sorted(rows, key=key, reverse=order == "Descending")]


def summaries(sm: Any) -> list[dict[str, Any]]:
    """Every job as the reference needs it (name, creation time, status), from the list itself."""
    return [{"TrainingJobName": s["TrainingJobName"], "CreationTime": s["CreationTime"],
             "TrainingJobStatus": s["TrainingJobStatus"]}
            for page in sm.get_paginator("list_training_jobs").paginate(PaginationConfig={"PageSize": 100})
            for s in page["TrainingJobSummaries"]]


def check_substrings(sm: Any, jobs: list[dict[str, Any]], substrings: list[str]) -> None:
    for sub in substrings:
        for sort_by in SORTS:
            for order in ORDERS:
                want = reference(jobs, sub, sort_by, order)
                # Pages of a third of the matches (at least 1): every match set takes several pages.
                page_size = max(1, min(100, len(want) // 3))
                got = all_pages(sm, {"NameContains": sub, "SortBy": sort_by, "SortOrder": order}, page_size,
                                len(jobs) + 1)[0]
                assert got == want, (sub, sort_by, order, page_size)


def test_name_contains_every_length_sort_and_page(server_factory: Callable[..., ServerProcess],
                                                  database_url: str | None) -> None:  # noqa: F811
    srv = server_factory(config={"max_concurrent_instances": 1}, database_url=database_url)
    sm = srv.client()
    prefix = "nx" + uuid.uuid4().hex[:4]
    blocker = f"{prefix}-blocker"
    occupy_the_only_slot(srv, blocker)  # every later job stays queued: nothing changes under the lists
    try:
        names = job_names(prefix, N_JOBS)
        for name in names:
            sm.create_training_job(**minimal_request(name))
        for name in names[::9]:
            sm.stop_training_job(TrainingJobName=name)  # queued: Stopped at once (a second status)
        jobs = summaries(sm)
        assert len(jobs) == N_JOBS + 1
        substrings = [
            # length 1 and 2: no trigram, the store scans
            "7", "Z", "q", "-0", "5-", "2-", "9q",
            # length 3 and more: the index; rare (1 to 10 matches), cased, with hyphens and digits
            "-25", "RUN-0-1", "run-0-14", "0-1", "Q-9Q-2", "t5-large-0", "b2-", "a1-b2-0", "-z-1", "xgb-2",
            "bert7-24", f"{prefix}-z-z-258", "-blocker",
            # common, and none
            "xgb", prefix, "-0-", "nothing-like-it", "99-9",
        ]
        counts = {sub: len(reference(jobs, sub, "Name", "Ascending")) for sub in substrings}
        assert counts["-25"] == 10 and counts[f"{prefix}-z-z-258"] == 1 and counts["nothing-like-it"] == 0
        assert all(0 < counts[s] <= 15 for s in ("RUN-0-1", "run-0-14", "Q-9Q-2", "bert7-24", "-z-1")), counts
        check_substrings(sm, jobs, substrings)

        # Deleted jobs leave the index; a job created again under a deleted name is found again.
        gone = [n for n in names[::9] if "-25" in n or "Z-z" in n][:6]
        assert gone
        for name in gone:
            sm.delete_training_job(TrainingJobName=name)
        sm.create_training_job(**minimal_request(gone[0]))
        jobs = summaries(sm)
        assert len(jobs) == N_JOBS + 1 - len(gone) + 1
        check_substrings(sm, jobs, ["-25", "-z-z-", "Z-z-2", gone[0][-9:], gone[1][-9:], "Z-"])
        # Stop everything queued first (so nothing else gets the slot), then the blocker.
        for d in jobs:
            if d["TrainingJobStatus"] == "InProgress" and d["TrainingJobName"] != blocker:
                sm.stop_training_job(TrainingJobName=d["TrainingJobName"])
    finally:
        stop_and_wait(sm, blocker)


def _database_at_0002(url: str) -> Any:
    """A store migrated to revision 0002 only (before the name index)."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from trainforge.store.db import MIGRATIONS, Database

    db = Database(url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
    return db


def test_migration_0003_indexes_existing_jobs(server_factory: Callable[..., ServerProcess],
                                              tmp_path: Path, database_url: str | None) -> None:  # noqa: F811
    from trainforge.store.db import Database
    from trainforge.store.schema import jobs as jobs_table

    data_dir = tmp_path / "data"
    url = database_url or f"sqlite:///{data_dir / 'trainforge.db'}"
    db = _database_at_0002(url)
    names = job_names("old", 300)
    now = time.time()
    rows = [{
        "account_id": "000000000000", "region": "us-east-1", "name": name,
        "arn": f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{name}",
        "status": ("Completed", "Failed")[i % 2], "secondary_status": ("Completed", "Failed")[i % 2],
        "creation_time": now - 1000 + i, "last_modified_time": now - 900 + i, "training_end_time": now - 900 + i,
        "request": orjson.dumps(minimal_request(name)).decode(), "state": "{}", "phase": "done",
        "attempt": 1, "token": f"{i:048x}",
    } for i, name in enumerate(names)]
    # A job saved while the clock stepped back: modified before it was created.
    skewed = {**rows[0], "name": "old-skewed-clock", "token": "f" * 48, "last_modified_time": now - 2000,
              "arn": rows[0]["arn"].replace(names[0], "old-skewed-clock")}
    with db.write() as conn:
        conn.execute(insert(jobs_table), [*rows, skewed])
    db.dispose()

    srv = server_factory(database_url=database_url, data_dir=data_dir)  # migrates to head: 0003
    db = Database(url)
    with db.read() as conn:
        if database_url is None:
            hits = conn.execute(text("SELECT count(*) FROM jobs_name_fts WHERE jobs_name_fts MATCH :q"),
                                {"q": '"t5-Large-0"'}).scalar_one()
            assert hits == len([n for n in names if "t5-large-0" in n.lower()]) > 0
        else:
            assert conn.execute(text("SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_jobs_name_trgm'"))\
                .scalar_one() == 1
    db.dispose()
    sm = srv.client()
    # Migration 0003 brought it in line (LastModifiedTimeBefore also bounds the creation time).
    d = sm.describe_training_job(TrainingJobName="old-skewed-clock")
    assert d["LastModifiedTime"] == d["CreationTime"]
    listed = sm.list_training_jobs(LastModifiedTimeBefore=d["CreationTime"] + timedelta(seconds=1),
                                   SortBy="CreationTime", SortOrder="Descending", NameContains="skewed")
    assert [s["TrainingJobName"] for s in listed["TrainingJobSummaries"]] == ["old-skewed-clock"]
    sm.delete_training_job(TrainingJobName="old-skewed-clock")
    jobs = summaries(sm)
    assert len(jobs) == len(names)
    check_substrings(sm, jobs, ["t5-large-0", "-29", "old-q-9q-1", "bert7-2", "Z-Z", "1", "-2", "none-such"])
    # Jobs created after the migration are indexed too (by the triggers on SQLite).
    sm.create_training_job(**minimal_request("new-t5-large-0xy"))
    wait_for_job(sm, "new-t5-large-0xy", "Completed", "Failed")
    jobs = summaries(sm)
    assert len(jobs) == len(names) + 1
    check_substrings(sm, jobs, ["t5-large-0", "0xy"])

