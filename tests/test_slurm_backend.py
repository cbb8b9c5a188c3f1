"""The Slurm backend (issue 12, part 4) against a real Slurm on this machine (tests/slurm_cluster.py:
munged, slurmctld, three slurmd): a job is one Slurm allocation of N nodes, one agent per node."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import minimal_request, read_model, unique_name, wait_for_job, wait_until
from slurm_cluster import SlurmCluster, slurm_available
from test_runtime_jobs import shell_job
from test_sandbox_distributed import _job as distributed_job
from torch_env import torch_python

pytestmark = pytest.mark.skipif(slurm_available() is not None, reason=str(slurm_available()))

HOSTS = ["algo-1", "algo-2", "algo-3"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    with SlurmCluster(nodes=3) as c:
        yield c


@pytest.fixture
def slurm_server(server_factory: Any, cluster: SlurmCluster, tmp_path: Path) -> Any:
    return server_factory({"allowed_local_roots": [str(tmp_path)], "backend": "slurm",
                           "slurm": {"partition": cluster.partition}},
                          env={"SLURM_CONF": str(cluster.conf)})


def slurm(cluster: SlurmCluster, *args: str) -> str:
    return subprocess.run(list(args), env=cluster.env, capture_output=True, text=True, timeout=30,
                          check=True).stdout


def slurm_jobs_named(cluster: SlurmCluster, name: str) -> dict[str, str]:
    """Slurm job id -> state of every Slurm job trainforge submitted for training job ``name``."""
    out = slurm(cluster, "squeue", "-h", "--states=all", f"--name=tf-{name}", "-o", "%i %T")
    return dict(line.split() for line in out.splitlines() if line.strip())


def node_records(srv: Any, name: str) -> dict[str, dict[str, Any]]:
    """host -> what the srun task of that host recorded (``slurm.json``) in its instance directory."""
    found = {}
    for path in srv.data_dir.glob(f"jobs/*/*/{name}/attempt-*/*/slurm.json"):
        found[path.parent.name] = json.loads(path.read_text())
    return found


def multi(name: str, script: str, out: Path, count: int = 3, **overrides: Any) -> dict[str, Any]:
    req = shell_job(name, script, out, **overrides)
    req["ResourceConfig"] = {**req["ResourceConfig"], "InstanceCount": count}
    req["OutputDataConfig"] = {**req["OutputDataConfig"], "CompressionType": "NONE"}
    return req


def model_dir(out: Path, name: str) -> Path:
    return out / name / "output" / "model"


TRAP = 'trap \'echo term > "/opt/ml/model/$SM_CURRENT_HOST"; exit 0\' TERM; '
FOREVER = "while true; do sleep 0.1; done"


def running_job(srv: Any, tmp_path: Path, prefix: str, first: str, then: str) -> tuple[Any, str, Path]:
    """A 3-instance job running ``first``, a mark that it trains, then ``then``; returned once all
    three train: (client, job name, output path). ``TRAP`` first: SIGTERM writes "term" to the model.
    ``$T`` in the scripts is ``tmp_path`` (a ContainerArguments member has at most 256 characters)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    os.chmod(marks, 0o777)
    sm = srv.client()
    name, out = unique_name(prefix), tmp_path / "out"
    sm.create_training_job(**multi(name, f'{first}echo $$ > "$T/marks/$SM_CURRENT_HOST"; {then}', out,
                                   Environment={"T": str(tmp_path)}))
    wait_until(lambda: sorted(p.name for p in marks.iterdir() if p.read_text().strip()) == HOSTS, timeout=120,
               message="all three instances training")
    return sm, name, out


def test_three_instances_run_as_one_slurm_allocation(slurm_server: Any, cluster: SlurmCluster,
                                                     tmp_path: Path) -> None:
    sm = slurm_server.client()
    name, out = unique_name("slurm3"), tmp_path / "out"
    script = 'echo "host=$SM_CURRENT_HOST hosts=$SM_HOSTS"; echo "$SM_CURRENT_HOST" > "/opt/ml/model/$SM_CURRENT_HOST"'
    sm.create_training_job(**multi(name, script, out))
    desc = wait_for_job(sm, name, timeout=120)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert sorted(p.name for p in model_dir(out, name).iterdir()) == HOSTS
    records = node_records(slurm_server, name)
    # one Slurm job, one task per node, algo-K on the node of rank K-1
    assert len({r["job_id"] for r in records.values()}) == 1 and sorted(records) == HOSTS
    assert [records[h]["rank"] for h in HOSTS] == [0, 1, 2]
    assert sorted(r["node"] for r in records.values()) == ["node1", "node2", "node3"]
    wait_until(lambda: list(slurm_jobs_named(cluster, name).values()) == ["COMPLETED"], timeout=30,
               message="the Slurm job completed")
    logs = slurm_server.client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                        logStreamNamePrefix=f"{name}/")["logStreams"]
    lines = [e["message"] for s in streams for e in logs.get_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=s["logStreamName"], startFromHead=True)["events"]]
    assert sorted(line.split()[0] for line in lines if line.startswith("host=")) == [f"host={h}" for h in HOSTS]


def test_a_torch_gloo_all_reduce_across_the_three_nodes(server_factory: Any, cluster: SlurmCluster,
                                                        tmp_path: Path, s3_endpoint: str) -> None:
    """Ranks from SM_HOSTS (no launcher): each node's instance on the job's own network, algo-K at
    10.200.0.(10+K) although the three agents arrived separately (the first made the link)."""
    from test_sandbox_distributed import SCRIPT

    python = torch_python()
    srv = server_factory({"allowed_local_roots": [str(tmp_path)], "backend": "slurm",
                          "slurm": {"partition": cluster.partition},
                          "images": [{"image": "torch/*", "kind": "command", "python": python,
                                      "entrypoint": ["python"]}]}, env={"SLURM_CONF": str(cluster.conf)})
    sm = srv.client()
    code, out = tmp_path / "code", tmp_path / "out"
    code.mkdir()
    (code / "dist.py").write_text(SCRIPT)
    name = unique_name("slurmgloo")
    req = distributed_job(name, code, out, 10, {"S3_PORT": s3_endpoint.rsplit(":", 1)[1],
                                                "SERVER_PORT": str(srv.port)}, isolated=False)
    req["ResourceConfig"] = {**req["ResourceConfig"], "InstanceCount": 3}
    sm.create_training_job(**req)
    desc = wait_for_job(sm, name, timeout=300)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    results = {h: json.loads((model_dir(out, name) / f"{h}.json").read_text()) for h in HOSTS}
    assert [r["sum"] for r in results.values()] == [3 * 10 + 6] * 3, results  # (10+1)+(10+2)+(10+3)
    assert [r["rank"] for r in results.values()] == [0, 1, 2]
    assert [r["address"] for r in results.values()] == ["10.200.0.11", "10.200.0.12", "10.200.0.13"]
    assert len({r["job_id"] for r in node_records(srv, name).values()}) == 1


TORCHRUN_SCRIPT = r'''
import datetime, json, os
import torch
import torch.distributed as dist
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))  # env://, as torchrun sets it
rank, world = dist.get_rank(), dist.get_world_size()
value = torch.tensor([float(rank + 1)])
dist.all_reduce(value)
out = {"rank": rank, "env_rank": int(os.environ["RANK"]), "world": world, "sum": value.item(),
       "host": os.environ["SM_CURRENT_HOST"], "local": int(os.environ["LOCAL_RANK"])}
with open(os.path.join(os.environ["SM_MODEL_DIR"], f"rank-{rank}.json"), "w") as f:
    json.dump(out, f)
dist.destroy_process_group()
'''


def test_the_torchrun_launcher_across_the_three_nodes(server_factory: Any, cluster: SlurmCluster,
                                                      tmp_path: Path) -> None:
    """The framework image in script mode with ``torch_distributed`` (the hyperparameter the SDK
    sends): torchrun on each node of one allocation, rendezvous on algo-1, an unchanged torchrun-style
    script (env://, its rank from RANK) all-reduces over the three."""
    from test_distributed_launchers import _ranks, _submit, torch_config

    srv = server_factory(torch_config(allowed_local_roots=[str(tmp_path)], backend="slurm",
                                      slurm={"partition": cluster.partition}),
                         env={"SLURM_CONF": str(cluster.conf)})
    sm = srv.client()
    name = _submit(sm, tmp_path, TORCHRUN_SCRIPT, "slurm-torchrun", {"sagemaker_torch_distributed_enabled": True},
                   count=3)
    desc = wait_for_job(sm, name, timeout=300)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    ranks = _ranks(read_model(desc["ModelArtifacts"]["S3ModelArtifacts"]))
    assert [(r["rank"], r["env_rank"], r["world"], r["host"], r["local"]) for r in ranks] == [
        (0, 0, 3, "algo-1", 0), (1, 1, 3, "algo-2", 0), (2, 2, 3, "algo-3", 0)], ranks
    assert {r["sum"] for r in ranks} == {6.0}, ranks
    records = node_records(srv, name)
    assert len({r["job_id"] for r in records.values()}) == 1 and sorted(records) == HOSTS


def test_sharded_by_s3_key_splits_a_channel_across_the_nodes(slurm_server: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(9):
        (data / f"part-{i}").write_text(str(i))
    sm = slurm_server.client()
    name, out = unique_name("slurmshard"), tmp_path / "out"
    req = multi(name, 'ls /opt/ml/input/data/train > "/opt/ml/model/$SM_CURRENT_HOST"', out)
    req["InputDataConfig"] = [{"ChannelName": "train", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": f"file://{data}/", "S3DataDistributionType": "ShardedByS3Key"}}}]
    sm.create_training_job(**req)
    desc = wait_for_job(sm, name, timeout=120)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    shards = {h: (model_dir(out, name) / h).read_text().split() for h in HOSTS}
    assert all(shards.values()), shards
    every = [f for files in shards.values() for f in files]
    assert sorted(every) == sorted(f"part-{i}" for i in range(9))  # each key once, on one node


def test_stop_reaches_every_node_and_uploads_the_model(slurm_server: Any, cluster: SlurmCluster,
                                                      tmp_path: Path) -> None:
    sm, name, out = running_job(slurm_server, tmp_path, "slurmstop", TRAP, FOREVER)
    sm.stop_training_job(TrainingJobName=name)
    desc = wait_for_job(sm, name, timeout=90)
    assert desc["TrainingJobStatus"] == "Stopped", desc.get("FailureReason")
    assert {h: (model_dir(out, name) / h).read_text().strip() for h in HOSTS} == dict.fromkeys(HOSTS, "term")
    # Slurm itself delivered the SIGTERM (scancel --signal=TERM); an agent that learnt of the stop from
    # its report's answer first may have ended its step before its slurmd signalled it
    (job_id,) = {r["job_id"] for r in node_records(slurm_server, name).values()}
    wait_until(lambda: [n for n in cluster.nodes if f"Sent signal 15 to StepId={job_id}.0" in cluster.node_log(n)],
               timeout=10, message="the SIGTERM in a slurmd log")
    wait_until(lambda: all(s not in ("RUNNING", "PENDING") for s in slurm_jobs_named(cluster, name).values()),
               timeout=60, message="the Slurm job ended")


def test_more_nodes_than_exist_pend_with_slurms_reason_and_a_stop_cancels(slurm_server: Any,
                                                                             cluster: SlurmCluster,
                                                                             tmp_path: Path) -> None:
    sm = slurm_server.client()
    name = unique_name("slurmpend")
    req = multi(name, "true", tmp_path / "out", count=4)
    req["StoppingCondition"] = {"MaxRuntimeInSeconds": 3600, "MaxPendingTimeInSeconds": 7200}
    sm.create_training_job(**req)
    desc = wait_for_job(sm, name, "Pending", secondary=True, timeout=60)
    assert desc["TrainingJobStatus"] == "InProgress"
    (job_id,) = slurm_jobs_named(cluster, name)

    def message_and_reason() -> tuple[str, str]:
        # Slurm refines a reason once (PartitionConfig, then PartitionNodeLimit): the server's next
        # pass shows the one Slurm gives now
        message = sm.describe_training_job(TrainingJobName=name)["SecondaryStatusTransitions"][-1]["StatusMessage"]
        return message, slurm(cluster, "squeue", "-h", "-j", job_id, "-o", "%r").strip()
    wait_until(message_and_reason, timeout=30, message="the pending message naming Slurm's reason",
               until=lambda mr: f"Slurm job {job_id} is pending ({mr[1]})" in mr[0])
    assert list(slurm_jobs_named(cluster, name).values()) == ["PENDING"]
    sm.stop_training_job(TrainingJobName=name)  # a stop of a pending job cancels its allocation
    desc = wait_for_job(sm, name, timeout=60)
    assert desc["TrainingJobStatus"] == "Stopped"
    wait_until(lambda: list(slurm_jobs_named(cluster, name).values()) == ["CANCELLED"], timeout=30,
               message="the Slurm job cancelled")


def test_max_pending_time_cancels_the_slurm_job(slurm_server: Any, cluster: SlurmCluster, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """MaxPendingTimeInSeconds is at least 1800 s (the API's minimum): the scheduler's pass over the
    pending job is run here, on the server's own store and the real Slurm, at an instant past it."""
    from trainforge.config import Config
    from trainforge.scheduler.scheduler import Scheduler
    from trainforge.store.db import Database
    from trainforge.store.jobs import JobStore

    sm = slurm_server.client()
    name = unique_name("slurmpendmax")
    req = multi(name, "true", tmp_path / "out", count=4)
    req["StoppingCondition"] = {"MaxRuntimeInSeconds": 3600, "MaxPendingTimeInSeconds": 1800}
    sm.create_training_job(**req)
    wait_for_job(sm, name, "Pending", secondary=True, timeout=60)
    (job_id,) = slurm_jobs_named(cluster, name)
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    config = Config(data_dir=str(slurm_server.data_dir), backend="slurm", slurm={"partition": cluster.partition})
    db = Database(config.effective_database_url)
    try:
        scheduler = Scheduler(JobStore(db), config)
        job = scheduler.store.get(config.account_id, config.region, name)
        assert job is not None and scheduler._engine_queue(job, job.creation_time + 1000)  # still waits
        assert sm.describe_training_job(TrainingJobName=name)["SecondaryStatus"] == "Pending"
        assert scheduler._engine_queue(job, job.creation_time + 1801)
    finally:
        db.dispose()
    desc = wait_for_job(sm, name, timeout=30)
    assert desc["TrainingJobStatus"] == "Stopped"
    message = desc["SecondaryStatusTransitions"][-1]["StatusMessage"]
    assert "MaxPendingTimeInSeconds (1800 s)" in message and f"Slurm job {job_id} is pending" in message, message
    wait_until(lambda: list(slurm_jobs_named(cluster, name).values()) == ["CANCELLED"], timeout=30,
               message="the Slurm job cancelled")


def test_one_node_failing_fails_the_job_and_stops_the_others(slurm_server: Any, cluster: SlurmCluster,
                                                            tmp_path: Path) -> None:
    sm, name, out = running_job(slurm_server, tmp_path, "slurmkill", TRAP, FOREVER)
    state = json.loads(next(slurm_server.data_dir.glob(f"jobs/*/*/{name}/attempt-*/algo-2/instance.json"))
                       .read_text())
    os.killpg(int(state["pgid"]), signal.SIGKILL)  # algo-2's training process, on its node
    desc = wait_for_job(sm, name, timeout=90)
    assert desc["TrainingJobStatus"] == "Failed"
    assert desc["FailureReason"].startswith("AlgorithmError") and "137" in desc["FailureReason"], desc
    assert json.loads(next(slurm_server.data_dir.glob(f"jobs/*/*/{name}/attempt-*/algo-2/.exited"))
                      .read_text())["exit_code"] == 137
    # the two others were stopped (their TERM trap ran), and the allocation ended
    assert {h: (model_dir(out, name) / h).read_text().strip() for h in ("algo-1", "algo-3")} == \
        {"algo-1": "term", "algo-3": "term"}
    wait_until(lambda: all(s not in ("RUNNING", "PENDING") for s in slurm_jobs_named(cluster, name).values()),
               timeout=60, message="the Slurm job ended")


def test_control_plane_restarted_during_a_slurm_job_reconciles_it(slurm_server: Any, cluster: SlurmCluster,
                                                                  tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    _, name, out = running_job(slurm_server, tmp_path, "slurmcrash", "",
                              'while [ ! -e "$T/gate" ]; do sleep 0.05; done; echo done > "/opt/ml/model/$SM_CURRENT_HOST"')
    slurm_server.kill()
    gate.write_text("go")  # training finishes while the control plane is down
    slurm_server.start()
    desc = wait_for_job(slurm_server.client(), name, timeout=90)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert {h: (model_dir(out, name) / h).read_text().strip() for h in HOSTS} == dict.fromkeys(HOSTS, "done")
    # one Slurm job, never submitted again
    wait_until(lambda: list(slurm_jobs_named(cluster, name).values()) == ["COMPLETED"], timeout=30,
               message="the Slurm job completed")


def test_a_slurm_controller_outage_fails_no_job(slurm_server: Any, cluster: SlurmCluster, tmp_path: Path) -> None:
    """slurmctld down while a job trains: squeue's failure is not taken for jobs that ended; the job
    trains on (its agents report to the control plane directly) and completes once Slurm is back."""
    _, name, out = running_job(slurm_server, tmp_path, "slurmdown", "",
                              'while [ ! -e "$T/gate" ]; do sleep 0.05; done; echo done > "/opt/ml/model/$SM_CURRENT_HOST"')
    sm = slurm_server.client()
    cluster.stop_controller()
    try:
        wait_until(lambda: "Slurm does not answer" in slurm_server.log_path.read_text(), timeout=60,
                   message="a liveness pass without Slurm")
        # three more liveness passes (one a second) without Slurm: the job is not failed in any
        for _ in range(15):
            desc = sm.describe_training_job(TrainingJobName=name)
            assert desc["TrainingJobStatus"] == "InProgress", desc.get("FailureReason")
            time.sleep(0.2)
    finally:
        cluster.start_controller()
    (tmp_path / "gate").write_text("go")
    desc = wait_for_job(sm, name, timeout=120)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert {h: (model_dir(out, name) / h).read_text().strip() for h in HOSTS} == dict.fromkeys(HOSTS, "done")


@pytest.mark.parametrize("point", ["slurm-submitted", "launch-window"])
def test_control_plane_killed_right_after_sbatch_adopts_the_slurm_job(server_factory: Any, cluster: SlurmCluster,
                                                                     tmp_path: Path, point: str) -> None:
    """Killed once sbatch answered (before it wrote the job id down, or before it stored the
    handles): after the restart the same Slurm job is followed to its end, none is submitted again."""
    srv = server_factory({"allowed_local_roots": [str(tmp_path)], "backend": "slurm",
                          "slurm": {"partition": cluster.partition}},
                         env={"SLURM_CONF": str(cluster.conf), "TRAINFORGE_TEST_CRASH_AT": point})
    name, out = unique_name("slurmwindow"), tmp_path / "out"
    srv.client().create_training_job(**multi(name, 'echo ok > "/opt/ml/model/$SM_CURRENT_HOST"', out))
    assert srv.proc is not None
    srv.proc.wait(timeout=60)  # the fault point killed it
    del srv.env["TRAINFORGE_TEST_CRASH_AT"]
    srv.start()
    desc = wait_for_job(srv.client(), name, timeout=120)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert sorted(p.name for p in model_dir(out, name).iterdir()) == HOSTS
    wait_until(lambda: list(slurm_jobs_named(cluster, name).values()) == ["COMPLETED"], timeout=30,
               message="one Slurm job, completed")


def test_control_plane_restarted_while_a_job_pends_keeps_it_pending(slurm_server: Any, cluster: SlurmCluster,
                                                                    tmp_path: Path) -> None:
    sm = slurm_server.client()
    name = unique_name("slurmpendcrash")
    req = minimal_request(name, ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 4,
                                                "VolumeSizeInGB": 1})
    sm.create_training_job(**req)
    wait_for_job(sm, name, "Pending", secondary=True, timeout=60)
    slurm_server.kill()
    slurm_server.start()
    sm = slurm_server.client()
    wait_until(lambda: slurm_jobs_named(cluster, name), timeout=10, message="the Slurm job")
    desc = sm.describe_training_job(TrainingJobName=name)
    assert (desc["TrainingJobStatus"], desc["SecondaryStatus"]) == ("InProgress", "Pending")
    assert list(slurm_jobs_named(cluster, name).values()) == ["PENDING"]  # the same one, not a second
    sm.stop_training_job(TrainingJobName=name)
    assert wait_for_job(sm, name, timeout=60)["TrainingJobStatus"] == "Stopped"


def test_instance_groups_run_as_a_heterogeneous_slurm_job(server_factory: Any, cluster: SlurmCluster,
                                                          tmp_path: Path) -> None:
    """One component per instance group, each with its type's resources from the ``slurm:`` mapping;
    host names and resourceconfig.json as on the local backend (agent/layout.py)."""
    srv = server_factory({"allowed_local_roots": [str(tmp_path)], "backend": "slurm",
                          "slurm": {"partition": cluster.partition,
                                    "instance_types": {"ml.m5.large": {"cpus": 1}, "ml.c5.xlarge": {"cpus": 2}}}},
                         env={"SLURM_CONF": str(cluster.conf)})
    sm = srv.client()
    name, out = unique_name("slurmhet"), tmp_path / "out"
    req = multi(name, 'cp /opt/ml/input/config/resourceconfig.json "/opt/ml/model/$SM_CURRENT_HOST.json"', out)
    req["ResourceConfig"] = {"VolumeSizeInGB": 1, "InstanceGroups": [
        {"InstanceGroupName": "lead", "InstanceType": "ml.m5.large", "InstanceCount": 1},
        {"InstanceGroupName": "workers", "InstanceType": "ml.c5.xlarge", "InstanceCount": 2}]}
    sm.create_training_job(**req)
    desc = wait_for_job(sm, name, timeout=120)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    configs = {p.stem: json.loads(p.read_text()) for p in model_dir(out, name).glob("*.json")}
    assert sorted(configs) == HOSTS
    groups = [{"instance_group_name": "lead", "instance_type": "ml.m5.large", "hosts": ["algo-1"]},
              {"instance_group_name": "workers", "instance_type": "ml.c5.xlarge", "hosts": ["algo-2", "algo-3"]}]
    for host, config in configs.items():
        assert config["current_host"] == host and config["hosts"] == HOSTS
        assert config["current_group_name"] == ("lead" if host == "algo-1" else "workers")
        assert config["instance_groups"] == groups
    records = node_records(srv, name)
    assert len({r["job_id"] for r in records.values()}) == 1 and [records[h]["rank"] for h in HOSTS] == [0, 1, 2]
    # Slurm's view: two components (ID+0, ID+1) of 1 and 2 nodes, asking 1 and 2 CPUs per node
    out_q = slurm(cluster, "squeue", "-h", "--states=all", f"--name=tf-{name}", "-o", "%i %D %c")
    components = sorted(tuple(line.split()) for line in out_q.splitlines() if line.strip())
    job_id = records["algo-1"]["job_id"]
    assert components == [(f"{job_id}+0", "1", "1"), (f"{job_id}+1", "2", "2")]


def test_max_runtime_counts_from_the_start_not_from_the_wait_in_slurms_queue(slurm_server: Any,
                                                                               cluster: SlurmCluster,
                                                                               tmp_path: Path) -> None:
    """All nodes held by a hand-made sbatch: the job pends longer than its MaxRuntimeInSeconds, and
    still gets its whole run time once Slurm starts it."""
    blocker = slurm(cluster, "sbatch", "--parsable", "--nodes=3", "--exclusive", "--job-name=blocker",
                    "--output=/dev/null", "--wrap", "sleep 600").strip().split(";")[0]
    try:
        wait_until(lambda: slurm(cluster, "squeue", "-h", "-j", blocker, "-o", "%T").strip() == "RUNNING",
                   timeout=60, message="the blocker holding the nodes")
        sm = slurm_server.client()
        name, out = unique_name("slurmrt"), tmp_path / "out"
        req = multi(name, 'sleep 3; echo trained > /opt/ml/model/done', out, count=1)
        req["StoppingCondition"] = {"MaxRuntimeInSeconds": 15}
        sm.create_training_job(**req)
        created = sm.describe_training_job(TrainingJobName=name)["CreationTime"].timestamp()
        wait_for_job(sm, name, "Pending", secondary=True, timeout=60)
        # pending for longer than the whole MaxRuntimeInSeconds
        wait_until(lambda: sm.describe_training_job(TrainingJobName=name)["SecondaryStatus"] == "Pending"
                   and time.time() > created + 20, timeout=60, interval=0.5, message="a wait past MaxRuntimeInSeconds")
    finally:
        slurm(cluster, "scancel", blocker)
    desc = wait_for_job(sm, name, timeout=120)
    assert desc["TrainingJobStatus"] == "Completed", (desc.get("FailureReason"), desc.get("SecondaryStatus"))
    assert (model_dir(out, name) / "done").read_text().strip() == "trained"
