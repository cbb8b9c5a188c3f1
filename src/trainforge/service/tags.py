"""AddTags / ListTags / DeleteTags on the resources trainforge has: training jobs and algorithms.

A resource is named by its ARN (``...:training-job/NAME`` or ``...:algorithm/NAME``) in the caller's
account and region; its tags live in one table whatever its kind, with the same rules (keys, values,
at most :data:`MAX_TAGS`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from trainforge.api.errors import ResourceLimitExceeded, ValidationError
from trainforge.service.pagination import TokenSigner
from trainforge.service.training_jobs import Caller, check_tag_keys
from trainforge.service.unsupported import check_supported
from trainforge.store.jobs import JobStore

MAX_TAGS = 50
_ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:([a-z0-9-]+):(\d{12}):([a-z-]+)/(.+)$")
# A resource kind (the ARN's resource type) -> its lookup by (account, region, name): a row or None.
Lookup = Callable[[str, str, str], object | None]


class Tags:
    def __init__(self, store: JobStore, signer: TokenSigner, others: Mapping[str, Lookup] | None = None) -> None:
        self.store = store
        self.signer = signer
        self.kinds: dict[str, Lookup] = {"training-job": store.get, **(others or {})}

    def _resource(self, caller: Caller, arn: str) -> str:
        """The ARN, once we know it names a training job (or another taggable resource) the caller owns."""
        m = _ARN.match(arn)
        found = None
        if m and m.group(1) == caller.region and m.group(2) == caller.account_id and m.group(3) in self.kinds:
            found = self.kinds[m.group(3)](caller.account_id, caller.region, m.group(4))
        if found is None:
            kinds = " or ".join(k.replace("-", " ") for k in self.kinds)
            raise ValidationError(f"Resource {arn} not found or is not a {kinds} of this account.")
        return arn

    def add(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        arn = self._resource(caller, params["ResourceArn"])  # an unknown resource is answered first
        check_supported("AddTags", params)
        tag_list = params["Tags"]
        check_tag_keys(tag_list)
        existing = {r.key for r in self.store.list_tags(caller.account_id, caller.region, arn, None, MAX_TAGS + 1)}
        if len(existing | {t["Key"] for t in tag_list}) > MAX_TAGS:
            raise ResourceLimitExceeded(f"A resource can have at most {MAX_TAGS} tags.")
        if tag_list:  # an empty list is valid (the model's min is 0) and changes nothing
            self.store.add_tags(caller.account_id, caller.region, arn, tag_list)
        return {"Tags": tag_list}

    def list(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        arn = self._resource(caller, params["ResourceArn"])
        limit = params.get("MaxResults") or 50
        query = [caller.account_id, caller.region, arn]
        after = self.signer.decode(params["NextToken"], query) if params.get("NextToken") else None
        rows = self.store.list_tags(caller.account_id, caller.region, arn, after, limit + 1)
        out: dict[str, Any] = {"Tags": [{"Key": r.key, "Value": r.value} for r in rows[:limit]]}
        if len(rows) > limit:
            out["NextToken"] = self.signer.encode(rows[limit - 1].key, query)
        return out

    def delete(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        arn = self._resource(caller, params["ResourceArn"])
        self.store.delete_tags(caller.account_id, caller.region, arn, params["TagKeys"])
        return {}
