"""Exit codes and the errors the CLI reports, as the AWS CLI v2 reports them."""

from __future__ import annotations

EXIT_OK = 0
EXIT_PARAM = 252  # bad parameters or usage: no request was sent
EXIT_SERVICE = 254  # the service answered with an error
EXIT_OTHER = 255  # anything else (connection refused, no credentials, ...)


class CLIError(Exception):
    """An error with a message for stderr and an exit code."""

    exit_code = EXIT_OTHER

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ParamError(CLIError):
    """A parameter could not be parsed or is invalid; nothing was sent."""

    exit_code = EXIT_PARAM


class UsageError(CLIError):
    """The command line itself is wrong (unknown option, missing required option)."""

    exit_code = EXIT_PARAM

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.usage = usage
