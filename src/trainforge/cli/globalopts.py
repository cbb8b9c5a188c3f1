"""The AWS CLI's global options, accepted by every trainforge command (anywhere on the line)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

OUTPUT_FORMATS = ("json", "yaml", "yaml-stream", "text", "table")


@dataclass(frozen=True)
class GlobalOption:
    name: str
    kwargs: dict[str, Any]
    help: str

    @property
    def takes_value(self) -> bool:
        return self.kwargs.get("action") not in ("store_true", "store_false")


GLOBAL_OPTIONS: tuple[GlobalOption, ...] = (
    GlobalOption("debug", {"action": "store_true"}, "Turn on debug logging."),
    GlobalOption("endpoint-url", {}, "Override the endpoint (default: the embedded local server)."),
    GlobalOption("no-verify-ssl", {"action": "store_false", "dest": "verify_ssl"},
                 "Do not verify SSL certificates."),
    GlobalOption("no-paginate", {"action": "store_false", "dest": "paginate"},
                 "Disable automatic pagination: make one call, for the first page of results."),
    GlobalOption("output", {"choices": OUTPUT_FORMATS}, "The formatting style for command output."),
    GlobalOption("query", {}, "A JMESPath query to use in filtering the response data."),
    GlobalOption("profile", {}, "Use a specific profile from your credential file."),
    GlobalOption("region", {}, "The region to use. Overrides config/env settings."),
    GlobalOption("version", {"action": "store_true"}, "Display the version of this tool."),
    GlobalOption("color", {"choices": ("on", "off", "auto"), "default": "auto"}, "Turn on/off color output."),
    GlobalOption("no-sign-request", {"action": "store_false", "dest": "sign_request"},
                 "Do not sign requests. Credentials will not be loaded."),
    GlobalOption("ca-bundle", {}, "The CA certificate bundle to use when verifying SSL certificates."),
    GlobalOption("cli-read-timeout", {"type": int}, "The maximum socket read time in seconds (0: blocking)."),
    GlobalOption("cli-connect-timeout", {"type": int},
                 "The maximum socket connect time in seconds (0: blocking)."),
    GlobalOption("cli-binary-format", {"choices": ("base64", "raw-in-base64-out")},
                 "The formatting style to be used for binary blobs."),
    GlobalOption("no-cli-pager", {"action": "store_true"}, "Disable cli pager for output (there is none)."),
    GlobalOption("cli-auto-prompt", {"action": "store_true"}, "Not supported by trainforge."),
    GlobalOption("no-cli-auto-prompt", {"action": "store_true"}, "Disable automatic prompt (the default)."),
)

_BY_FLAG = {"--" + o.name: o for o in GLOBAL_OPTIONS}


def add_global_options(parser: argparse.ArgumentParser, exclude: frozenset[str] = frozenset()) -> None:
    group = parser.add_argument_group("global options")
    for option in GLOBAL_OPTIONS:
        if option.name in exclude:
            continue
        kwargs = dict(option.kwargs)
        kwargs.setdefault("dest", option.name.replace("-", "_"))
        group.add_argument("--" + option.name, help=option.help, **kwargs)


def defaults() -> argparse.Namespace:
    """A namespace holding every global option at its default."""
    parser = argparse.ArgumentParser(add_help=False)
    add_global_options(parser)
    return parser.parse_args([])


def find_command(argv: list[str]) -> int | None:
    """Index of the first word that is not a global option or a global option's value."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            option = _BY_FLAG.get(flag)
            if option is not None and option.takes_value and "=" not in word:
                i += 1
            i += 1
            continue
        if word.startswith("-") and word != "-":
            i += 1
            continue
        return i
    return None
