"""``trainforge server`` (foreground) and ``trainforge server stop|status`` (the background one)."""

from __future__ import annotations

import argparse
import os
from typing import IO

from . import embedded
from .argparser import ArgParser, parse_strict
from .errors import CLIError


def build_parser() -> ArgParser:
    from ..server import add_server_arguments

    parser = ArgParser(prog="trainforge server")
    add_server_arguments(parser)
    return parser


HELP = """\
usage: trainforge server [--host HOST] [--port PORT] [--data-dir DIR] [--database-url URL]
                         [--config FILE] [--allow-local-root PATH ...] [--credentials-file FILE]
       trainforge server stop
       trainforge server status

Runs the trainforge server in the foreground (Ctrl-C stops it). Command-line flags override the
config file; the port defaults to $TRAINFORGE_PORT, then the config file, then 8080 (--port 0:
any free port, printed in the "trainforge listening on" line).

  stop     end the background server that trainforge started on first use (pid file in
           $TRAINFORGE_HOME, default ~/.trainforge)
  status   say whether the background server is running and answering
"""


def command(argv: list[str], stdout: IO[str], stderr: IO[str]) -> int:
    if argv and argv[0] in ("help", "--help", "-h"):
        stdout.write(HELP)
        build_parser().print_help(stdout)
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


def _foreground(ns: argparse.Namespace) -> int:
    from ..server import config_from_args, run

    if ns.port is None and os.environ.get("TRAINFORGE_PORT"):
        ns.port = embedded.port()
    try:
        config = config_from_args(ns)
    except (OSError, ValueError) as exc:
        raise CLIError(f"trainforge server: {exc}", exit_code=252) from exc
    run(config)
    return 0
