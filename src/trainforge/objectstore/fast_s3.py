"""The hot paths against a custom S3 endpoint (GET, ListObjectsV2): signed HTTP/1.1 on kept-alive sockets.

Per request, botocore spends about 3 ms of CPU (endpoint rules, event hooks, parsing) and urllib3 with
``http.client`` about 0.4 ms (pool bookkeeping, header parsing through the ``email`` package) — more
than a 1 MiB object takes to move on loopback. Here a request costs about 0.05 ms: a SigV4 signature
(the signing key derived once a day), the request written with one ``sendall``, the answer's head
parsed from the first ``recv``, and the body read with ``recv_into`` straight into the caller's
buffer. Connections are kept alive in a small shared pool.

A listing page is parsed with ElementTree (botocore parses every LastModified with dateutil: 0.15 s
of CPU for 1,000 keys). Only the happy path is served here: a 200/206 with a ``Content-Length``, a
listing that parses. Anything else (another status, a chunked body, a failed connection) makes
:meth:`FastS3.get` / :meth:`FastS3.list_page` return None, and the caller asks boto3, which retries
or raises the proper ``ClientError``. A body that ends early raises
:class:`ConnectionError` naming the bytes missing (never a short file taken as complete).
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import ssl
import threading
import time
from functools import lru_cache
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit
from xml.etree import ElementTree

from ..sigv4_key import signing_key
from .base import Location

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0
HEAD_LIMIT = 64 * 1024
IDLE_LIMIT = 64  # kept-alive connections at most
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_signing_key = lru_cache(maxsize=16)(signing_key)  # (secret, date, region, service): one key a day


def sign(method: str, host: str, path: str, query: str, headers: dict[str, str], creds: Any,
         region: str) -> dict[str, str]:
    """``headers`` (lower-case names) plus SigV4's: every header given is signed, with ``host``."""
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    signed = {"host": host, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": amz_date, **headers}
    if creds.token:
        signed["x-amz-security-token"] = creds.token
    names = sorted(signed)
    canonical = "\n".join((method, path, query, "".join(f"{n}:{' '.join(signed[n].split())}\n" for n in names),
                           ";".join(names), EMPTY_SHA256))
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = hmac.new(_signing_key(creds.secret_key, amz_date[:8], region, "s3"), to_sign.encode(),
                         hashlib.sha256).hexdigest()
    signed["authorization"] = (f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
                               f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return signed


def canonical_query(params: dict[str, str]) -> str:
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))


class Answer:
    """One response: ``status``, ``headers`` (lower-case names) and its body as a stream
    (``readinto``, ``read``, ``close``). Closing it before the end drops the connection.
    ``length`` is None for a chunked body, which is only read whole (``read()``)."""

    def __init__(self, owner: FastS3, sock: socket.socket, status: int, headers: dict[str, str],
                 first: bytes, length: int | None, reusable: bool) -> None:
        self._owner = owner
        self._sock: socket.socket | None = sock
        self.status = status
        self.headers = headers
        self._first = memoryview(first)
        self.length = length
        self._left = -1 if length is None else length
        self._reusable = reusable

    def readinto(self, buf: Any) -> int:
        if self.length is None:
            raise ValueError("a chunked body is read whole")
        want = min(len(buf), self._left)
        if not want:
            return 0
        if self._first:
            n = min(want, len(self._first))
            buf[:n] = self._first[:n]
            self._first = self._first[n:]
        else:
            n = self._recv_into(buf, want)
        self._left -= n
        return n

    def _recv_into(self, buf: Any, want: int) -> int:
        assert self._sock is not None
        n = self._sock.recv_into(buf, want)
        if not n:
            raise ConnectionError("the connection closed with "
                                  + (f"{self._left} of {self.length} bytes" if self.length else "part")
                                  + " of the body unread")
        return n

    def read(self, n: int = -1) -> bytes:
        if self.length is None:
            return self._read_chunked()
        size = self._left if n is None or n < 0 else min(n, self._left)
        out = bytearray(size)
        view = memoryview(out)
        got = 0
        while got < size:
            got += self.readinto(view[got:])
        return bytes(out)

    def _read_chunked(self) -> bytes:
        pending = bytearray(self._first)
        self._first = memoryview(b"")
        scratch = bytearray(HEAD_LIMIT)
        pos = 0

        def line() -> bytes:
            nonlocal pos
            while (end := pending.find(b"\r\n", pos)) < 0:
                pending.extend(scratch[:self._recv_into(scratch, len(scratch))])
            text, pos = bytes(pending[pos:end]), end + 2
            return text

        out = bytearray()
        while size := int(line().split(b";")[0], 16):
            while len(pending) < pos + size + 2:
                pending.extend(scratch[:self._recv_into(scratch, len(scratch))])
            out += pending[pos:pos + size]
            pos += size + 2
        while line():  # trailers, up to the empty line
            pass
        self._left = 0
        return bytes(out)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._left == 0 and self._reusable:
            self._owner.release(sock)
        else:
            sock.close()


class FastS3:
    """Signed requests to one S3 endpoint (path-style addressing) with ``session``'s credentials."""

    def __init__(self, endpoint: str, session: Any, region: str, ca_bundle: str | None = None) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) endpoint: {endpoint}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.host_header = parts.netloc
        self.base_path = parts.path.rstrip("/")
        self.session = session
        self.region = region
        self._ssl = ssl.create_default_context(cafile=ca_bundle) if self.tls else None
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._ssl is not None:
            sock = self._ssl.wrap_socket(sock, server_hostname=self.host)
        sock.settimeout(READ_TIMEOUT)
        return sock

    def release(self, sock: socket.socket) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < IDLE_LIMIT:
                self._idle.append(sock)
                return
        sock.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close()

    def request(self, method: str, bucket: str, key: str = "", params: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> Answer | None:
        """Send one request; its answer (any status), or None when no connection could answer."""
        creds = self.session.get_credentials()
        if creds is None:
            return None
        creds = creds.get_frozen_credentials()
        path = f"{self.base_path}/{quote(bucket, safe='')}"
        if key:
            path += "/" + quote(key, safe="/~")
        query = canonical_query(params or {})
        signed = sign(method, self.host_header, path, query, headers or {}, creds, self.region)
        head = (f"{method} {path}{'?' + query if query else ''} HTTP/1.1\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in signed.items()) + "\r\n").encode()
        with self._lock:
            sock = self._idle.pop() if self._idle else None
        for _attempt in range(2):
            reused = sock is not None
            try:
                if sock is None:
                    sock = self._connect()
                sock.sendall(head)
                return self._answer(sock, method)
            except (OSError, ValueError):
                if sock is not None:
                    sock.close()
                if not reused:
                    return None
                sock = None  # a kept-alive connection the server had closed: once more, on a new one
        return None

    def _answer(self, sock: socket.socket, method: str) -> Answer:
        data = b""
        while True:
            chunk = sock.recv(HEAD_LIMIT)
            if not chunk:
                raise ConnectionError("the connection closed before an answer")
            data += chunk
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(data) > HEAD_LIMIT:
                raise ValueError("an answer's head over 64 KiB")
        lines = data[:end].decode("latin-1").split("\r\n")
        version, status = lines[0].split(" ", 2)[:2]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length", "")
        body_len: int | None
        if method == "HEAD":
            body_len = 0
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body_len = None
        elif length.isdigit() and "transfer-encoding" not in headers:
            body_len = int(length)
        else:
            raise ValueError("an answer without a Content-Length")
        reusable = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        return Answer(self, sock, int(status), headers, data[end + 4:], body_len, reusable)

    def get(self, loc: Location, start: int | None, end: int | None, etag: str | None) -> Answer | None:
        """A GET of bytes ``start..end`` (inclusive; None: to the end) when answered exactly, else None."""
        headers: dict[str, str] = {}
        if start is not None:
            headers["range"] = f"bytes={start}-{'' if end is None else end}"
        if etag:
            headers["if-match"] = etag
        answer = self.request("GET", loc.bucket, loc.key, headers=headers)
        if answer is None:
            return None
        if answer.length is not None and (
                answer.status == 206 or (answer.status == 200 and whole_answer(answer.headers, start, end))):
            return answer
        answer.close()
        return None

    def list_page(self, bucket: str, prefix: str, token: str | None) -> ListPage | None:
        """One ListObjectsV2 page (keys decoded), or None when not answered with a listing."""
        params = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
        if token is not None:
            params["continuation-token"] = token
        answer = self.request("GET", bucket, params=params)
        if answer is None:
            return None
        try:
            body = answer.read() if answer.status == 200 else b""
        except (OSError, ValueError):
            body = b""
        finally:
            answer.close()
        try:
            return parse_listing(body) if body else None
        except (ElementTree.ParseError, ValueError):
            return None


ListPage = tuple[list[tuple[str, int, str | None]], str | None]  # [(key, size, etag)], next token


def parse_listing(xml: bytes) -> ListPage:
    """A ListObjectsV2 answer's objects and its continuation token (None: the last page)."""
    root = ElementTree.fromstring(xml)
    if _local(root.tag) != "ListBucketResult":
        raise ValueError(f"not a listing: {root.tag}")
    fields: dict[str, str] = {}
    objects: list[tuple[str, int, str | None]] = []
    for node in root:
        tag = _local(node.tag)
        if tag != "Contents":
            fields[tag] = node.text or ""
            continue
        obj = {_local(c.tag): c.text or "" for c in node}
        objects.append((obj["Key"], int(obj["Size"]), obj.get("ETag")))
    if fields.get("EncodingType") == "url":
        # form-encoded as AWS does it: a space is "+", a "+" is "%2B"
        objects = [(unquote_plus(k), size, etag) for k, size, etag in objects]
    truncated = fields.get("IsTruncated") == "true"
    token = fields.get("NextContinuationToken")
    if truncated and not token:
        raise ValueError("a truncated listing without a continuation token")
    return objects, token if truncated else None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def whole_answer(headers: dict[str, str], start: int | None, end: int | None) -> bool:
    """Whether a 200 answers the request exactly.

    rclone answers a Range with 200 instead of 206, with the bytes asked for and a ``Content-Range``
    naming them: that is the answer when its range is the one requested. A 200 without one is the
    whole object: the answer when the range starts at 0 and the object's length is ``end + 1``.
    """
    if start is None:
        return True
    served = headers.get("content-range", "")
    if served:
        first, _, last = served.removeprefix("bytes ").partition("/")[0].partition("-")
        return first == str(start) and (end is None or last == str(end))
    if end is None:
        return start == 0
    length = headers.get("content-length", "")
    return start == 0 and length.isdigit() and int(length) == end + 1
