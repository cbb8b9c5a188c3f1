"""Opaque, tamper-evident NextToken values.

A token carries the sort key of the last row returned and a digest of the query it belongs to,
signed with a server-wide key (kept in the store so every replica shares it). A token that was
altered, or that is replayed with other filters, is rejected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

import orjson

from trainforge.api.errors import ValidationError


class TokenSigner:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @staticmethod
    def new_key() -> str:
        return secrets.token_hex(32)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:16]

    def encode(self, position: Any, query: Any) -> str:
        payload = orjson.dumps({"p": position, "q": _digest(query)})
        return base64.urlsafe_b64encode(self._mac(payload) + payload).decode().rstrip("=")

    def decode(self, token: str, query: Any) -> Any:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            mac, payload = raw[:16], raw[16:]
            if not hmac.compare_digest(mac, self._mac(payload)):
                raise ValueError("signature")
            data = orjson.loads(payload)
        except (ValueError, TypeError, orjson.JSONDecodeError):
            raise ValidationError("Invalid pagination token: the NextToken was not issued by this service.") from None
        if data.get("q") != _digest(query):
            raise ValidationError(
                "Invalid pagination token: the NextToken belongs to a request with other parameters."
            )
        return data["p"]


def _digest(query: Any) -> str:
    return hashlib.sha256(orjson.dumps(query, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
