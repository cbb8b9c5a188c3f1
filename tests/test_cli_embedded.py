"""The embedded default: the first command starts a local server in the background (once), later
commands reuse it, `trainforge server stop` ends it. Each test has a fresh $TRAINFORGE_HOME and port."""

from __future__ import annotations

import re
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import alive, wait_until
from test_cli_support import Recorder, run_tf_process

STARTED = "started a local server"


def answering(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_first_command_starts_the_server_and_later_ones_reuse_it(home: dict[str, str]) -> None:
    port = int(home["TRAINFORGE_PORT"])
    assert not answering(port)
    first = run_tf_process(["list-training-jobs"], home)
    assert first.code == 0, first.stderr
    assert first.stderr.count(STARTED) == 1
    assert f"http://127.0.0.1:{port}" in first.stderr
    assert '"TrainingJobSummaries": []' in first.stdout
    pid_file = Path(home["TRAINFORGE_HOME"]) / "server.pid"
    pid = int(pid_file.read_text())
    assert alive(pid) and answering(port)
    assert (Path(home["TRAINFORGE_HOME"]) / "server.log").exists()
    assert (Path(home["TRAINFORGE_HOME"]) / "trainforge.db").exists()  # its data is in $TRAINFORGE_HOME

    second = run_tf_process(["list-training-jobs", "--output", "text"], home)
    assert second.code == 0, second.stderr
    assert STARTED not in second.stderr
    assert int(pid_file.read_text()) == pid

    status = run_tf_process(["server", "status"], home)
    assert status.code == 0
    assert f"pid {pid}" in status.stdout and "answering" in status.stdout

    stop = run_tf_process(["server", "stop"], home)
    assert stop.code == 0, stop.stderr
    assert f"stopped the background server (pid {pid})" in stop.stdout
    assert not alive(pid)
    assert not answering(port)
    assert not pid_file.exists()

    after = run_tf_process(["server", "status"], home)
    assert after.code == 3 and "stopped" in after.stdout
    again = run_tf_process(["server", "stop"], home)
    assert again.code == 0 and "no background trainforge server is running" in again.stdout


def test_concurrent_first_commands_start_one_server(home: dict[str, str]) -> None:
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: run_tf_process(["list-training-jobs"], home), range(3)))
    assert [r.code for r in results] == [0, 0, 0], [r.stderr for r in results]
    assert sum(r.stderr.count(STARTED) for r in results) == 1
    assert run_tf_process(["server", "stop"], home).code == 0


def test_jobs_survive_a_restart_of_the_embedded_server(home: dict[str, str]) -> None:
    create = ["create-training-job", "--training-job-name", "kept", "--role-arn",
              "arn:aws:iam::000000000000:role/SageMakerRole", "--output-data-config",
              f"S3OutputPath=file://{home['TRAINFORGE_HOME']}/out", "--algorithm-specification",
              "TrainingImage=unknown.example/none:1,TrainingInputMode=File", "--resource-config",
              "InstanceType=ml.m5.large,InstanceCount=1,VolumeSizeInGB=1",
              "--stopping-condition", "MaxRuntimeInSeconds=60"]
    assert run_tf_process(create, home).code == 0
    assert run_tf_process(["server", "stop"], home).code == 0
    described = run_tf_process(["describe-training-job", "--training-job-name", "kept", "--query",
                                "TrainingJobName", "--output", "text"], home)
    assert described.code == 0, described.stderr
    assert described.stdout.strip() == "kept"
    assert STARTED in described.stderr
    assert run_tf_process(["server", "stop"], home).code == 0


def test_a_configured_endpoint_starts_nothing(home: dict[str, str]) -> None:
    recorder = Recorder().start()
    try:
        for env in ({"TRAINFORGE_ENDPOINT": recorder.endpoint}, {"AWS_ENDPOINT_URL_SAGEMAKER": recorder.endpoint}):
            result = run_tf_process(["describe-training-job", "--training-job-name", "x"], {**home, **env})
            assert result.code == 0, result.stderr
            assert STARTED not in result.stderr
        result = run_tf_process(["--endpoint-url", recorder.endpoint, "list-tags", "--resource-arn", "arn:x"], home)
        assert result.code == 0
    finally:
        recorder.stop()
    assert len(recorder.requests) == 3
    # dummy credentials were used to sign (there is no AWS configuration in this environment)
    assert all("Credential=trainforge/" in r.headers["Authorization"] for r in recorder.requests)
    assert not (Path(home["TRAINFORGE_HOME"]) / "server.pid").exists()
    assert not answering(int(home["TRAINFORGE_PORT"]))


def test_bad_parameters_start_nothing(home: dict[str, str]) -> None:
    result = run_tf_process(["describe-training-job"], home)
    assert result.code == 252
    assert not answering(int(home["TRAINFORGE_PORT"]))
    skeleton = run_tf_process(["create-training-job", "--generate-cli-skeleton"], home)
    assert skeleton.code == 0 and '"TrainingJobName": ""' in skeleton.stdout
    assert not answering(int(home["TRAINFORGE_PORT"]))


def test_server_help_and_unknown_option(home: dict[str, str]) -> None:
    assert "trainforge server stop" in run_tf_process(["server", "--help"], home).stdout
    bad = run_tf_process(["server", "--bogus"], home)
    assert bad.code == 252 and "--bogus" in bad.stderr


def test_foreground_server_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    import subprocess
    import sys

    data = tmp_path / "fg"
    process = subprocess.Popen([sys.executable, "-m", "trainforge.cli", "server", "--port", "0",
                                "--data-dir", str(data)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        assert process.stdout is not None
        lines: list[str] = []  # the banner, naming the port it got, comes after the migration log
        banner = None
        while banner is None:
            line = process.stdout.readline()
            assert line and len(lines) < 200, lines
            lines.append(line)
            banner = re.match(r"trainforge listening on http://127\.0\.0\.1:(\d+) ", line)
        port = int(banner.group(1))
        assert port > 0
        wait_until(lambda: answering(port), message=f"the server to answer on port {port}")
        result = run_tf_process(["--endpoint-url", f"http://127.0.0.1:{port}", "list-training-jobs"],
                                {"AWS_CONFIG_FILE": str(tmp_path / "none"),
                                 "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")})
        assert result.code == 0, result.stderr
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert (data / "trainforge.db").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
