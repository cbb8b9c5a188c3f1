"""The AWS CLI's SageMaker training-job commands: parse, build the request, send it, render it."""

from __future__ import annotations

import argparse
import os
from typing import Any

from botocore import xform_name

from . import helptext, params, skeleton
from .argparser import parse_strict
from .commandtable import COMMANDS, WAITERS, Streams
from .connection import connect
from .errors import ParamError
from .opargs import OperationSpec, build_parser, operation_spec, overrides_required
from .output import compile_query, display

# SageMaker's waiter polls every 120 s, 180 times. A trainforge job changes state in well under a
# second, so poll every 2 s for the same six hours.
WAITER_DELAY = 2
WAITER_MAX_ATTEMPTS = 120 * 180 // WAITER_DELAY


def _parse(spec: OperationSpec, argv: list[str], prog: str) -> argparse.Namespace:
    parser = build_parser(spec, enforce_required=not overrides_required(argv), prog=prog)
    return parse_strict(parser, argv)


def _output_format(ns: argparse.Namespace, session: Any) -> str:
    """--output, else $AWS_DEFAULT_OUTPUT, else the profile's ``output``, else json (as the AWS CLI)."""
    if ns.output:
        return str(ns.output)
    if os.environ.get("AWS_DEFAULT_OUTPUT"):
        return os.environ["AWS_DEFAULT_OUTPUT"]
    return str(session.get_scoped_config().get("output") or "json")


def run_operation(cli_name: str, argv: list[str], streams: Streams) -> int:
    spec = operation_spec(COMMANDS[cli_name])
    if helptext.wants_help(argv):
        streams.stdout.write(helptext.operation_help(spec))
        return 0
    wait = cli_name == "create-training-job" and "--wait" in argv
    if wait:  # trainforge's addition: follow the new job in the live view
        argv = [a for a in argv if a != "--wait"]
    ns = _parse(spec, argv, prog=f"trainforge {cli_name}")
    if ns.generate_cli_skeleton == "input":
        skeleton.input_skeleton(spec.operation.input_shape, streams.stdout)
        return 0
    if ns.generate_cli_skeleton == "yaml-input":
        skeleton.yaml_input_skeleton(spec.operation.input_shape, streams.stdout)
        return 0
    compile_query(ns.query)
    request = params.build_parameters(spec, ns)
    paginate = _should_paginate(spec, ns, request)
    params.validate(spec, request)
    if ns.generate_cli_skeleton == "output":
        return _sample_output(spec, ns, streams)
    connection = connect(ns, streams.stderr)
    client = connection.client()
    method = xform_name(spec.name)
    if paginate:
        response = client.get_paginator(method).paginate(**request)
    else:
        response = getattr(client, method)(**request)
    display(spec.name, response, _output_format(ns, connection.session), ns.query, ns.color, paginate,
            streams.stdout)
    if wait:
        from .logs import make_console
        from .watch import exit_code, watch

        watcher = connect(ns, streams.stderr, cli_timestamps=False).client()
        return exit_code(watch(watcher, request["TrainingJobName"], make_console(streams.stdout, ns.color)))
    return 0


def _should_paginate(spec: OperationSpec, ns: argparse.Namespace, request: dict[str, Any]) -> bool:
    if spec.paging is None:
        return False
    manual = [t for t in spec.paging.input_tokens + [spec.paging.limit_key or ""] if t and t in request]
    paginate = bool(ns.paginate) and not manual
    if not paginate and "PaginationConfig" in request:
        used = [f"--{xform_name(k, '-')}" for k in ("StartingToken", "PageSize", "MaxItems")
                if k in request["PaginationConfig"]]
        raise ParamError("Cannot specify --no-paginate along with pagination arguments: " + ", ".join(used))
    return paginate


def _sample_output(spec: OperationSpec, ns: argparse.Namespace, streams: Streams) -> int:
    """The AWS CLI stubs a client call with this sample response; botocore's stubber then rejects the
    samples of outputs with minimum values (DescribeTrainingJob's), so it is rendered directly here."""
    from .connection import make_session

    response = skeleton.output_skeleton(spec.operation.output_shape)
    display(spec.name, response, _output_format(ns, make_session(ns)), ns.query, ns.color, False, streams.stdout)
    return 0


def run_waiter(waiter_cli_name: str, argv: list[str], streams: Streams) -> int:
    waiter_name, operation_name = WAITERS[waiter_cli_name]
    spec = operation_spec(operation_name)
    if helptext.wants_help(argv):
        streams.stdout.write(helptext.operation_help(spec, prog=f"wait {waiter_cli_name}"))
        return 0
    ns = _parse(spec, argv, prog=f"trainforge wait {waiter_cli_name}")
    if ns.generate_cli_skeleton in ("input", "yaml-input"):
        emit = skeleton.input_skeleton if ns.generate_cli_skeleton == "input" else skeleton.yaml_input_skeleton
        emit(spec.operation.input_shape, streams.stdout)
        return 0
    request = params.build_parameters(spec, ns)
    params.validate(spec, request)
    connection = connect(ns, streams.stderr)
    waiter = connection.client().get_waiter(xform_name(waiter_name))
    waiter.wait(**request, WaiterConfig={"Delay": WAITER_DELAY, "MaxAttempts": WAITER_MAX_ATTEMPTS})
    return 0


