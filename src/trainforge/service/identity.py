"""Who is calling, and which roles exist: STS GetCallerIdentity and a minimal IAM GetRole.

Plain Python, no HTTP (the wire is ``api/query.py``).

* The caller: the account its access key maps to in the credentials file (``account_id``), or the
  server's default account when no credentials file is configured (every key is accepted then).
  Its ARN is the entry's ``arn`` when the file gives one, else the account's root
  (``arn:aws:iam::ACCOUNT:root``, UserId the account id, as STS answers for root credentials).
* A role exists for GetRole when a training job of the caller's account may run with it
  (:func:`~trainforge.service.create_rules.check_role`): a mapped role of the ``roles`` key, or, on
  the single-user default (no ``roles``, no credentials file), any role name of the caller's
  account. Its trust policy names ``sagemaker.amazonaws.com``: trainforge runs jobs with it.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any
from urllib.parse import quote

from trainforge.api.errors import ServiceError, ValidationError
from trainforge.config import Config
from trainforge.service.create_rules import check_role

# The trust policy of every role trainforge accepts: the service that assumes it is SageMaker.
TRUST_POLICY = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


class NoSuchEntity(ServiceError):
    code = "NoSuchEntity"
    status = 404


def role_parts(arn: str) -> tuple[str, str, str] | None:
    """``(account, path, name)`` of an IAM role ARN (``arn:PARTITION:iam::ACCOUNT:role/PATH/NAME``)."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[2] != "iam" or not parts[5].startswith("role/"):
        return None
    *path, name = parts[5][len("role"):].split("/")
    return parts[4], "/".join(path) + "/", name


class Identity:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._keys = config.load_credentials() or {}
        self._since = time.time()

    def caller_identity(self, account_id: str, access_key: str | None) -> dict[str, str]:
        entry = self._keys.get(access_key or "") or {}
        arn = entry.get("arn") or f"arn:aws:iam::{account_id}:root"
        user_id = entry.get("user_id") or (account_id if arn.endswith(":root") else access_key or account_id)
        return {"UserId": user_id, "Account": account_id, "Arn": arn}

    def get_role(self, account_id: str, role_name: str) -> dict[str, Any]:
        arn = self._role_arn(account_id, role_name)
        parts = role_parts(arn) if arn else None
        if arn is None or parts is None:
            raise NoSuchEntity(f"The role with name {role_name} cannot be found.")
        _, path, name = parts
        digest = hashlib.sha256(arn.encode()).hexdigest().upper()
        role_id = "AROA" + "".join(c for c in digest if c.isalnum())[:17]
        return {"Path": path, "RoleName": name, "RoleId": role_id, "Arn": arn,
                "CreateDate": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._since)),
                "AssumeRolePolicyDocument": quote(json.dumps(TRUST_POLICY, separators=(",", ":"))),
                "MaxSessionDuration": 3600}

    def _role_arn(self, account_id: str, role_name: str) -> str | None:
        """The ARN of the role named ``role_name`` that a job of ``account_id`` may use, if any."""
        if not self.config.roles and not self.config.credentials_file:
            return f"arn:aws:iam::{account_id}:role/{role_name}"
        for arn in self.config.roles:
            parts = role_parts(arn)
            if parts is None or parts[2] != role_name or parts[0] != account_id:
                continue
            try:
                check_role(arn, self.config, account_id)
            except ValidationError:
                continue
            return arn
        return None
