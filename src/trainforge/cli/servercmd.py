"""``trainforge server`` (foreground) and ``trainforge server stop|status`` (the background one)."""

from __future__ import annotations

import os
from typing import IO

from . import embedded
from .argparser import ArgParser, parse_strict
from .errors import CLIError


def build_parser() -> ArgParser:
    parser = ArgParser(prog="trainforge server")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--data-dir")
    parser.add_argument("--database-url")
    parser.add_argument("--config")
    parser.add_argument("--allow-local-root", action="append", nargs="+", default=[], metavar="PATH")
    parser.add_argument("--debug", action="store_true")
    return parser


HELP = """\
usage: trainforge server [--host HOST] [--port PORT] [--data-dir DIR] [--database-url URL]
                         [--config FILE] [--allow-local-root PATH ...]
       trainforge server stop
       trainforge server status

Runs the trainforge server in the foreground (Ctrl-C stops it). Command-line flags override the
config file; the port defaults to $TRAINFORGE_PORT, then the config file, then 8080.

  stop     end the background server that trainforge started on first use (pid file in
           $TRAINFORGE_HOME, default ~/.trainforge)
  status   say whether the background server is running and answering
"""


def command(argv: list[str], stdout: IO[str], stderr: IO[str]) -> int:
    if argv and argv[0] in ("help", "--help", "-h"):
        stdout.write(HELP)
        return 0
    if argv and argv[0] == "stop":
        parse_strict(ArgParser(prog="trainforge server stop"), argv[1:])
        print(embedded.stop(), file=stdout)
        return 0
    if argv and argv[0] == "status":
        parse_strict(ArgParser(prog="trainforge server status"), argv[1:])
        return _status(stdout)
    ns = parse_strict(build_parser(), argv)
    return _foreground(ns)


def _status(stdout: IO[str]) -> int:
    state = embedded.status()
    if state.running:
        print(f"running      pid {state.pid}, {'answering' if state.answering else 'NOT answering'} at "
              f"{state.endpoint}", file=stdout)
    elif state.answering:
        print(f"answering    {state.endpoint} (not a background server started by trainforge)", file=stdout)
    else:
        print(f"stopped      nothing answers at {state.endpoint}", file=stdout)
    print(f"data         {state.home}", file=stdout)
    print(f"log          {state.log}", file=stdout)
    return 0 if state.answering else 3


def _foreground(ns) -> int:  # type: ignore[no-untyped-def]
    from ..config import Config

    try:
        from ..server import run
    except ImportError as exc:
        raise CLIError(f"trainforge: the server is not available in this installation ({exc})") from exc
    port = ns.port
    if port is None and os.environ.get("TRAINFORGE_PORT"):
        port = embedded.port()
    roots = [path for group in ns.allow_local_root for path in group]
    try:
        config = Config.load(ns.config, host=ns.host, port=port, data_dir=ns.data_dir,
                             database_url=ns.database_url, allowed_local_roots=roots,
                             log_level="debug" if ns.debug else None)
    except (OSError, ValueError) as exc:
        raise CLIError(f"trainforge server: {exc}", exit_code=252) from exc
    run(config)
    return 0
