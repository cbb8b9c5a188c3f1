"""A control-plane stand-in and helpers for the agent tests (real agent processes, real HTTP).

The stand-in speaks the agent protocol of docs/INTERNALS.md: it stores each host's events once
(by sequence number), answers ``{"next_seq", "stop"}``, can answer ``stop`` on demand, and can
go down (its port closed: connections refused) and come back on the same port.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO_SRC = str(Path(__file__).resolve().parents[1] / "src")
TOKEN = "test-token-123"


class ControlPlane:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.next_seq: dict[str, int] = {}
        self.requests: list[dict[str, Any]] = []
        self.stop: str | None = None
        self.credential_requests = 0
        self.answer_status: int | None = None  # e.g. 404 = the job is gone
        self.server: ThreadingHTTPServer | None = None
        self.connections: list[socket.socket] = []
        self.port = 0
        self._thread: threading.Thread | None = None
        self.up()

    # -- lifecycle ----------------------------------------------------------------------------
    def up(self) -> None:
        plane = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # headers and body go out in two writes: without this, Nagle + delayed ACK add
                # 40 ms per answer (uvicorn's asyncio sockets have TCP_NODELAY too)
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with plane.lock:
                    plane.connections.append(self.connection)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length))
                if self.path != "/_trainforge/agent/v1/report":
                    return self._send(404, {"message": "no such path"})
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._send(401, {"message": "bad token"})
                status, answer = plane.ingest(body)
                self._send(status, answer)

            def do_GET(self) -> None:
                if self.path == "/_trainforge/agent/v1/credentials" and self.headers.get("Authorization") == TOKEN:
                    with plane.lock:
                        plane.credential_requests += 1
                    return self._send(200, {"AccessKeyId": "AKIDTEST", "SecretAccessKey": "secret",
                                            "Token": "tok", "Expiration": "2099-01-01T00:00:00Z"})
                self._send(403, {"message": "denied"})

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening and cut every open connection (kept-alive ones too)."""
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
        self.server = None
        with self.lock:
            conns, self.connections = self.connections, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def reset(self) -> None:
        """Forget every event (the next agent run starts numbering from 0 again)."""
        with self.lock:
            self.events.clear()
            self.next_seq.clear()
            self.requests.clear()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- protocol -----------------------------------------------------------------------------
    def ingest(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append(body)
            if self.answer_status:
                return self.answer_status, {"message": "gone"}
            host, seq, events = body["host"], int(body["seq"]), body["events"]
            stored = self.next_seq.get(host, 0)
            fresh = events[max(0, stored - seq):]
            if seq <= stored:
                self.events.setdefault(host, []).extend(fresh)
                self.next_seq[host] = max(stored, seq + len(events))
            return 200, {"next_seq": self.next_seq.get(host, 0), "stop": self.stop}

    def host_events(self, host: str = "algo-1") -> list[dict[str, Any]]:
        with self.lock:
            return list(self.events.get(host, []))

    def logs(self, host: str = "algo-1") -> list[str]:
        return [e["message"] for e in self.host_events(host) if e["type"] == "log"]

    def statuses(self, host: str = "algo-1") -> list[str]:
        return [e["status"] for e in self.host_events(host) if e["type"] == "status"]

    def exit_event(self, host: str = "algo-1") -> dict[str, Any] | None:
        return next((e for e in self.host_events(host) if e["type"] == "exit"), None)


@pytest.fixture(name="control")
def control_fixture() -> Any:
    """Import ``control_fixture`` into a test module to use the fixture ``control``."""
    plane = ControlPlane()
    yield plane
    if plane.server is not None:
        plane.down()


def base_request(name: str, **overrides: Any) -> dict[str, Any]:
    req: dict[str, Any] = {
        "TrainingJobName": name,
        "RoleArn": "arn:aws:iam::000000000000:role/R",
        "AlgorithmSpecification": {"TrainingImage": "trainforge/command:1", "TrainingInputMode": "File"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    req.update(overrides)
    return req


def shell(script: str) -> dict[str, Any]:
    """AlgorithmSpecification fields that run a shell script."""
    return {"ContainerEntrypoint": ["/bin/sh", "-c"], "ContainerArguments": [script]}


def make_spec(tmp_path: Path, control: ControlPlane, *, request: dict[str, Any] | None = None,
              host: str = "algo-1", hosts: list[str] | None = None, isolation: str = "none",
              runtime: dict[str, Any] | None = None, **extra: Any) -> Path:
    """Write an instance spec under tmp_path/job/<host>/spec.json; returns its path."""
    job_dir = tmp_path / "job"
    inst = job_dir / host
    inst.mkdir(parents=True, exist_ok=True)
    request = request or base_request("job-1")
    spec = {
        "job_name": request["TrainingJobName"],
        "job_arn": f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{request['TrainingJobName']}",
        "region": "us-east-1", "account_id": "000000000000", "attempt": 1,
        "host": host, "hosts": hosts or [host], "instance_type": "ml.m5.large",
        "job_dir": str(job_dir), "instance_dir": str(inst), "request": request,
        "runtime": runtime or {"command": ["/bin/sh", "-c"], "python": sys.executable,
                               "image": "trainforge/command:1", "error": None},
        "control_url": control.url, "token": TOKEN, "isolation": isolation,
        "stop_grace_seconds": 10, "deadline": time.time() + 600, "s3_endpoint_url": None,
        "allowed_local_roots": [str(tmp_path)], "file_systems": {}, "num_cpus": 2, "num_gpus": 0,
    }
    if isolation == "sandbox" and "sandbox" not in extra:
        spec["sandbox"] = {**sandbox_host().settings, "cpus": 2, "memory_mb": 4096}
    spec.update(extra)
    path = inst / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def agent_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def start_agent(spec_path: Path) -> subprocess.Popen[bytes]:
    log = open(spec_path.parent / "agent.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "trainforge.agent", str(spec_path)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            env=agent_env(), start_new_session=True)


def run_agent(spec_path: Path, timeout: float = 60) -> int:
    proc = start_agent(spec_path)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"agent did not exit; log:\n{agent_log(spec_path)}") from None


def agent_log(spec_path: Path) -> str:
    p = spec_path.parent / "agent.log"
    return p.read_text(errors="replace") if p.exists() else ""


_SANDBOX: list[Any] = []


def sandbox_host() -> Any:
    """The sandbox of this machine (probed once, in a directory shared by the test session)."""
    if not _SANDBOX:
        from trainforge.sandbox.host import probe

        shared = os.path.join(tempfile.gettempdir(), f"trainforge-test-sandbox-{os.getuid()}")
        _SANDBOX.append(probe(shared, shared))
    return _SANDBOX[0]


def namespaces_available() -> bool:
    return bool(sandbox_host().available)


needs_namespaces = pytest.mark.skipif(not namespaces_available(), reason="needs root and runc (the sandbox)")
