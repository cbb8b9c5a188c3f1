"""``trainforge images list|pull|rm``: the container images cached in the data directory.

Runs on the server's machine, on its data directory (``--data-dir``, default ``$TRAINFORGE_HOME``),
with the server's configuration file for ``registries`` (``--config``). ``pull REF`` fetches an image
ahead of the jobs that use it (again, when it is cached: a tag may have moved); ``rm REF`` forgets an
image (refused while an instance uses it); ``--output table|json|text|yaml`` as for the other commands.
"""

from __future__ import annotations

import datetime
import os
from typing import IO, Any

from .argparser import ArgParser, parse_strict
from .errors import CLIError


def build_parser() -> ArgParser:
    parser = ArgParser(prog="trainforge images", description="List, pull and remove the container images "
                       "cached in the server's data directory.")
    parser.add_argument("action", choices=("list", "pull", "rm"))
    parser.add_argument("reference", nargs="?", help="the image reference (pull, rm)")
    parser.add_argument("--data-dir", default=None, help="the server's data directory (default $TRAINFORGE_HOME)")
    parser.add_argument("--config", default=None, help="the server's configuration file (its registries)")
    parser.add_argument("--output", default="table", choices=("table", "json", "text", "yaml"))
    return parser


def command(argv: list[str], stdout: IO[str], stderr: IO[str]) -> int:
    from ..config import Config
    from ..images import pull, store
    from ..sandbox.runc import UID_BASE
    from .embedded import home
    from .output import display

    args = parse_strict(build_parser(), argv)
    config = Config.load(args.config)
    data_dir = os.path.abspath(os.path.expanduser(args.data_dir or (str(home()) if not args.config
                                                                    else str(config.data_path))))
    if args.action in ("pull", "rm") and not args.reference:
        raise CLIError(f"trainforge images {args.action}: an image reference is required")
    st = store.Store.of(data_dir)
    if args.action == "pull":
        settings = {"registries": config.registries, "image_cache_gb": config.image_cache_gb}
        try:
            image = pull.ensure(data_dir, args.reference, UID_BASE, settings, refresh=True,
                                log=lambda m: print(m, file=stderr))
        except pull.PullError as exc:
            raise CLIError(str(exc)) from None
        response: dict[str, Any] = {"Reference": image.reference, "Digest": image.digest, "Pulled": image.pulled,
                                    "Seconds": round(image.seconds, 3)}
    elif args.action == "rm":
        from ..images.reference import ReferenceError, parse

        try:
            key = str(parse(args.reference))
        except ReferenceError as exc:
            raise CLIError(str(exc)) from None
        if st.record(key) is None:
            raise CLIError(f"{args.reference} is not in the image cache of {data_dir}")
        if not st.remove(key):
            raise CLIError(f"{args.reference} is in use by a training instance: not removed")
        response = {"Removed": key}
    else:
        response = {"Images": rows(st)}
    display(f"images-{args.action}", response, args.output, None, "off", False, stdout)
    return 0


def rows(st: Any) -> list[dict[str, Any]]:
    from ..images import store

    out = []
    for record in st.records():
        digest = str(record.get("digest") or "")
        bundles = [st.path("rootfs", n) for n in st.unpacked_of(digest)]
        blobs = sum(store.file_size(st.blob(d)) for d in st.blobs_of(digest))
        used = max((os.stat(b).st_mtime for b in bundles), default=float(record.get("pulled_at") or 0))
        out.append({"Reference": record.get("reference"), "Digest": digest,
                    "SizeBytes": blobs + sum(st.size_of(b) for b in bundles),
                    "PulledAt": _when(float(record.get("pulled_at") or 0)), "LastUsed": _when(used)})
    return out


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="seconds")
