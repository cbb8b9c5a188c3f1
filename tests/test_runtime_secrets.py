"""Secrets and S3 outputs through real servers and agents (issue 9 items 4 and 7): an s3:// output
works when nothing else imported boto3, the data directory is private to the server's user, and
the store keeps only hashes of the agents' tokens."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import stat
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from conftest import read_model, unique_name, wait_for_job, wait_until
from test_runtime_jobs import shell_job

from trainforge.agent.endpoints import CREDENTIALS_PATH


def file_input_s3_output(name: str, tmp_path: Path, bucket: str, script: str,
                         instances: int = 1) -> dict[str, Any]:
    """A job whose only channel is file:// and whose output is s3://: the agent's first S3 use is the upload."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "part-0.csv").write_text("1,2\n")
    req = shell_job(name, f"cat /opt/ml/input/data/train/part-0.csv > /opt/ml/model/seen; {script}", tmp_path)
    req["InputDataConfig"] = [{"ChannelName": "train", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": f"file://{data}", "S3DataDistributionType": "FullyReplicated"}}}]
    req["OutputDataConfig"] = {"S3OutputPath": f"s3://{bucket}/out"}
    req["ResourceConfig"]["InstanceCount"] = instances
    return req


def test_file_input_with_s3_output_uploads_the_model(server_factory: Any, tmp_path: Path,
                                                     bucket: str) -> None:
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]})
    sm = srv.client()
    name = unique_name("s3out")
    sm.create_training_job(**file_input_s3_output(name, tmp_path, bucket, "echo ok > /opt/ml/model/done"))
    desc = wait_for_job(sm, name, timeout=90)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{bucket}/out/{name}/output/model.tar.gz"
    assert read_model(f"s3://{bucket}/out/{name}/output/model.tar.gz") == {"seen": b"1,2\n", "done": b"ok\n"}


def test_a_finishing_agent_uploads_to_s3(server_factory: Any, tmp_path: Path, bucket: str) -> None:
    """The leader's agent dies after its training ended; the agent started with ``--finish`` uploads to
    s3:// although nothing before it in that process touched S3."""
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]})
    sm = srv.client()
    gate = tmp_path / "gate"
    name = unique_name("s3finish")
    script = (f'h=$(hostname); if [ "$h" = algo-2 ]; then while [ ! -e {gate} ]; do sleep 0.05; done; fi; '
              f'echo "$h" > /opt/ml/model/$h')
    sm.create_training_job(**file_input_s3_output(name, tmp_path, bucket, script, instances=2))
    leader = wait_until(lambda: next(srv.data_dir.glob(f"jobs/*/*/{name}/attempt-1/algo-1/outcome.json"), None),
                        timeout=60, message="the leader's training to end").parent
    first_agent = json.loads((leader / "instance.json").read_text())["agent_pid"]
    os.kill(first_agent, signal.SIGKILL)
    gate.write_text("go")
    desc = wait_for_job(sm, name, timeout=90)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert json.loads((leader / "instance.json").read_text())["agent_pid"] != first_agent
    model = read_model(f"s3://{bucket}/out/{name}/output/model.tar.gz")
    assert model["algo-1"] == b"algo-1\n" and model["algo-2"] == b"algo-2\n"


def modes(root: Path, skip: Path) -> dict[str, tuple[str, int]]:
    """Kind and permission bits of everything below ``root`` and ``root`` itself, but what is under ``skip``."""
    found = {}
    for path in [root, *root.rglob("*")]:
        if skip not in path.parents:
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                continue  # a link's own mode means nothing (0777 always); its target is checked
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "other"
            found[str(path.relative_to(root.parent))] = (kind, stat.S_IMODE(st.st_mode))
    return found


def credentials_status(endpoint: str, token: str) -> int:
    request = urllib.request.Request(f"{endpoint}{CREDENTIALS_PATH}", headers={"Authorization": token})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_data_dir_is_private_and_the_store_keeps_only_token_digests(server_factory: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)  # an existing data directory others could read
    (data_dir / "left-over.txt").write_text("x")
    (data_dir / "left-over.txt").chmod(0o644)
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]}, data_dir=data_dir)
    sm = srv.client()
    name = unique_name("private")
    # the gate is a file the test puts into the instance's /opt/ml (its data directory is not shared)
    script = ("echo m > /opt/ml/model/m; mkdir /opt/ml/model/sub; "
              "while [ ! -e /opt/ml/gate ]; do sleep 0.05; done")
    sm.create_training_job(**shell_job(name, script, tmp_path / "out", Environment={"API_KEY": "env-secret-42"}))
    inst = wait_until(lambda: next(data_dir.glob(f"jobs/*/*/{name}/attempt-1/algo-1"), None), timeout=30,
                      message="the instance directory")
    wait_until(lambda: (inst / "opt/ml/model/sub").is_dir(), timeout=30, message="training")
    token = json.loads((inst / "spec.json").read_text())["token"]

    # The store has the token's digest, never the token; the digest alone fetches nothing.
    with sqlite3.connect(f"file:{data_dir / 'trainforge.db'}?mode=ro", uri=True) as db:
        dump = "\n".join(db.iterdump())
        stored = db.execute("SELECT instances.token FROM instances JOIN jobs ON jobs.id = instances.job_id "
                            "WHERE name = ?", (name,)).fetchone()[0]
    assert token not in dump
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    assert credentials_status(srv.endpoint, token) == 200  # the running job's agents get credentials
    assert credentials_status(srv.endpoint, stored) == 403

    # Everything the server and the agent wrote is the server's user's alone: 0700 directories,
    # 0600 files (the existing data directory and its files corrected); what the training process
    # writes has a container's umask (022).
    # The instance's generated /etc/hosts, /etc/hostname and /etc/resolv.conf hold no secret (host names
    # and addresses) and are 0644, so that an image's non-root User can read them (inside the private
    # data directory, which nobody else can enter).
    private = modes(data_dir, skip=inst / "opt/ml/model")
    generated = {str((inst / f).relative_to(data_dir.parent)) for f in ("hosts", "hostname", "resolv.conf")}
    assert {p: m for p, m in private.items() if p not in generated and m[1] != (0o700 if m[0] == "dir" else 0o600)
            } == {}
    assert all(private[p][1] == 0o644 for p in generated if p in private)
    for required in ("data", "data/trainforge.db", "data/left-over.txt", "data/server-config.json"):
        assert required in private
    assert any(p.endswith("algo-1/spec.json") for p in private) and any(p.endswith("agent.log") for p in private)
    assert modes(inst / "opt/ml/model", skip=inst / "none") == {
        "model": ("dir", 0o700), "model/m": ("file", 0o644), "model/sub": ("dir", 0o755)}

    (inst / "opt/ml/gate").write_text("go")
    desc = wait_for_job(sm, name, timeout=60)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert credentials_status(srv.endpoint, token) == 403  # no longer running
    with tarfile.open(desc["ModelArtifacts"]["S3ModelArtifacts"][len("file://"):]) as tar:
        assert tar.getmember("m").mode == 0o644


def test_an_agent_running_across_the_upgrade_to_token_digests_keeps_reporting(
        server_factory: Any, tmp_path: Path) -> None:
    """A database of revision 0004 held the token itself; revision 0005 replaces it by its digest, and
    0006 gives the digest to the job's instances: the agent that was running with the token finishes
    its job through the upgraded server."""
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]})
    sm = srv.client()
    gate = tmp_path / "gate"
    name = unique_name("upgrade")
    sm.create_training_job(**shell_job(name, f"while [ ! -e {gate} ]; do sleep 0.05; done; echo up > /opt/ml/model/m",
                                       tmp_path / "out"))
    wait_until(lambda: sm.describe_training_job(TrainingJobName=name)["SecondaryStatus"] == "Training",
               timeout=30, message="Training")
    spec = next(srv.data_dir.glob(f"jobs/*/*/{name}/attempt-1/algo-1/spec.json"))
    token = json.loads(spec.read_text())["token"]
    srv.kill()
    with sqlite3.connect(srv.data_dir / "trainforge.db") as db:  # as revision 0004 stored it
        db.execute("UPDATE jobs SET token = ? WHERE name = ?", (token, name))
        db.execute("DROP TABLE algorithms")  # revision 0008 (algorithm resources)
        db.execute("DROP INDEX ix_metric_samples_series")  # revision 0007 (metric kinds and indexes)
        db.execute("DROP INDEX ix_metric_samples_time")
        db.execute("ALTER TABLE metric_samples DROP COLUMN kind")
        db.execute("CREATE INDEX ix_metric_samples_job ON metric_samples (job_id, name, id)")
        db.execute("DROP INDEX ix_instances_token")  # per-instance tokens came with revision 0006
        db.execute("ALTER TABLE instances DROP COLUMN token")
        db.execute("UPDATE alembic_version SET version_num = '0004'")
    srv.start()
    with sqlite3.connect(f"file:{srv.data_dir / 'trainforge.db'}?mode=ro", uri=True) as db:
        stored = db.execute("SELECT token FROM jobs WHERE name = ?", (name,)).fetchone()[0]
        shared = db.execute("SELECT instances.token FROM instances JOIN jobs ON jobs.id = instances.job_id "
                            "WHERE name = ?", (name,)).fetchone()[0]
    assert stored == shared == hashlib.sha256(token.encode()).hexdigest()
    gate.write_text("go")
    desc = wait_for_job(srv.client(), name, timeout=60)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
