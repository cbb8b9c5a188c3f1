"""AddTags / ListTags / DeleteTags on training jobs (the only resources trainforge has)."""

from __future__ import annotations

import re
from typing import Any

from trainforge.api.errors import ResourceLimitExceeded, ValidationError
from trainforge.service.pagination import TokenSigner
from trainforge.service.training_jobs import Caller, check_tag_keys
from trainforge.service.unsupported import check_supported
from trainforge.store.jobs import JobStore

MAX_TAGS = 50
_ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:([a-z0-9-]+):(\d{12}):training-job/(.+)$")


class Tags:
    def __init__(self, store: JobStore, signer: TokenSigner) -> None:
        self.store = store
        self.signer = signer

    def _resource(self, caller: Caller, arn: str) -> str:
        """The ARN, once we know it names a training job the caller owns."""
        m = _ARN.match(arn)
        job = None
        if m and m.group(1) == caller.region and m.group(2) == caller.account_id:
            job = self.store.get(caller.account_id, caller.region, m.group(3))
        if job is None:
            raise ValidationError(f"Resource {arn} not found or is not a training job of this account.")
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
