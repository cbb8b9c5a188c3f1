"""Script mode: the default entrypoint of the framework images (``python -m trainforge.images.script_mode train``).

What the ``sagemaker-training`` toolkit does inside a SageMaker framework image (CONTRACT.md §2):

1. The entry point is env ``SAGEMAKER_PROGRAM``, else the hyperparameter ``sagemaker_program``
   (JSON-decoded: the SDK sends ``"\\"train.py\\""``).
2. ``sagemaker_submit_directory`` (hyperparameter, else env ``SAGEMAKER_SUBMIT_DIRECTORY``) — an
   ``s3://`` or ``file://`` URI or a local path of a ``sourcedir.tar.gz`` (or a directory) — is
   unpacked into ``/opt/ml/code`` only when that directory is empty. ``s3://`` goes through
   :mod:`trainforge.objectstore`, whose default credential chain picks up the container
   credentials the agent set (``AWS_CONTAINER_CREDENTIALS_FULL_URI``) and ``AWS_ENDPOINT_URL_S3``.
   A local path outside the instance's ``/opt/ml`` must lie under the server's allowed roots
   (``TRAINFORGE_ALLOWED_LOCAL_ROOTS``, set by the agent).
3. ``requirements.txt`` in the code directory: ``python -m pip install -r requirements.txt``;
   a ``setup.py`` there: ``python -m pip install .`` and the entry point runs as a module.
4. ``*.py`` runs with this interpreter, ``*.sh`` with ``/bin/sh``, anything else is executed;
   the arguments are ``SM_USER_ARGS`` (hyperparameters not starting with ``sagemaker_``, keys
   sorted, ``--key value``), the working directory is the code directory, which is also put
   first on ``PYTHONPATH``.
5. The exit code is the script's (128 + n when a signal n ended it). On failure
   ``/opt/ml/output/failure`` is written when the script did not write one itself, in the
   toolkit's format (``ExecuteUserScriptError:\\nExitCode 1\\nErrorMessage "..."\\nCommand "..."``);
   an error of this entrypoint writes ``<ErrorClass>:\\n<message>`` and exits 1.

6. Distributed training (``sagemaker_torch_distributed_enabled``, ``sagemaker_mpi_enabled``,
   ``sagemaker_pytorch_ddp_enabled``): the script runs under torchrun or mpirun, see
   :mod:`trainforge.images.launchers`.

Only the standard library is imported on the way to the user's script.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

from trainforge.images import launchers

DEFAULT_BASE = "/opt/ml"
INVOKING = "Invoking script with the following command: "
STDERR_TAIL_BYTES = 4096
ERROR_MESSAGE_CHARS = 700


class ScriptModeError(Exception):
    """An error of the entrypoint (not of the user's script); the class name leads the failure file."""

    name = "ClientError"


class InstallRequirementsError(ScriptModeError):
    name = "InstallRequirementsError"


class InstallModuleError(ScriptModeError):
    name = "InstallModuleError"


def base_dir() -> str:
    return os.environ.get("SAGEMAKER_BASE_DIR") or DEFAULT_BASE


def _decode(value: object) -> object:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def read_hyperparameters(base: str) -> dict[str, object]:
    path = os.path.join(base, "input", "config", "hyperparameters.json")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        return {}
    return {k: _decode(v) for k, v in raw.items()}


def user_args(hps: dict[str, object]) -> list[str]:
    if "SM_USER_ARGS" in os.environ:
        args = json.loads(os.environ["SM_USER_ARGS"])
        return [str(a) for a in args]
    from trainforge.agent.environment import cmd_args, split_hyperparameters

    return cmd_args(split_hyperparameters(hps)[0])


def allowed_roots_from_env() -> list[str] | None:
    configured = os.environ.get("TRAINFORGE_ALLOWED_LOCAL_ROOTS")
    return None if configured is None else list(json.loads(configured))


def _allowed(path: str, base: str, roots: list[str] | None) -> bool:
    """Inside the instance's /opt/ml, or under an allowed root (unrestricted when ``roots`` is None)."""
    if roots is None:
        return True
    real = os.path.realpath(path)
    reals = [os.path.realpath(base)] + [os.path.realpath(r) for r in roots]
    return any(real == r or real.startswith(r.rstrip("/") + "/") for r in reals)


def fetch_code(uri: str, code_dir: str, base: str, allowed_roots: list[str] | None = None) -> None:
    """Unpack ``uri`` into ``code_dir`` unless that directory already has content."""
    os.makedirs(code_dir, exist_ok=True)
    if os.listdir(code_dir):
        return
    if uri.startswith("s3://"):
        import tempfile

        from trainforge import objectstore

        with tempfile.TemporaryDirectory(prefix="sourcedir-") as tmp:
            local = os.path.join(tmp, "sourcedir.tar.gz")
            try:
                objectstore.download_file(uri, local, link=False)
            except objectstore.ObjectStoreError as exc:
                raise ScriptModeError(f"could not download sagemaker_submit_directory {uri}: {exc}") from exc
            _unpack(local, code_dir)
        return
    local = uri.removeprefix("file://")
    if not os.path.exists(local):
        raise ScriptModeError(f"sagemaker_submit_directory {uri} does not exist")
    if not _allowed(local, base, allowed_roots):
        raise ScriptModeError(f"sagemaker_submit_directory {uri} is outside the allowed local roots")
    _unpack(local, code_dir)


def _unpack(local: str, code_dir: str) -> None:
    """A tar (any compression) is extracted, a directory copied, any other file copied in."""
    if os.path.isdir(local):
        import shutil

        shutil.copytree(local, code_dir, dirs_exist_ok=True)
        return
    import tarfile

    if not tarfile.is_tarfile(local):
        import shutil

        shutil.copy2(local, code_dir)
        return
    with tarfile.open(local) as tar:
        tar.extractall(code_dir, filter="data")


def pip(args: list[str], code_dir: str, error: type[ScriptModeError]) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("Installing with: " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=code_dir)
    if rc != 0:
        raise error(f"ExitCode {rc}\nCommand \"{' '.join(cmd)}\"")


def command(program: str, code_dir: str, args: list[str], python: str | None = None,
            host_code_dir: str | None = None) -> list[str]:
    """The user's command line. ``code_dir`` as the script sees it; ``host_code_dir`` where the
    files are for this process (they differ when the agent prepares a namespaced instance)."""
    python = python or sys.executable
    host = host_code_dir or code_dir
    if os.path.exists(os.path.join(host, "setup.py")):
        return [python, "-m", program.removesuffix(".py")] + args
    if program.endswith(".py"):
        return [python, program] + args
    if program.endswith(".sh"):
        return ["/bin/sh", program] + args
    host_path = os.path.join(host, program)
    if os.path.exists(host_path) and not os.access(host_path, os.X_OK):
        os.chmod(host_path, os.stat(host_path).st_mode | 0o111)
    return [os.path.join(code_dir, program)] + args


def needs_install(host_code_dir: str) -> bool:
    return any(os.path.exists(os.path.join(host_code_dir, f)) for f in ("requirements.txt", "setup.py"))


def entry_point(hps: dict[str, object], env: dict[str, str]) -> str | None:
    program = env.get("SAGEMAKER_PROGRAM") or hps.get("sagemaker_program")
    return str(program) if program else None


def submit_directory(hps: dict[str, object], env: dict[str, str]) -> str | None:
    submit = hps.get("sagemaker_submit_directory") or env.get("SAGEMAKER_SUBMIT_DIRECTORY")
    return str(submit) if submit else None


def script_failure(rc: int, stderr_tail: str, cmd: list[str]) -> str:
    """The toolkit's failure-file text for a user script that exited non-zero."""
    return (f"ExecuteUserScriptError:\nExitCode {rc}\nErrorMessage \"{error_message(stderr_tail)}\""
            f"\nCommand \"{' '.join(cmd)}\"")


def write_success(base: str) -> None:
    try:
        open(os.path.join(base, "output", "success"), "w").close()
    except OSError:
        pass


def write_failure(base: str, message: str) -> None:
    """Write output/failure unless the script wrote one (the toolkit's ``write_failure_file``)."""
    path = os.path.join(base, "output", "failure")
    if os.path.exists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(message)


def _tee_stderr(fd: int, tail: bytearray) -> None:
    out = sys.stderr.buffer
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out.write(chunk)
        out.flush()
        tail.extend(chunk)
        del tail[:-STDERR_TAIL_BYTES]
    os.close(fd)


def run_user_script(cmd: list[str], code_dir: str, env: dict[str, str]) -> tuple[int, str]:
    """Run the script, its stderr teed through; returns (exit code, the tail of its stderr)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        # The agent signals every process of the instance: the script gets SIGTERM itself. Stay
        # alive until it exits so that its exit code and failure file are reported. (A Python
        # handler, not SIG_IGN, which the script would inherit.)
        signal.signal(sig, lambda *_: None)
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(cmd, cwd=code_dir, env=env, stderr=write_fd)
    finally:
        os.close(write_fd)
    tail = bytearray()
    tee = threading.Thread(target=_tee_stderr, args=(read_fd, tail), daemon=True)
    tee.start()
    rc = proc.wait()
    tee.join(5)
    return (128 - rc if rc < 0 else rc), bytes(tail).decode("utf-8", "replace")


def error_message(stderr_tail: str) -> str:
    lines = [ln for ln in stderr_tail.splitlines() if ln.strip()]
    text = "\n".join(lines)
    return text[-ERROR_MESSAGE_CHARS:]


def main(argv: list[str]) -> int:
    base = base_dir()
    code_dir = os.path.join(base, "code")
    try:
        hps = read_hyperparameters(base)
        program = entry_point(hps, dict(os.environ))
        if not program:
            raise ScriptModeError(
                "no entry point: set the hyperparameter sagemaker_program or the environment variable "
                "SAGEMAKER_PROGRAM (trainforge runs framework images in script mode only)")
        submit = submit_directory(hps, dict(os.environ))
        if submit:
            fetch_code(submit, code_dir, base, allowed_roots_from_env())
        os.makedirs(code_dir, exist_ok=True)
        if os.path.exists(os.path.join(code_dir, "requirements.txt")):
            pip(["-r", "requirements.txt"], code_dir, InstallRequirementsError)
        if os.path.exists(os.path.join(code_dir, "setup.py")):
            pip(["."], code_dir, InstallModuleError)
        args = user_args(hps)
        cmd = command(program, code_dir, args)
        env = dict(os.environ)
        env["PYTHONPATH"] = code_dir + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cluster = launchers.cluster(env)
        if cluster.kind:
            env.update(launchers.variables(cluster))
            planned = launchers.plan(cluster, program, cmd, args)
            if planned is None:
                return launchers.serve_worker(cluster, env, code_dir)
            cmd = planned
    except ScriptModeError as exc:
        message = f"{exc.name}:\n{exc}"
        print(message, file=sys.stderr, flush=True)
        write_failure(base, message)
        return 1
    except Exception as exc:  # noqa: BLE001 - reported as the toolkit reports a framework error
        import traceback

        message = f"framework error: \n{traceback.format_exc()}\n{exc}"
        print(message, file=sys.stderr, flush=True)
        write_failure(base, message)
        return 1
    print(INVOKING + " ".join(cmd), flush=True)
    try:
        rc, stderr_tail = run_user_script(cmd, code_dir, env)
    except OSError as exc:
        message = f"ExecuteUserScriptError:\nExitCode 127\nErrorMessage \"{exc}\"\nCommand \"{' '.join(cmd)}\""
        write_failure(base, message)
        print(message, file=sys.stderr, flush=True)
        return 127
    if rc != 0:
        write_failure(base, script_failure(rc, stderr_tail, cmd))
    else:
        write_success(base)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
