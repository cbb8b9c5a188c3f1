"""Pipe mode through real FIFOs read by a separate reader process (issue 4)."""

from __future__ import annotations

import base64
import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from test_data_file import channel, put, request

from trainforge.data import DataError, recordio, stage_inputs
from trainforge.data.channels import parse_channels
from trainforge.data.pipe import recordio_header, recordio_record
from trainforge.data.sources import assign, list_items

READER = r"""
import base64, json, os, sys, time
data_dir, name, epochs, early = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
out = {}
for e in range(epochs):
    path = os.path.join(data_dir, f"{name}_{e}")
    deadline = time.monotonic() + 30
    while not os.path.exists(path):          # the next epoch's FIFO may not exist yet: retry
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {path}")
        time.sleep(0.005)
    with open(path, "rb", buffering=0) as f:
        if str(e) in early:
            data = f.read(early[str(e)])     # then close early
        else:
            chunks = []
            while chunk := f.read(1 << 20):
                chunks.append(chunk)
            data = b"".join(chunks)
    out[e] = base64.b64encode(data).decode()
print(json.dumps(out))
"""


def read_epochs(ml: Path, name: str, epochs: int, early: dict[int, int] | None = None) -> list[bytes]:
    proc = subprocess.run([sys.executable, "-c", READER, str(ml / "input/data"), name, str(epochs),
                           json.dumps({str(k): v for k, v in (early or {}).items()})],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    return [base64.b64decode(out[str(e)]) for e in range(epochs)]


def stage(req: dict[str, Any], ml: Path, host: int = 0, hosts: list[str] | None = None, **kw: Any) -> Any:
    return stage_inputs(req, ml, host, hosts or ["algo-1"], progress=lambda m: None, log=print,
                        allowed_roots=kw.pop("allowed_roots", []), file_systems={}, **kw)


def record(data: bytes) -> bytes:
    """RecordIO framing written out independently of the implementation."""
    return b"\x0a\x23\xd7\xce" + struct.pack("<I", len(data)) + data + b"\0" * ((4 - len(data) % 4) % 4)


def test_pipe_s3prefix_three_epochs(s3: Any, bucket: str, tmp_path: Path) -> None:
    objs = {f"p/{i:02d}": os.urandom(100 + 37 * i) for i in range(12)}
    objs["p/zbig"] = os.urandom(5 * 1024 * 1024 + 3)  # several ranged parts
    put(s3, bucket, objs)
    ml = tmp_path / "ml"
    with stage(request(channel("train", f"s3://{bucket}/p/"), mode="Pipe"), ml) as session:
        assert (ml / "input/data/train_0").exists() and not (ml / "input/data/train").exists()
        epochs = read_epochs(ml, "train", 3)
        expected = b"".join(objs[k] for k in sorted(objs))
        assert epochs == [expected] * 3
        assert session.error is None
    assert not list((ml / "input/data").iterdir())  # FIFOs removed on close


def test_pipe_early_close_starts_next_epoch(s3: Any, bucket: str, tmp_path: Path) -> None:
    objs = {f"e/{i}": os.urandom(3 * 1024 * 1024) for i in range(4)}  # more than the FIFO holds
    put(s3, bucket, objs)
    ml = tmp_path / "ml"
    with stage(request(channel("train", f"s3://{bucket}/e/"), mode="Pipe"), ml):
        epochs = read_epochs(ml, "train", 3, early={0: 1000, 1: 5})
        full = b"".join(objs[k] for k in sorted(objs))
        assert epochs[0] == full[:1000] and epochs[1] == full[:5] and epochs[2] == full


def test_pipe_gzip_and_recordio_byte_exact(s3: Any, bucket: str, tmp_path: Path) -> None:
    raw = {f"g/{i}": os.urandom(10 + 7 * i) + b"text" * i for i in range(6)}
    # one object is two concatenated gzip members, one is empty
    raw["g/multi"] = b"first member|second member"
    raw["g/zempty"] = b""
    for k, v in raw.items():
        body = (gzip.compress(v[:13]) + gzip.compress(v[13:])) if k == "g/multi" else gzip.compress(v)
        s3.put_object(Bucket=bucket, Key=k, Body=body)
    ml = tmp_path / "ml"
    req = request(channel("gz", f"s3://{bucket}/g/", CompressionType="Gzip"),
                  channel("gzrec", f"s3://{bucket}/g/", CompressionType="Gzip", RecordWrapperType="RecordIO"),
                  mode="Pipe")
    put(s3, bucket, {f"r/{i}": os.urandom(i) for i in range(9)})  # every padding length
    req["InputDataConfig"].append(channel("rec", f"s3://{bucket}/r/", RecordWrapperType="RecordIO"))
    with stage(req, ml):
        assert read_epochs(ml, "gz", 2) == [b"".join(raw[k] for k in sorted(raw))] * 2
        assert read_epochs(ml, "gzrec", 1) == [b"".join(record(raw[k]) for k in sorted(raw))]
        rec_objs = [s3.get_object(Bucket=bucket, Key=f"r/{i}")["Body"].read() for i in range(9)]
        assert read_epochs(ml, "rec", 1) == [b"".join(record(b) for b in rec_objs)]


def test_pipe_manifest_and_augmented_manifest(s3: Any, bucket: str, tmp_path: Path) -> None:
    put(s3, bucket, {"img/a.jpg": b"AAAA-image", "img/b.jpg": b"BB", "img/c.jpg": b"C"})
    s3.put_object(Bucket=bucket, Key="m.json",
                  Body=json.dumps([{"prefix": f"s3://{bucket}/img/"}, "c.jpg", "a.jpg"]).encode())
    lines = [{"source-ref": f"s3://{bucket}/img/b.jpg", "label": 1, "extra": "ignored"},
             {"source-ref": f"s3://{bucket}/img/a.jpg", "label": {"class": "cat"}},
             {"label": "dog", "source-ref": f"s3://{bucket}/img/c.jpg"}]
    s3.put_object(Bucket=bucket, Key="aug.jsonl", Body="\n".join(json.dumps(x) for x in lines).encode() + b"\n")
    req = request(channel("man", f"s3://{bucket}/m.json", data_type="ManifestFile"),
                  channel("aug", f"s3://{bucket}/aug.jsonl", data_type="AugmentedManifestFile",
                          attrs=["source-ref", "label"], RecordWrapperType="RecordIO"),
                  channel("augraw", f"s3://{bucket}/aug.jsonl", data_type="AugmentedManifestFile",
                          attrs=["label", "source-ref"]),
                  mode="Pipe")
    ml = tmp_path / "ml"
    with stage(req, ml):
        assert read_epochs(ml, "man", 2) == [b"CAAAA-image"] * 2
        expected = (record(b"BB") + record(b"1") + record(b"AAAA-image") + record(b'{"class":"cat"}')
                    + record(b"C") + record(b"dog"))
        assert read_epochs(ml, "aug", 2) == [expected] * 2
        assert read_epochs(ml, "augraw", 1) == [b"1BB" + b'{"class":"cat"}AAAA-image' + b"dogC"]


def test_pipe_shuffle_reshuffles_every_epoch_and_shards_move(s3: Any, bucket: str, tmp_path: Path) -> None:
    objs = {f"s/{i:02d}": f"<{i:02d}>".encode() for i in range(24)}
    put(s3, bucket, objs)
    hosts = ["algo-1", "algo-2"]
    req = request(channel("train", f"s3://{bucket}/s/", seed=42, dist="ShardedByS3Key"), mode="Pipe")
    seen = []
    for h in range(2):
        with stage(req, tmp_path / hosts[h], h, hosts):
            seen.append(read_epochs(tmp_path / hosts[h], "train", 3))
    ch = parse_channels(req)[0]
    items = list_items(ch, allowed_roots=None, need_sizes=True)
    for e in range(3):
        for h in range(2):
            assert seen[h][e] == b"".join(objs[i.location.key] for i in assign(items, ch, h, 2, e))
        assert sorted(seen[0][e][i:i + 4] for i in range(0, 48, 4)) != sorted(seen[0][(e + 1) % 3][i:i + 4]
                                                                              for i in range(0, 48, 4))
        union = sorted(seen[0][e][i:i + 4] + b"" for i in range(0, 48, 4)) + sorted(
            seen[1][e][i:i + 4] for i in range(0, 48, 4))
        assert sorted(union) == sorted(objs.values())
    assert seen[0][0] != seen[0][1]  # a different order each epoch


def test_pipe_from_file_uri_splices(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = {f"{i}.bin": os.urandom(1 + 300_000 * i) for i in range(5)}
    for k, v in data.items():
        (src / k).write_bytes(v)
    ml = tmp_path / "ml"
    req = request(channel("a", f"file://{src}"), channel("b", f"file://{src}", RecordWrapperType="RecordIO"),
                  mode="Pipe")
    with stage(req, ml, allowed_roots=[str(tmp_path)]):
        assert read_epochs(ml, "a", 2) == [b"".join(data[k] for k in sorted(data))] * 2
        assert read_epochs(ml, "b", 1) == [b"".join(record(data[k]) for k in sorted(data))]


def test_pipe_source_failure_is_reported(s3: Any, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="bad.jsonl", Body=json.dumps({"x-ref": f"s3://{bucket}/missing"}).encode())
    s3.put_object(Bucket=bucket, Key="notgz/a", Body=b"plain, not gzip")
    errors: list[DataError] = []
    req = request(channel("aug", f"s3://{bucket}/bad.jsonl", data_type="AugmentedManifestFile", attrs=["x-ref"]),
                  channel("gz", f"s3://{bucket}/notgz/", CompressionType="Gzip"), mode="Pipe")
    ml = tmp_path / "ml"
    with stage(req, ml, on_error=errors.append) as session:
        for name in ("aug", "gz"):
            subprocess.run([sys.executable, "-c", f"open({str(ml / 'input/data' / (name + '_0'))!r}, 'rb').read()"],
                           check=True, timeout=30)
        wait_until(lambda: len(errors) == 2, message="both feeders to fail")
        text = " | ".join(map(str, errors))
        assert "missing" in text and "not valid gzip" in text
        assert session.error is not None


def test_pipe_ranged_parts_byte_exact_within_the_window(s3: Any, bucket: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from trainforge.data import pipe

    # small parts and window so that a few objects take many ranged GETs and fill the window
    monkeypatch.setattr(pipe, "PART", 64 * 1024)
    monkeypatch.setattr(pipe, "WINDOW_BYTES", 256 * 1024)
    peak = [0]
    fill = pipe._Prefetcher._fill

    def watched(self: Any) -> None:
        fill(self)
        peak[0] = max(peak[0], self.ahead)
        assert self.ahead <= pipe.WINDOW_BYTES or len(self.queue) == 1

    monkeypatch.setattr(pipe._Prefetcher, "_fill", watched)
    objs = {f"r/{i}": os.urandom(200_000 + 65_536 * i + i) for i in range(4)}
    objs["r/tiny"] = b"x"
    put(s3, bucket, objs)
    ml = tmp_path / "ml"
    req = request(channel("a", f"s3://{bucket}/r/"), channel("b", f"s3://{bucket}/r/", RecordWrapperType="RecordIO"),
                  mode="Pipe")
    with stage(req, ml) as session:
        assert read_epochs(ml, "a", 2) == [b"".join(objs[k] for k in sorted(objs))] * 2
        assert read_epochs(ml, "b", 1) == [b"".join(record(objs[k]) for k in sorted(objs))]
        assert session.error is None
    assert 0 < peak[0] <= 256 * 1024


class _Oversized(bytes):
    """A few bytes that claim one byte more than a record can hold (without allocating 512 MiB)."""

    def __len__(self) -> int:
        return recordio.MAX_RECORD + 1


def test_recordio_framing_and_record_limit() -> None:
    for n in range(9):  # every padding length
        data = os.urandom(n)
        assert recordio_record(data, "x") == record(data)
        assert recordio_header(n, "x") + data == record(data)[:8 + n]
    too_large = f"RecordIO: line 3 is too large for one record \\({recordio.MAX_RECORD + 1} bytes"
    with pytest.raises(DataError, match=too_large):
        recordio_record(_Oversized(b"abc"), "line 3")
    with pytest.raises(DataError, match=too_large):
        recordio_header(recordio.MAX_RECORD + 1, "line 3")
