"""Who is looking at the console: sign-in, the session cookie and the CSRF token.

With a credentials file, a person signs in with an access key and its secret. They are checked by
the server's own SigV4 :class:`~trainforge.api.sigv4.Authenticator`, exactly as an API caller's:
the console signs a request with them (botocore's signer, as boto3 would) and hands it to
``authenticate``, which finds the key, recomputes the signature and names the account. Nothing
else looks the keys up. Without a credentials file (the single-user default, bound to loopback
like the API), there is no sign-in: every page is the default account's.

The session is a cookie (``HttpOnly``, ``SameSite=Strict``, ``Path=/console``, expiring after
:data:`SESSION_SECONDS`) holding the account, the region, the access key id and a random nonce,
signed with a server-wide key kept in the store. State changes (Stop, create) must also send the
CSRF token — an HMAC of the session's nonce — in the ``X-CSRF-Token`` header; pages get it in a
``<meta>`` element, which only a page of this origin can read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from starlette.datastructures import Headers
from starlette.requests import Request

from trainforge.service.training_jobs import Caller

COOKIE = "tf_console"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 12 * 3600
_SIGN_IN_HOST = "console.trainforge"


@dataclass(frozen=True)
class Session:
    caller: Caller
    access_key: str
    nonce: str
    expires: float


class ConsoleAuth:
    def __init__(self, key: bytes, authenticate: Callable[..., tuple[str, str]], sign_in_required: bool,
                 default: Caller, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._authenticate = authenticate
        self.sign_in_required = sign_in_required
        self.default = default
        self._clock = clock

    # --- sign-in ---------------------------------------------------------------------------
    def check_secret(self, access_key: str, secret: str, region: str) -> Caller:
        """The caller these credentials are, checked as a SigV4 request signed with them would be;
        raises the API's own ServiceError (unknown key, signature mismatch, bad region)."""
        request = AWSRequest(method="POST", url=f"http://{_SIGN_IN_HOST}/", data=b"",
                             headers={"Host": _SIGN_IN_HOST})
        SigV4Auth(Credentials(access_key, secret), "sagemaker", region).add_auth(request)
        headers = Headers(headers={k: str(v) for k, v in request.headers.items()})
        account, signed_region = self._authenticate("POST", "/", "", headers, b"")
        return Caller(account, signed_region)

    def new_session(self, caller: Caller, access_key: str = "") -> tuple[Session, str]:
        """A session and its cookie value."""
        session = Session(caller, access_key, secrets.token_urlsafe(16), self._clock() + SESSION_SECONDS)
        payload = orjson.dumps({"a": caller.account_id, "r": caller.region, "k": access_key,
                                "n": session.nonce, "e": session.expires})
        return session, f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def cookie_header(self, value: str, *, clear: bool = False) -> str:
        age = 0 if clear else SESSION_SECONDS
        return f"{COOKIE}={'' if clear else value}; Path=/console; Max-Age={age}; HttpOnly; SameSite=Strict"

    # --- each request ----------------------------------------------------------------------
    def session(self, request: Request) -> Session | None:
        """The request's valid, unexpired session, if it carries one."""
        raw = request.cookies.get(COOKIE, "")
        body, _, mac = raw.partition(".")
        try:
            payload = _unb64(body)
            if not hmac.compare_digest(_unb64(mac), self._mac(payload)):
                return None
            data = orjson.loads(payload)
        except (ValueError, orjson.JSONDecodeError):
            return None
        if float(data["e"]) < self._clock():
            return None
        caller = Caller(str(data["a"]), str(data["r"]))
        if not self.sign_in_required and caller != self.default:
            return None  # a cookie of a server that had a credentials file then
        return Session(caller, str(data["k"]), str(data["n"]), float(data["e"]))

    def csrf_token(self, session: Session) -> str:
        return hmac.new(self._key, b"csrf|" + session.nonce.encode(), hashlib.sha256).hexdigest()[:32]

    def csrf_ok(self, request: Request, session: Session) -> bool:
        sent = request.headers.get(CSRF_HEADER, "")
        return hmac.compare_digest(sent.encode(), self.csrf_token(session).encode())

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, b"session|" + payload, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
