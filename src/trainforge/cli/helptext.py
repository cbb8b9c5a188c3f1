"""Help pages generated from botocore's model: description, synopsis, every option with its type,
documentation, shorthand syntax (the AWS CLI's own generator) and JSON syntax."""

from __future__ import annotations

import html
import re
import textwrap
from typing import Any

from awscli.argprocess import ParamShorthandDocGen
from botocore.model import Shape

from .globalopts import GLOBAL_OPTIONS
from .opargs import OperationSpec

WIDTH = 100
_TAG = re.compile(r"<[^>]+>")
_BLOCK = re.compile(r"</?(p|ul|ol|note|important|div)[^>]*>", re.IGNORECASE)
_ITEM = re.compile(r"<li[^>]*>", re.IGNORECASE)


def wants_help(argv: list[str]) -> bool:
    return bool(argv) and argv[0] == "help" or "--help" in argv or "-h" in argv


def html_to_text(doc: str | None, indent: str = "    ") -> str:
    """Model documentation (HTML fragments) as wrapped plain text."""
    if not doc:
        return ""
    text = re.sub(r"(<li[^>]*>)\s*<p>", r"\1", doc, flags=re.IGNORECASE)
    text = re.sub(r"</p>\s*(</li>)", r"\1", text, flags=re.IGNORECASE)
    text = _ITEM.sub("\n\n- ", text)
    text = _BLOCK.sub("\n\n", text)
    text = html.unescape(_TAG.sub("", text))
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    wrapped = [textwrap.fill(p, WIDTH, initial_indent=indent, subsequent_indent=indent
                             + ("  " if p.startswith("- ") else "")) for p in paragraphs if p]
    return "\n\n".join(wrapped)


def json_syntax(shape: Shape, depth: int = 0, stack: tuple[str, ...] = ()) -> str:
    pad = "  " * (depth + 1)
    if shape.name in stack and shape.type_name == "structure":
        return "{...recursive...}"
    stack = stack + (shape.name,)
    if shape.type_name == "structure":
        members = [f'{pad}"{name}": {json_syntax(m, depth + 1, stack)}' for name, m in shape.members.items()]
        return "{\n" + ",\n".join(members) + "\n" + "  " * depth + "}"
    if shape.type_name == "list":
        return f"[{json_syntax(shape.member, depth, stack)}, ...]"
    if shape.type_name == "map":
        return "{" + f'"string": {json_syntax(shape.value, depth, stack)}' + "\n" + pad + "...}"
    if getattr(shape, "enum", None):
        return "|".join(f'"{e}"' for e in shape.enum)
    return {"string": '"string"', "boolean": "true|false", "integer": "integer", "long": "long",
            "float": "double", "double": "double", "timestamp": "timestamp"}.get(shape.type_name, "value")


def _option_block(spec: OperationSpec, arg: Any) -> str:
    lines = [f"  {arg.cli_name} ({arg.type_name})"]
    body = html_to_text(arg.argument_model.documentation, indent="      ")
    if body:
        lines.append(body)
    docgen = ParamShorthandDocGen()
    if docgen.supports_shorthand(arg.argument_model):
        example = docgen.generate_shorthand_example(arg, "sagemaker", spec.cli_name)
        if example:
            lines.append("\n      Shorthand Syntax:\n\n        " + example)
    if arg.type_name in ("structure", "list", "map"):
        syntax = json_syntax(arg.argument_model).replace("\n", "\n        ")
        lines.append("\n      JSON Syntax:\n\n        " + syntax)
    return "\n".join(lines) + "\n"


def operation_help(spec: OperationSpec, prog: str | None = None) -> str:
    name = prog or spec.cli_name
    out = [f"NAME\n  {name}\n", "DESCRIPTION\n" + html_to_text(spec.operation.documentation, "  ") + "\n"]
    synopsis = [f"  trainforge {name}"]
    for arg in spec.arguments.values():
        if arg.hidden:
            continue
        if arg.type_name == "boolean":
            item = f"[{arg.cli_name} | --no-{arg.name}]"
        else:
            item = f"{arg.cli_name} <value>"
            item = item if arg.required else f"[{item}]"
        synopsis.append("  " + item)
    if spec.paging is not None:
        synopsis += ["  [--starting-token <value>]", "  [--page-size <value>]", "  [--max-items <value>]"]
    synopsis += ["  [--cli-input-json <value> | --cli-input-yaml <value>]",
                 "  [--generate-cli-skeleton <input|yaml-input|output>]"]
    synopsis += [f"  [--{o.name}{' <value>' if o.takes_value else ''}]" for o in GLOBAL_OPTIONS]
    out.append("SYNOPSIS\n" + "\n".join(synopsis) + "\n")
    out.append("OPTIONS\n" + "\n".join(_option_block(spec, a) for a in spec.arguments.values() if not a.hidden))
    out.append("GLOBAL OPTIONS\n" + "\n".join(f"  --{o.name}\n      {o.help}" for o in GLOBAL_OPTIONS) + "\n")
    return "\n".join(out)
