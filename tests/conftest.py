"""Shared fixtures: real trainforge servers on loopback ports, moto's S3 server, PostgreSQL.

Everything here is a real process talking HTTP: the tests use boto3 / awscli against them.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")


TERMINAL = ("Completed", "Failed", "Stopped")


def wait_until(probe: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
               message: str = "condition", *, until: Callable[[Any], Any] = bool) -> Any:
    """The suite's one way to wait for state: call ``probe`` until ``until(value)`` holds (by default:
    until the value is truthy) and return that value; after ``timeout`` s fail naming the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() > deadline:
            shown = repr(value)
            raise AssertionError(f"timed out after {timeout} s waiting for {message}; last value: "
                                 f"{shown if len(shown) <= 2000 else shown[:2000] + ' ...'}")
        time.sleep(interval)


def wait_for_job(sm: Any, name: str, *statuses: str, secondary: bool = False, timeout: float = 60.0,
                 interval: float = 0.1) -> dict[str, Any]:
    """Poll DescribeTrainingJob until the job's TrainingJobStatus (SecondaryStatus with ``secondary``)
    is one of ``statuses`` (default: a terminal status); returns that description."""
    wanted = statuses or TERMINAL
    key = "SecondaryStatus" if secondary else "TrainingJobStatus"
    described: dict[str, Any] = wait_until(
        lambda: sm.describe_training_job(TrainingJobName=name), timeout=timeout, interval=interval,
        message=f"{name}: {key} in {wanted}", until=lambda d: d.get(key) in wanted)
    return described


@contextmanager
def reserved_port() -> Iterator[int]:
    """A port for a server that must be told its port before it starts (the embedded server is found
    at $TRAINFORGE_PORT, so port 0 cannot do). Every other server here binds port 0 and reports the
    port it got. This one lies outside the kernel's ephemeral range, where no bind to port 0 and no
    outgoing connection lands, and a lock file keeps other test processes off it until the end."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    candidates = [*range(max(1024, low - 4000), low), *range(high + 1, min(65536, high + 4001))]
    random.shuffle(candidates)
    locks = Path(tempfile.gettempdir()) / "trainforge-test-ports"
    locks.mkdir(exist_ok=True)
    for port in candidates:
        with open(locks / f"{port}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another test process holds it
            with socket.socket() as probe:  # and nothing else listens there (a server started by hand)
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
            yield port
            return
    raise AssertionError("no free port outside the ephemeral range")


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie waiting for its parent to collect it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] != b"Z"


def instance_records(data_dir: Path, job_name: str = "") -> list[dict[str, Any]]:
    """The ``instance.json`` of every instance (of ``job_name``) whose agent is still alive."""
    records = []
    for path in (data_dir / "jobs").glob(f"*/*/{job_name or '*'}/attempt-*/algo-*/instance.json"):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if info.get("agent_pid") and alive(int(info["agent_pid"])):
            records.append(info)
    return records


class ServerProcess:
    """A trainforge server in its own process, started and stopped by the tests."""

    def __init__(self, data_dir: Path, config: dict[str, Any] | None = None,
                 database_url: str | None = None, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = 0  # the first start binds port 0 and reads the port the server reports
        self.config = dict(config or {})
        self.config.setdefault("stop_grace_seconds", 10)
        # Test jobs run host commands under this image name (ContainerEntrypoint gives the command).
        self.config.setdefault("images", [{"image": "trainforge/command:*", "kind": "command",
                                           "entrypoint": ["/bin/sh", "-c"]}])
        self.database_url = database_url
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"

    @property
    def endpoint(self) -> str:
        assert self.port, "the server has not started yet"
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        """Start the server; a restart comes back on the port of the first start (its agents know it)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.data_dir / "server-config.json"
        cfg_path.write_text(json.dumps(self.config))
        args = [sys.executable, "-m", "trainforge.server", "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--config", str(cfg_path)]
        if self.database_url:
            args += ["--database-url", self.database_url]
        env = {**os.environ, **self.env}
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        self.port = int(wait_until(lambda: self._reported_port(offset), timeout=30,
                                   message=f"the server's port in {self.log_path}"))
        wait_until(self._healthy, timeout=30, message=f"server on {self.endpoint} ({self.log_path})")
        return self

    def _reported_port(self, offset: int) -> str | None:
        """The port named in the line ``trainforge listening on http://HOST:PORT`` of this start."""
        assert self.proc is not None
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            found = re.search(rb"^trainforge listening on http://[^ ]+:(\d+) ", log.read(), re.MULTILINE)
        if found:
            return found.group(1).decode()
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited: {self.log_path.read_text()[-3000:]}")
        return None

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited: {self.log_path.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"GET /_trainforge/health HTTP/1.0\r\n\r\n")
                return b"200" in s.recv(64)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill_agents(self) -> None:
        """Agents outlive their server by design; a test's must not outlive the test."""
        for info in instance_records(self.data_dir):
            for pgid in (info.get("agent_pid"), info.get("pgid")):
                if pgid:
                    try:
                        os.killpg(int(pgid), signal.SIGKILL)
                    except OSError:
                        pass

    def kill(self) -> None:
        """SIGKILL: a crash, as far as the server can tell."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def client(self, service: str = "sagemaker", *, validate: bool = True, region: str = "us-east-1",
               access_key: str = "testing", secret_key: str = "testing", retries: int = 0,
               read_timeout: float = 30) -> Any:
        return boto3.client(
            service, endpoint_url=self.endpoint, region_name=region, aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=BotoConfig(parameter_validation=validate, retries={"max_attempts": retries, "mode": "standard"},
                              read_timeout=read_timeout),
        )

    def raw(self, operation: str, body: Any, prefix: str = "SageMaker.") -> tuple[int, Any]:
        """POST a raw body (dict → JSON, or bytes) and return (status, parsed JSON)."""
        import http.client

        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("POST", "/", body=data, headers={
            "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": prefix + operation,
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sagemaker/aws4_request, "
                             "SignedHeaders=host, Signature=00"})
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        return resp.status, (json.loads(payload) if payload else None)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 in server mode: a real HTTP endpoint."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def release_session_volumes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end: instance volumes still mounted under the session's directories (servers stopped
    while their jobs ran) are unmounted, so pytest can remove them later."""
    yield
    if os.geteuid() == 0:
        from trainforge.sandbox.volume import mounted_under, release_under

        base = str(tmp_path_factory.getbasetemp())
        if mounted_under(base):
            release_under(base)


@pytest.fixture(autouse=True)
def release_volumes(request: pytest.FixtureRequest) -> Iterator[None]:
    """Instance volumes a test leaves mounted under its tmp_path (a leader that never ran to release
    them) are unmounted after it, so pytest can remove the directory."""
    yield
    tmp = request.node.funcargs.get("tmp_path")
    if tmp is not None and os.geteuid() == 0:
        from trainforge.sandbox.volume import mounted_under, release_under

        if mounted_under(str(tmp)):
            release_under(str(tmp))


@pytest.fixture(scope="session", autouse=True)
def aws_environment(s3_endpoint: str) -> Iterator[None]:
    """Every server and client in the tests uses moto's S3 and fake credentials."""
    saved = dict(os.environ)
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
    })
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL_SAGEMAKER", "AWS_ENDPOINT_URL"):
        os.environ.pop(key, None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def s3(s3_endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3: Any) -> str:
    """A new, empty bucket on moto's S3 for one test; trainforge's own S3 client starts afresh."""
    from trainforge import objectstore

    objectstore.reset_client()
    name = f"tf-test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL cluster (Debian's postgresql package), or skip where it is not installed."""
    if not (PG_BIN / "initdb").exists():
        if os.environ.get("CI"):
            raise AssertionError("PostgreSQL is not installed: .ci/run must install Debian's postgresql")
        pytest.skip("PostgreSQL binaries not installed")
    base = Path(tempfile.mkdtemp(prefix="tf-pg-"))
    shutil.chown(base, "postgres", "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(as_pg + [str(PG_BIN / "initdb"), "-D", str(base / "data"), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    # No TCP port at all: the cluster listens only on a Unix socket in its own directory.
    subprocess.run(as_pg + [str(PG_BIN / "pg_ctl"), "-D", str(base / "data"), "-l", str(base / "log"), "-w",
                            "-o", f"-k {base} -c listen_addresses='' -c fsync=off", "start"],
                   check=True, capture_output=True)
    yield f"postgresql://postgres@/postgres?host={base}"
    subprocess.run(as_pg + [str(PG_BIN / "pg_ctl"), "-D", str(base / "data"), "-m", "immediate", "stop"],
                   capture_output=True, check=False)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def server_factory(tmp_path_factory: pytest.TempPathFactory,
                   shared_dir: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def make(config: dict[str, Any] | None = None, database_url: str | None = None,
             data_dir: Path | None = None, **kw: Any) -> ServerProcess:
        # The tests' scripts coordinate through files in their tmp_path (gates, markers) and run
        # programs from shared_dir: the sandboxed instances see both at their paths (config
        # sandbox_mounts), as the uid they run as. Not a data directory's parent, though.
        roots = [Path(r) for r in (config or {}).get("allowed_local_roots") or []] + [shared_dir]
        mounts = [r for r in roots if data_dir is None or not Path(data_dir).resolve().is_relative_to(r.resolve())]
        if "sandbox_mounts" not in (config or {}):
            config = {**(config or {}), "sandbox_mounts": [str(r) for r in mounts]}
            for root in mounts:
                shared_with_instances(root)
        srv = ServerProcess(data_dir or tmp_path_factory.mktemp("tf"), config, database_url, **kw).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
        srv.kill_agents()


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory every test server's instances see at its path: programs the tests run there."""
    return tmp_path_factory.mktemp("instances-see")


def shared_with_instances(root: Path) -> None:
    """``root`` and what is in it writable by the instances' root (an unprivileged host uid), its
    parents traversable; what the test makes there later too (the test process's umask becomes 0)."""
    if not root.is_dir():
        return
    os.umask(0)
    os.chmod(root, 0o777)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | (0o777 if name in dirnames else 0o666))
    for parent in root.parents:
        if parent == Path("/") or parent == Path(tempfile.gettempdir()):
            break
        os.chmod(parent, parent.stat().st_mode | 0o011)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server shared by the tests that only need the API (tests use unique job names)."""
    srv = ServerProcess(tmp_path_factory.mktemp("tf-shared")).start()
    yield srv
    srv.stop()
    srv.kill_agents()


@pytest.fixture
def home(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A user's environment with a fresh $TRAINFORGE_HOME and $TRAINFORGE_PORT and no AWS configuration:
    the first trainforge command starts the embedded server there; it is ended afterwards."""
    with reserved_port() as port:
        env = {"TRAINFORGE_HOME": str(tmp_path / "tfhome"), "TRAINFORGE_PORT": str(port),
               "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
        yield env
        pid_file = Path(env["TRAINFORGE_HOME"]) / "server.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


_counter = [0]


def unique_name(prefix: str = "job") -> str:
    _counter[0] += 1
    return f"{prefix}-{os.getpid()}-{int(time.time() * 1000) % 10_000_000}-{_counter[0]}"


def stop_quietly(sm: Any, name: str) -> None:
    """Stop a job unless it has ended already (a minimal job may finish before the stop arrives)."""
    from botocore.exceptions import ClientError

    try:
        sm.stop_training_job(TrainingJobName=name)
    except ClientError as exc:
        error = exc.response["Error"]
        assert error["Code"] == "ValidationException" and "is in status" in error["Message"], error


def read_model(uri: str, s3: Any = None) -> dict[str, bytes]:
    """The files of a job's model archive (``file://``, or ``s3://`` read with ``s3``, else on moto), by name."""
    if uri.startswith("s3://"):
        bucket, key = uri[len("s3://"):].split("/", 1)
        if s3 is None:
            s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"], region_name="us-east-1")
        source: Any = io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    else:
        assert uri.startswith("file://"), uri
        source = uri[len("file://"):]
    with tarfile.open(fileobj=source) if isinstance(source, io.BytesIO) else tarfile.open(source) as archive:
        return {m.name.lstrip("./"): archive.extractfile(m).read()  # type: ignore[union-attr]
                for m in archive.getmembers() if m.isfile()}


def minimal_request(name: str, **overrides: Any) -> dict[str, Any]:
    """A valid CreateTrainingJob request that runs nothing heavy."""
    req: dict[str, Any] = {
        "TrainingJobName": name,
        "RoleArn": "arn:aws:iam::000000000000:role/SageMakerRole",
        "AlgorithmSpecification": {"TrainingImage": "trainforge/command:latest", "TrainingInputMode": "File",
                                   "ContainerEntrypoint": ["/bin/sh", "-c"], "ContainerArguments": ["true"]},
        "OutputDataConfig": {"S3OutputPath": "s3://trainforge-test-output/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }
    req.update(overrides)
    return req
