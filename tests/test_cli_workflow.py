"""The commands people run all day, against real servers: logs, wait (live view), create --wait,
run and demo; the live view and `logs --follow` are checked on a real terminal screen (tmux, or a
pseudo-terminal where tmux is missing)."""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerProcess, minimal_request, unique_name, wait_for_job, wait_until
from test_cli_support import aws_env, run_tf, run_tf_process

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def shell_job(name: str, script: str, out: Path, **overrides: Any) -> dict[str, Any]:
    req = minimal_request(name, **overrides)
    req["AlgorithmSpecification"] = {**req["AlgorithmSpecification"], "ContainerArguments": [script]}
    req["OutputDataConfig"] = {"S3OutputPath": f"file://{out}"}
    return req


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return aws_env(tmp_path)


@pytest.fixture(scope="module")
def srv(server_factory_module: Any) -> Any:
    return server_factory_module


@pytest.fixture(scope="module")
def server_factory_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:

    data = tmp_path_factory.mktemp("tf-cli")
    server = ServerProcess(data, {"allowed_local_roots": [str(data)]}).start()
    yield server
    server.stop()


# ---------------------------------------------------------------------------------------------- logs
def test_logs_follow_prints_every_instance_and_exits_when_the_job_ends(srv: Any, env: dict[str, str]) -> None:
    name = unique_name("cli-logs")
    script = "echo hello from $(hostname); sleep 1; echo second line from $(hostname)"
    srv.client().create_training_job(**shell_job(name, script, srv.data_dir / "out",
                                                 ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 2,
                                                                 "VolumeSizeInGB": 1}))
    result = run_tf(["--endpoint-url", srv.endpoint, "logs", name, "--follow", "--poll", "0.2"], env)
    assert result.code == 0, result.stderr
    for host in ("algo-1", "algo-2"):
        assert result.stdout.count(f"[{host}] hello from {host}\n") == 1  # every line once, none twice
        assert result.stdout.count(f"[{host}] second line from {host}\n") == 1
    assert srv.client().describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "Completed"
    assert "\x1b[" not in result.stdout  # not a terminal: no color

    again = run_tf(["--endpoint-url", srv.endpoint, "logs", name], env)
    assert again.code == 0
    assert sorted(again.stdout.splitlines()) == sorted(result.stdout.splitlines())
    colored = run_tf(["--endpoint-url", srv.endpoint, "--color", "on", "logs", name], env)
    assert "\x1b[36m[algo-1]" in colored.stdout
    future = run_tf(["--endpoint-url", srv.endpoint, "logs", name, "--since", "2999-01-01T00:00:00+00:00"], env)
    assert future.code == 0 and future.stdout == ""
    recent = run_tf(["--endpoint-url", srv.endpoint, "logs", name, "--since", "1h"], env)
    assert recent.stdout == again.stdout


def test_logs_of_a_missing_job_is_a_service_error(srv: Any, env: dict[str, str]) -> None:
    result = run_tf(["--endpoint-url", srv.endpoint, "logs", "no-such-job-here"], env)
    assert result.code == 254
    assert "Requested resource not found" in result.stderr


# ---------------------------------------------------------------------------------------------- wait
def test_wait_shows_transitions_and_exits_by_outcome(srv: Any, env: dict[str, str]) -> None:
    sm = srv.client()
    ok, bad = unique_name("cli-wait-ok"), unique_name("cli-wait-bad")
    sm.create_training_job(**shell_job(ok, "echo fine", srv.data_dir / "out"))
    sm.create_training_job(**shell_job(bad, "echo broken >&2; exit 3", srv.data_dir / "out"))
    good = run_tf(["--endpoint-url", srv.endpoint, "wait", ok, "--poll", "0.1"], env)
    assert good.code == 0, good.stderr
    for status in ("Starting", "Training", "Uploading", "Completed"):
        assert status in good.stdout
    assert "billable seconds" in good.stdout
    assert f"file://{srv.data_dir}/out/{ok}/output/model.tar.gz" in good.stdout
    failed = run_tf(["--endpoint-url", srv.endpoint, "wait", bad, "--poll", "0.1", "--logs"], env)
    assert failed.code == 1
    assert "Failed" in failed.stdout and "failure reason" in failed.stdout
    assert "[algo-1] broken" in failed.stdout


def test_wait_on_a_stopped_job_exits_2(srv: Any, env: dict[str, str]) -> None:
    sm = srv.client()
    name = unique_name("cli-stop")
    sm.create_training_job(**shell_job(name, "sleep 60", srv.data_dir / "out"))
    wait_for_job(sm, name, "Training", secondary=True)
    stop = run_tf(["--endpoint-url", srv.endpoint, "stop-training-job", "--training-job-name", name], env)
    assert stop.code == 0, stop.stderr
    result = run_tf(["--endpoint-url", srv.endpoint, "wait", name, "--poll", "0.1"], env)
    assert result.code == 2
    assert "Stopped" in result.stdout


def test_create_with_wait(srv: Any, env: dict[str, str], tmp_path: Path) -> None:
    name = unique_name("cli-create-wait")
    body = shell_job(name, "echo created", srv.data_dir / "out")
    path = tmp_path / "job.json"
    path.write_text(json.dumps(body))
    result = run_tf(["--endpoint-url", srv.endpoint, "create-training-job", "--cli-input-json", f"file://{path}",
                     "--wait"], env)
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout.split("}\n", 1)[0] + "}")["TrainingJobArn"].endswith(name)
    assert "Completed" in result.stdout


# ------------------------------------------------------------------------------------ terminal screen
def screen(argv: list[str], env: dict[str, str], timeout: float = 60) -> tuple[str, str]:
    """Run `trainforge argv` on a terminal; (final screen text, raw output with escapes)."""
    full = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRAINFORGE_"))}, **env}
    command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "trainforge.cli", *argv])
    if shutil.which("tmux"):
        session = f"tf-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in full.items() if k.isidentifier())
        shell = f"env {exports} {command}; echo __EXIT=$?; sleep 120"
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "140", "-y", "50", "bash", "-c", shell],
                       check=True)

        def capture(*flags: str) -> str:
            return subprocess.run(["tmux", "capture-pane", "-p", *flags, "-t", session], capture_output=True,
                                  text=True, check=False).stdout

        try:
            text = wait_until(lambda: (t := capture()) and "__EXIT=" in t and t, timeout=timeout, interval=0.1,
                              message="command to end")
            raw = capture("-e")  # with the escape sequences of colors and attributes
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], check=False)
        return text, raw
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # child: the command on the pseudo-terminal
        os.execvpe(sys.executable, [sys.executable, "-m", "trainforge.cli", *argv], full)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:  # read the screen until the command ends (end of file), for at most ``timeout`` s
        readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert readable, f"the command did not end within {timeout} s: {b''.join(chunks)[-2000:]!r}"
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    raw = b"".join(chunks).decode(errors="replace")
    return ANSI.sub("", raw) + f"\n__EXIT={os.waitstatus_to_exitcode(status)}\n", raw


def test_wait_live_view_on_a_terminal(srv: Any, env: dict[str, str]) -> None:
    name = unique_name("cli-tty")
    srv.client().create_training_job(**shell_job(
        name, "echo 'loss=0.5'; sleep 1; echo 'loss=0.25'", srv.data_dir / "out",
        AlgorithmSpecification={"TrainingImage": "trainforge/command:latest", "TrainingInputMode": "File",
                                "ContainerEntrypoint": ["/bin/sh", "-c"],
                                "MetricDefinitions": [{"Name": "train:loss", "Regex": "loss=([0-9.]+)"}]}))
    text, raw = screen(["--endpoint-url", srv.endpoint, "wait", name, "--poll", "0.1", "--logs"], env)
    assert "__EXIT=0" in text
    assert re.search(rf"{name}\s+Completed", text), text
    for status, message in (("Starting", "Preparing the instances for training"),
                            ("Training", "Training image download completed. Training in progress."),
                            ("Completed", "Training job completed")):
        assert re.search(rf"✔\s+{status}\s+{re.escape(message)}.*\d+\.\d s", text), (status, text)
    assert "train:loss = 0.25" in text
    assert "[algo-1] loss=0.25" in text
    assert "billable seconds" in text and f"{name}/output/model.tar.gz" in text
    assert "\x1b[" in raw  # colored and redrawn in place


def test_logs_follow_on_a_terminal_is_colored(srv: Any, env: dict[str, str]) -> None:
    name = unique_name("cli-tty-logs")
    srv.client().create_training_job(**shell_job(name, "echo one; sleep 0.5; echo two", srv.data_dir / "out"))
    text, raw = screen(["--endpoint-url", srv.endpoint, "logs", name, "--follow", "--poll", "0.1"], env)
    assert "__EXIT=0" in text
    assert "[algo-1] one" in text and "[algo-1] two" in text
    assert re.search(r"\x1b\[[0-9;]*m\[algo-1\]", raw)


# ---------------------------------------------------------------------------------- run and demo
def test_run_a_local_script(home: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "project"
    (src / "lib").mkdir(parents=True)
    (src / "lib" / "helper.py").write_text("WORD = 'helper imported'\n")
    (src / "train.py").write_text(
        "import argparse, os, sys\n"
        "sys.path.insert(0, os.path.dirname(__file__))\n"
        "from lib.helper import WORD\n"
        "p = argparse.ArgumentParser(); p.add_argument('--epochs', type=int); p.add_argument('--name')\n"
        "a = p.parse_args()\n"
        "data = open(os.path.join(os.environ['SM_CHANNEL_TRAIN'], 'numbers.txt')).read().split()\n"
        "print(WORD, 'epochs', a.epochs, 'name', a.name, 'sum', sum(map(int, data)), flush=True)\n"
        "open(os.path.join(os.environ['SM_MODEL_DIR'], 'model.txt'), 'w').write(str(sum(map(int, data))))\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "numbers.txt").write_text("1 2 3 4\n")
    result = run_tf_process(["run", str(src / "train.py"), "--channel", f"train={data}", "--hp", "epochs=3",
                             "--hp", "name=adam", "--job-name", "cli-run-job"], home)
    assert result.code == 0, result.stdout + result.stderr
    assert "[algo-1] helper imported epochs 3 name adam sum 10" in result.stdout
    model = re.search(r"model\s+(file://\S+)", result.stdout)
    assert model, result.stdout
    with tarfile.open(model.group(1)[len("file://"):]) as tar:
        member = tar.extractfile("model.txt")
        assert member is not None and member.read() == b"10"
    described = run_tf_process(["describe-training-job", "--training-job-name", "cli-run-job", "--query",
                                "HyperParameters"], home)
    hps = json.loads(described.stdout)
    assert hps["sagemaker_program"] == '"train.py"'
    assert hps["epochs"] == "3" and hps["name"] == '"adam"'
    assert json.loads(hps["sagemaker_submit_directory"]).endswith("/uploads/cli-run-job/sourcedir.tar.gz")
    assert run_tf_process(["server", "stop"], home).code == 0


def test_run_reports_a_failing_script(home: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text("raise SystemExit('no good')\n")
    result = run_tf_process(["run", str(script)], home)
    assert result.code == 1
    assert "failure reason" in result.stdout
    assert run_tf_process(["server", "stop"], home).code == 0


def test_run_bad_arguments(home: dict[str, str], tmp_path: Path) -> None:
    assert run_tf_process(["run", str(tmp_path / "missing.py")], home).code == 252
    script = tmp_path / "t.py"
    script.write_text("print(1)\n")
    assert run_tf_process(["run", str(script), "--channel", "nope"], home).code == 252
    assert run_tf_process(["run", str(script), "--channel", f"x={tmp_path}/absent"], home).code == 252
    assert not (Path(home["TRAINFORGE_HOME"]) / "server.pid").exists()


def test_demo_trains_a_real_model(home: dict[str, str]) -> None:
    result = run_tf_process(["demo"], home)
    assert result.code == 0, result.stdout + result.stderr
    assert "started a local server" in result.stderr
    assert "Completed" in result.stdout
    assert re.search(r"validation:accuracy = 0\.9\d*", result.stdout), result.stdout
    match = re.search(r"classifies (\d+)/30 validation flowers correctly", result.stdout)
    assert match and int(match.group(1)) >= 27
    # on the embedded S3 endpoint when rclone is installed (s3:// as on SageMaker), else file://
    s3_model = re.search(r"model\s+s3://([^/\s]+)/(\S+)", result.stdout)
    if s3_model:
        assert (Path(home["TRAINFORGE_HOME"]) / "s3" / s3_model.group(1) / s3_model.group(2)).is_file()
    else:
        model = re.search(r"model\s+file://(\S+)", result.stdout)
        assert model and Path(model.group(1)).is_file()
    assert run_tf_process(["server", "stop"], home).code == 0


def test_run_with_s3_output(home: dict[str, str], tmp_path: Path, s3: Any, s3_endpoint: str, bucket: str) -> None:
    """--output s3://...: the code goes to S3 next to the outputs; the model lands in S3."""
    script = tmp_path / "s3job" / "train.py"
    script.parent.mkdir()
    script.write_text("import os\nprint('running from', os.getcwd(), flush=True)\n"
                      "open(os.path.join(os.environ['SM_MODEL_DIR'], 'w.txt'), 'w').write('42')\n")
    env = {**home, "AWS_ENDPOINT_URL_S3": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing"}
    result = run_tf_process(["run", str(script), "--output", f"s3://{bucket}/out", "--job-name", "cli-s3-run"], env)
    assert result.code == 0, result.stdout + result.stderr
    assert f"model             s3://{bucket}/out/cli-s3-run/output/model.tar.gz" in result.stdout
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {"out/cli-s3-run/source/sourcedir.tar.gz", "out/cli-s3-run/output/model.tar.gz"} <= keys
    assert run_tf_process(["server", "stop"], home).code == 0
