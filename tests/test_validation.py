"""Request validation against botocore's SageMaker model (``trainforge.api.validation``).

The exhaustive test walks CreateTrainingJob's input shape: for every constrained member (required,
length, range, enum, pattern, list and map sizes, list elements, map keys and values) it draws an
otherwise valid request with Hypothesis, puts ONE bad value in it and checks the exact message, built
here from the model's raw metadata and AWS's wording. Whether a value satisfies a pattern is judged
by ``model_samples.oracle``, never by the translator under test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from botocore.model import ListShape, MapShape, Shape, StructureShape
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from model_samples import UNREADABLE, breaking, matches, oracle, text, valid

from trainforge.api import constraints
from trainforge.api.errors import SerializationError, ValidationError
from trainforge.api.validation import validate
from trainforge.awsmodel import SUPPORTED_OPERATIONS, operation, service_model

# Derandomized: every run draws the same examples (until Hypothesis or the model changes). One
# example per case is Hypothesis's simplest valid request; the whole-model test draws a few more.
# No shrinking: the first example is already Hypothesis's simplest, and shrinking every failing case
# of a broken validator would take many minutes.
SAMPLED = settings(derandomize=True, database=None, max_examples=1, deadline=None, phases=[Phase.generate],
                   suppress_health_check=[HealthCheck.too_slow])  # the machine may be loaded
PATTERN = "Member must satisfy regular expression pattern: "


# ---- the expected messages: the model's raw values in AWS's wording ----------------------------
def lower(name: str) -> str:
    return name[0].lower() + name[1:]


def render(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(render(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={render(x)}" for k, x in v.items()) + "}"
    return str(v)


def entry(value: Any, path: str, constraint: str) -> str:
    shown = "null" if value is None else f"'{render(value)}'"
    return f"Value {shown} at '{path}' failed to satisfy constraint: {constraint}"


def message(*entries: str) -> str:
    n = len(entries)
    return f"{n} validation error{'s' if n != 1 else ''} detected: " + "; ".join(entries)


def rules(shape: Shape) -> list[str]:
    """Every constraint of a scalar shape, in the bracket order AWS prints (max, min, pattern, enum)."""
    meta, out = shape.metadata, []
    kind = "length" if shape.type_name == "string" else "value"
    if "max" in meta:
        out.append(f"Member must have {kind} less than or equal to {meta['max']}")
    if "min" in meta:
        out.append(f"Member must have {kind} greater than or equal to {meta['min']}")
    if "pattern" in meta:
        out.append(PATTERN + meta["pattern"])
    if "enum" in meta:
        out.append(f"Member must satisfy enum value set: [{', '.join(meta['enum'])}]")
    return out


def pattern_entry(shape: Shape, value: str, path: str) -> list[str]:
    """The pattern entry a bad-length string also gets when it breaks the pattern too."""
    pattern = shape.metadata.get("pattern")
    return [] if pattern is None or matches(pattern, value) else [entry(value, path, PATTERN + pattern)]


# ---- one bad value per constraint ----------------------------------------------------------------
# A case, given Hypothesis's draw, returns (bad value, expected entries).
Draw = Callable[[st.SearchStrategy[Any]], Any]
Case = Callable[[Draw], tuple[Any, list[str]]]


def fixed(value: Any, expected: list[str], draw: Draw) -> tuple[Any, list[str]]:
    return value, expected


def too_short(shape: Shape, path: str, draw: Draw) -> tuple[Any, list[str]]:
    least = shape.metadata["min"]
    short = draw(valid(shape))[: least - 1]
    return short, [entry(short, path, f"Member must have length greater than or equal to {least}"),
                   *pattern_entry(shape, short, path)]


def too_long(shape: Shape, path: str, draw: Draw) -> tuple[Any, list[str]]:
    most = shape.metadata["max"]
    good = draw(valid(shape))
    long = good + "a" * (most + 1 - len(good))
    return long, [entry(long, path, f"Member must have length less than or equal to {most}"),
                  *pattern_entry(shape, long, path)]


def list_of(shape: ListShape, path: str, size: int, draw: Draw) -> tuple[Any, list[str]]:
    value = draw(st.lists(valid(shape.member), min_size=size, max_size=size))
    bound = f"less than or equal to {shape.metadata['max']}" if size > shape.metadata.get("max", size) \
        else f"greater than or equal to {shape.metadata['min']}"
    return value, [entry(value, path, f"Member must have length {bound}")]


def bad_element(shape: ListShape, path: str, case: Case, draw: Draw) -> tuple[Any, list[str]]:
    bad, _ = case(draw)
    others = max(shape.metadata.get("min", 1), 1) - 1
    value = [bad, *draw(st.lists(valid(shape.member), min_size=others, max_size=others))]
    return value, [entry(value, path, "Member must satisfy constraint: [" + ", ".join(rules(shape.member)) + "]")]


def too_many_keys(shape: MapShape, path: str, draw: Draw) -> tuple[Any, list[str]]:
    size = shape.metadata["max"] + 1
    keys = draw(st.lists(valid(shape.key), min_size=size, max_size=size, unique=True))
    value = dict(zip(keys, draw(st.lists(valid(shape.value), min_size=size, max_size=size)), strict=True))
    return value, [entry(value, path, f"Member must have length less than or equal to {shape.metadata['max']}")]


def bad_key_or_value(shape: MapShape, path: str, case: Case, is_key: bool, draw: Draw) -> tuple[Any, list[str]]:
    bad, _ = case(draw)
    value = {bad: draw(valid(shape.value))} if is_key else {draw(valid(shape.key)): bad}
    what = "Map keys" if is_key else "Map value"
    rule = ", ".join(rules(shape.key if is_key else shape.value))
    return value, [entry(value, path, f"{what} must satisfy constraint: [{rule}]")]


def scalar_cases(shape: Shape, path: str) -> Iterator[Case]:
    """A case for each violable constraint of a scalar member."""
    meta = shape.metadata
    if shape.type_name == "string":
        if meta.get("enum"):
            yield partial(fixed, "NotAnEnumValue", [entry("NotAnEnumValue", path, rules(shape)[-1])])
            return
        if meta.get("min", 0) > 0:
            yield partial(too_short, shape, path)
        if "max" in meta and meta["max"] < 5000:
            yield partial(too_long, shape, path)
        if "pattern" in meta:
            bad = breaking(meta["pattern"], meta.get("min", 0), meta.get("max", 2**31 - 1))
            if bad is not None:
                yield partial(fixed, bad, [entry(bad, path, PATTERN + meta["pattern"])])
    elif shape.type_name in ("integer", "long"):
        for bound, value, sentence in (("min", -1, "greater than or equal to"), ("max", 1, "less than or equal to")):
            if bound in meta:
                bad = meta[bound] + value
                yield partial(fixed, bad, [entry(bad, path, f"Member must have value {sentence} {meta[bound]}")])


def member_cases(shape: Shape, path: str) -> Iterator[Case]:
    """A case for each constraint of a member of any shape: its own and its elements'."""
    meta = shape.metadata
    if isinstance(shape, ListShape):
        if meta.get("min", 0) > 0:
            yield partial(list_of, shape, path, meta["min"] - 1)
        if "max" in meta:
            yield partial(list_of, shape, path, meta["max"] + 1)
        if not isinstance(shape.member, (StructureShape, ListShape, MapShape)) \
                and max(meta.get("min", 1), 1) <= meta.get("max", 1):
            for case in scalar_cases(shape.member, path):
                yield partial(bad_element, shape, path, case)
    elif isinstance(shape, MapShape):
        if "max" in meta and meta["max"] < 1000:
            yield partial(too_many_keys, shape, path)
        for case in scalar_cases(shape.key, path):
            yield partial(bad_key_or_value, shape, path, case, True)
        for case in scalar_cases(shape.value, path):
            yield partial(bad_key_or_value, shape, path, case, False)
    else:
        yield from scalar_cases(shape, path)


def walk(shape: StructureShape, path: str = "", keys: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str, Shape, bool]]:
    """(key path into the request, AWS path, member shape, required) of every member, depth first."""
    for name, member in shape.members.items():
        p = f"{path}.{lower(name)}" if path else lower(name)
        yield keys + (name,), p, member, name in shape.required_members
        if isinstance(member, StructureShape):
            yield from walk(member, p, keys + (name,))
        elif isinstance(member, ListShape) and isinstance(member.member, StructureShape):
            yield from walk(member.member, f"{p}.1.member", keys + (name, 0))


def build(request: dict[str, Any], root: StructureShape, keys: tuple[Any, ...], value: Any, remove: bool,
          draw: Draw) -> None:
    """Put ``value`` at ``keys`` in the valid ``request`` (or remove that member), drawing ancestors."""
    node: Any = request
    shape: Shape = root
    for key in keys[:-1]:
        if isinstance(shape, StructureShape):
            child_shape = shape.members[key]
            if key not in node:
                node[key] = draw(valid(child_shape))
            if isinstance(child_shape, ListShape) and not node[key]:
                node[key] = [draw(valid(child_shape.member))]
            node, shape = node[key], child_shape
        else:  # list index
            node, shape = node[key], shape.member
    if remove:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value


CREATE = operation("CreateTrainingJob").input_shape


def create_cases() -> list[Any]:
    cases = []
    for keys, path, member, required in walk(CREATE):
        if required:
            cases.append(pytest.param(keys, partial(fixed, None, [entry(None, path, "Member must not be null")]),
                                      True, id=f"{path}:required"))
        for n, case in enumerate(member_cases(member, path)):
            cases.append(pytest.param(keys, case, False, id=f"{path}:{n}"))
    return cases


CASES = create_cases()


def test_walk_reaches_nested_and_collection_members() -> None:
    ids = {c.id.split(":")[0] for c in CASES}
    for expected in ("trainingJobName", "roleArn", "inputDataConfig.1.member.channelName",
                     "inputDataConfig.1.member.dataSource.s3DataSource.s3Uri", "hyperParameters",
                     "resourceConfig.instanceGroups.1.member.instanceGroupName", "vpcConfig.subnets",
                     "retryStrategy.maximumRetryAttempts", "tags.1.member.key", "environment"):
        assert expected in ids
    assert len(CASES) > 150


@SAMPLED
@given(data=st.data())
def test_minimal_request_is_valid(data: st.DataObject) -> None:
    validate("CreateTrainingJob", data.draw(valid(CREATE)))


@pytest.mark.parametrize("keys,case,remove", CASES)
@SAMPLED
@given(data=st.data())
def test_every_constrained_member(keys: tuple[Any, ...], case: Case, remove: bool, data: st.DataObject) -> None:
    request = data.draw(valid(CREATE))
    bad, expected = case(data.draw)
    build(request, CREATE, keys, bad, remove, data.draw)
    with pytest.raises(ValidationError) as info:
        validate("CreateTrainingJob", request)
    assert info.value.message == message(*expected)
    assert info.value.code == "ValidationException" and info.value.status == 400


# ---- the message format --------------------------------------------------------------------
def base_request(**overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "TrainingJobName": "my-job",
        "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
        "AlgorithmSpecification": {"TrainingImage": "img:latest", "TrainingInputMode": "File"},
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }
    request.update(overrides)
    return request


def errors_of(op: str, params: Any) -> str:
    with pytest.raises(ValidationError) as info:
        validate(op, params)
    return info.value.message


def test_one_error_exact_form() -> None:
    pattern = operation("DescribeTrainingJob").input_shape.members["TrainingJobName"].metadata["pattern"]
    assert errors_of("DescribeTrainingJob", {"TrainingJobName": "a_b"}) == (
        "1 validation error detected: Value 'a_b' at 'trainingJobName' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {pattern}")


def test_two_errors_joined_in_model_order() -> None:
    pattern = CREATE.members["TrainingJobName"].metadata["pattern"]
    minimum = CREATE.members["ResourceConfig"].members["InstanceCount"].metadata["min"]
    request = base_request(TrainingJobName="a_b")
    request["ResourceConfig"]["InstanceCount"] = minimum - 1
    # request order differs from model order: the message follows the model
    reordered = {"ResourceConfig": request.pop("ResourceConfig"), **request}
    assert errors_of("CreateTrainingJob", reordered) == (
        "2 validation errors detected: Value 'a_b' at 'trainingJobName' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {pattern}; Value '{minimum - 1}' at "
        f"'resourceConfig.instanceCount' failed to satisfy constraint: Member must have value greater than or "
        f"equal to {minimum}")


def test_many_errors_nested_order_and_missing_required() -> None:
    request = base_request(InputDataConfig=[
        {"ChannelName": "ok", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/k"}}},
        {"ChannelName": "bad name", "DataSource": {"S3DataSource": {"S3DataType": "Nope"}}, "InputMode": "fastfile"},
    ])
    del request["RoleArn"]
    text = errors_of("CreateTrainingJob", request)
    assert text.startswith("5 validation errors detected: Value null at 'roleArn' failed to satisfy constraint: "
                           "Member must not be null; Value 'bad name' at 'inputDataConfig.2.member.channelName'")
    paths = re.findall(r" at '([^']*)' failed to satisfy constraint", text)
    assert paths == ["roleArn", "inputDataConfig.2.member.channelName",
                     "inputDataConfig.2.member.dataSource.s3DataSource.s3DataType",
                     "inputDataConfig.2.member.dataSource.s3DataSource.s3Uri", "inputDataConfig.2.member.inputMode"]
    assert "Value null at 'inputDataConfig.2.member.dataSource.s3DataSource.s3Uri'" in text
    assert "Value 'fastfile' at 'inputDataConfig.2.member.inputMode' failed to satisfy constraint: Member must " \
           "satisfy enum value set: [Pipe, File, FastFile]" in text


def test_length_and_pattern_both_reported() -> None:
    shape = CREATE.members["TrainingJobName"]
    name = "x" * 70
    assert errors_of("CreateTrainingJob", base_request(TrainingJobName=name)) == message(
        entry(name, "trainingJobName", f"Member must have length less than or equal to {shape.metadata['max']}"),
        entry(name, "trainingJobName", f"Member must satisfy regular expression pattern: {shape.metadata['pattern']}"))


def test_map_keys_then_values_reported_once_each() -> None:
    hp = CREATE.members["HyperParameters"]
    value = {"k" * 300: "v", "ok": "a\nb", "ok2": "c\rd"}
    assert errors_of("CreateTrainingJob", base_request(HyperParameters=value)) == message(
        entry(value, "hyperParameters", "Map keys must satisfy constraint: [" + ", ".join(rules(hp.key)) + "]"),
        entry(value, "hyperParameters", "Map value must satisfy constraint: [" + ", ".join(rules(hp.value)) + "]"))


def test_scalar_list_reported_once_with_whole_list() -> None:
    vpc = {"SecurityGroupIds": ["sg-1", "bad_!", "also bad"], "Subnets": ["subnet-1"]}
    element = CREATE.members["VpcConfig"].members["SecurityGroupIds"].member
    assert errors_of("CreateTrainingJob", base_request(VpcConfig=vpc)) == message(entry(
        vpc["SecurityGroupIds"], "vpcConfig.securityGroupIds",
        "Member must satisfy constraint: [" + ", ".join(rules(element)) + "]"))


def test_unknown_members_are_rejected() -> None:
    request = base_request()
    request["ResourceConfig"]["InstanceSize"] = "big"
    request["Bogus"] = 1
    known = ", ".join(CREATE.members["ResourceConfig"].members)
    text = errors_of("CreateTrainingJob", request)
    assert text == message(
        entry("big", "resourceConfig.instanceSize",
              f"Unknown member 'InstanceSize'; must be one of: [{known}]"),
        entry(1, "bogus", f"Unknown member 'Bogus'; must be one of: [{', '.join(CREATE.members)}]"))


def test_null_counts_as_missing() -> None:
    assert errors_of("DescribeTrainingJob", {"TrainingJobName": None}) == message(
        entry(None, "trainingJobName", "Member must not be null"))
    validate("ListTrainingJobs", {"NextToken": None, "MaxResults": None})


def test_utf16_length_like_java() -> None:
    bold_a = "\U0001D400"  # a letter outside the BMP: 2 UTF-16 units
    shape = CREATE.members["Tags"].member.members["Value"]
    value = bold_a * (shape.metadata["max"] // 2 + 1)
    assert len(value) <= shape.metadata["max"]
    tags = [{"Key": "k", "Value": value}]
    assert errors_of("CreateTrainingJob", base_request(Tags=tags)) == message(
        entry(value, "tags.1.member.value", f"Member must have length less than or equal to {shape.metadata['max']}"))


def test_unicode_categories_and_java_dot() -> None:
    validate("AddTags", {"ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/x",
                         "Tags": [{"Key": "équipe 日本 ٣", "Value": "Ünïcode value_1:/=+-@"}]})
    with pytest.raises(ValidationError, match="tags.1.member.key"):
        validate("AddTags", {"ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/x",
                             "Tags": [{"Key": "emoji \U0001F600", "Value": "v"}]})
    # `.*` does not match a line terminator in Java; `[\S\s]*` does
    with pytest.raises(ValidationError, match="hyperParameters"):
        validate("CreateTrainingJob", base_request(HyperParameters={"k": "two\nlines"}))
    validate("CreateTrainingJob", base_request(Environment={"K": "two\nlines"}))


def test_s3_uri_members_accept_file_uris() -> None:
    validate("CreateTrainingJob", base_request(OutputDataConfig={"S3OutputPath": "file:///data/out"}))
    with pytest.raises(ValidationError, match="outputDataConfig.s3OutputPath"):
        validate("CreateTrainingJob", base_request(OutputDataConfig={"S3OutputPath": "gs://bucket/out"}))


# ---- wrong JSON types: SerializationException -------------------------------------------------
@pytest.mark.parametrize("op,params,text", [
    ("DescribeTrainingJob", {"TrainingJobName": 5}, "NUMBER_VALUE can not be converted to a String"),
    ("DescribeTrainingJob", {"TrainingJobName": True}, "TRUE_VALUE can not be converted to a String"),
    ("DescribeTrainingJob", {"TrainingJobName": ["a"]}, "Start of list found where not expected"),
    ("DescribeTrainingJob", {"TrainingJobName": {"a": 1}}, "Start of structure or map found where not expected."),
    ("ListTrainingJobs", {"MaxResults": "10"}, "STRING_VALUE can not be converted to an Integer"),
    ("ListTrainingJobs", {"MaxResults": False}, "FALSE_VALUE can not be converted to an Integer"),
    ("ListTrainingJobs", {"MaxResults": 1.5}, "NUMBER_VALUE can not be converted to an Integer"),
    ("ListTrainingJobs", {"CreationTimeAfter": "yesterday"}, "STRING_VALUE can not be converted to a Date"),
    ("ListTrainingJobs", {"CreationTimeAfter": True}, "TRUE_VALUE can not be converted to a Date"),
    ("CreateTrainingJob", {"InputDataConfig": "x"}, "Expected list or null"),
    ("CreateTrainingJob", {"OutputDataConfig": "x"}, "Expected null"),
    ("CreateTrainingJob", {"OutputDataConfig": []}, "Start of list found where not expected"),
    ("CreateTrainingJob", {"HyperParameters": "x"}, "Expected map or null"),
    ("CreateTrainingJob", {"HyperParameters": {"a": 1}}, "NUMBER_VALUE can not be converted to a String"),
    ("CreateTrainingJob", {"EnableManagedSpotTraining": "true"}, "STRING_VALUE can not be converted to a Boolean"),
    ("CreateTrainingJob", [], "Start of list found where not expected"),
])
def test_type_errors(op: str, params: Any, text: str) -> None:
    with pytest.raises(SerializationError) as info:
        validate(op, params)
    assert info.value.message == text
    assert info.value.code == "SerializationException"


def test_type_error_wins_over_validation_errors() -> None:
    with pytest.raises(SerializationError):
        validate("CreateTrainingJob", {"TrainingJobName": "a_b", "InputDataConfig": "x"})


def test_numbers_and_timestamps_accepted() -> None:
    validate("ListTrainingJobs", {"MaxResults": 10.0, "CreationTimeAfter": 1700000000,
                                  "CreationTimeBefore": 1700000000.25, "LastModifiedTimeAfter": "2024-01-01T00:00:00Z",
                                  "LastModifiedTimeBefore": "2024-01-01T00:00:00+02:00"})


def test_integer_beyond_java_range_prints_no_value() -> None:
    assert errors_of("ListTrainingJobs", {"MaxResults": 10**12}) == (
        "1 validation error detected: Value at 'maxResults' failed to satisfy constraint: Member must have value "
        f"less than or equal to {operation('ListTrainingJobs').input_shape.members['MaxResults'].metadata['max']}")


# ---- the other operations ---------------------------------------------------------------------
ARN = "arn:aws:sagemaker:us-east-1:123456789012:training-job/my-job"


@pytest.mark.parametrize("op,good,bad,expected", [
    ("DescribeTrainingJob", {"TrainingJobName": "j"}, {}, "Value null at 'trainingJobName'"),
    ("StopTrainingJob", {"TrainingJobName": "j"}, {"TrainingJobName": "-j"}, "Value '-j' at 'trainingJobName'"),
    ("DeleteTrainingJob", {"TrainingJobName": "j"}, {"TrainingJobName": ""},
     "Value '' at 'trainingJobName' failed to satisfy constraint: Member must have length greater than or equal to 1"),
    ("ListTrainingJobs", {"MaxResults": 100, "SortBy": "Name", "SortOrder": "Ascending", "StatusEquals": "Completed"},
     {"MaxResults": 101},
     ("Value '101' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 100")),
    ("ListTrainingJobs", {}, {"StatusEquals": "Done"},
     "Value 'Done' at 'statusEquals' failed to satisfy constraint: Member must satisfy enum value set: ["),
    ("UpdateTrainingJob", {"TrainingJobName": "j", "ResourceConfig": {"KeepAlivePeriodInSeconds": 60}},
     {"TrainingJobName": "j", "ResourceConfig": {"KeepAlivePeriodInSeconds": 99999}},
     "at 'resourceConfig.keepAlivePeriodInSeconds' failed to satisfy constraint: Member must have value less than"),
    ("AddTags", {"ResourceArn": ARN, "Tags": [{"Key": "k", "Value": "v"}]}, {"ResourceArn": ARN, "Tags": [{"Key": "k"}]},
     "Value null at 'tags.1.member.value' failed to satisfy constraint: Member must not be null"),
    ("ListTags", {"ResourceArn": ARN, "MaxResults": 50}, {"ResourceArn": ARN, "MaxResults": 0},
     "Value '0' at 'maxResults'"),
    ("DeleteTags", {"ResourceArn": ARN, "TagKeys": ["k"]}, {"ResourceArn": ARN, "TagKeys": []},
     "Value '[]' at 'tagKeys' failed to satisfy constraint: Member must have length greater than or equal to 1"),
])
def test_other_operations(op: str, good: dict[str, Any], bad: dict[str, Any], expected: str) -> None:
    validate(op, good)
    text = errors_of(op, bad)
    assert re.match(r"\d+ validation errors? detected: Value", text) and expected in text


def test_unknown_operation() -> None:
    from trainforge.api.errors import UnknownOperation

    with pytest.raises(UnknownOperation):
        validate("CreateTrainingJobs", {})


# ---- the Java pattern translator ------------------------------------------------------------
def test_every_pattern_of_the_model_translates() -> None:
    """None is skipped today; a pattern that ever is gets recorded (not guessed)."""
    model = service_model()
    for name in model.shape_names:
        pattern = model.shape_for(name).metadata.get("pattern")
        if pattern:
            constraints.compile_pattern(pattern)
    assert constraints.SKIPPED_PATTERNS == {}


def model_strings() -> list[tuple[str, int, int]]:
    """(pattern, min, max) of every string shape of the model with a pattern, once each."""
    model = service_model()
    metas = (model.shape_for(name).metadata for name in model.shape_names)
    return sorted({(m["pattern"], m.get("min", 0), m.get("max", 2**31 - 1)) for m in metas if m.get("pattern")})


MODEL_STRINGS = model_strings()
CHUNK = 16  # strings drawn per example of the test below (one test per string costs too much)


def test_the_oracle_reads_the_patterns_of_the_model() -> None:
    """Few patterns of the whole model may be unreadable here; none of the supported operations'."""
    for pattern, _, _ in MODEL_STRINGS:
        oracle(pattern)
    assert len(UNREADABLE) <= 3, UNREADABLE
    used = {pattern for op in SUPPORTED_OPERATIONS for pattern in patterns_of(operation(op).input_shape)}
    assert not used & set(UNREADABLE), {p: UNREADABLE[p] for p in used & set(UNREADABLE)}


def patterns_of(shape: Shape, seen: frozenset[str] = frozenset()) -> Iterator[str]:
    if shape.name in seen:
        return
    if "pattern" in shape.metadata:
        yield shape.metadata["pattern"]
    children = (list(shape.members.values()) if isinstance(shape, StructureShape) else
                [shape.member] if isinstance(shape, ListShape) else
                [shape.key, shape.value] if isinstance(shape, MapShape) else [])
    for child in children:
        yield from patterns_of(child, seen | {shape.name})


@pytest.mark.parametrize("start", range(0, len(MODEL_STRINGS), CHUNK))
@settings(SAMPLED, max_examples=2)
@given(data=st.data())
def test_the_translator_agrees_on_samples_of_every_model_pattern(start: int, data: st.DataObject) -> None:
    """Every pattern of the model can be sampled; the translator accepts the samples and rejects the
    breaking string the oracle rejects."""
    for pattern, least, most in MODEL_STRINGS[start:start + CHUNK]:
        sample = data.draw(text(pattern, least, most), label=pattern)
        translated = constraints.compile_pattern(pattern)
        assert translated is None or translated(sample) is not None, (pattern, sample)
        bad = breaking(pattern, least, most)
        if bad is not None:
            assert translated is not None and translated(bad) is None, (pattern, bad)


@pytest.mark.parametrize("pattern,good,bad", [
    ("[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", ["a", "a-b", "a--b"], ["a_b", "-a", "a-", ""]),
    ("arn:[\\p{Alnum}\\-]+:lambda:x", ["arn:aws-cn:lambda:x"], ["arn:é:lambda:x"]),
    ("[\\u0020-\\uD7FF\\uE000-\\uFFFD\\uD800\\uDC00-\\uDBFF\\uDFFF\\t]*", ["ok\t\U0001F600"], ["\x01"]),
    ("([\\p{L}\\p{Z}\\p{N}_.:\\/=+\\-@]*)${1,128}", ["a b", ""], ["a!"]),
    ("\\d+", ["123"], ["١٢٣"]),  # Java's \d is ASCII only
    (".+", ["x"], ["x\n", "\u2028"]),
    ("(?<name>a)\\k<name>", ["aa"], ["ab"]),
    ("\\Qa.b\\E", ["a.b"], ["axb"]),
])
def test_java_patterns(pattern: str, good: list[str], bad: list[str]) -> None:
    m = constraints.compile_pattern(pattern)
    assert m is not None
    for s in good:
        assert m(s) is not None, s
    for s in bad:
        assert m(s) is None, s


def test_untranslatable_pattern_is_skipped_and_recorded() -> None:
    assert constraints.compile_pattern("[a-z&&[^b]]") is None
    assert "[a-z&&[^b]]" in constraints.SKIPPED_PATTERNS
    constraints.SKIPPED_PATTERNS.pop("[a-z&&[^b]]")


def test_java_rendering() -> None:
    assert constraints.render([1, "a", True, {"k": 2.5}, None]) == "[1, a, true, {k=2.5}, null]"
    assert [constraints.java_double(f) for f in (1.0, 1e-4, 1e7, 0.001, 12345e6)] == \
        ["1.0", "1.0E-4", "1.0E7", "0.001", "1.2345E10"]


def test_supported_operations_compile() -> None:
    for op in SUPPORTED_OPERATIONS:
        with pytest.raises((ValidationError, SerializationError)):
            validate(op, {"Nope": json.dumps({})})
