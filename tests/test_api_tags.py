"""AddTags / ListTags / DeleteTags on training jobs, through boto3 against a real server."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import minimal_request, stop_quietly, unique_name, wait_for_job


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def _all_tags(sm: Any, arn: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for page in sm.get_paginator("list_tags").paginate(ResourceArn=arn, PaginationConfig={"PageSize": 50}):
        for t in page["Tags"]:
            assert t["Key"] not in tags, "a tag was listed twice"
            tags[t["Key"]] = t["Value"]
    return tags


@pytest.fixture
def job(server: Any) -> tuple[Any, str]:
    sm = server.client()
    name = unique_name("tags")
    arn = sm.create_training_job(**minimal_request(name, Tags=[{"Key": "team", "Value": "ml"},
                                                               {"Key": "project", "Value": "p1"}]))["TrainingJobArn"]
    return sm, arn


def test_add_list_delete(job: tuple[Any, str]) -> None:
    sm, arn = job
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "project", "Value": "p1"}, {"Key": "team", "Value": "ml"}]
    out = sm.add_tags(ResourceArn=arn, Tags=[{"Key": "team", "Value": "research"}, {"Key": "env", "Value": ""},
                                             {"Key": "a b:c/d=e+f-g@h", "Value": "ünïcødé value"}])
    assert out["Tags"] == [{"Key": "team", "Value": "research"}, {"Key": "env", "Value": ""},
                           {"Key": "a b:c/d=e+f-g@h", "Value": "ünïcødé value"}]
    assert _all_tags(sm, arn) == {"team": "research", "project": "p1", "env": "", "a b:c/d=e+f-g@h": "ünïcødé value"}
    sm.delete_tags(ResourceArn=arn, TagKeys=["team", "does-not-exist"])
    assert _all_tags(sm, arn) == {"project": "p1", "env": "", "a b:c/d=e+f-g@h": "ünïcødé value"}
    sm.delete_tags(ResourceArn=arn, TagKeys=["project", "env", "a b:c/d=e+f-g@h"])
    empty = sm.list_tags(ResourceArn=arn)
    assert empty["Tags"] == [] and "NextToken" not in empty


def test_fifty_tags_fit_and_the_fifty_first_is_refused(job: tuple[Any, str]) -> None:
    sm, arn = job
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": f"k{i:02d}", "Value": str(i)} for i in range(48)])
    fifty = _all_tags(sm, arn)
    assert len(fifty) == 50
    # ListTags: MaxResults is at least 50 in the model, so 50 tags are one page without a token.
    page = sm.list_tags(ResourceArn=arn, MaxResults=50)
    assert len(page["Tags"]) == 50 and "NextToken" not in page
    assert [t["Key"] for t in page["Tags"]] == sorted(t["Key"] for t in page["Tags"])
    with pytest.raises(ClientError) as exc:
        sm.add_tags(ResourceArn=arn, Tags=[{"Key": "one-too-many", "Value": "x"}])
    assert _code(exc) == "ResourceLimitExceeded"
    assert "50" in exc.value.response["Error"]["Message"]
    assert _all_tags(sm, arn) == fifty  # nothing was added
    # Overwriting an existing key does not count as a new tag.
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "k00", "Value": "changed"}])
    assert _all_tags(sm, arn) == {**fifty, "k00": "changed"}
    # Deleting makes room again.
    sm.delete_tags(ResourceArn=arn, TagKeys=["k01"])
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "one-more", "Value": "x"}])
    assert len(_all_tags(sm, arn)) == 50


def test_list_tags_rejects_a_forged_token(job: tuple[Any, str]) -> None:
    sm, arn = job
    with pytest.raises(ClientError) as exc:
        sm.list_tags(ResourceArn=arn, NextToken="Zm9yZ2VkLXRva2Vu")
    assert _code(exc) == "ValidationException"


def test_aws_prefix_is_reserved(server: Any, job: tuple[Any, str]) -> None:
    sm, arn = job
    for key in ("aws:created-by", "AWS:Thing"):
        with pytest.raises(ClientError) as exc:
            sm.add_tags(ResourceArn=arn, Tags=[{"Key": key, "Value": "x"}, {"Key": "fine", "Value": "y"}])
        assert _code(exc) == "ValidationException"
        assert "aws:" in exc.value.response["Error"]["Message"]
    assert "fine" not in _all_tags(sm, arn)  # the request was refused as a whole
    name = unique_name("awstag")
    with pytest.raises(ClientError) as exc:
        sm.create_training_job(**minimal_request(name, Tags=[{"Key": "aws:x", "Value": "y"}]))
    assert _code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        sm.describe_training_job(TrainingJobName=name)
    assert exc.value.response["Error"]["Message"] == "Requested resource not found."


def test_tags_of_a_missing_or_foreign_resource(server: Any) -> None:
    sm = server.client()
    for arn in ("arn:aws:sagemaker:us-east-1:000000000000:training-job/no-such-job",
                "arn:aws:sagemaker:us-east-1:000000000000:endpoint/some-endpoint"):
        for call in (lambda a=arn: sm.list_tags(ResourceArn=a),
                     lambda a=arn: sm.add_tags(ResourceArn=a, Tags=[{"Key": "k", "Value": "v"}]),
                     lambda a=arn: sm.delete_tags(ResourceArn=a, TagKeys=["k"])):
            with pytest.raises(ClientError) as exc:
                call()
            assert _code(exc) == "ValidationException"
            assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_tags_go_away_with_the_job(server: Any) -> None:
    sm = server.client()
    name = unique_name("tagdel")
    arn = sm.create_training_job(**minimal_request(name, Tags=[{"Key": "k", "Value": "v"}]))["TrainingJobArn"]
    stop_quietly(sm, name)
    wait_for_job(sm, name, timeout=30)
    sm.delete_training_job(TrainingJobName=name)
    # A new job with the same name starts with only its own tags.
    arn2 = sm.create_training_job(**minimal_request(name))["TrainingJobArn"]
    assert arn2 == arn
    assert sm.list_tags(ResourceArn=arn)["Tags"] == []
    stop_quietly(sm, name)
