"""Rendering responses: ``--output json|yaml|yaml-stream|text|table`` and ``--query``.

json, text and table are the AWS CLI's own formatter classes (``awscli.formatter``), so they render
byte for byte as ``aws`` does. yaml and yaml-stream (AWS CLI v2 formats, absent from awscli v1)
follow v2: yaml is the whole (paginated) result as one block-style document with sorted keys;
yaml-stream writes each page as one item of a top-level list as it arrives.
"""

from __future__ import annotations

import argparse
from typing import IO, Any

import jmespath
import yaml
from awscli.formatter import Formatter, FullyBufferedFormatter, get_formatter, is_response_paginated
from jmespath.exceptions import JMESPathError

from .errors import ParamError


def _dump_yaml(data: Any, stream: IO[str]) -> None:
    yaml.safe_dump(data, stream, default_flow_style=False, allow_unicode=True, sort_keys=True)


class YAMLFormatter(FullyBufferedFormatter):
    def _format_response(self, command_name: str, response: Any, stream: IO[str]) -> None:
        if response == {}:
            return
        _dump_yaml(response, stream)


class YAMLStreamFormatter(Formatter):
    def __call__(self, command_name: str, response: Any, stream: IO[str] | None = None) -> None:
        assert stream is not None
        pages = response if is_response_paginated(response) else [response]
        for page in pages:
            self._remove_request_id(page)
            if self._args.query is not None:
                page = self._args.query.search(page)
            _dump_yaml([page], stream)
            self._flush_stream(stream)


def compile_query(query: str | None) -> Any:
    if query is None:
        return None
    try:
        return jmespath.compile(query)
    except JMESPathError as exc:
        raise ParamError(f"Bad value for --query {query}: {exc}") from exc


def formatter_for(output: str, query: str | None, color: str, paginate: bool) -> Any:
    args = argparse.Namespace(query=compile_query(query), color=color or "auto", paginate=paginate)
    if output == "yaml":
        return YAMLFormatter(args)
    if output == "yaml-stream":
        return YAMLStreamFormatter(args)
    try:
        return get_formatter(output, args)
    except ValueError as exc:
        raise ParamError(str(exc)) from exc


def display(command_name: str, response: Any, output: str, query: str | None, color: str,
            paginate: bool, stream: IO[str]) -> None:
    formatter_for(output, query, color, paginate)(command_name, response, stream)
