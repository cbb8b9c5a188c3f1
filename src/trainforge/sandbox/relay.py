"""Services the agent runs inside an instance's network namespace: TCP relays and the credentials endpoint.

Each is a listening socket created inside the instance's namespace (by :mod:`.network`, with
:func:`.netns.inside`) and served by threads of the agent, which stay in the host's namespace:

- :func:`relay` copies every accepted connection to and from the host's ``127.0.0.1:PORT``
  (``splice(2)`` through a pipe, no copy into Python), so a service of the host's loopback (the
  S3 endpoint) appears at the same address inside, and nothing else of the host's loopback does;
- :func:`credentials_endpoint` answers ``GET CREDENTIALS_PATH`` carrying the instance's token in
  ``Authorization`` with the bytes the agent's callable returns (container credentials, as the
  ECS/SageMaker endpoint at 169.254.170.2 does); any other request gets 403 or 404.

:class:`Listener` is the accept loop both share; ``close()`` stops it and ends the connections it
accepted.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable

CREDENTIALS_ADDRESS = "169.254.170.2"
CREDENTIALS_PATH = "/v2/credentials"
CHUNK = 1 << 20


class Listener:
    """Accepts on ``sock`` in a thread and hands each connection to ``handle`` in a thread of its own."""

    def __init__(self, sock: socket.socket, handle: Callable[[socket.socket], None], name: str) -> None:
        self.sock = sock
        self.handle = handle
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, name=name, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            if not self.adopt(conn):
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def adopt(self, conn: socket.socket) -> bool:
        """Count ``conn`` among the sockets :meth:`close` shuts down; False (and closed) once closed."""
        with self.lock:
            if not self.closed:
                self.open.add(conn)
                return True
        conn.close()
        return False

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handle(conn)
        except OSError:
            pass
        finally:
            self.release(conn)

    def release(self, conn: socket.socket) -> None:
        with self.lock:
            self.open.discard(conn)
        conn.close()

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            conns = list(self.open)
        for s in [self.sock, *conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept()/splice()
            except OSError:
                pass
        self.sock.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until end of stream, then end ``dst``'s sending side."""
    r, w = os.pipe()
    try:
        while True:
            n = os.splice(src.fileno(), w, CHUNK, flags=os.SPLICE_F_MOVE)
            if n == 0:
                break
            while n:
                n -= os.splice(r, dst.fileno(), n, flags=os.SPLICE_F_MOVE)
    except OSError:
        pass
    finally:
        os.close(r)
        os.close(w)
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def relay(sock: socket.socket, port: int) -> Listener:
    """Relay connections accepted on ``sock`` to the host's ``127.0.0.1:port``."""

    def handle(conn: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", port))
        if not listener.adopt(upstream):
            return
        try:
            back = threading.Thread(target=_pump, args=(upstream, conn), daemon=True)
            back.start()
            _pump(conn, upstream)
            back.join()
        finally:
            listener.release(upstream)

    listener = Listener(sock, handle, f"relay-{port}")
    return listener


def credentials_endpoint(sock: socket.socket, credentials: Callable[[], bytes], token: str) -> Listener:
    """Serve ``credentials()`` on ``sock`` to requests authorized with ``token``."""
    import hmac  # here: importing this module stays cheap
    from http.server import BaseHTTPRequestHandler

    expected = token.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            given = (self.headers.get("Authorization") or "").encode()
            if self.path.split("?", 1)[0] != CREDENTIALS_PATH:
                self.reply(404, b'{"message":"not found"}')
            elif not hmac.compare_digest(given, expected):
                self.reply(403, b'{"message":"forbidden"}')
            else:
                try:
                    body = credentials()
                except Exception:  # noqa: BLE001 (whatever failed, the client gets a 503 and retries)
                    self.reply(503, b'{"message":"credentials unavailable"}')
                else:
                    self.reply(200, body)

        def reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    def handle(conn: socket.socket) -> None:
        conn.settimeout(30)
        Handler(conn, conn.getpeername(), None)  # type: ignore[arg-type]

    return Listener(sock, handle, "credentials")
