"""DescribeTrainingJob answers are reused only while the store has not changed (api/app.py ReadCache)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from conftest import minimal_request, stop_quietly, unique_name, wait_until

from trainforge.api.app import ReadCache
from trainforge.store.db import Database

# How far a job has got before it trains: SecondaryStatus never goes back (Starting and Pending
# alternate while it waits for capacity).
STAGE = {"Starting": 0, "Pending": 0, "Downloading": 1, "Training": 2}


def test_a_new_version_empties_the_cache_and_a_stale_answer_is_not_kept() -> None:
    versions = iter([1, 1, 2, 2, None])
    cache = ReadCache(lambda: next(versions))
    key = ("000000000000", "us-east-1", "DescribeTrainingJob", b"{}")
    v = cache.version()
    cache.put(key, b"answer", v)
    assert cache.version() == 1 and cache.get(key) == b"answer"
    assert cache.version() == 2 and cache.get(key) is None  # the store moved: dropped
    cache.put(key, b"old", 1)  # computed at an older version: not kept
    assert cache.version() == 2 and cache.get(key) is None
    assert cache.version() is None  # no version (PostgreSQL): nothing may be reused
    cache.put(key, b"x", None)
    assert cache.get(key) is None


def test_sqlite_version_moves_with_a_commit_of_another_connection(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'store.db'}")
    db.migrate()
    before = db.read_version()
    assert before is not None and db.read_version() == before
    with sqlite3.connect(tmp_path / "store.db") as other:  # another writer, e.g. another process
        other.execute("CREATE TABLE t (x)")
    assert db.read_version() != before
    assert Database("sqlite://").read_version() is None


def test_describe_reflects_every_change_while_polled(server: Any) -> None:
    sm = server.client()
    name = unique_name("cache")
    sleeping = {"TrainingImage": "trainforge/command:latest", "TrainingInputMode": "File",
                "ContainerEntrypoint": ["/bin/sh", "-c"], "ContainerArguments": ["exec sleep 60"]}
    sm.create_training_job(**minimal_request(name, AlgorithmSpecification=sleeping))
    seen: list[str] = []

    def poll() -> str:
        seen.append(sm.describe_training_job(TrainingJobName=name)["SecondaryStatus"])
        return seen[-1]

    wait_until(poll, timeout=60, interval=0.01, message="Training", until=lambda status: status == "Training")
    for _ in range(5):  # it sleeps for a minute: it stays Training
        poll()
    # Every poll saw the job as it was then, never an older answer: the statuses only move forward,
    # and in the order the job went through them.
    assert set(seen) <= set(STAGE), seen
    assert [STAGE[s] for s in seen] == sorted(STAGE[s] for s in seen), seen
    first, again = (sm.describe_training_job(TrainingJobName=name) for _ in range(2))
    for doc in (first, again):
        doc.pop("ResponseMetadata")
    assert again == first
    changes = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
    recorded = iter(t["Status"] for t in first["SecondaryStatusTransitions"])
    assert all(s in recorded for s in changes), (changes, first["SecondaryStatusTransitions"])
    sm.stop_training_job(TrainingJobName=name)
    stopped = sm.describe_training_job(TrainingJobName=name)
    assert stopped["TrainingJobStatus"] in ("Stopping", "Stopped") and stopped["SecondaryStatus"] != "Training"
    assert stopped["LastModifiedTime"] > first["LastModifiedTime"]
    other = unique_name("cache")  # another body is another key
    sm.create_training_job(**minimal_request(other))
    assert sm.describe_training_job(TrainingJobName=other)["TrainingJobName"] == other
    stop_quietly(sm, other)
