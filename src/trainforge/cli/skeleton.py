"""``--generate-cli-skeleton input|yaml-input|output``.

``input`` is the AWS CLI's: botocore's ``ArgumentGenerator`` over the input shape, as indented
JSON. ``yaml-input`` is the AWS CLI v2 format: the same skeleton as YAML in member order, each
member followed by a comment with ``[REQUIRED]``, the first sentence of its documentation and its
valid values. ``output`` validates the command's parameters and prints a sample response through
the normal output formatting (a stubbed client call: nothing is sent).
"""

from __future__ import annotations

import json
import re
import xml.dom.minidom
import xml.parsers.expat
from typing import IO, Any

from awscli.utils import json_encoder
from botocore.model import Shape
from botocore.utils import ArgumentGenerator

_SENTENCE_END = re.compile(r"[.:]+")


def input_skeleton(shape: Shape | None, stream: IO[str]) -> None:
    skeleton = ArgumentGenerator().generate_skeleton(shape) if shape is not None else {}
    stream.write(json.dumps(skeleton, indent=4, default=json_encoder))
    stream.write("\n")


def output_skeleton(shape: Shape | None) -> dict[str, Any]:
    if shape is None:
        return {}
    return ArgumentGenerator(use_member_names=True).generate_skeleton(shape)


def doc_overview(shape: Shape) -> str:
    """The first sentence of a shape's documentation, as plain text on one line."""
    text = shape.documentation or ""
    try:
        dom = xml.dom.minidom.parseString(f"<doc>{text}</doc>")
        text = "".join(_text_nodes(dom))
    except xml.parsers.expat.ExpatError:
        pass
    text = _SENTENCE_END.split(text, 1)[0]
    if text:
        text += "."
    return text.replace("\n", " ").replace("\u2028", " ")


def _text_nodes(node: Any) -> list[str]:
    out: list[str] = []
    for child in node.childNodes:
        if child.nodeType == child.TEXT_NODE:
            out.append(child.data)
        else:
            out.extend(_text_nodes(child))
    return out


class _Binary:
    """Placeholder for a blob member: rendered as an empty ``!!binary`` scalar."""


def yaml_input_skeleton(shape: Shape | None, stream: IO[str]) -> None:
    """With ruamel.yaml (what the AWS CLI v2 writes it with) when installed, else an equivalent
    emitter of its own: the same document, the same comments."""
    try:
        from ruamel.yaml import YAML
    except ImportError:
        stream.write(_emit(_YAMLSkeleton(None).generate_skeleton(shape) if shape is not None else {}))
        return
    dumper = YAML()
    dumper.representer.add_representer(
        _Binary, lambda rep, _data: rep.represent_scalar("tag:yaml.org,2002:binary", ""))
    skeleton = _YAMLSkeleton(dumper).generate_skeleton(shape) if shape is not None else dumper.map()
    dumper.dump(skeleton, stream)


class _CommentedMap(dict):  # type: ignore[type-arg]
    """What the skeleton is made of without ruamel.yaml: a dict with one end-of-line comment per key."""

    def __init__(self) -> None:
        super().__init__()
        self.comments: dict[str, str] = {}

    def yaml_add_eol_comment(self, comment: str, key: str) -> None:
        self.comments[key] = comment


def _scalar(value: Any) -> str:
    if isinstance(value, _Binary):
        return "!!binary ''"
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1 << 20)
    return text.removesuffix("\n...\n").strip()


def _emit(value: Any, indent: int = 0) -> str:
    lines: list[str] = []
    _emit_into(value, indent, lines, first_prefix=" " * indent)
    return "\n".join(lines) + "\n"


def _emit_into(value: Any, indent: int, lines: list[str], first_prefix: str) -> None:
    pad = " " * indent
    prefix = first_prefix
    if isinstance(value, dict):
        if not value:
            lines.append(prefix + "{}")
            return
        comments = getattr(value, "comments", {})
        for key, item in value.items():
            comment = f"  {comments[key]}" if key in comments else ""
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{prefix}{key}:{comment}")
                _emit_into(item, indent + 2 if isinstance(item, dict) else indent, lines,
                           first_prefix=" " * (indent + 2) if isinstance(item, dict) else pad)
            else:
                lines.append(f"{prefix}{key}: {_scalar(item)}{comment}")
            prefix = pad
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)) and item:
                _emit_into(item, indent + 2, lines, first_prefix=pad + "- ")
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(prefix + _scalar(value))


class _YAMLSkeleton(ArgumentGenerator):
    def __init__(self, dumper: Any) -> None:
        super().__init__(use_member_names=False)
        self._dumper = dumper
        self._map = dumper.map if dumper is not None else _CommentedMap

    def _generate_skeleton(self, shape: Shape, stack: list[str], name: str = "") -> Any:
        if shape.type_name == "blob":
            return _Binary()
        return super()._generate_skeleton(shape, stack, name)

    def _generate_type_structure(self, shape: Shape, stack: list[str]) -> Any:
        mapping = self._map()
        if stack.count(shape.name) > 1:
            return mapping
        required = set(shape.required_members)
        for member, member_shape in shape.members.items():
            mapping[member] = self._generate_skeleton(member_shape, stack, name=member)
            parts = ["[REQUIRED]"] if member in required else []
            parts.append(doc_overview(member_shape))
            if getattr(member_shape, "enum", None):
                parts.append(f"Valid values are: {', '.join(member_shape.enum)}.")
            comment = " ".join(parts)
            if comment.strip():
                mapping.yaml_add_eol_comment("# " + comment, member)
        return mapping

    def _generate_type_map(self, shape: Shape, stack: list[str]) -> Any:
        return dict(super()._generate_type_map(shape, stack))
