"""The agent program end to end: real agent processes against the control-plane stand-in."""

from __future__ import annotations

import json
import os
import signal
import socket
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from test_agent_harness import (
    ControlPlane,
    agent_log,
    base_request,
    control_fixture,  # noqa: F401 - the fixture "control"
    make_spec,
    namespaces_available,
    needs_namespaces,
    run_agent,
    shell,
    start_agent,
)


def python_job(code: str, **overrides: Any) -> dict[str, Any]:
    """A request whose training process is ``python3 -c code`` (python3 = the runtime's interpreter)."""
    return base_request("job-1", AlgorithmSpecification={
        "TrainingImage": "trainforge/command:1", "TrainingInputMode": "File",
        "ContainerEntrypoint": ["python3", "-c", code], "ContainerArguments": ["train"]}, **overrides)


def script_job(script: str, **overrides: Any) -> dict[str, Any]:
    return base_request("job-1", AlgorithmSpecification={"TrainingImage": "trainforge/command:1", **shell(script)},
                        **overrides)


def tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


DUMP_ENV = ("import json, os, socket; "
            "json.dump({'env': dict(os.environ), 'hostname': socket.gethostname(), 'cwd': os.getcwd()}, "
            "open(os.path.join(os.environ['SM_MODEL_DIR'], 'env.json'), 'w')); print('done')")


def test_isolation_none_completes_and_uploads(tmp_path: Path, control: ControlPlane) -> None:
    out = tmp_path / "out"
    request = python_job(DUMP_ENV, HyperParameters={"epochs": "2", "sagemaker_program": '"t.py"'},
                         Environment={"MY_SETTING": "on"}, OutputDataConfig={"S3OutputPath": f"file://{out}"})
    spec = make_spec(tmp_path, control, request=request, isolation="none")
    assert run_agent(spec) == 0, agent_log(spec)
    assert control.statuses() == ["Downloading", "Training", "Uploading"]
    logs = control.logs()
    assert any("training code runs as the server's user" in m and "/opt/ml is not available" in m
               for m in logs), logs
    assert any(m.startswith("[trainforge] isolation: none") for m in logs)
    assert "done" in logs
    exit_event = control.exit_event()
    assert exit_event == {**exit_event, "outcome": "ok", "exit_code": 0, "failure_reason": None,
                          "stop_reason": None, "model_artifacts": f"file://{out}/job-1/output/model.tar.gz"}
    model = tar_members(out / "job-1" / "output" / "model.tar.gz")
    dumped = json.loads(model["env.json"])
    env = dumped["env"]
    ml = str(spec.parent / "opt" / "ml")
    assert env["SAGEMAKER_BASE_DIR"] == ml and env["SM_MODEL_DIR"] == ml + "/model"
    assert env["MY_SETTING"] == "on" and env["TRAINING_JOB_NAME"] == "job-1"
    assert env["SM_HP_EPOCHS"] == "2" and env["SM_USER_ARGS"] == '["--epochs","2"]'
    assert env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == control.url + "/_trainforge/agent/v1/credentials"
    assert not any(k in env for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    assert dumped["cwd"] == ml + "/code"
    assert (spec.parent / ".exited").exists() and not (out / "job-1" / "output" / "output.tar.gz").exists()


@needs_namespaces
def test_namespace_instance_sees_opt_ml_host_name_and_hosts(tmp_path: Path, control: ControlPlane) -> None:
    script = ("hostname > /opt/ml/model/hostname; cat /opt/ml/input/config/resourceconfig.json > /opt/ml/model/rc; "
              "getent hosts algo-1 algo-2 > /opt/ml/model/resolved; ls /proc | grep -c '^[0-9]' > /opt/ml/model/procs; "
              "pwd > /opt/ml/model/pwd; echo data > /opt/ml/output/data/extra.txt")
    out = tmp_path / "out"
    request = script_job(script, OutputDataConfig={"S3OutputPath": f"file://{out}/"})
    spec = make_spec(tmp_path, control, request=request, isolation="sandbox", hosts=["algo-1"])
    host_opt_ml_before = os.listdir("/opt/ml") if os.path.isdir("/opt/ml") else []
    assert run_agent(spec) == 0, agent_log(spec)
    assert control.exit_event()["outcome"] == "ok", control.exit_event()
    model = tar_members(out / "job-1" / "output" / "model.tar.gz")
    assert model["hostname"] == b"algo-1\n"
    rc = json.loads(model["rc"])
    assert rc["current_host"] == "algo-1" and rc["hosts"] == ["algo-1"]
    assert model["resolved"].split() == [b"10.200.0.11", b"algo-1"]  # its address on the job's own link
    assert int(model["procs"]) <= 6  # a PID namespace: the prologue shell, the script, its children
    assert model["pwd"] == b"/opt/ml/code\n"
    assert tar_members(out / "job-1" / "output" / "output.tar.gz") == {"extra.txt": b"data\n"}
    assert any("isolation: sandbox (runc: user, PID, mount" in m for m in control.logs())
    # nothing leaked to the host: its /opt/ml is still the empty mount point it was
    assert (os.listdir("/opt/ml") if os.path.isdir("/opt/ml") else []) == host_opt_ml_before
    assert socket.gethostname() != "algo-1"


@needs_namespaces
def test_every_host_resolves_inside_the_instance(tmp_path: Path, control: ControlPlane) -> None:
    script = "getent hosts algo-1 algo-2 algo-3 > /opt/ml/model/resolved"
    spec = make_spec(tmp_path, control, request=script_job(script), isolation="sandbox",
                     host="algo-2", hosts=["algo-1", "algo-2", "algo-3"])
    assert run_agent(spec) == 0, agent_log(spec)
    resolved = (spec.parent / "opt" / "ml" / "model" / "resolved").read_text().split("\n")
    assert [line.split() for line in resolved if line] == [["10.200.0.11", "algo-1"], ["10.200.0.12", "algo-2"],
                                                          ["10.200.0.13", "algo-3"]]


PROBE = ("import json, os, socket; s = socket.socket(); s.settimeout(2); "
         "r = s.connect_ex(('127.0.0.1', int(os.environ['PROBE_PORT']))); "
         "open(os.path.join(os.environ['SM_MODEL_DIR'], 'connect'), 'w').write(str(r))")


@needs_namespaces
def test_network_isolation_leaves_no_route_to_the_control_plane(tmp_path: Path, control: ControlPlane) -> None:
    results = {}
    for isolated in (True, False):
        control.reset()
        run_dir = tmp_path / ("isolated" if isolated else "open")
        request = python_job(PROBE, EnableNetworkIsolation=isolated, Environment={"PROBE_PORT": str(control.port)})
        # the stand-in's port plays the S3 endpoint's: relayed into the instance unless isolated
        spec = make_spec(run_dir, control, request=request, isolation="sandbox", s3_endpoint_url=control.url)
        assert run_agent(spec) == 0, agent_log(spec)
        results[isolated] = int((spec.parent / "opt" / "ml" / "model" / "connect").read_text())
        assert control.exit_event()["outcome"] == "ok"
        assert any("(EnableNetworkIsolation: " in m for m in control.logs()) is isolated
    assert results[False] == 0  # the probe works: without isolation it reaches the (S3) endpoint
    assert results[True] != 0


def test_failure_file_becomes_the_reason(tmp_path: Path, control: ControlPlane) -> None:
    spec = make_spec(tmp_path, control, request=script_job(
        'printf "bad data in row 7" > "$SM_OUTPUT_DIR/failure"; exit 3'))
    assert run_agent(spec) == 0
    ev = control.exit_event()
    assert (ev["outcome"], ev["exit_code"], ev["failure_reason"]) == ("algorithm", 3, "AlgorithmError: bad data in row 7")


def test_long_failure_file_is_cut_to_1024(tmp_path: Path, control: ControlPlane) -> None:
    spec = make_spec(tmp_path, control, request=script_job(
        'python3 -c "print(\'x\' * 5000, end=\'\')" > "$SM_OUTPUT_DIR/failure"; exit 1'))
    assert run_agent(spec) == 0
    reason = control.exit_event()["failure_reason"]
    assert reason == ("AlgorithmError: " + "x" * 5000)[:1024]


def test_exit_code_and_stderr_tail(tmp_path: Path, control: ControlPlane) -> None:
    script = "for i in $(seq 1 200); do echo \"noise line $i with some padding text\" >&2; done; echo 'it broke' >&2; exit 7"
    spec = make_spec(tmp_path, control, request=script_job(script))
    assert run_agent(spec) == 0
    ev = control.exit_event()
    assert ev["outcome"] == "algorithm" and ev["exit_code"] == 7
    reason = ev["failure_reason"]
    assert reason.startswith("AlgorithmError: ExitCode 7\n") and reason.endswith("it broke")
    assert len(reason) <= 1024


def test_unknown_image_is_reported(tmp_path: Path, control: ControlPlane) -> None:
    error = "Image 'x' is not in trainforge's image catalog: add it under the config key 'images' (see README)"
    spec = make_spec(tmp_path, control, runtime={"command": [], "python": "", "image": "x", "error": error})
    assert run_agent(spec) == 0
    ev = control.exit_event()
    assert (ev["outcome"], ev["failure_reason"]) == ("algorithm", error)


def test_missing_entrypoint_is_an_algorithm_error(tmp_path: Path, control: ControlPlane) -> None:
    request = base_request("job-1", AlgorithmSpecification={"TrainingImage": "x",
                                                            "ContainerEntrypoint": ["/no/such/binary"]})
    spec = make_spec(tmp_path, control, request=request)
    assert run_agent(spec) == 0
    ev = control.exit_event()
    assert ev["outcome"] == "algorithm" and ev["exit_code"] == 127 and "/no/such/binary" in ev["failure_reason"]


def test_bad_spec_is_a_platform_failure(tmp_path: Path, control: ControlPlane) -> None:
    spec = make_spec(tmp_path, control)
    data = json.loads(spec.read_text())
    data["hosts"] = ["algo-2"]
    spec.write_text(json.dumps(data))
    assert run_agent(spec) == 0
    ev = control.exit_event()
    assert ev["outcome"] == "platform" and "is not in its hosts" in ev["failure_reason"]


TRAP = ("trap 'echo saved > \"$SM_MODEL_DIR/on-term\"; exit 0' TERM; echo ready; "
        "while true; do sleep 0.05; done")


def test_stop_answer_stops_and_uploads_the_model_saved_on_sigterm(tmp_path: Path, control: ControlPlane) -> None:
    out = tmp_path / "out"
    spec = make_spec(tmp_path, control, request=script_job(TRAP, OutputDataConfig={"S3OutputPath": f"file://{out}"}))
    proc = start_agent(spec)
    wait_until(lambda: "ready" in control.logs(), message="the script to start")
    control.stop = "Stopped"
    assert proc.wait(30) == 0
    ev = control.exit_event()
    assert (ev["outcome"], ev["stop_reason"]) == ("stopped", "Stopped")
    assert ev["model_artifacts"] == f"file://{out}/job-1/output/model.tar.gz"
    assert tar_members(out / "job-1" / "output" / "model.tar.gz") == {"on-term": b"saved\n"}


@needs_namespaces
def test_sigterm_to_the_agent_stops_every_process_of_a_namespaced_instance(tmp_path: Path,
                                                                          control: ControlPlane) -> None:
    # A background child ignoring nothing and a foreground one: SIGTERM reaches both.
    script = ("sleep 300 & echo $! > /opt/ml/model/bg; " + TRAP)
    spec = make_spec(tmp_path, control, request=script_job(script), isolation="sandbox", stop_grace_seconds=20)
    proc = start_agent(spec)
    wait_until(lambda: "ready" in control.logs(), message="the script to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    ev = control.exit_event()
    assert (ev["outcome"], ev["stop_reason"]) == ("stopped", "Stopped")
    assert (spec.parent / "opt" / "ml" / "model" / "on-term").read_text() == "saved\n", control.logs()
    state = json.loads((spec.parent / "instance.json").read_text())
    assert not os.path.exists(f"/proc/{state['pid']}")


def test_grace_then_sigkill(tmp_path: Path, control: ControlPlane) -> None:
    script = "trap '' TERM; echo ready; while true; do sleep 0.05; done"
    spec = make_spec(tmp_path, control, request=script_job(script), stop_grace_seconds=0.5)
    proc = start_agent(spec)
    wait_until(lambda: "ready" in control.logs(), message="the script to start")
    control.stop = "Stopped"
    assert proc.wait(30) == 0
    ev = control.exit_event()
    assert (ev["outcome"], ev["stop_reason"], ev["exit_code"]) == ("stopped", "Stopped", 137)


def test_deadline_is_max_runtime_exceeded(tmp_path: Path, control: ControlPlane) -> None:
    import time

    spec = make_spec(tmp_path, control, request=script_job("echo ready; sleep 60"), deadline=time.time() + 1.0)
    assert run_agent(spec, timeout=30) == 0
    ev = control.exit_event()
    assert (ev["outcome"], ev["stop_reason"]) == ("stopped", "MaxRuntimeExceeded")


def test_no_line_lost_while_the_control_plane_is_down(tmp_path: Path, control: ControlPlane) -> None:
    go = tmp_path / "go"
    code = ("import os, sys, time\n"
            "print('line 0', flush=True)\n"
            f"while not os.path.exists({str(tmp_path / 'down')!r}): time.sleep(0.01)\n"
            "for i in range(1, 500):\n"
            "    print(f'line {i}', flush=True)\n"
            "    if i % 7 == 0: print(f'err {i}', file=sys.stderr, flush=True)\n"
            "open(os.path.join(os.environ['SM_MODEL_DIR'], 'printed'), 'w').close()\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
            "print('last line', flush=True)\n")
    spec = make_spec(tmp_path, control, request=python_job(code))
    proc = start_agent(spec)
    wait_until(lambda: "line 0" in control.logs(), message="the first line")
    control.down()
    (tmp_path / "down").touch()
    wait_until(lambda: (spec.parent / "opt" / "ml" / "model" / "printed").exists(), message="all lines printed")
    outbox = spec.parent / "agent-outbox.jsonl"
    wait_until(lambda: outbox.exists() and "line 499" in outbox.read_text(), message="the outbox to hold the lines")
    control.up()
    go.touch()
    assert proc.wait(60) == 0, agent_log(spec)
    logs = [m for m in control.logs() if not m.startswith("[trainforge]")]
    stdout = [m for m in logs if m.startswith("line")]
    stderr = [m for m in logs if m.startswith("err")]
    assert stdout == ["line 0"] + [f"line {i}" for i in range(1, 500)]
    assert stderr == [f"err {i}" for i in range(7, 500, 7)]
    assert logs[-1] == "last line"
    seqs = [r["seq"] for r in control.requests]
    assert seqs == sorted(seqs)
    assert control.exit_event()["outcome"] == "ok"


def test_job_gone_stops_the_instance_without_exit_event(tmp_path: Path, control: ControlPlane) -> None:
    spec = make_spec(tmp_path, control, request=script_job(TRAP))
    proc = start_agent(spec)
    wait_until(lambda: "ready" in control.logs(), message="the script to start")
    control.answer_status = 404
    assert proc.wait(30) == 0
    assert control.exit_event() is None
    assert (spec.parent / "opt" / "ml" / "model" / "on-term").exists()


def test_leader_merges_every_hosts_model(tmp_path: Path, control: ControlPlane) -> None:
    out = tmp_path / "out"
    script = ('echo "$SM_CURRENT_HOST" > "$SM_MODEL_DIR/common"; echo x > "$SM_MODEL_DIR/only-$SM_CURRENT_HOST"; '
              'mkdir -p "$SM_MODEL_DIR/sub"; echo 1 > "$SM_MODEL_DIR/sub/$SM_CURRENT_HOST"')
    request = script_job(script, OutputDataConfig={"S3OutputPath": f"file://{out}"},
                         ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 1})
    hosts = ["algo-1", "algo-2"]
    specs = [make_spec(tmp_path, control, request=request, host=h, hosts=hosts) for h in hosts]
    leader = start_agent(specs[0])
    wait_until(lambda: control.statuses("algo-1")[-1:] == ["Uploading"], message="the leader to wait for its peer")
    assert not (out / "job-1").exists()
    follower = start_agent(specs[1])
    assert follower.wait(30) == 0 and leader.wait(30) == 0
    assert control.exit_event("algo-2")["model_artifacts"] is None
    assert control.exit_event("algo-1")["model_artifacts"] == f"file://{out}/job-1/output/model.tar.gz"
    assert tar_members(out / "job-1" / "output" / "model.tar.gz") == {
        "common": b"algo-2\n", "only-algo-1": b"x\n", "only-algo-2": b"x\n", "sub/algo-1": b"1\n",
        "sub/algo-2": b"1\n"}


def test_uncompressed_model(tmp_path: Path, control: ControlPlane) -> None:
    out = tmp_path / "out"
    request = script_job('mkdir -p "$SM_MODEL_DIR/d"; echo w > "$SM_MODEL_DIR/d/weights"',
                         OutputDataConfig={"S3OutputPath": f"file://{out}", "CompressionType": "NONE"})
    spec = make_spec(tmp_path, control, request=request)
    assert run_agent(spec) == 0
    assert control.exit_event()["model_artifacts"] == f"file://{out}/job-1/output/model/"
    assert (out / "job-1" / "output" / "model" / "d" / "weights").read_text() == "w\n"


def test_upload_error_is_a_platform_failure(tmp_path: Path, control: ControlPlane) -> None:
    request = script_job("true", OutputDataConfig={"S3OutputPath": "file:///not-allowed/out"})
    spec = make_spec(tmp_path, control, request=request)
    assert run_agent(spec) == 0
    ev = control.exit_event()
    assert ev["outcome"] == "platform" and "while uploading the outputs to file:///not-allowed/out" in ev["failure_reason"]


def test_staging_file_channel(tmp_path: Path, control: ControlPlane) -> None:
    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    for i in range(3):
        (data / f"part-{i}.csv").write_text("x" * (i + 1))
    request = script_job('ls "$SM_CHANNEL_TRAIN" > "$SM_MODEL_DIR/files"', InputDataConfig=[
        {"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"file://{data}/", "S3DataDistributionType": "FullyReplicated"}}}])
    spec = make_spec(tmp_path, control, request=request)
    assert run_agent(spec) == 0, agent_log(spec)
    assert control.exit_event()["outcome"] == "ok"
    assert (spec.parent / "opt/ml/model/files").read_text().split() == ["part-0.csv", "part-1.csv", "part-2.csv"]
    assert control.statuses()[:1] == ["Downloading"] and "Training" in control.statuses()


def test_staging_error_of_the_request_is_not_retried(tmp_path: Path, control: ControlPlane) -> None:
    request = script_job("true", InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": f"file://{tmp_path}/missing/"}}}])
    spec = make_spec(tmp_path, control, request=request)
    assert run_agent(spec) == 0
    ev = control.exit_event()
    assert ev["outcome"] == "algorithm", ev  # the request's own fault: Failed without retry
    assert f"file://{tmp_path}/missing/" in ev["failure_reason"]
    assert "Training" not in control.statuses()


def test_network_isolation_is_refused_without_namespaces(tmp_path: Path, control: ControlPlane) -> None:
    spec = make_spec(tmp_path, control, request=script_job("true", EnableNetworkIsolation=True), isolation="none")
    assert run_agent(spec) == 0
    ev = control.exit_event()
    assert ev["outcome"] == "algorithm"
    assert ev["failure_reason"].startswith("ClientError: EnableNetworkIsolation needs the sandbox")


def fs_job(script: str, mode: str) -> dict[str, Any]:
    return script_job(script, InputDataConfig=[{"ChannelName": "efs", "DataSource": {"FileSystemDataSource": {
        "FileSystemId": "fs-1", "FileSystemType": "EFS", "FileSystemAccessMode": mode,
        "DirectoryPath": "/training"}}}])


@needs_namespaces
def test_file_system_channel_is_bind_mounted(tmp_path: Path, control: ControlPlane) -> None:
    efs = tmp_path / "efs"
    (efs / "training").mkdir(parents=True)
    os.chmod(efs / "training", 0o777)  # the instance's root is an unprivileged host uid: the share must allow it
    (efs / "training" / "a.txt").write_text("from efs")
    script = ('cat "$SM_CHANNEL_EFS/a.txt" > /opt/ml/model/read; '
              'if touch "$SM_CHANNEL_EFS/new" 2>/dev/null; then echo rw; else echo ro; fi > /opt/ml/model/mode')
    for mode in ("ro", "rw"):
        control.reset()
        spec = make_spec(tmp_path / mode, control, request=fs_job(script, mode), isolation="sandbox",
                         file_systems={"fs-1": str(efs)})
        assert run_agent(spec) == 0, agent_log(spec)
        assert control.exit_event()["outcome"] == "ok", control.exit_event()
        model = spec.parent / "opt" / "ml" / "model"
        assert (model / "read").read_text() == "from efs"
        assert (model / "mode").read_text().strip() == mode
    assert (efs / "training" / "new").exists()  # written through the rw mount


@pytest.mark.parametrize("isolation", ["none"] + (["sandbox"] if namespaces_available() else []))
def test_pipe_channel_through_the_instance(tmp_path: Path, control: ControlPlane, isolation: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"part-{i}").write_bytes(b"abc" * (i + 1))
    code = ("import os; d = os.environ['SM_INPUT_DIR'] + '/data/'; "
            "n = len(open(d + 'train_0', 'rb').read()); "
            "open(os.environ['SM_MODEL_DIR'] + '/bytes', 'w').write(str(n))")
    request = python_job(code, InputDataConfig=[{"ChannelName": "train", "InputMode": "Pipe", "DataSource": {
        "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"file://{data}/"}}}])
    spec = make_spec(tmp_path, control, request=request, isolation=isolation)
    assert run_agent(spec) == 0, agent_log(spec)
    assert control.exit_event()["outcome"] == "ok", control.exit_event()
    assert (spec.parent / "opt/ml/model/bytes").read_text() == "18"


def test_leader_does_not_wait_for_a_peer_that_ended_early(tmp_path: Path, control: ControlPlane) -> None:
    out = tmp_path / "out"
    request = script_job('echo m > "$SM_MODEL_DIR/m"', OutputDataConfig={"S3OutputPath": f"file://{out}"},
                         ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 1})
    hosts = ["algo-1", "algo-2"]
    broken = {"command": [], "python": "", "image": "x", "error": "Image 'x' is not in trainforge's image catalog"}
    follower = start_agent(make_spec(tmp_path, control, request=request, host="algo-2", hosts=hosts, runtime=broken))
    assert follower.wait(30) == 0
    leader = start_agent(make_spec(tmp_path, control, request=request, host="algo-1", hosts=hosts))
    assert leader.wait(30) == 0  # not until the deadline (10 minutes away)
    assert control.exit_event("algo-2")["outcome"] == "algorithm"
    assert control.exit_event("algo-1")["model_artifacts"] == f"file://{out}/job-1/output/model.tar.gz"


def test_input_failing_while_training_fails_the_instance(tmp_path: Path, control: ControlPlane) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"part-{i}").write_bytes(bytes([65 + i]) * (1 << 20))
    code = ("import os, time; d = os.environ['SM_INPUT_DIR'] + '/data/'; "
            f"os.remove({str(data / 'part-1')!r}); "
            "f = open(d + 'train_0', 'rb'); n = len(f.read()); print('read', n, flush=True); "
            "time.sleep(120)")
    request = python_job(code, InputDataConfig=[{"ChannelName": "train", "InputMode": "Pipe", "DataSource": {
        "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"file://{data}/"}}}])
    spec = make_spec(tmp_path, control, request=request, stop_grace_seconds=2)
    assert run_agent(spec) == 0, agent_log(spec)
    ev = control.exit_event()
    assert ev["outcome"] in ("algorithm", "platform") and "part-1" in ev["failure_reason"], ev
    assert ev["stop_reason"] is None


def test_sigterm_after_the_exit_event_ends_a_stuck_final_flush(tmp_path: Path, control: ControlPlane) -> None:
    spec = make_spec(tmp_path, control, request=script_job("echo ready; touch \"$SM_MODEL_DIR/done\""))
    control.down()  # nobody ever answers: the exit event cannot be delivered
    proc = start_agent(spec)
    outbox = spec.parent / "agent-outbox.jsonl"
    wait_until(lambda: outbox.exists() and '"type":"exit"' in outbox.read_text(), message="the exit event queued")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert '"outcome":"ok"' in outbox.read_text()  # kept for the control plane to read


def test_checkpoints_restored_and_synced(tmp_path: Path, control: ControlPlane) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "old.pt").write_text("epoch 1")
    tb = tmp_path / "tb"
    script = ('cat /opt/ml/checkpoints/old.pt > "$SM_MODEL_DIR/restored"; echo 2 > /opt/ml/checkpoints/new.pt; '
              'mkdir -p /opt/ml/output/tensorboard/run; echo ev > /opt/ml/output/tensorboard/run/events')
    request = script_job(script, CheckpointConfig={"S3Uri": f"file://{ckpt}"},
                         TensorBoardOutputConfig={"S3OutputPath": f"file://{tb}"})
    isolation = "sandbox" if namespaces_available() else "none"
    if isolation == "none":
        request = script_job(script.replace("/opt/ml", "$SAGEMAKER_BASE_DIR"),
                             CheckpointConfig={"S3Uri": f"file://{ckpt}"},
                             TensorBoardOutputConfig={"S3OutputPath": f"file://{tb}"})
    spec = make_spec(tmp_path, control, request=request, isolation=isolation)
    assert run_agent(spec) == 0, agent_log(spec)
    assert control.exit_event()["outcome"] == "ok", control.exit_event()
    assert (spec.parent / "opt/ml/model/restored").read_text() == "epoch 1"
    assert (ckpt / "new.pt").read_text() == "2\n"
    assert (tb / "run" / "events").read_text() == "ev\n"
