"""The embedded default: a local trainforge server started in the background on first use.

With no endpoint configured and nothing answering at ``127.0.0.1:$TRAINFORGE_PORT`` (default
8080), the first command starts ``trainforge server`` detached (its own session, so closing the
terminal does not end it), with its data, pid file (``server.pid``) and log (``server.log``) in
``$TRAINFORGE_HOME`` (default ``~/.trainforge``). Later commands find it answering and reuse it;
``trainforge server stop`` ends it. A lock file serialises concurrent first commands.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..config import DEFAULT_PORT, default_home
from .errors import CLIError

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def home() -> Path:
    return default_home().expanduser().resolve()


def port() -> int:
    raw = os.environ.get("TRAINFORGE_PORT")
    try:
        return int(raw) if raw else DEFAULT_PORT
    except ValueError as exc:
        raise CLIError(f"TRAINFORGE_PORT must be a port number, not {raw!r}") from exc


def endpoint() -> str:
    return f"http://{HOST}:{port()}"


def pid_path() -> Path:
    return home() / "server.pid"


def log_path() -> Path:
    return home() / "server.log"


def answering(host: str = HOST, port_number: int | None = None, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port_number or port()), timeout=timeout):
            return True
    except OSError:
        return False


def read_pid() -> int | None:
    try:
        return int(pid_path().read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def is_our_server(pid: int) -> bool:
    """The process exists and (where /proc tells) is a trainforge server."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            args = cmdline.read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            return False
        return b"trainforge.cli" in args and b"server" in args and state != "Z"
    return True


@contextmanager
def _lock() -> Iterator[None]:
    home().mkdir(parents=True, exist_ok=True)
    with open(home() / "server.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_running(stderr: IO[str], env: dict[str, str] | None = None) -> str:
    """The embedded server's endpoint, starting the server first if nothing answers there."""
    url = endpoint()
    if answering():
        return url
    with _lock():
        if answering():
            return url
        process = _spawn(env)
        pid_path().write_text(f"{process.pid}\n")
        print(f"trainforge: started a local server at {url} in the background (pid {process.pid}; "
              f"data and log in {home()}). `trainforge server stop` ends it.", file=stderr, flush=True)
        _wait_until_answering(process)
    return url


def _spawn(env: dict[str, str] | None) -> subprocess.Popen[bytes]:
    home().mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "trainforge.cli", "server", "--host", HOST, "--port", str(port()),
               "--data-dir", str(home())]
    with open(log_path(), "ab") as log:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, cwd=str(home()),
                                env=env if env is not None else dict(os.environ))


def _wait_until_answering(process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if answering(timeout=0.2):
            return
        code = process.poll()
        if code is not None:
            pid_path().unlink(missing_ok=True)
            raise CLIError(f"trainforge: the local server exited during start-up (exit code {code}); "
                           f"the end of {log_path()}:\n{_log_tail()}")
        time.sleep(0.05)
    raise CLIError(f"trainforge: the local server did not answer at {endpoint()} within "
                   f"{START_TIMEOUT:.0f} s; see {log_path()}:\n{_log_tail()}")


def _log_tail(lines: int = 20) -> str:
    try:
        return "\n".join(log_path().read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Status:
    endpoint: str
    answering: bool
    pid: int | None
    running: bool
    home: Path
    log: Path


def status() -> Status:
    pid = read_pid()
    running = pid is not None and is_our_server(pid)
    return Status(endpoint(), answering(), pid, running, home(), log_path())


def stop() -> str:
    """End the background server; a message saying what happened."""
    pid = read_pid()
    if pid is None or not is_our_server(pid):
        pid_path().unlink(missing_ok=True)
        if answering():
            return (f"no background server started by trainforge is running (no live pid in {pid_path()}), "
                    f"but something answers at {endpoint()}: stop it where it was started")
        return "no background trainforge server is running"
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, STOP_TIMEOUT):
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)
        pid_path().unlink(missing_ok=True)
        return f"the server (pid {pid}) did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM; killed it"
    pid_path().unlink(missing_ok=True)
    return f"stopped the background server (pid {pid}) at {endpoint()}"


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_our_server(pid):
            return True
        time.sleep(0.05)
    return False
