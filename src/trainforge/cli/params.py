"""Turning command-line values into request parameters, exactly as the AWS CLI does.

The value of each option may be shorthand syntax, JSON, or ``file://`` / ``fileb://`` (the file's
text or bytes stand for the value). The shorthand grammar is not reimplemented here: it is the
AWS CLI's own maintained parser, ``awscli.shorthand`` (``ShorthandParser`` + ``BackCompatVisitor``,
driven through ``awscli.argprocess.ParamShorthandParser``), and scalars and JSON are unpacked by
``awscli.argprocess.unpack_cli_arg``; files are read by ``awscli.paramfile.get_paramfile``.
``--cli-input-json`` / ``--cli-input-yaml`` fill in every top-level member the command line did
not set (command-line values win).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import yaml
from awscli import argprocess
from awscli.paramfile import LOCAL_PREFIX_MAP, ResourceLoadingError, get_paramfile
from botocore.exceptions import ParamValidationError
from botocore.validate import ParamValidator

from .errors import ParamError
from .opargs import OpArgument, OperationSpec

_SHORTHAND = argprocess.ParamShorthandParser()


def load_file_value(arg: OpArgument | None, cli_name: str, value: Any) -> Any:
    """``file://path`` → the file's text, ``fileb://path`` → its bytes; anything else unchanged."""
    candidate = value[0] if isinstance(value, list) and len(value) == 1 else value
    try:
        data = get_paramfile(candidate, LOCAL_PREFIX_MAP)
    except ResourceLoadingError as exc:
        raise ParamError(f"Error parsing parameter '{cli_name}': {exc}") from exc
    return value if data is None else data


def unpack(spec: OperationSpec, arg: OpArgument, value: Any) -> Any:
    """Convert one option's raw value (string or list of strings) into the request value."""
    if arg.type_name == "boolean":
        return value
    event = f"process-cli-arg.sagemaker.{spec.cli_name}"
    try:
        parsed = _SHORTHAND(cli_argument=arg, value=value, event_name=event)
        if parsed is None:
            parsed = argprocess.unpack_cli_arg(arg, value)
    except argprocess.ParamError as exc:
        raise ParamError(_with_error_location(str(exc), exc.__context__)) from exc
    except (ValueError, TypeError, IndexError) as exc:
        raise ParamError(f"Error parsing parameter '{arg.cli_name}': {exc}") from exc
    return parsed


def _with_error_location(message: str, cause: BaseException | None) -> str:
    """awscli's shorthand syntax errors print a literal ``{self._error_location()}`` placeholder
    (an f-string prefix is missing in its source); put the pointer to the bad character there."""
    placeholder = "{self._error_location()}"
    locate = getattr(cause, "_error_location", None)
    if placeholder in message and callable(locate):
        return message.replace(placeholder, str(locate()))
    return message


def build_parameters(spec: OperationSpec, ns: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for arg in spec.arguments.values():
        value = getattr(ns, arg.py_name, None)
        if value is None:
            continue
        value = load_file_value(arg, arg.cli_name, value)
        params[arg.member] = unpack(spec, arg, value)
    _merge_cli_input(params, ns)
    paging = {}
    for dest, key in (("starting_token", "StartingToken"), ("page_size", "PageSize"),
                      ("max_items", "MaxItems")):
        value = getattr(ns, dest, None)
        if value is not None:
            paging[key] = value
    if paging:
        params["PaginationConfig"] = paging
    return params


def _merge_cli_input(params: dict[str, Any], ns: argparse.Namespace) -> None:
    given = [(flag, getattr(ns, dest)) for flag, dest in (("--cli-input-json", "cli_input_json"),
                                                          ("--cli-input-yaml", "cli_input_yaml"))
             if getattr(ns, dest, None) is not None]
    if not given:
        return
    if len(given) > 1:
        raise ParamError("Only one --cli-input- parameter may be specified.")
    flag, raw = given[0]
    text = load_file_value(None, flag, raw)
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        loaded = json.loads(text) if flag == "--cli-input-json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if flag == "--cli-input-json" else "YAML"
        raise ParamError(f"Error parsing parameter '{flag[2:]}': Invalid {kind} received.") from exc
    if not isinstance(loaded, dict):
        raise ParamError(f"Error parsing parameter '{flag}': Invalid type: expecting map, "
                         f"received {type(loaded)}")
    for key, value in loaded.items():
        params.setdefault(key, value)


def validate(spec: OperationSpec, params: dict[str, Any]) -> None:
    """botocore's own client-side validation, run before any endpoint is contacted."""
    shape = spec.operation.input_shape
    if shape is None:
        return
    request = {k: v for k, v in params.items() if k != "PaginationConfig"}
    report = ParamValidator().validate(request, shape)
    if report.has_errors():
        raise ParamError(str(ParamValidationError(report=report.generate_report())))
