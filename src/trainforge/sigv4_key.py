"""SigV4's signing key: the HMAC-SHA256 chain ``"AWS4" + secret`` -> date -> region -> service ->
``aws4_request`` (AWS's "Create a signed AWS API request", step 4).

One derivation for both sides: the server verifying a request (``api/sigv4.py``, which caches keys
per access key and scope) and the agent's fast S3 client signing one (``objectstore/fast_s3.py``).
Standard library only (``hmac``), so the agent's S3 path imports nothing of the API.
"""

from __future__ import annotations

import hmac

TERMINATOR = "aws4_request"


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The key of ``secret`` for the scope ``date`` (``YYYYMMDD``) / ``region`` / ``service``."""
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, TERMINATOR):
        key = hmac.digest(key, part.encode(), "sha256")
    return key
