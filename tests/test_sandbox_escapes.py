"""The escape suite: a real training job attacks its sandbox and reports what it managed (issue 10).

Every attack of the issue is tried by the training code of a job run through a real server, with
the worst case assumed: the attacker knows the host's paths (the server's data directory, another
job's instance directory, the server's pid and port). Each must fail, and the model uploaded must
hold no host file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import minimal_request, unique_name, wait_for_job, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root")

ATTACK = r'''
import ctypes, json, os, socket, subprocess, sys, time
t = json.load(open("/opt/ml/input/data/code/targets.json"))
report = {}

def attempt(name, fn):
    try:
        report[name] = "ok: " + str(fn())[:200]
    except BaseException as exc:  # what failed, and how
        report[name] = "refused: " + type(exc).__name__ + ": " + str(exc)[:200]

def read(path):
    with open(path, "rb") as f:
        return f.read(64)

attempt("shadow", lambda: read("/etc/shadow"))
attempt("host_shadow_via_proc_root", lambda: read("/proc/1/root/etc/shadow"))
attempt("server_database", lambda: read(t["database"]))
attempt("other_job_spec", lambda: read(t["other_spec"]))
attempt("other_job_opt_ml", lambda: os.listdir(t["other_ml"]))
attempt("server_environ", lambda: read(f"/proc/{t['server_pid']}/environ"))
attempt("server_netns", lambda: os.open(f"/proc/{t['server_pid']}/ns/net", os.O_RDONLY))
attempt("write_usr", lambda: open("/usr/trainforge-escape", "w"))
def umount_proc():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(b"/proc", 2) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return os.listdir("/proc")
attempt("umount_proc", umount_proc)
report["visible_pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
def setns_host():
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("/proc/1/ns/net", os.O_RDONLY)
    if libc.setns(fd, 0) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return "joined"
attempt("setns_pid1_net", setns_host)
attempt("raw_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
attempt("packet_socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
attempt("mknod_disk", lambda: os.mknod("/tmp/vda", 0o600 | 0o60000, os.makedev(253, 0)) or read("/tmp/vda"))
attempt("load_module", lambda: subprocess.run(["modprobe", "dummy"], check=True, capture_output=True))
attempt("server_port", lambda: socket.create_connection(("127.0.0.1", t["server_port"]), timeout=2))
attempt("server_port_via_gateway", lambda: socket.create_connection(("10.0.2.2", t["server_port"]), timeout=2))
attempt("host_address", lambda: socket.create_connection((t["host_ip"], t["server_port"]), timeout=2))
attempt("other_job_instance", lambda: socket.create_connection((t["other_address"], t["other_port"]), timeout=2))
# links out of /opt/ml: the platform must never read their targets
os.symlink("/etc/shadow", "/opt/ml/model/shadow")
os.symlink(t["database"], "/opt/ml/model/database")
os.symlink("/etc", "/opt/ml/model/etc")
os.makedirs("/opt/ml/checkpoints", exist_ok=True)
os.symlink("/etc/shadow", "/opt/ml/checkpoints/shadow")
os.symlink(t["database"], "/opt/ml/checkpoints/database")
# the checkpoint LocalPath outside /opt/ml is the instance's own directory
with open(os.path.join(t["local_path"], "ckpt"), "w") as f:
    f.write("mine")
# VolumeSizeInGB 1: 2 GiB cannot be allocated
def allocate():
    fd = os.open("/opt/ml/output/big", os.O_CREAT | os.O_WRONLY)
    try:
        os.posix_fallocate(fd, 0, 2 * 1024**3)
    finally:
        os.close(fd)
        os.unlink("/opt/ml/output/big")
    return "allocated"
attempt("allocate_2gib", allocate)
# a double-forked daemon must not outlive the instance
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "3600", t["marker"]])
    os._exit(0)
with open("/opt/ml/model/report.json", "w") as f:
    json.dump(report, f)
print("REPORT " + json.dumps(report), flush=True)
'''

LISTENER = ("import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
            "s.bind(('0.0.0.0', 7777)); s.listen(); print('listening', flush=True); "
            "import os; open('/opt/ml/model/up', 'w').write('1'); time.sleep(120)")


def _job(name: str, script: str, out: Path, tmp_path: Path, targets: dict[str, Any] | None = None,
         **overrides: Any) -> dict[str, Any]:
    """The script (and what it attacks) reaches the instance as a File channel ``code``."""
    code = tmp_path / f"code-{name}"
    code.mkdir()
    (code / "main.py").write_text(script)
    (code / "targets.json").write_text(json.dumps(targets or {}))
    channel = {"ChannelName": "code", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": f"file://{code}/", "S3DataDistributionType": "FullyReplicated"}}}
    req = minimal_request(name, OutputDataConfig={"S3OutputPath": f"file://{out}", "CompressionType": "NONE"},
                          InputDataConfig=[channel], **overrides)
    req["AlgorithmSpecification"] = {**req["AlgorithmSpecification"],
                                      "ContainerEntrypoint": ["python3", "/opt/ml/input/data/code/main.py"],
                                      "ContainerArguments": ["train"]}
    req["ResourceConfig"] = {**req["ResourceConfig"], "VolumeSizeInGB": 1}
    return req


def _instance_dir(srv: Any, name: str) -> Path | None:
    found = sorted((srv.data_dir / "jobs").glob(f"*/*/{name}/attempt-*/algo-1"))
    return found[-1] if found else None


def _host_ip() -> str:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: only the route is looked up
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def test_training_code_cannot_escape_its_sandbox(server_factory: Any, tmp_path: Path) -> None:
    srv = server_factory({"allowed_local_roots": [str(tmp_path)]})
    sm = srv.client()
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    # the victim: another job, still running, listening on 7777
    victim = unique_name("victim")
    sm.create_training_job(**_job(victim, LISTENER, out, tmp_path, Environment={"SECRET": "victim-secret"}))
    wait_until(lambda: (d := _instance_dir(srv, victim)) is not None and (d / "opt/ml/model/up").exists(),
               timeout=60, message="the victim job to listen")
    victim_dir = _instance_dir(srv, victim)
    assert victim_dir is not None
    marker = f"trainforge-escape-{os.getpid()}"
    attacker = unique_name("attacker")
    targets = {"database": str(srv.data_dir / "trainforge.db"), "other_spec": str(victim_dir / "spec.json"),
               "other_ml": str(victim_dir / "opt" / "ml"), "server_pid": srv.proc.pid, "server_port": srv.port,
               "host_ip": _host_ip(), "other_address": "10.200.0.11", "other_port": 7777,
               "local_path": "/anywhere/ckpt", "marker": marker}
    sm.create_training_job(**_job(attacker, ATTACK, out, tmp_path, targets,
                                  CheckpointConfig={"S3Uri": f"file://{ckpt}", "LocalPath": "/opt/ml/../../anywhere/ckpt"}))
    desc = wait_for_job(sm, attacker, timeout=120)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    model_dir = out / attacker / "output" / "model"
    report = json.loads((model_dir / "report.json").read_text())
    refused = {k: v for k, v in report.items() if k != "visible_pids"}
    escaped = {k: v for k, v in refused.items() if not v.startswith("refused")}
    # /proc unmounted inside its own mount namespace is allowed, and harmless: the rest shows it
    escaped.pop("umount_proc", None)
    assert escaped == {}, escaped
    assert report["allocate_2gib"].startswith("refused: OSError") and "No space left" in report["allocate_2gib"]
    # its own PID namespace: only its own few processes, not the server's
    assert 1 in report["visible_pids"] and len(report["visible_pids"]) < 10, report["visible_pids"]
    # the model holds no host file: the links were not followed
    uploaded = {str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file()}
    assert uploaded == {"report.json"}, uploaded
    for path in model_dir.rglob("*"):
        assert b"root:" not in path.read_bytes() if path.is_file() else True
    # the checkpoints uploaded: the instance's own file, no link target
    assert sorted(p.name for p in ckpt.rglob("*") if p.is_file()) == ["ckpt"]
    assert (ckpt / "ckpt").read_text() == "mine"
    assert not os.path.exists("/anywhere")
    # the victim's secrets stayed where they were, and its daemon-free instance is untouched
    assert "victim-secret" not in json.dumps(report)
    # the double-forked daemon ended with the instance
    def daemon_gone() -> bool:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        return False
            except OSError:
                continue
        return True
    wait_until(daemon_gone, timeout=30, message="the attacker's daemon to end with its instance")
    sm.stop_training_job(TrainingJobName=victim)
    wait_for_job(sm, victim, timeout=60)
