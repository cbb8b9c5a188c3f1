"""argparse with AWS-CLI-style errors (exit 252, usage on stderr) instead of exit 2."""

from __future__ import annotations

import argparse
from typing import NoReturn

from .errors import UsageError

USAGE = (
    "usage: trainforge [options] <command> [parameters]\n"
    "To see help text, you can run:\n\n"
    "  trainforge help\n"
    "  trainforge <command> help\n"
)


class ArgParser(argparse.ArgumentParser):
    """An ArgumentParser that raises :class:`UsageError` and never abbreviates options."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("add_help", False)
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("prog", "trainforge")
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, usage=USAGE)


def parse_strict(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; anything left over is an error naming the unknown options."""
    namespace, extra = parser.parse_known_args(argv)
    if extra:
        raise UsageError(f"Unknown options: {', '.join(extra)}", usage=USAGE)
    return namespace
