"""``trainforge``: the AWS CLI's SageMaker training-job commands, plus server, logs, wait, run, demo."""

from __future__ import annotations

import logging
import platform
import sys
from typing import IO

import botocore
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    WaiterError,
)

from .. import __version__ as VERSION
from .argparser import USAGE
from .commandtable import COMMANDS, WAITERS, Streams
from .errors import EXIT_OTHER, EXIT_PARAM, EXIT_SERVICE, CLIError, UsageError
from .globalopts import find_command

OWN_COMMANDS = {
    "server": "run the server in the foreground; `server stop|status` for the background one",
    "logs": "print (or --follow) every instance's log of a training job",
    "wait": "live view of a job until it ends (exit 0 only for Completed); "
            "`wait training-job-completed-or-stopped` is the AWS CLI waiter",
    "run": "run a local training script as a SageMaker script-mode job and follow it",
    "demo": "train a real model end to end on the local server",
    "env": "print the environment for AWS clients and the SageMaker SDK: eval \"$(trainforge env)\"",
    "images": "list, pull or remove the container images cached on this machine (`images list|pull|rm`)",
}


def top_help() -> str:
    lines = ["usage: trainforge [options] <command> [parameters]", "",
             "trainforge runs SageMaker training jobs on this machine (or your cluster). The AWS CLI's",
             "training-job commands work as they do with `aws sagemaker`; with no endpoint configured a local",
             "server is started in the background on first use.", "", "Commands:"]
    lines += [f"  {name:<28} {text}" for name, text in OWN_COMMANDS.items()]
    lines += [f"  {name:<28} SageMaker {op}" for name, op in COMMANDS.items()]
    lines += ["", "`trainforge <command> help` shows a command's options. See docs/CLI.md for the manual.", ""]
    return "\n".join(lines)


def version_line() -> str:
    return (f"trainforge/{VERSION} Python/{platform.python_version()} {platform.system()}/{platform.release()} "
            f"botocore/{botocore.__version__}")


def dispatch(argv: list[str], streams: Streams) -> int:
    if "--version" in argv:
        print(version_line(), file=streams.stdout)
        return 0
    if "--cli-auto-prompt" in argv:
        raise UsageError("trainforge does not prompt for parameters (--cli-auto-prompt); "
                         "`trainforge <command> help` lists every option", usage=USAGE)
    index = find_command(argv)
    if index is None:
        streams.stdout.write(top_help())
        return 0
    command, rest = argv[index], argv[:index] + argv[index + 1:]
    if command == "sagemaker":  # `trainforge sagemaker create-training-job ...`, as copied from AWS docs
        return dispatch(rest, streams)
    if command == "help":
        if rest and rest[0] in COMMANDS:
            from . import awscommands

            return awscommands.run_operation(rest[0], ["help"], streams)
        if rest and rest[0] in OWN_COMMANDS:
            return dispatch([rest[0], "--help"], streams)
        streams.stdout.write(top_help())
        return 0
    if command in COMMANDS:
        from . import awscommands

        return awscommands.run_operation(command, rest, streams)
    if command == "wait":
        return _wait(rest, streams)
    if command == "server":
        from . import servercmd

        return servercmd.command(rest, streams.stdout, streams.stderr)
    handlers = {"logs": "logs", "run": "runcmd", "demo": "demo", "env": "envcmd", "images": "imagescmd"}
    if command in handlers:
        import importlib

        module = importlib.import_module(f"{__package__}.{handlers[command]}")
        if "--help" in rest or "-h" in rest or rest[:1] == ["help"]:
            module.build_parser().print_help(streams.stdout)
            return 0
        return int(module.command(rest, streams.stdout, streams.stderr))
    choices = ", ".join(list(OWN_COMMANDS) + list(COMMANDS) + ["help"])
    raise UsageError(f"argument command: Invalid choice '{command}', valid choices are: {choices}", usage=USAGE)


def _wait(argv: list[str], streams: Streams) -> int:
    index = find_command(argv)
    if index is not None and argv[index] in WAITERS:
        from . import awscommands

        return awscommands.run_waiter(argv[index], argv[:index] + argv[index + 1:], streams)
    from . import watch

    if index is None or argv[index] == "help" or "--help" in argv:
        watch.build_parser().print_help(streams.stdout)
        streams.stdout.write(f"\nwaiters (AWS CLI): {', '.join(WAITERS)}\n")
        return 0
    return watch.command(argv, streams.stdout, streams.stderr)


def _report(stream: IO[str], message: str) -> None:
    stream.write("\n" + message.rstrip("\n") + "\n")
    stream.flush()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    streams = Streams(sys.stdout, sys.stderr)
    debug = "--debug" in args
    if debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                            format="%(asctime)s - %(threadName)s - %(name)s - %(levelname)s - %(message)s")
    try:
        return dispatch(args, streams)
    except UsageError as exc:
        streams.stderr.write(exc.usage + "\n" if exc.usage else "")
        streams.stderr.write(f"trainforge: error: {exc}\n")
        return EXIT_PARAM
    except CLIError as exc:
        _report(streams.stderr, str(exc))
        return exc.exit_code
    except ParamValidationError as exc:
        _report(streams.stderr, str(exc))
        return EXIT_PARAM
    except ClientError as exc:
        _report(streams.stderr, str(exc))
        return EXIT_SERVICE
    except NoCredentialsError as exc:
        _report(streams.stderr, f'{exc}. You can configure credentials by running "aws configure".')
        return EXIT_OTHER
    except (WaiterError, BotoCoreError) as exc:
        _report(streams.stderr, str(exc))
        return EXIT_OTHER
    except KeyboardInterrupt:
        streams.stdout.write("\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # an unexpected failure: a one-line message, the traceback with --debug
        if debug:
            logging.getLogger(__name__).exception("unexpected error")
        _report(streams.stderr, f"trainforge: {type(exc).__name__}: {exc}")
        return EXIT_OTHER


if __name__ == "__main__":
    sys.exit(main())
