"""The pieces of AWS's validation messages: Java regular expressions, Java-style value rendering,
UTF-16 lengths and the constraint sentences. :mod:`trainforge.api.validation` assembles them.

AWS validates requests in Java (Coral), so three Java facts shape what a faithful validator sees:

* **Patterns** are ``java.util.regex`` patterns matched against the *whole* value
  (``Matcher.matches()``): ``'a_b'`` fails ``^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}`` although its first
  letter matches. :func:`compile_pattern` translates the constructs the SageMaker model uses into
  Python ``re`` (``\\p{L}`` and other Unicode categories, ``\\p{Alnum}``, escaped surrogate pairs,
  Java's ``.`` that stops at every line terminator, ``\\d``/``\\w``/``\\s`` being ASCII-only,
  quantified anchors like ``${1,128}``, ``(?<name>...)``) and uses ``fullmatch``. A pattern it cannot
  translate (a nested or intersected character class, ``\\P{..}`` inside a class, ``\\G``...) is
  skipped, never guessed: it is recorded in :data:`SKIPPED_PATTERNS` with the reason, and the member
  keeps its other constraints. None of the patterns of the training-job operations is skipped (a
  test asserts it).
* **Lengths** are ``String.length()``: UTF-16 code units, so an emoji counts 2 (:func:`java_length`).
* **Values** in messages are Java ``toString()``: strings raw, numbers as numbers (``1.0E-5`` for
  doubles), ``true``/``false``, lists ``[a, b]``, maps and structures ``{k=v, k2=v2}``
  (:func:`render`).

Values of the wrong JSON type are answered as Coral's Jackson deserializer words them
(:func:`scalar_type_error`, :func:`container_type_error`).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from typing import Any

from trainforge.api.errors import SerializationError

Matcher = Callable[[str], Any]

# pattern text -> why it could not be used (filled as patterns are compiled).
SKIPPED_PATTERNS: dict[str, str] = {}

# Java's `.` matches anything but a line terminator (Pattern docs, "Line terminators").
_JAVA_DOT = "[^\\n\\r\\x85\\u2028\\u2029]"
_POSIX = {  # java.util.regex POSIX classes (US-ASCII only by default)
    "Lower": "a-z", "Upper": "A-Z", "ASCII": "\\x00-\\x7f", "Alpha": "a-zA-Z", "Digit": "0-9",
    "Alnum": "a-zA-Z0-9", "Punct": "!-/:-@\\[-`{-~", "Graph": "!-~", "Print": " -~",
    "Blank": " \\t", "Cntrl": "\\x00-\\x1f\\x7f", "XDigit": "0-9a-fA-F", "Space": " \\t\\n\\x0b\\f\\r",
}
_HSPACE = " \\t\\xa0\\u1680\\u180e\\u2000-\\u200a\\u202f\\u205f\\u3000"
_VSPACE = "\\n\\x0b\\f\\r\\x85\\u2028\\u2029"


class _Untranslatable(Exception):
    pass


@cache
def _category_ranges(category: str) -> str:
    """Character-class body (ranges) for a Unicode general category such as ``L`` or ``Lu``."""
    planes = list(range(0x32400)) + list(range(0xE0000, 0xE0200))  # planes 4-13 are unassigned
    if category.startswith("C"):
        planes = list(range(0x110000))
    parts: list[str] = []
    start = prev = -2
    for cp in planes:
        if unicodedata.category(chr(cp)).startswith(category):
            if cp != prev + 1:
                if start >= 0:
                    parts.append(_range(start, prev))
                start = cp
            prev = cp
    if start >= 0:
        parts.append(_range(start, prev))
    if not parts:
        raise _Untranslatable(f"unknown Unicode category {category}")
    return "".join(parts)


def _range(a: int, b: int) -> str:
    return _char(a) if a == b else f"{_char(a)}-{_char(b)}"


def _char(cp: int) -> str:
    return f"\\U{cp:08x}" if cp > 0xFFFF else f"\\u{cp:04x}"


def _property(name: str) -> str:
    """Body of a character class for Java's ``\\p{name}``."""
    if name in _POSIX:
        return _POSIX[name]
    for prefix in ("Is", "general_category=", "gc="):
        if name.startswith(prefix) and len(name) > len(prefix):
            name = name[len(prefix):]
    if name in {"L", "M", "N", "P", "S", "Z", "C"} or (len(name) == 2 and name[0] in "LMNPSZC"):
        return _category_ranges(name)
    if name == "javaLowerCase":
        return _category_ranges("Ll")
    if name == "javaUpperCase":
        return _category_ranges("Lu")
    if name == "javaWhitespace":
        return " \\t\\n\\x0b\\f\\r\\x1c-\\x1f"
    raise _Untranslatable(f"unsupported property \\p{{{name}}}")


def java_to_python(pattern: str) -> str:
    """Translate a java.util.regex pattern to Python ``re`` syntax (raises _Untranslatable)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise _Untranslatable("trailing backslash")
            e = pattern[i + 1]
            i += 2
            if e in "pP":
                if i < n and pattern[i] == "{":
                    end = pattern.index("}", i)
                    name, i = pattern[i + 1:end], end + 1
                else:
                    name, i = pattern[i], i + 1
                body = _property(name)
                if in_class:
                    if e == "P":
                        raise _Untranslatable("negated property inside a character class")
                    out.append(body)
                else:
                    out.append(f"[{'^' if e == 'P' else ''}{body}]")
            elif e == "u":
                cp = int(pattern[i:i + 4], 16)
                i += 4
                if 0xD800 <= cp <= 0xDBFF and pattern[i:i + 2] == "\\u":
                    low = int(pattern[i + 2:i + 6], 16)
                    if 0xDC00 <= low <= 0xDFFF:  # Java joins an escaped surrogate pair
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
                        i += 6
                out.append(_char(cp))
            elif e == "x":
                if i < n and pattern[i] == "{":
                    end = pattern.index("}", i)
                    out.append(_char(int(pattern[i + 1:end], 16)))
                    i = end + 1
                else:
                    out.append("\\x" + pattern[i:i + 2])
                    i += 2
            elif e == "Q":
                end = pattern.find("\\E", i)
                end = n if end < 0 else end
                literal = re.escape(pattern[i:end])
                out.append(literal)
                i = end + 2
            elif e == "z":
                out.append("\\Z")
            elif e == "Z":
                out.append("(?=(?:\\r\\n|[\\n\\r\\x85\\u2028\\u2029])?\\Z)")
            elif e == "h":
                out.append(_HSPACE if in_class else f"[{_HSPACE}]")
            elif e == "v":
                out.append(_VSPACE if in_class else f"[{_VSPACE}]")
            elif e == "R" and not in_class:
                out.append("(?:\\r\\n|[\\n\\x0b\\f\\r\\x85\\u2028\\u2029])")
            elif e == "e":
                out.append("\\x1b")
            elif e == "k" and i < n and pattern[i] == "<":
                end = pattern.index(">", i)
                out.append(f"(?P={pattern[i + 1:end]})")
                i = end + 1
            elif e in "dDsSwWbBAfnrt0123456789" or not e.isalnum():
                out.append("\\" + e)
            else:
                raise _Untranslatable(f"unsupported escape \\{e}")
            continue
        if in_class:
            if c == "[":
                raise _Untranslatable("nested character class")
            if c == "&" and pattern[i:i + 2] == "&&":
                raise _Untranslatable("character class intersection")
            if c == "]":
                in_class = False
                out.append(c)
            elif c in "&~|":
                out.append("\\" + c)
            elif c == "-" and pattern[i + 1:i + 2] == "-":
                out.append("-\\")
            else:
                out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            i += 1
            if pattern[i:i + 1] == "^":
                out.append("^")
                i += 1
            if pattern[i:i + 1] == "]":  # a leading ] is a literal in Java
                out.append("\\]")
                i += 1
            continue
        if c == ".":
            out.append(_JAVA_DOT)
        elif c in "^$" and pattern[i + 1:i + 2] in ("{", "*", "+", "?"):
            out.append(f"(?:{c})")  # Java lets an anchor be quantified
        elif c == "(" and pattern[i:i + 3] == "(?<" and pattern[i + 3:i + 4] not in ("=", "!"):
            out.append("(?P<")
            i += 3
            continue
        else:
            out.append(c)
        i += 1
    if in_class:
        raise _Untranslatable("unterminated character class")
    return "".join(out)


# Patterns that match every string: no need to run them.
_ALWAYS = frozenset({"[\\S\\s]*", "[\\s\\S]*", "(?s).*", "[\\s\\S]+|", "[\\w\\W]*"})


@cache
def compile_pattern(pattern: str) -> Matcher | None:
    """``fullmatch`` of the Java pattern translated to Python, or None when it cannot be used
    (recorded in :data:`SKIPPED_PATTERNS`) or when it matches everything."""
    if pattern in _ALWAYS:
        return None
    try:
        return re.compile(java_to_python(pattern), re.ASCII).fullmatch
    except (_Untranslatable, re.error, ValueError) as exc:
        SKIPPED_PATTERNS[pattern] = str(exc)
        return None


def java_length(s: str) -> int:
    """``String.length()`` in Java: UTF-16 code units."""
    if s.isascii():
        return len(s)
    return len(s) + sum(1 for ch in s if ord(ch) > 0xFFFF)


def java_double(f: float) -> str:
    """``Double.toString``: ``1.0``, ``0.001``, ``1.0E-4``, ``1.0E7``, ``NaN``, ``Infinity``."""
    if math.isnan(f):
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "Infinity" if f > 0 else "-Infinity"
    if f == 0 or 1e-3 <= abs(f) < 1e7:
        return repr(f)  # positional in this range, always with a fraction part
    sign, digit_tuple, exponent = Decimal(repr(f)).as_tuple()
    digits = "".join(map(str, digit_tuple))
    power = len(digits) - 1 + int(exponent)
    digits = digits.rstrip("0") or "0"
    return f"{'-' if sign else ''}{digits[0]}.{digits[1:] or '0'}E{power}"


class _Text(str):
    """Literal text queued by :func:`render` between the values it still has to print."""


def render(value: Any) -> str:
    """A request value as Java's ``toString()`` would print it in a validation message. Iterative:
    a value nested thousands deep prints without deep recursion."""
    out: list[str] = []
    todo: list[Any] = [value]
    while todo:
        v = todo.pop()
        t = v.__class__
        if t is _Text or t is str:
            out.append(v)
        elif t is bool:
            out.append("true" if v else "false")
        elif t is int:
            out.append(str(v))
        elif t is float:
            out.append(java_double(v))
        elif v is None:
            out.append("null")
        elif t is list or t is dict:
            items = list(v.items()) if t is dict else v
            todo.append(_Text("}" if t is dict else "]"))
            for i in range(len(items) - 1, -1, -1):
                if t is dict:
                    todo += (items[i][1], _Text(f"{items[i][0]}="))
                else:
                    todo.append(items[i])
                if i:
                    todo.append(_Text(", "))
            todo.append(_Text("{" if t is dict else "["))
        else:
            out.append(str(v))
    return "".join(out)


def number_text(value: Any, is_float: bool) -> str:
    """A bound from the model as AWS prints it (``1`` for integers, ``1.0`` for doubles)."""
    if is_float:
        return java_double(float(value))
    return str(int(value)) if float(value).is_integer() else java_double(float(value))


def lower_first(name: str) -> str:
    """Coral's member path segment: the member name with its first letter lowered."""
    return name[:1].lower() + name[1:]


# ---- the constraint sentences (AWS's wording) ---------------------------------------------
def length_at_least(n: Any) -> str:
    return f"Member must have length greater than or equal to {n}"


def length_at_most(n: Any) -> str:
    return f"Member must have length less than or equal to {n}"


def value_at_least(n: str) -> str:
    return f"Member must have value greater than or equal to {n}"


def value_at_most(n: str) -> str:
    return f"Member must have value less than or equal to {n}"


def enum_set(values: list[str]) -> str:
    return f"Member must satisfy enum value set: [{', '.join(values)}]"


def pattern_text(pattern: str) -> str:
    return f"Member must satisfy regular expression pattern: {pattern}"


NOT_NULL = "Member must not be null"


def failure(value: Any, path: str, constraint: str) -> str:
    """One entry of the message: ``Value 'x' at 'a.b' failed to satisfy constraint: ...``."""
    shown = "null" if value is None else f"'{render(value)}'"
    return f"Value {shown} at '{path}' failed to satisfy constraint: {constraint}"


def summary(errors: list[str]) -> str:
    """``1 validation error detected: e`` or ``N validation errors detected: e1; e2``."""
    n = len(errors)
    return f"{n} validation error{'' if n == 1 else 's'} detected: " + "; ".join(errors)


# ---- type errors: Coral's Jackson wording, for the first value of a wrong JSON type --------
JAVA_TYPE = {"string": "a String", "integer": "an Integer", "long": "a Long", "boolean": "a Boolean",
             "float": "a Float", "double": "a Double", "timestamp": "a Date", "blob": "a ByteBuffer",
             "bigdecimal": "a BigDecimal", "biginteger": "a BigInteger"}


def _token(value: Any) -> str:
    if value is True:
        return "TRUE_VALUE"
    if value is False:
        return "FALSE_VALUE"
    if isinstance(value, str):
        return "STRING_VALUE"
    return "NUMBER_VALUE"


def _start_found(value: Any) -> SerializationError | None:
    if isinstance(value, list):
        return SerializationError("Start of list found where not expected")
    if isinstance(value, dict):
        return SerializationError("Start of structure or map found where not expected.")
    return None


def scalar_type_error(value: Any, kind: str) -> SerializationError:
    """``value`` where a scalar of model type ``kind`` belongs."""
    return _start_found(value) or SerializationError(
        f"{_token(value)} can not be converted to {JAVA_TYPE.get(kind, 'a ' + kind)}")


def container_type_error(value: Any, expected: str) -> SerializationError:
    """``value`` where a ``list``, ``map`` or structure belongs."""
    return _start_found(value) or SerializationError(
        {"list": "Expected list or null", "map": "Expected map or null"}.get(expected, "Expected null"))
