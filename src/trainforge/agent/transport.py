"""A minimal HTTP/1.1 client for the agent's reports: JSON POSTs over one kept-alive socket.

Why not ``http.client``: it imports ``email`` and ``ssl`` — tens of milliseconds of CPU that
would compete with the agent's main thread while it starts the user's code. This client needs
only ``socket``. It understands what a report answer can look like: a status line, headers, a
body sized by Content-Length, chunked, or ended by the server closing the connection. ``https``
control-plane URLs use ``http.client`` (TLS needs ``ssl`` anyway).
"""

from __future__ import annotations

import socket
from typing import IO, Any

MAX_HEADER_LINES = 200


class HttpError(OSError):
    """The answer could not be read as HTTP."""


class Connection:
    def __init__(self, url: str, timeout: float):
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.scheme = parts.scheme or "http"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.netloc = parts.netloc
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file: IO[bytes] | None = None
        self._tls: Any = None

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """One request; a kept-alive connection the server closed meanwhile is reopened once
        (reports are idempotent, so resending is harmless)."""
        if self.scheme == "https":
            return self._post_tls(path, body, headers)
        reused = self._sock is not None
        try:
            return self._post_once(path, body, headers)
        except (HttpError, ConnectionResetError, BrokenPipeError):
            self.close()
            if not reused:
                raise
        return self._post_once(path, body, headers)

    def connect(self) -> None:
        """Open the socket now (plain HTTP; a TLS connection is made by its first request)."""
        if self._sock is None and self.scheme != "https":
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._file = self._sock.makefile("rb")

    def _post_once(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        self.connect()
        assert self._sock is not None
        head = [f"POST {path} HTTP/1.1", f"Host: {self.netloc}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self._sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        return self._read_response()

    def _read_response(self) -> tuple[int, bytes]:
        f = self._file
        assert f is not None
        status_line = f.readline(65536)
        if not status_line:
            raise HttpError("the control plane closed the connection")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise HttpError(f"not an HTTP answer: {status_line[:100]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADER_LINES):
            line = f.readline(65536)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = _read_exact(f, int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = _read_chunked(f)
        else:
            body = f.read()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close" or parts[0] == b"HTTP/1.0":
            self.close()
        return status, body

    def _post_tls(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        import http.client

        if self._tls is None:
            self._tls = http.client.HTTPSConnection(self.netloc, timeout=self.timeout)
        self._tls.request("POST", path, body=body, headers=headers)
        response = self._tls.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        for thing in (self._file, self._sock, self._tls):
            if thing is not None:
                try:
                    thing.close()
                except OSError:
                    pass
        self._file = self._sock = self._tls = None


def _read_exact(f: IO[bytes], n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise HttpError(f"short body: {len(data)} of {n} bytes")
    return data


def _read_chunked(f: IO[bytes]) -> bytes:
    out = bytearray()
    while True:
        size_line = f.readline(65536)
        if not size_line:
            raise HttpError("truncated chunked body")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while f.readline(65536) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return bytes(out)
        out += _read_exact(f, size)
        f.readline(65536)  # the CRLF after each chunk
