"""The XGBoost algorithm's channels, read into ``xgboost.DMatrix`` as SageMaker's container reads them.

Content types (the channel's ContentType; none means ``text/libsvm``; parameters such as
``;label_size=1`` are ignored):

- ``text/csv`` (or ``csv``): no header, the label in the first column, then (``csv_weights=1``)
  the instance weight, then the features. Parsed by pyarrow's multi-threaded CSV reader.
- ``text/libsvm`` (``libsvm``, ``text/x-libsvm``): ``label[:weight] index:value ...``, parsed by
  xgboost's own reader.
- ``application/x-parquet`` (``parquet``): the label in the first column, features after it.
- ``application/x-recordio-protobuf``: refused with a reason (trainforge has no reader for it).

File and FastFile mode read every file under ``/opt/ml/input/data/<channel>/`` (names starting
with ``.`` skipped, sorted). Pipe mode reads the FIFO ``<channel>_0`` to its end into a scratch
file first; with RecordWrapperType RecordIO each record is one object (one scratch file).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from typing import Any

CSV, LIBSVM, PARQUET = "text/csv", "text/libsvm", "application/x-parquet"
RECORDIO_PROTOBUF = "application/x-recordio-protobuf"
_ALIASES = {"text/csv": CSV, "csv": CSV, "text/libsvm": LIBSVM, "libsvm": LIBSVM, "text/x-libsvm": LIBSVM,
            "application/x-parquet": PARQUET, "parquet": PARQUET,
            "application/x-recordio-protobuf": RECORDIO_PROTOBUF, "recordio-protobuf": RECORDIO_PROTOBUF}
PIPE_OPEN_SECONDS = 600.0  # how long a Pipe channel's FIFO may take to appear


class DataError(ValueError):
    """Input the algorithm cannot read (the job fails with this message, as a client error)."""


@dataclass
class Channel:
    name: str
    content_type: str
    mode: str
    recordio: bool
    path: str  # the directory (File, FastFile) or the FIFO of epoch 0 (Pipe)


def content_type(raw: str | None, channel: str) -> str:
    if not raw:
        return LIBSVM
    kind = _ALIASES.get(raw.split(";", 1)[0].strip().lower())
    if kind is None:
        raise DataError(f"Content type {raw} of channel {channel} is not supported by the XGBoost algorithm: "
                        f"use text/csv, text/libsvm or application/x-parquet")
    if kind == RECORDIO_PROTOBUF:
        raise DataError(f"Content type {raw} of channel {channel}: trainforge's XGBoost does not read "
                        f"RecordIO-protobuf; convert the data to text/csv, text/libsvm or application/x-parquet")
    return kind


def channel(base: str, name: str, config: dict[str, Any]) -> Channel:
    mode = config.get("TrainingInputMode") or "File"
    data = os.path.join(base, "input", "data")
    path = os.path.join(data, f"{name}_0") if mode == "Pipe" else os.path.join(data, name)
    return Channel(name, content_type(config.get("ContentType"), name), mode,
                   config.get("RecordWrapperType") == "RecordIO", path)


def load(ch: Channel, csv_weights: bool = False, scratch: str | None = None) -> Any:
    """The channel as an ``xgboost.DMatrix``."""
    with tempfile.TemporaryDirectory(dir=scratch, prefix=f"xgb-{ch.name}-") as tmp:
        files = _pipe_files(ch, tmp) if ch.mode == "Pipe" else _files(ch.path)
        files = [f for f in files if os.path.getsize(f) > 0]
        if not files:
            raise DataError(f"Channel {ch.name} has no data: no file under "
                            f"{ch.path if ch.mode != 'Pipe' else ch.path + ' (the Pipe)'} holds any bytes")
        try:
            if ch.content_type == CSV:
                return _dense(_read_csv(files), csv_weights, ch.name)
            if ch.content_type == PARQUET:
                return _dense(_read_parquet(files), False, ch.name)
            return _read_libsvm(files, tmp)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - a parser's error is the data's fault: say which
            raise DataError(f"Channel {ch.name} could not be read as {ch.content_type}: {exc}") from None


def _files(directory: str) -> list[str]:
    out: list[str] = []
    for root, dirs, names in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(os.path.join(root, n) for n in sorted(names) if not n.startswith("."))
    return out


def _pipe_files(ch: Channel, tmp: str) -> list[str]:
    deadline = time.monotonic() + PIPE_OPEN_SECONDS
    while not os.path.exists(ch.path):
        if time.monotonic() > deadline:
            raise DataError(f"Pipe channel {ch.name}: {ch.path} did not appear")
        time.sleep(0.05)
    if not stat.S_ISFIFO(os.stat(ch.path).st_mode):
        raise DataError(f"Pipe channel {ch.name}: {ch.path} is not a FIFO")
    whole = os.path.join(tmp, "pipe")
    with open(ch.path, "rb") as src, open(whole, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    if not ch.recordio:
        return [whole]
    from trainforge.data import recordio

    with open(whole, "rb") as f:
        buf = f.read()
    os.unlink(whole)
    files = []
    for i, record in enumerate(recordio.decode(buf)):
        files.append(os.path.join(tmp, f"record-{i:08d}"))
        with open(files[-1], "wb") as out:
            out.write(record)
    return files


def _read_csv(files: list[str]) -> Any:
    import numpy as np
    from pyarrow import csv

    parts = []
    for path in files:
        table = csv.read_csv(path, read_options=csv.ReadOptions(autogenerate_column_names=True),
                             parse_options=csv.ParseOptions(delimiter=","))
        parts.append(_table_array(table, path))
    return parts[0] if len(parts) == 1 else np.vstack(parts)


def _read_parquet(files: list[str]) -> Any:
    import numpy as np
    import pyarrow.parquet as pq

    parts = [_table_array(pq.read_table(path), path) for path in files]
    return parts[0] if len(parts) == 1 else np.vstack(parts)


def _table_array(table: Any, path: str) -> Any:
    import numpy as np

    if table.num_columns < 2:
        raise DataError(f"{os.path.basename(path)}: a row needs a label and at least one feature, "
                        f"found {table.num_columns} column(s)")
    out = np.empty((table.num_rows, table.num_columns), dtype=np.float32)
    for i, column in enumerate(table.columns):
        try:
            out[:, i] = column.to_numpy(zero_copy_only=False)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{os.path.basename(path)}: column {i} ({column.type}) is not numeric: {exc}"
                            ) from None
    return out


def _dense(array: Any, weights: bool, name: str) -> Any:
    import xgboost

    start = 2 if weights else 1
    if array.shape[1] <= start:
        raise DataError(f"Channel {name}: no feature columns after the label"
                        + (" and the weight" if weights else ""))
    return xgboost.DMatrix(array[:, start:], label=array[:, 0], weight=array[:, 1] if weights else None,
                           nthread=-1)


def _read_libsvm(files: list[str], tmp: str) -> Any:
    import xgboost

    path = files[0]
    if len(files) > 1:  # xgboost's reader takes one file: the files joined, each ending its last line
        path = os.path.join(tmp, "joined.libsvm")
        with open(path, "wb") as out:
            for f in files:
                with open(f, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                    if src.tell() and (src.seek(-1, os.SEEK_END), src.read(1))[1] != b"\n":
                        out.write(b"\n")
    return xgboost.DMatrix(f"{path}?format=libsvm", silent=True)
