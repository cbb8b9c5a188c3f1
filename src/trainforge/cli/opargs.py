"""Command-line arguments of one SageMaker operation, generated from botocore's service model.

Each top-level member of the operation's input shape becomes ``--kebab-case`` (the AWS CLI's
``xform_name(member, '-')``); booleans become a ``--x`` / ``--no-x`` pair; lists take any number
of values. Paginated operations get the AWS CLI's ``--starting-token``, ``--page-size`` and
``--max-items`` (their own ``--next-token`` / ``--max-results`` still work and turn automatic
pagination off). Every operation also gets ``--cli-input-json``, ``--cli-input-yaml`` and
``--generate-cli-skeleton``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from botocore import xform_name
from botocore.model import OperationModel, Shape

from .. import awsmodel
from .argparser import ArgParser
from .globalopts import GLOBAL_OPTIONS, add_global_options

SKELETON_CHOICES = ("input", "output", "yaml-input")
CLI_INPUT_FLAGS = ("--cli-input-json", "--cli-input-yaml")


@dataclass
class OpArgument:
    """One operation argument; the attribute names are the ones awscli's parsers read."""

    name: str
    member: str
    argument_model: Shape
    required: bool
    hidden: bool = False

    @property
    def cli_name(self) -> str:
        return "--" + self.name

    @property
    def py_name(self) -> str:
        return self.name.replace("-", "_")

    @property
    def type_name(self) -> str:
        return self.argument_model.type_name


@dataclass
class PagingSpec:
    input_tokens: list[str]
    limit_key: str | None
    limit_type: str = "integer"


@dataclass
class OperationSpec:
    operation: OperationModel
    cli_name: str
    arguments: dict[str, OpArgument] = field(default_factory=dict)
    paging: PagingSpec | None = None

    @property
    def name(self) -> str:
        return self.operation.name


@cache
def operation_spec(operation_name: str) -> OperationSpec:
    op = awsmodel.operation(operation_name)
    spec = OperationSpec(operation=op, cli_name=xform_name(operation_name, "-"))
    shape = op.input_shape
    if shape is not None:
        required = set(shape.required_members)
        for member, member_shape in shape.members.items():
            name = xform_name(member, "-")
            spec.arguments[name] = OpArgument(name, member, member_shape, member in required)
    spec.paging = _paging(op)
    if spec.paging is not None:
        for token in spec.paging.input_tokens + ([spec.paging.limit_key] if spec.paging.limit_key else []):
            spec.arguments[xform_name(token, "-")].hidden = True
    return spec


def _paging(op: OperationModel) -> PagingSpec | None:
    from botocore.exceptions import DataNotFoundError
    from botocore.paginate import PaginatorModel

    from .connection import shared_loader

    try:
        model = PaginatorModel(shared_loader().load_service_model("sagemaker", "paginators-1"))
        config = model.get_paginator(op.name)
    except (KeyError, ValueError, DataNotFoundError):  # no paginator for this operation
        return None
    tokens = config["input_token"]
    tokens = tokens if isinstance(tokens, list) else [tokens]
    limit = config.get("limit_key")
    limit_type = op.input_shape.members[limit].type_name if limit else "integer"
    return PagingSpec(input_tokens=list(tokens), limit_key=limit, limit_type=limit_type)


def overrides_required(argv: list[str]) -> bool:
    """True when required options may be omitted (they come from a file or a skeleton is asked for)."""
    for i, word in enumerate(argv):
        flag = word.split("=", 1)[0]
        if flag in CLI_INPUT_FLAGS:
            return True
        if flag == "--generate-cli-skeleton":
            value = word.split("=", 1)[1] if "=" in word else (argv[i + 1] if i + 1 < len(argv) else "")
            if value != "output":
                return True
    return False


_ARGPARSE_TYPES: dict[str, Any] = {"long": int, "float": float, "double": float}


def build_parser(spec: OperationSpec, enforce_required: bool, prog: str) -> ArgParser:
    parser = ArgParser(prog=prog)
    global_names = {o.name for o in GLOBAL_OPTIONS}
    for arg in spec.arguments.values():
        required = arg.required and enforce_required
        if arg.type_name == "boolean":
            parser.add_argument(arg.cli_name, action="store_true", dest=arg.py_name, default=None)
            parser.add_argument("--no-" + arg.name, action="store_false", dest=arg.py_name, default=None)
        elif arg.type_name == "list":
            parser.add_argument(arg.cli_name, nargs="*", dest=arg.py_name, required=required)
        else:
            parser.add_argument(arg.cli_name, dest=arg.py_name, required=required,
                                type=_ARGPARSE_TYPES.get(arg.type_name, str))
    if spec.paging is not None:
        limit_type = int if spec.paging.limit_type in ("integer", "long") else str
        parser.add_argument("--starting-token", dest="starting_token")
        if spec.paging.limit_key:
            parser.add_argument("--page-size", dest="page_size", type=limit_type)
        parser.add_argument("--max-items", dest="max_items", type=limit_type)
    parser.add_argument("--cli-input-json", dest="cli_input_json")
    parser.add_argument("--cli-input-yaml", dest="cli_input_yaml")
    parser.add_argument("--generate-cli-skeleton", dest="generate_cli_skeleton", nargs="?",
                        const="input", choices=SKELETON_CHOICES)
    taken = {a.name for a in spec.arguments.values()}
    add_global_options(parser, exclude=frozenset(global_names & taken))
    return parser


def is_set(namespace: argparse.Namespace, arg: OpArgument) -> bool:
    return getattr(namespace, arg.py_name, None) is not None
