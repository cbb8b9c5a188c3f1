"""Open MPI's remote start-up without sshd: ``mpirun`` on the master reaches the other instances here.

SageMaker's framework containers start ``sshd`` on every instance and let ``mpirun`` ssh into the
workers to start its ``orted`` daemons. trainforge's instances run no sshd; instead:

- every worker instance serves :data:`PORT` on the job's network (:func:`serve`), accepting only
  the master instance's address, and runs each command it is sent with ``/bin/sh -c`` (what sshd
  would do), relaying the command's output and exit status back (the ``orted`` stays attached:
  the agent drops its ``--daemonize``);
- the master's ``mpirun`` gets ``-mca plm_rsh_agent "<python> <this file> agent"``: Open MPI calls
  the agent as it would call ``ssh`` (``agent HOST COMMAND...``), and :func:`agent` sends the command
  to HOST's server and mirrors its output and exit status.

Closing the agent's connection (``mpirun`` ended or was killed) kills the command's process group,
as sshd hangs up a session. The worker's server returns once one command has run to its end
(Open MPI starts one ``orted`` per host: ``plm_rsh_no_tree_spawn``).

``ranks COMMAND...`` runs COMMAND with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``
and ``NODE_RANK`` taken from Open MPI's ``OMPI_COMM_WORLD_*`` variables: what torch's ``env://``
initialisation reads, for ``pytorchddp`` scripts started by ``mpirun``.

Only the standard library: Open MPI runs this file by its path, with any interpreter.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

PORT = 7022
OUTPUT, ERROR, EXIT = b"O", b"E", b"X"
_HEADER = struct.Struct("!cI")


def _send(sock: socket.socket, kind: bytes, data: bytes, lock: threading.Lock) -> None:
    with lock:
        sock.sendall(_HEADER.pack(kind, len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the connection closed")
        buf += chunk
    return bytes(buf)


# -- the master's side: Open MPI's rsh agent ------------------------------------------------------

def agent(argv: list[str]) -> int:
    """``agent [options] HOST COMMAND...`` (ssh's calling convention; options are ignored)."""
    args = list(argv)
    while args and args[0].startswith("-"):
        args.pop(0)
    if len(args) < 2:
        print("usage: mpi_remote.py agent HOST COMMAND...", file=sys.stderr)
        return 255
    # orted --daemonize would detach from the session and outlive it: kept attached instead, the
    # session lasts as long as the orted, and a hang-up ends it (see _hang_up_kills)
    host, command = args[0], " ".join(a for a in args[1:] if a != "--daemonize")
    try:
        sock = socket.create_connection((host, PORT), timeout=60)
    except OSError as exc:
        print(f"trainforge: cannot reach {host}:{PORT} to start {command!r}: {exc}", file=sys.stderr)
        return 255
    sock.settimeout(None)
    request = json.dumps({"command": command}).encode() + b"\n"
    sock.sendall(request)
    outs = {OUTPUT: sys.stdout.buffer, ERROR: sys.stderr.buffer}
    try:
        while True:
            kind, size = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
            data = _recv_exact(sock, size)
            if kind == EXIT:
                return int(data.decode())
            outs[kind].write(data)
            outs[kind].flush()
    except ConnectionError:
        print(f"trainforge: the connection to {host} closed before {command!r} ended", file=sys.stderr)
        return 255


# -- the worker's side -----------------------------------------------------------------------------

def _pump(stream: object, sock: socket.socket, kind: bytes, lock: threading.Lock) -> None:
    read = stream.read1  # type: ignore[attr-defined]
    while True:
        data = read(65536)
        if not data:
            return
        try:
            _send(sock, kind, data, lock)
        except OSError:
            return


def _hang_up_kills(sock: socket.socket, proc: subprocess.Popen[bytes]) -> None:
    """The agent went away (mpirun ended or was killed): end the command's process group."""
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)


def _session(conn: socket.socket, env: dict[str, str], cwd: str) -> int | None:
    """Run one request; None when the connection was only a probe (closed without a request)."""
    line = bytearray()
    while not line.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            return None
        line += chunk
    command = str(json.loads(bytes(line))["command"])
    proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=cwd, start_new_session=True)
    lock = threading.Lock()
    pumps = [threading.Thread(target=_pump, args=(s, conn, k, lock), daemon=True)
             for s, k in ((proc.stdout, OUTPUT), (proc.stderr, ERROR))]
    for t in pumps:
        t.start()
    threading.Thread(target=_hang_up_kills, args=(conn, proc), daemon=True).start()
    rc = proc.wait()
    for t in pumps:
        t.join(5)
    try:
        _send(conn, EXIT, str(rc if rc >= 0 else 128 - rc).encode(), lock)
    except OSError:
        pass
    return rc


def serve(master: str, env: dict[str, str], cwd: str, port: int = PORT) -> int:
    """Serve the master's requests until one command has run to its end; returns its exit status."""
    allowed = socket.gethostbyname(master)
    with socket.create_server(("0.0.0.0", port), reuse_port=False) as server:
        while True:
            conn, (peer, _) = server.accept()
            with conn:
                if peer != allowed:
                    continue
                rc = _session(conn, env, cwd)
            if rc is not None:
                return rc


def wait_until_serving(host: str, deadline: float, port: int = PORT) -> bool:
    """Poll until ``host`` accepts connections on ``port`` (a worker's :func:`serve` is up)."""
    while True:
        try:
            socket.create_connection((host, port), timeout=2).close()
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


# -- pytorchddp under mpirun -----------------------------------------------------------------------

RANK_VARIABLES = {"RANK": "OMPI_COMM_WORLD_RANK", "WORLD_SIZE": "OMPI_COMM_WORLD_SIZE",
                  "LOCAL_RANK": "OMPI_COMM_WORLD_LOCAL_RANK", "LOCAL_WORLD_SIZE": "OMPI_COMM_WORLD_LOCAL_SIZE",
                  "NODE_RANK": "OMPI_COMM_WORLD_NODE_RANK"}


def ranks(argv: list[str]) -> int:
    env = dict(os.environ)
    for name, ompi in RANK_VARIABLES.items():
        if ompi in env:
            env.setdefault(name, env[ompi])
    os.execvpe(argv[0], argv, env)
    return 127  # not reached


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "agent":
        sys.exit(agent(sys.argv[2:]))
    if what == "ranks":
        sys.exit(ranks(sys.argv[2:]))
    print("usage: mpi_remote.py agent HOST COMMAND... | ranks COMMAND...", file=sys.stderr)
    sys.exit(2)
