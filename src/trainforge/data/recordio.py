"""RecordIO framing as SageMaker's Pipe mode writes it (CONTRACT.md §6).

Each record: uint32 magic ``0xCED7230A``, uint32 length (low 29 bits; the upper 3 bits — MXNet's
continuation flag — are 0: every record is whole), the bytes, zero padding to a multiple of 4.
Little-endian.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

MAGIC = 0xCED7230A
MAX_RECORD = (1 << 29) - 1
_HEADER = struct.Struct("<II")


def header(length: int) -> bytes:
    if length > MAX_RECORD:
        raise ValueError(f"a RecordIO record holds at most {MAX_RECORD} bytes, not {length}")
    return _HEADER.pack(MAGIC, length)


def padding(length: int) -> bytes:
    return b"\0" * (-length % 4)


def encode(data: bytes) -> bytes:
    return header(len(data)) + data + padding(len(data))


def decode(buf: bytes) -> Iterator[bytes]:
    """The records of a RecordIO byte string (ValueError on bad framing)."""
    pos = 0
    while pos < len(buf):
        if len(buf) - pos < 8:
            raise ValueError(f"truncated RecordIO header at byte {pos}")
        magic, word = _HEADER.unpack_from(buf, pos)
        if magic != MAGIC:
            raise ValueError(f"bad RecordIO magic {magic:#x} at byte {pos}")
        if word >> 29:
            raise ValueError(f"unexpected RecordIO continuation flag at byte {pos}")
        start = pos + 8
        end = start + word
        if end > len(buf):
            raise ValueError(f"truncated RecordIO record at byte {pos}")
        yield buf[start:end]
        pos = end + (-word % 4)
