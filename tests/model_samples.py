"""Values drawn with Hypothesis from botocore model shapes, and a pattern oracle for them (helpers
for the validation tests; no tests here).

The oracle says whether a string satisfies a model pattern without the translator under test
(``trainforge.api.constraints``): on ASCII text without '\\r', java.util.regex and Python's re
(re.ASCII) agree once the few Java spellings of the model are written the Python way: ``\\p{..}``
(its ASCII members), an escaped surrogate pair (one code point) and a quantified anchor
(``${1,128}`` is ``$``). Every value drawn here lies in that text, so the oracle is exact there. A
pattern it cannot read is recorded in :data:`UNREADABLE` (the tests assert it small), never guessed.
"""

from __future__ import annotations

import base64
import re
import unicodedata
import warnings
from functools import cache
from typing import Any

import hypothesis
import pytest
from botocore.model import ListShape, MapShape, Shape, StructureShape
from hypothesis import strategies as st

_ASCII = [chr(i) for i in range(128)]
_PROPERTIES = {"Alnum": "a-zA-Z0-9"} | {
    cat: "".join(re.escape(ch) for ch in _ASCII if unicodedata.category(ch).startswith(cat)) for cat in "LMNPSZ"}
_TOKEN = re.compile(r"\\(?:p\{\w+\}|U[0-9a-fA-F]{8}|u[0-9a-fA-F]{4}|.)|.", re.DOTALL)
UNREADABLE: dict[str, str] = {}  # model pattern -> why the oracle cannot read it


def tokens(regex: str) -> list[tuple[str, bool]]:
    """(token, inside a character class) for each escape or character of ``regex``."""
    toks, opened, out = _TOKEN.findall(regex), -1, []
    for i, tok in enumerate(toks):
        if opened < 0 and tok == "[":
            opened = i
        out.append((tok, opened >= 0))
        if opened >= 0 and tok == "]" and i > opened + 1 and toks[opened + 1:i] != ["^"]:
            opened = -1
    return out


def _pair(m: re.Match[str]) -> str:
    return f"\\U{0x10000 + ((int(m[1], 16) - 0xD800) << 10) + int(m[2], 16) - 0xDC00:08x}"


@cache
def oracle(pattern: str) -> re.Pattern[str] | None:
    """The model's Java pattern as a Python regex, exact on ASCII text without '\\r'."""
    text = re.sub(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})", _pair, pattern, flags=re.IGNORECASE)
    text = re.sub(r"(?<!\\)\$\{\d+(?:,\d*)?\}", "$", text)
    out = []
    try:
        for tok, in_class in tokens(text):
            if tok.startswith("\\p{"):
                body = _PROPERTIES[tok[3:-1]]
                out.append(body if in_class else f"[{body}]")
            else:
                out.append(tok)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # FutureWarning: a nested set, read differently by Java
            return re.compile("".join(out), re.ASCII)
    except (KeyError, re.error, FutureWarning) as exc:
        UNREADABLE[pattern] = f"{type(exc).__name__}: {exc}"
        return None


def matches(pattern: str, value: str) -> bool:
    assert value.isascii() and "\r" not in value, f"{value!r} is outside the oracle's text"
    regex = oracle(pattern)
    assert regex is not None, UNREADABLE[pattern]
    return regex.fullmatch(value) is not None


def _code(tok: str) -> int:
    """The code point of a character or of a ``\\u``/``\\U`` escape (0 for other escapes)."""
    if tok[:2] in ("\\u", "\\U"):
        return int(tok.lstrip("\\uU"), 16)
    return 0 if tok[0] == "\\" else ord(tok)


def drawable(regex: str, least: int, most: int, bound: bool) -> str:
    """A regex easier for Hypothesis: positive lookaheads and class members beyond ASCII dropped and,
    when ``bound``, every unbounded repeat given bounds that reach the length bounds together.
    What it draws is only a proposal: the oracle and the lengths decide."""
    marked = tokens(regex) + [("", False)] * 2  # padded: a range test may look two ahead
    is_repeat = [not inside and tok in ("*", "+") and marked[i - 1][0] not in ("*", "+", "?", "}")
                 for i, (tok, inside) in enumerate(marked)]
    share = max(sum(is_repeat), 1)
    low, high = -(-least // share), max(-(-least // share), most // share, 1)
    out: list[str] = []
    i = 0
    while i < len(marked):
        tok, in_class = marked[i]
        if not in_class and [t for t, _ in marked[i:i + 3]] == ["(", "?", "="]:
            depth = 0
            for i in range(i, len(marked)):  # noqa: B020 (continues after the lookahead)
                depth += {"(": 1, ")": -1}.get(marked[i][0], 0) if not marked[i][1] else 0
                if depth == 0:
                    break
        elif in_class and marked[i + 1][0] == "-" and marked[i + 2][0] != "]":  # a range: its ASCII part
            end = marked[i + 2][0] if _code(marked[i + 2][0]) <= 0x7F else "\\x7f"
            out.extend([tok, "-", end] if _code(tok) <= 0x7F else [])
            i += 2
        elif in_class and _code(tok) > 0x7F:
            pass
        elif bound and is_repeat[i]:
            out.append(f"{{{max(low, int(tok == '+'))},{high}}}")
        else:
            out.append(tok)
        i += 1
    return "".join(out)


_ALPHABET = st.characters(max_codepoint=0x7F)


@cache
def text(pattern: str | None, least: int, most: int, lenient: bool = False) -> st.SearchStrategy[str]:
    """Any string of ``least``..``most`` characters matching ``pattern`` (ASCII, no '\\r'). A pattern the
    oracle cannot read skips the test, or with ``lenient`` (fuzzing) gives plain text instead."""
    plain = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=least, max_size=most)
    if pattern is None:
        return plain
    regex = oracle(pattern)
    if regex is None:
        if lenient:
            return plain
        pytest.skip(f"pattern {pattern!r} unreadable here: {UNREADABLE[pattern]}")
    proposals = st.one_of([st.from_regex(drawable(regex.pattern, least, most, bound), fullmatch=True,
                                         alphabet=_ALPHABET) for bound in {False, least > 1}])
    return proposals.filter(lambda s: least <= len(s) <= most and "\r" not in s and regex.fullmatch(s) is not None)


def breaking(pattern: str, least: int, most: int) -> str | None:
    """A string within the length bounds that breaks ``pattern``, if one of these does."""
    size = max(least, 1)
    for ch in "!\n _-a0":
        if size <= most and not matches(pattern, ch * size):
            return ch * size
    return None


_VALID: dict[str, st.SearchStrategy[Any]] = {}  # shape name -> its plain strategy (built and checked once)
_JAVA_BOUNDS = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
RICH_DEPTH = 6  # rich values set optional members this many structures deep


def valid(shape: Shape, rich: bool = False, depth: int = 0) -> st.SearchStrategy[Any]:
    """Any value satisfying every constraint of the shape. Plain: a structure's required members only,
    lists at their least length, maps empty (the smallest valid requests). ``rich`` (fuzzing): a few
    optional members too, lists and maps up to two items longer, every integer and timestamp form."""
    if rich:
        return _valid(shape, True, depth)
    if shape.name not in _VALID:
        _VALID[shape.name] = _valid(shape, False, 0)
    return _VALID[shape.name]


def _valid(shape: Shape, rich: bool, depth: int) -> st.SearchStrategy[Any]:
    meta, kind = shape.metadata, shape.type_name
    least = int(meta.get("min", 0))
    if isinstance(shape, StructureShape):
        required = {name: valid(shape.members[name], rich, depth + 1) for name in shape.required_members}
        optional = {name: valid(member, rich, depth + 1) for name, member in shape.members.items()
                    if rich and depth < RICH_DEPTH and name not in required}
        if not optional:
            return st.fixed_dictionaries(required)
        chosen = st.lists(st.sampled_from(sorted(optional)), max_size=4, unique=True)  # small, many requests
        return chosen.flatmap(lambda keys: st.fixed_dictionaries({**required, **{k: optional[k] for k in keys}}))
    most = min(int(meta.get("max", least + 2)), least + 2) if rich else least
    if isinstance(shape, ListShape):
        return st.lists(valid(shape.member, rich, depth + 1), min_size=least, max_size=most)
    if isinstance(shape, MapShape):
        if not rich:
            return st.just({})
        return st.dictionaries(valid(shape.key, rich), valid(shape.value, rich, depth + 1), min_size=least,
                               max_size=most)
    if kind == "string":
        if meta.get("enum"):
            return st.sampled_from(meta["enum"])
        return text(meta.get("pattern"), least, int(meta.get("max", 2**31 - 1)), lenient=rich)
    if kind in _JAVA_BOUNDS:
        low, high = _JAVA_BOUNDS[kind] if rich else (0, 2**31 - 1)
        return st.integers(int(meta.get("min", low)), int(meta.get("max", high)))
    if kind in ("float", "double"):
        return st.floats(meta.get("min", 0), meta.get("max", 2.0**31), allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "timestamp":
        seconds = st.integers(0, 4102444800)
        return st.one_of(seconds, st.datetimes().map(lambda d: d.isoformat())) if rich else seconds
    if kind == "blob":
        return st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode())
    raise AssertionError(kind)


def sample(shape: Shape) -> Any:
    """One small value of ``shape`` satisfying every constraint (the simplest ``valid`` finds), for
    tests that need a value of a member outside a Hypothesis test."""
    return hypothesis.find(valid(shape), lambda _: True,
                           settings=hypothesis.settings(database=None, derandomize=True, max_examples=50))
