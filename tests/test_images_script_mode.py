"""Script mode (``trainforge.images.script_mode``) run by the real agent, as a framework image runs it."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
import tarfile
import textwrap
import zipfile
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
    run_agent,
    start_agent,
)

RUNTIME = {"command": [sys.executable, "-m", "trainforge.images.script_mode"], "python": sys.executable,
           "image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3.0-cpu-py311",
           "kind": "script-mode", "error": None}
ISOLATIONS = ["none"] + (["sandbox"] if namespaces_available() else [])


def make_wheel(directory: Path) -> str:
    """A tiny pure-Python wheel built by hand (no network, no build backend)."""
    files = {"tinypkg/__init__.py": b"VALUE = 42\n",
             "tinypkg-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
             "tinypkg-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                            b"Tag: py3-none-any\n"}
    record = ""
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{name},sha256={digest},{len(data)}\n"
    record += "tinypkg-0.1.dist-info/RECORD,,\n"
    files["tinypkg-0.1.dist-info/RECORD"] = record.encode()
    name = "tinypkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(directory / name, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return name


def sourcedir(tmp_path: Path, files: dict[str, str]) -> Path:
    tar_path = tmp_path / "sourcedir.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        for name, text in files.items():
            data = textwrap.dedent(text).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return tar_path


def job(tmp_path: Path, hps: dict[str, str], **overrides: Any) -> dict[str, Any]:
    return base_request("job-1", AlgorithmSpecification={"TrainingImage": RUNTIME["image"],
                                                          "TrainingInputMode": "File"},
                        HyperParameters=hps, **overrides)


TRAIN_PY = """
    import argparse, json, os, sys
    sys.path.insert(0, os.environ["PIP_TARGET"])
    import tinypkg
    print("first line of user code", flush=True)
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--model-name")
    p.add_argument("--layers")
    args = p.parse_args()
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as f:
        json.dump({"argv": sys.argv[1:], "value": tinypkg.VALUE, "cwd": os.getcwd(),
                   "epochs": args.epochs, "hps": json.loads(os.environ["SM_HPS"])}, f)
"""


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_sourcedir_requirements_and_arguments(tmp_path: Path, control: ControlPlane, isolation: str) -> None:
    code = tmp_path / "code-src"
    code.mkdir()
    wheel = make_wheel(tmp_path)
    tar = sourcedir(tmp_path, {"train.py": TRAIN_PY, "requirements.txt": f"--no-index\n./{wheel}\n"})
    # the wheel travels inside the sourcedir, as users ship private packages
    with tarfile.open(tar, "r:gz") as t:
        members = {m.name: t.extractfile(m).read() for m in t.getmembers()}  # type: ignore[union-attr]
    with tarfile.open(tar, "w:gz") as t:
        for name, data in {**members, wheel: (tmp_path / wheel).read_bytes()}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    hps = {"epochs": "3", "lr": "0.1", "model-name": '"tiny"', "layers": "[1, 2]",
           "sagemaker_program": '"train.py"', "sagemaker_submit_directory": json.dumps(f"file://{tar}"),
           "sagemaker_container_log_level": "20"}
    request = job(tmp_path, hps, Environment={"PIP_TARGET": str(tmp_path / "site")})
    spec = make_spec(tmp_path, control, request=request, runtime=RUNTIME, isolation=isolation)
    assert run_agent(spec, timeout=120) == 0, agent_log(spec)
    ev = control.exit_event()
    assert ev["outcome"] == "ok", ev
    model = json.loads((spec.parent / "opt/ml/model/model.json").read_text())
    assert model["argv"] == ["--epochs", "3", "--layers", "[1, 2]", "--lr", "0.1", "--model-name", "tiny"]
    assert model["value"] == 42 and model["epochs"] == 3
    assert model["hps"] == {"epochs": 3, "lr": 0.1, "model-name": "tiny", "layers": [1, 2]}
    assert model["cwd"] == ("/opt/ml/code" if isolation == "sandbox" else str(spec.parent / "opt/ml/code"))
    assert (spec.parent / "opt/ml/code/train.py").exists()
    logs = control.logs()
    assert "first line of user code" in logs
    assert any(m.startswith("Invoking script with the following command: ") and "train.py --epochs 3" in m
               for m in logs)
    assert (spec.parent / "opt/ml/output/success").exists()


def test_script_error_writes_the_toolkits_failure_file(tmp_path: Path, control: ControlPlane) -> None:
    tar = sourcedir(tmp_path, {"train.py": """
        import sys
        print("working", flush=True)
        raise ValueError("boom in epoch 2")
    """})
    hps = {"sagemaker_program": '"train.py"', "sagemaker_submit_directory": json.dumps(f"file://{tar}")}
    spec = make_spec(tmp_path, control, request=job(tmp_path, hps), runtime=RUNTIME)
    assert run_agent(spec) == 0
    ev = control.exit_event()
    assert ev["outcome"] == "algorithm" and ev["exit_code"] == 1
    reason = ev["failure_reason"]
    assert reason.startswith('AlgorithmError: ExecuteUserScriptError:\nExitCode 1\nErrorMessage "'), reason
    assert "ValueError: boom in epoch 2" in reason and f'Command "{sys.executable} train.py"' in reason
    assert len(reason) <= 1024


def test_the_scripts_own_failure_file_wins(tmp_path: Path, control: ControlPlane) -> None:
    tar = sourcedir(tmp_path, {"train.py": """
        import os, sys
        open(os.path.join(os.environ["SM_OUTPUT_DIR"], "failure"), "w").write("my own reason")
        sys.exit(4)
    """})
    hps = {"sagemaker_program": '"train.py"', "sagemaker_submit_directory": json.dumps(f"file://{tar}")}
    spec = make_spec(tmp_path, control, request=job(tmp_path, hps), runtime=RUNTIME)
    assert run_agent(spec) == 0
    ev = control.exit_event()
    assert (ev["exit_code"], ev["failure_reason"]) == (4, "AlgorithmError: my own reason")


def test_shell_program_and_program_from_environment(tmp_path: Path, control: ControlPlane) -> None:
    tar = sourcedir(tmp_path, {"run.sh": 'echo "args: $*" > "$SM_MODEL_DIR/args"\n'})
    hps = {"a": "1", "sagemaker_submit_directory": json.dumps(f"file://{tar}")}
    request = job(tmp_path, hps, Environment={"SAGEMAKER_PROGRAM": "run.sh"})
    spec = make_spec(tmp_path, control, request=request, runtime=RUNTIME)
    assert run_agent(spec) == 0, agent_log(spec)
    assert control.exit_event()["outcome"] == "ok"
    assert (spec.parent / "opt/ml/model/args").read_text() == "args: -a 1\n"


def test_no_program_is_a_clear_failure(tmp_path: Path, control: ControlPlane) -> None:
    spec = make_spec(tmp_path, control, request=job(tmp_path, {"epochs": "1"}), runtime=RUNTIME)
    assert run_agent(spec) == 0
    reason = control.exit_event()["failure_reason"]
    assert reason.startswith("AlgorithmError: ClientError:\nno entry point: set the hyperparameter sagemaker_program")


def test_sourcedir_outside_the_allowed_roots_is_refused(tmp_path: Path, control: ControlPlane) -> None:
    hps = {"sagemaker_program": '"train.py"', "sagemaker_submit_directory": '"file:///etc"'}
    spec = make_spec(tmp_path, control, request=job(tmp_path, hps), runtime=RUNTIME)
    assert run_agent(spec) == 0
    assert "outside the allowed local roots" in control.exit_event()["failure_reason"]
    assert not list((spec.parent / "opt/ml/code").iterdir())


def test_stop_reaches_the_script_through_the_entrypoint(tmp_path: Path, control: ControlPlane) -> None:
    tar = sourcedir(tmp_path, {"train.py": """
        import os, signal, sys, time
        def on_term(*_):
            open(os.path.join(os.environ["SM_MODEL_DIR"], "saved"), "w").write("on sigterm")
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        print("ready", flush=True)
        while True:
            time.sleep(0.05)
    """})
    out = tmp_path / "out"
    hps = {"sagemaker_program": '"train.py"', "sagemaker_submit_directory": json.dumps(f"file://{tar}")}
    request = job(tmp_path, hps, OutputDataConfig={"S3OutputPath": f"file://{out}"})
    spec = make_spec(tmp_path, control, request=request, runtime=RUNTIME, isolation=ISOLATIONS[-1])
    proc = start_agent(spec)
    wait_until(lambda: "ready" in control.logs(), message="the script to start")
    control.stop = "Stopped"
    assert proc.wait(30) == 0
    ev = control.exit_event()
    assert (ev["outcome"], ev["stop_reason"]) == ("stopped", "Stopped")
    with tarfile.open(out / "job-1/output/model.tar.gz") as t:
        assert t.extractfile("saved").read() == b"on sigterm"  # type: ignore[union-attr]


PARENT_PY = """
    import os
    parent = open(f"/proc/{os.getppid()}/cmdline", "rb").read().replace(b"\\x00", b" ").decode()
    open(os.path.join(os.environ["SM_MODEL_DIR"], "parent"), "w").write(parent)
"""


@pytest.mark.parametrize("requirements", [False, True])
def test_agent_starts_the_script_itself_unless_something_must_be_installed(
        tmp_path: Path, control: ControlPlane, requirements: bool) -> None:
    files = {"train.py": PARENT_PY}
    if requirements:
        files["requirements.txt"] = "# nothing\n"
    tar = sourcedir(tmp_path, files)
    hps = {"sagemaker_program": '"train.py"', "sagemaker_submit_directory": json.dumps(f"file://{tar}")}
    spec = make_spec(tmp_path, control, request=job(tmp_path, hps), runtime=RUNTIME)
    assert run_agent(spec, timeout=120) == 0, agent_log(spec)
    assert control.exit_event()["outcome"] == "ok", control.exit_event()
    parent = (spec.parent / "opt/ml/model/parent").read_text()
    if requirements:  # the entrypoint installs, then runs the script as its child
        assert "-m trainforge.images.script_mode train" in parent
    else:  # the agent prepared the code and started the script: one interpreter less
        assert "-m trainforge.agent" in parent
    logs = control.logs()
    assert sum(m.startswith("Invoking script with the following command: ") for m in logs) == 1
    assert (spec.parent / "opt/ml/output/success").exists()
