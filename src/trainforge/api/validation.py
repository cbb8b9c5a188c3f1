"""Validation of a request against botocore's SageMaker model, answered the way AWS answers it.

``validate(operation_name, params)`` checks a parsed AWS JSON 1.1 body against the operation's
input shape and raises :class:`ValidationError` (HTTP 400, ``ValidationException``) listing every
violation, or :class:`SerializationError` (``SerializationException``) for a value of the wrong
JSON type. Every constraint comes from the model (``required``, ``min``/``max`` on strings, lists,
maps and numbers, ``enum``, ``pattern``, member types); nothing is copied by hand. Each operation
is compiled once into a tree of closures (cached), so a DescribeTrainingJob validation costs a
couple of microseconds.

Message format (Coral's, as seen in real AWS answers):

* ``1 validation error detected: <e>`` / ``N validation errors detected: <e1>; <e2>; ...``
* ``<e>`` is ``Value '<value>' at '<path>' failed to satisfy constraint: <constraint>``; a missing
  required member is ``Value null at 'roleArn' failed to satisfy constraint: Member must not be
  null`` (a JSON ``null`` counts as missing). A null list element or map value (of any shape) is
  refused the same way at its own path: ``Value null at 'tags.1.member' failed to satisfy constraint:
  Member must not be null``, ``hyperParameters.<key>`` for a map value (botocore's client-side
  validator refuses them too; the exact AWS text for these is unverified).
* ``<path>``: member names with the first letter lowered, joined by dots
  (``resourceConfig.instanceCount``); list elements of structures are ``<list>.<i>.member``, 1-based
  (``inputDataConfig.1.member.inputMode``, as SageMaker answers).
* ``<constraint>``: ``Member must have length greater than or equal to N`` / ``less than or equal to
  N`` (strings, in UTF-16 units like Java; also list and map sizes), ``Member must have value greater
  than or equal to N`` / ``less than or equal to N``, ``Member must satisfy enum value set: [A, B]``,
  ``Member must satisfy regular expression pattern: P`` (P as the model spells it, matched against
  the whole value). A value breaking several rules gets one entry per rule (length, then enum, then
  pattern).
* A list of scalars with bad elements gets ONE entry at the list's path, the value being the whole
  list and the constraint listing every rule of the element shape: ``Value '[a, b]' at 'vpcConfig.
  subnets' failed to satisfy constraint: Member must satisfy constraint: [Member must have length
  less than or equal to 32, Member must have length greater than or equal to 0, Member must satisfy
  regular expression pattern: [-0-9a-zA-Z]+]`` (ACM and Lambda answer this way).
* A map with bad keys or values gets one entry for the keys then one for the values, at the map's
  path, the value rendered as ``{k=v, k2=v2}``: ``... at 'hyperParameters' failed to satisfy
  constraint: Map value must satisfy constraint: [Member must have length less than or equal to
  2500, ...]`` (``Map keys must satisfy constraint: [...]`` for keys; wording from Firehose,
  EventBridge and Lambda answers).
* Values are rendered as Java's ``toString()``: strings raw, numbers as numbers (quoted like every
  value: ``Value '0' at 'maxResults'``), lists ``[a, b]``, maps and structures ``{k=v}``.
* Entries come in model member order (AWS's own order is not reproducible), depth first.
* Unknown members are rejected (AWS itself ignores them; trainforge refuses what it would not act on)
  with ``Value '<value>' at '<path>' failed to satisfy constraint: Unknown member 'Foo'; must be one
  of: [A, B, C]`` (wire names of the structure's members), after that structure's other entries.

Type errors are found while walking (AWS finds them while deserializing, before any validation,
and reports only the first), with Coral's Jackson wording: ``STRING_VALUE can not be converted to
an Integer`` (``NUMBER_VALUE``/``TRUE_VALUE``/``FALSE_VALUE``; ``a String``, ``a Long``, ``a Boolean``,
``a Double``, ``a Date``), ``Start of list found where not expected``, ``Start of structure or map
found where not expected.``, ``Expected list or null`` (scalar for a list), ``Expected null`` (scalar
for a structure), ``Expected map or null`` (scalar for a map; unverified). Integers accept JSON
numbers with no fraction (``2.0``); a fractional one is a type error (AWS truncates it); one beyond
the Java type fails its bound with no value shown (``Value at 'maxResults' failed ...``, as Athena
answers). Timestamps accept epoch numbers (botocore sends floats) and ISO 8601 strings.

``file://`` URIs pass the S3-URI pattern (``(https|s3)://([^/]+)/?(.*)``) wherever the model has one,
as DESIGN.md promises; ``service/create_rules.py`` then checks they lie under the allowed roots.

Known differences, all from following the installed model: botocore 1.43 ships patterns without the
``^``/``$`` anchors AWS's own model still has (botocore 1.34 had them), so a message reads ``pattern:
[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}`` where AWS prints ``pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}``
(matching is whole-value either way); enum sets are listed in model order (AWS once printed
``[Pipe, FastFile, File]`` for ``[Pipe, File, FastFile]``). ``a Date`` (timestamps) is unverified.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.model import ListShape, MapShape, OperationNotFoundError, Shape, StructureShape

from trainforge.api import constraints as c
from trainforge.api.errors import SerializationError, UnknownOperation, ValidationError
from trainforge.awsmodel import operation

# check(value, prefix, errors): a member; `prefix` is the parent's path plus "." ("" at the top).
Check = Callable[[Any, str, list[str]], None]
# body(value, path, errors): a structure, list or map at its full path.
Body = Callable[[Any, str, list[str]], None]
# ok(value) -> bool: a scalar list element or map key/value (raises on a wrong type).
Ok = Callable[[Any], bool]

_INT_RANGE = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_UNBOUNDED = float("inf")

_VALIDATORS: dict[tuple[str, str], Callable[[Any, list[str]], None]] = {}  # (service, operation) ->
# An S3-URI pattern such as ``(https|s3)://([^/]+)/?(.*)``: ``file://`` URIs pass it too (DESIGN.md:
# "file:// URIs accepted wherever an S3 URI is"); service/create_rules.py checks their roots.
_S3_PATTERN = re.compile(r"\bs3\)?://")


def _or_file_uri(match: c.Matcher) -> c.Matcher:
    def matcher(v: str) -> Any:
        return True if v.startswith("file://") else match(v)
    return matcher


def validate(operation_name: str, params: Any, service: str = "sagemaker") -> None:
    """Raise ValidationError (all violations) or SerializationError (first wrong type); ``service``
    names botocore's model (``cloudwatch`` for api/cloudwatch.py)."""
    check = _VALIDATORS.get((service, operation_name))
    if check is None:
        check = _compile(operation_name, service)
    errors: list[str] = []
    check(params, errors)
    if errors:
        raise ValidationError(c.summary(errors))


def warm(operation_names: tuple[str, ...] | list[str], service: str = "sagemaker") -> None:
    """Compile the validators of these operations now (server start-up)."""
    for name in operation_names:
        if (service, name) not in _VALIDATORS:
            _compile(name, service)


def _compile(operation_name: str, service: str = "sagemaker") -> Callable[[Any, list[str]], None]:
    try:
        shape = operation(operation_name, service).input_shape
    except OperationNotFoundError:
        raise UnknownOperation(f"Unknown operation {operation_name}") from None
    if shape is None:
        def check(params: Any, errors: list[str]) -> None:
            if params.__class__ is not dict:
                raise SerializationError("Request body must be a JSON object")
    else:
        body = _Compiler().body(shape)

        def check(params: Any, errors: list[str]) -> None:
            if params.__class__ is not dict:
                if params.__class__ is list:
                    raise SerializationError("Start of list found where not expected")
                raise SerializationError("Request body must be a JSON object")
            body(params, "", errors)

    _VALIDATORS[(service, operation_name)] = check
    return check


# ---- scalars --------------------------------------------------------------------------------
class _Scalar:
    """One scalar shape: its member check (per-rule entries) and its element test (one bool)."""

    def __init__(self, shape: Shape) -> None:
        meta = shape.metadata
        self.kind = shape.type_name
        self.is_float = self.kind in ("float", "double")
        self.rules: list[str] = []  # every rule, in AWS's bracket order (max, min, pattern, enum)
        self.min: float = -_UNBOUNDED
        self.max: float = _UNBOUNDED
        self.enum: frozenset[str] | None = None
        self.enum_text = ""
        self.match: c.Matcher | None = None
        self.pattern_text = ""
        if self.kind == "string" or self.kind == "blob":
            if "max" in meta:
                self.max = meta["max"]
                self.rules.append(c.length_at_most(int(meta["max"])))
            if "min" in meta:
                self.min = meta["min"]
                self.rules.append(c.length_at_least(int(meta["min"])))
            if "pattern" in meta and self.kind == "string":
                self.pattern_text = c.pattern_text(meta["pattern"])
                self.rules.append(self.pattern_text)
                self.match = c.compile_pattern(meta["pattern"])
                if self.match is not None and _S3_PATTERN.search(meta["pattern"]):
                    self.match = _or_file_uri(self.match)
            if meta.get("enum"):
                self.enum = frozenset(meta["enum"])
                self.enum_text = c.enum_set(list(meta["enum"]))
                self.rules.append(self.enum_text)
        elif self.kind in ("integer", "long", "float", "double"):
            if "max" in meta:
                self.max = meta["max"]
                self.rules.append(c.value_at_most(c.number_text(meta["max"], self.is_float)))
            if "min" in meta:
                self.min = meta["min"]
                self.rules.append(c.value_at_least(c.number_text(meta["min"], self.is_float)))

    # -- the member check: one entry per broken rule ---------------------------------------
    def member_check(self, seg: str) -> Check:
        kind = self.kind
        if kind == "string" or (kind == "blob" and self.rules):  # a blob travels as a base64 string
            return self._string_check(seg)
        if kind in ("integer", "long", "float", "double"):
            return self._number_check(seg)
        ok = self.element_ok()  # boolean, timestamp, unconstrained blob: only a type

        def check(v: Any, prefix: str, errors: list[str]) -> None:
            ok(v)
        return check

    def _string_check(self, seg: str) -> Check:
        mn, mx, enum, match = self.min, self.max, self.enum, self.match
        enum_text, pattern_text, kind = self.enum_text, self.pattern_text, self.kind
        min_text = c.length_at_least(int(mn)) if mn > 0 else ""
        max_text = c.length_at_most(int(mx)) if mx != _UNBOUNDED else ""
        java_length = c.java_length
        failure = c.failure

        def check(v: Any, prefix: str, errors: list[str]) -> None:
            if v.__class__ is not str:
                raise c.scalar_type_error(v, kind)
            n = len(v) if v.isascii() else java_length(v)
            if n < mn:
                errors.append(failure(v, prefix + seg, min_text))
            elif n > mx:
                errors.append(failure(v, prefix + seg, max_text))
            if enum is not None and v not in enum:
                errors.append(failure(v, prefix + seg, enum_text))
            if match is not None and match(v) is None:
                errors.append(failure(v, prefix + seg, pattern_text))
        return check

    def _number_check(self, seg: str) -> Check:
        mn, mx, kind = self.min, self.max, self.kind
        is_float = self.is_float
        min_text = c.value_at_least(c.number_text(mn, is_float)) if mn != -_UNBOUNDED else ""
        max_text = c.value_at_most(c.number_text(mx, is_float)) if mx != _UNBOUNDED else ""
        low, high = _INT_RANGE.get(kind, (-_UNBOUNDED, _UNBOUNDED))
        failure = c.failure

        def check(v: Any, prefix: str, errors: list[str]) -> None:
            t = v.__class__
            if t is not int or is_float:
                v = _number(v, kind)
            if not low <= v <= high:  # beyond the Java type: AWS prints no value
                text = max_text if v > high else min_text
                if not text:
                    raise SerializationError(f"NUMBER_VALUE can not be converted to {c.JAVA_TYPE[kind]}")
                errors.append(f"Value at '{prefix + seg}' failed to satisfy constraint: {text}")
            elif v < mn:
                errors.append(failure(v, prefix + seg, min_text))
            elif v > mx:
                errors.append(failure(v, prefix + seg, max_text))
        return check

    # -- the element test ----------------------------------------------------------------
    def element_ok(self) -> Ok:
        kind = self.kind
        mn, mx, enum, match = self.min, self.max, self.enum, self.match
        if kind == "string":
            java_length = c.java_length

            def ok(v: Any) -> bool:
                if v.__class__ is not str:
                    raise c.scalar_type_error(v, kind)
                n = len(v) if v.isascii() else java_length(v)
                return (mn <= n <= mx and (enum is None or v in enum)
                        and (match is None or match(v) is not None))
            return ok
        if kind in ("integer", "long", "float", "double"):
            def ok_number(v: Any) -> bool:
                if v.__class__ is not int or kind in ("float", "double"):
                    v = _number(v, kind)
                return bool(mn <= v <= mx)
            return ok_number
        if kind == "boolean":
            def ok_bool(v: Any) -> bool:
                if v.__class__ is not bool:
                    raise c.scalar_type_error(v, kind)
                return True
            return ok_bool
        if kind == "timestamp":
            return _timestamp_ok

        def ok_blob(v: Any) -> bool:
            if v.__class__ is not str:
                raise c.scalar_type_error(v, kind)
            return bool(mn <= len(v) <= mx)
        return ok_blob


def _number(v: Any, kind: str) -> Any:
    t = v.__class__
    if t is bool or t is not int and t is not float:
        raise c.scalar_type_error(v, kind)
    if kind in ("integer", "long"):
        if not v.is_integer():
            raise SerializationError(f"NUMBER_VALUE can not be converted to {c.JAVA_TYPE[kind]}")
        return int(v)
    return v


def iso_timestamp(v: str) -> datetime:
    """An ISO 8601 timestamp of a request (``Z``/``z`` or an offset; none means UTC), aware; raises
    ValueError."""
    d = datetime.fromisoformat(v[:-1] + "+00:00" if v.endswith(("Z", "z")) else v)
    return d if d.tzinfo is not None else d.replace(tzinfo=UTC)


def _timestamp_ok(v: Any) -> bool:
    t = v.__class__
    if t is int or t is float:
        return True
    if t is str:
        try:
            iso_timestamp(v)
            return True
        except ValueError:
            pass
    raise c.scalar_type_error(v, "timestamp")


# ---- containers -----------------------------------------------------------------------------
class _Compiler:
    def __init__(self) -> None:
        self._bodies: dict[str, list[Body]] = {}  # shape name -> cell, for recursive shapes

    def member(self, shape: Shape, seg: str) -> Check:
        if isinstance(shape, (StructureShape, ListShape, MapShape)):
            cell = self._cell(shape)

            def check(v: Any, prefix: str, errors: list[str]) -> None:
                cell[0](v, prefix + seg, errors)
            return check
        return _Scalar(shape).member_check(seg)

    def body(self, shape: Shape) -> Body:
        cell = self._cell(shape)

        def run(v: Any, path: str, errors: list[str]) -> None:
            cell[0](v, path, errors)
        return cell[0] if cell[0] is not _pending else run

    def _cell(self, shape: Shape) -> list[Body]:
        key = f"{shape.type_name}:{shape.name}"
        cell = self._bodies.get(key)
        if cell is None:
            cell = self._bodies[key] = [_pending]
            if isinstance(shape, StructureShape):
                cell[0] = self._structure(shape)
            elif isinstance(shape, ListShape):
                cell[0] = self._list(shape)
            elif isinstance(shape, MapShape):
                cell[0] = self._map(shape)
        return cell

    def _structure(self, shape: StructureShape) -> Body:
        required = set(shape.required_members)
        members: list[tuple[str, str, Check, bool]] = []
        for name, member in shape.members.items():
            wire = member.serialization.get("name", name)
            lc = c.lower_first(name)
            members.append((wire, lc, self.member(member, lc), name in required))
        table = {wire: check for wire, _, check, _ in members}
        table_get = table.get
        required_wires = tuple(wire for wire, _, _, req in members if req)
        known_list = "[" + ", ".join(wire for wire, _, _, _ in members) + "]"
        failure, not_null = c.failure, c.NOT_NULL

        def ordered(v: dict[str, Any], cp: str, errors: list[str]) -> None:
            for wire, lc, check, req in members:
                x = v.get(wire)
                if x is None:
                    if req:
                        errors.append(failure(None, cp + lc, not_null))
                else:
                    check(x, cp, errors)
            for key, x in v.items():
                if key not in table:
                    errors.append(failure(x, cp + c.lower_first(key),
                                          f"Unknown member '{key}'; must be one of: {known_list}"))

        def body(v: Any, path: str, errors: list[str]) -> None:
            if v.__class__ is not dict:
                raise c.container_type_error(v, "structure")
            cp = path + "." if path else ""
            n0 = len(errors)
            clean = True
            for key, x in v.items():  # fast path, in request order (type errors come in this order)
                check = table_get(key)
                if check is None:
                    clean = False
                elif x is not None:
                    check(x, cp, errors)
            for wire in required_wires:
                if v.get(wire) is None:
                    clean = False
                    break
            if clean and len(errors) == n0:
                return
            del errors[n0:]  # something is wrong: redo in model order for a stable message
            ordered(v, cp, errors)
        return body

    def _list(self, shape: ListShape) -> Body:
        meta = shape.metadata
        mn, mx = meta.get("min", 0), meta.get("max", _UNBOUNDED)
        min_text, max_text = c.length_at_least(mn), c.length_at_most(mx) if "max" in meta else ""
        element = shape.member
        failure, not_null = c.failure, c.NOT_NULL
        if isinstance(element, (StructureShape, ListShape, MapShape)):
            element_body = self.body(element)

            def body(v: Any, path: str, errors: list[str]) -> None:
                if v.__class__ is not list:
                    raise c.container_type_error(v, "list")
                n = len(v)
                if n < mn:
                    errors.append(failure(v, path, min_text))
                elif n > mx:
                    errors.append(failure(v, path, max_text))
                for i, x in enumerate(v, 1):
                    if x is None:
                        errors.append(failure(None, f"{path}.{i}.member", not_null))
                    else:
                        element_body(x, f"{path}.{i}.member", errors)
            return body
        scalar = _Scalar(element)
        ok = scalar.element_ok()
        member_text = "Member must satisfy constraint: [" + ", ".join(scalar.rules) + "]"

        def scalar_list(v: Any, path: str, errors: list[str]) -> None:
            if v.__class__ is not list:
                raise c.container_type_error(v, "list")
            n = len(v)
            if n < mn:
                errors.append(failure(v, path, min_text))
            elif n > mx:
                errors.append(failure(v, path, max_text))
            bad = False
            for i, x in enumerate(v, 1):
                if x is None:
                    errors.append(failure(None, f"{path}.{i}.member", not_null))
                elif not ok(x):
                    bad = True
            if bad:
                errors.append(failure(v, path, member_text))
        return scalar_list

    def _map(self, shape: MapShape) -> Body:
        meta = shape.metadata
        mn, mx = meta.get("min", 0), meta.get("max", _UNBOUNDED)
        min_text, max_text = c.length_at_least(mn), c.length_at_most(mx) if "max" in meta else ""
        key_scalar = _Scalar(shape.key)
        key_ok = key_scalar.element_ok()
        keys_text = "Map keys must satisfy constraint: [" + ", ".join(key_scalar.rules) + "]"
        value_shape = shape.value
        failure, not_null = c.failure, c.NOT_NULL
        value_body: Body | None = None
        value_ok: Ok | None = None
        values_text = ""
        if isinstance(value_shape, (StructureShape, ListShape, MapShape)):
            value_body = self.body(value_shape)
        else:
            value_scalar = _Scalar(value_shape)
            value_ok = value_scalar.element_ok()
            values_text = "Map value must satisfy constraint: [" + ", ".join(value_scalar.rules) + "]"

        def body(v: Any, path: str, errors: list[str]) -> None:
            if v.__class__ is not dict:
                raise c.container_type_error(v, "map")
            n = len(v)
            if n < mn:
                errors.append(failure(v, path, min_text))
            elif n > mx:
                errors.append(failure(v, path, max_text))
            keys_bad = values_bad = False
            for k, x in v.items():
                if not key_ok(k):
                    keys_bad = True
                if x is None:
                    errors.append(failure(None, f"{path}.{k}", not_null))
                elif value_ok is not None:
                    if not value_ok(x):
                        values_bad = True
                elif value_body is not None:
                    value_body(x, f"{path}.{k}", errors)
            if keys_bad:
                errors.append(failure(v, path, keys_text))
            if values_bad:
                errors.append(failure(v, path, values_text))
        return body


def _pending(v: Any, path: str, errors: list[str]) -> None:  # placeholder while compiling
    raise RuntimeError("validator used before it was compiled")
