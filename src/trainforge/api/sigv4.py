"""AWS Signature Version 4 verification of incoming requests.

Written from AWS's published description of SigV4 ("Create a signed AWS API request" and "Handling
dates in Signature Version 4"):

* canonical request = method, canonical URI, canonical query string, canonical headers (the signed
  ones: lowercase names, trimmed values with inner whitespace runs folded to one space, duplicate
  headers comma-joined), the signed-header list, and the hex SHA-256 of the payload;
* string to sign = ``AWS4-HMAC-SHA256``, the request time, the credential scope
  (``date/region/service/aws4_request``) and the hex SHA-256 of the canonical request;
* signing key = HMAC chain ``"AWS4" + secret`` -> date -> region -> service -> ``aws4_request``
  (``trainforge/sigv4_key.py``, cached here per access key and scope).

Two modes:

* no credentials configured (the embedded default): every request is accepted, the region is read
  from the credential scope with a few string operations (no hashing), the account is the
  configured default;
* credentials configured: the signature is recomputed and compared in constant time; each access
  key maps to one account.

Both the ``Authorization`` header form and presigned query-string form (``X-Amz-Algorithm``,
``X-Amz-Credential``, ``X-Amz-Date``, ``X-Amz-Expires``, ``X-Amz-SignedHeaders``,
``X-Amz-Signature``) are verified.

``path`` is the request path *as sent on the wire* (still percent-encoded; Starlette's
``request.scope["raw_path"]``): AWS's canonical URI for every service but S3 encodes each segment a
second time, which is only reproducible from the raw form.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote_to_bytes

from trainforge.api.errors import InvalidSignature, MissingAuthentication, ServiceError, UnrecognizedClient
from trainforge.sigv4_key import TERMINATOR, signing_key

__all__ = [
    "ALGORITHM",
    "MISMATCH_MESSAGE",
    "MISSING_MESSAGE",
    "UNKNOWN_KEY_MESSAGE",
    "Authenticator",
    "IncompleteSignature",
]

ALGORITHM = "AWS4-HMAC-SHA256"
DEFAULT_SERVICES = ("sagemaker", "logs", "monitoring")
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600  # AWS's ceiling for X-Amz-Expires

MISMATCH_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. Check your AWS "
    "Secret Access Key and signing method. Consult the service documentation for details."
)
UNKNOWN_KEY_MESSAGE = "The security token included in the request is invalid."
MISSING_MESSAGE = "Missing Authentication Token"

_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ACCOUNT = re.compile(r"\d{12}")
_KEY_CACHE_LIMIT = 4096


class IncompleteSignature(ServiceError):
    """The request carries authentication that cannot even be parsed (AWS's 400 for that case)."""

    code = "IncompleteSignatureException"
    status = 400


class Authenticator:
    """Checks a request's SigV4 authentication and tells which account and region it is for."""

    def __init__(
        self,
        credentials: dict[str, dict[str, str]] | None,
        default_account: str,
        default_region: str,
        max_skew_seconds: int = 300,
        *,
        services: Iterable[str] = DEFAULT_SERVICES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.default_account = default_account
        self.default_region = default_region
        self.max_skew_seconds = int(max_skew_seconds)
        self.services = frozenset(services)
        self._clock = clock
        self._secrets: dict[str, tuple[str, str]] | None = None
        if credentials is not None:
            self._secrets = {}
            for key_id, entry in credentials.items():
                if not isinstance(entry, Mapping):
                    raise TypeError(f"credentials[{key_id!r}] must be a mapping")
                secret = entry.get("secret_access_key") or entry.get("aws_secret_access_key")
                if not secret:
                    raise ValueError(f"credentials[{key_id!r}] has no secret_access_key")
                account = str(entry.get("account_id") or default_account)
                if not _ACCOUNT.fullmatch(account):
                    raise ValueError(f"credentials[{key_id!r}].account_id must be 12 digits, not {account!r}")
                self._secrets[str(key_id)] = (str(secret), account)
        self._signing_keys: dict[tuple[str, str, str, str], bytes] = {}

    @property
    def verifies_signatures(self) -> bool:
        return self._secrets is not None

    # ------------------------------------------------------------------------------------------
    def authenticate(
        self, method: str, path: str, query_string: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[str, str]:
        """Returns ``(account_id, region)``; raises a 4xx :class:`ServiceError` when not authentic."""
        if self._secrets is None:
            return self.default_account, self._region_without_verification(headers, query_string)

        authorization = headers.get("authorization")
        presigned = "X-Amz-Algorithm=" in query_string
        if authorization is not None and presigned:
            raise IncompleteSignature(
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the "
                "Authorization header should be specified."
            )
        query = _parse_query(query_string)
        if authorization is not None:
            parts = _parse_authorization(authorization, headers)
            expires: int | None = None
        elif presigned:
            parts, expires = _parse_presigned(query)
        else:
            raise MissingAuthentication(MISSING_MESSAGE)
        key_id, scope_date, region, service, amz_date, signed_headers, signature = parts

        if region == "" or not _REGION.fullmatch(region):
            raise InvalidSignature(f"Credential should be scoped to a valid region, not '{region}'.")
        if service not in self.services:
            expected = _expected_service(headers, self.services)
            raise InvalidSignature(f"Credential should be scoped to correct service: '{expected}'.")
        request_time = _parse_request_time(amz_date)
        if scope_date != amz_date[:8]:
            raise InvalidSignature(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
                f"HTTP: '{scope_date}' != '{amz_date[:8]}', from '{amz_date}'."
            )
        self._check_time(amz_date, request_time, expires)

        known = self._secrets.get(key_id)
        if known is None:
            raise UnrecognizedClient(UNKNOWN_KEY_MESSAGE)
        secret, account = known

        names = signed_headers.split(";")
        if "host" not in names and ":authority" not in names:
            raise InvalidSignature(
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
            )
        payload_hash = _payload_hash(headers, body)
        canonical = "\n".join(
            (
                method.upper(),
                _canonical_uri(path),
                _canonical_query(query, skip_signature=presigned),
                _canonical_headers(names, headers),
                signed_headers,
                payload_hash,
            )
        )
        scope = f"{scope_date}/{region}/{service}/{TERMINATOR}"
        string_to_sign = "\n".join(
            (ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest())
        )
        key = self._signing_key(key_id, secret, scope_date, region, service)
        expected_sig = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected_sig.encode(), signature.encode("utf-8", "surrogateescape")):
            raise InvalidSignature(MISMATCH_MESSAGE)
        return account, region

    # ------------------------------------------------------------------------------------------
    def _region_without_verification(self, headers: Mapping[str, str], query_string: str) -> str:
        """The embedded default: the credential scope's region, found with plain string operations."""
        authorization = headers.get("authorization")
        if authorization:
            start = authorization.find("Credential=")
            if start < 0:
                return self.default_region
            end = authorization.find(",", start)
            credential = authorization[start + 11 : end if end >= 0 else len(authorization)]
            sep = "/"
        else:
            start = query_string.find("X-Amz-Credential=")
            if start < 0:
                return self.default_region
            end = query_string.find("&", start)
            credential = query_string[start + 17 : end if end >= 0 else len(query_string)]
            sep = "%2F" if "%2F" in credential else "/"
        fields = credential.strip().split(sep)
        if len(fields) >= 3:
            region = fields[2]
            if _REGION.fullmatch(region):
                return region
        return self.default_region

    def _check_time(self, amz_date: str, request_time: float, expires: int | None) -> None:
        now = self._clock()
        skew = self.max_skew_seconds
        if expires is None:
            if request_time < now - skew:
                raise InvalidSignature(
                    f"Signature expired: {amz_date} is now earlier than {_stamp(now - skew)} "
                    f"({_stamp(now)} - {_duration(skew)})"
                )
        elif request_time + expires < now:
            raise InvalidSignature(
                f"Signature expired: {amz_date} is now earlier than {_stamp(now - expires)} "
                f"({_stamp(now)} - {_duration(expires)})"
            )
        if request_time > now + skew:
            raise InvalidSignature(
                f"Signature not yet current: {amz_date} is still later than {_stamp(now + skew)} "
                f"({_stamp(now)} + {_duration(skew)})"
            )

    def _signing_key(self, key_id: str, secret: str, date: str, region: str, service: str) -> bytes:
        cache_key = (key_id, date, region, service)
        key = self._signing_keys.get(cache_key)
        if key is None:
            key = signing_key(secret, date, region, service)
            if len(self._signing_keys) >= _KEY_CACHE_LIMIT:
                self._signing_keys.clear()
            self._signing_keys[cache_key] = key
        return key


# ---------------------------------------------------------------------------------------------
# parsing the authentication material

_Parts = tuple[str, str, str, str, str, str, str]


def _split_credential(credential: str) -> tuple[str, str, str, str]:
    fields = credential.split("/")
    if len(fields) != 5 or not all(fields):
        raise IncompleteSignature(
            f"Credential is malformed: '{credential}'; expecting "
            "'<access key id>/<YYYYMMDD>/<region>/<service>/aws4_request'."
        )
    if fields[4] != TERMINATOR:
        raise InvalidSignature(
            f"Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{fields[4]}'."
        )
    return fields[0], fields[1], fields[2], fields[3]


def _parse_authorization(value: str, headers: Mapping[str, str]) -> _Parts:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise IncompleteSignature(
            f"Unsupported AWS 'algorithm': '{algorithm}'; this service accepts only {ALGORITHM} "
            "(Signature Version 4)."
        )
    params: dict[str, str] = {}
    for item in rest.split(","):
        item = item.strip()
        if not item:
            continue
        name, eq, val = item.partition("=")
        if not eq:
            raise IncompleteSignature(
                f"'{item}' not a valid key=value pair (missing equal-sign) in Authorization header: "
                f"'{value}'."
            )
        params[name.strip()] = val.strip()
    date = headers.get("x-amz-date") or headers.get("date")
    problems = [
        f"Authorization header requires '{name}' parameter."
        for name in ("Credential", "Signature", "SignedHeaders")
        if not params.get(name)
    ]
    if not date:
        problems.append(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    if problems:
        raise IncompleteSignature(" ".join(problems) + f" Authorization={value}")
    key_id, scope_date, region, service = _split_credential(params["Credential"])
    assert date is not None
    return (
        key_id,
        scope_date,
        region,
        service,
        _normalise_date(date.strip()),
        params["SignedHeaders"],
        params["Signature"],
    )


_PRESIGN_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
)


def _parse_presigned(query: list[tuple[bytes, bytes]]) -> tuple[_Parts, int]:
    values: dict[str, str] = {}
    for key, val in query:
        name = key.decode("utf-8", "replace")
        if name in _PRESIGN_PARAMS and name not in values:
            values[name] = val.decode("utf-8", "replace")
    if any(not values.get(name) for name in _PRESIGN_PARAMS):
        raise IncompleteSignature(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
            "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
        )
    if values["X-Amz-Algorithm"] != ALGORITHM:
        raise IncompleteSignature(
            f"Unsupported AWS 'algorithm': '{values['X-Amz-Algorithm']}'; this service accepts only "
            f"{ALGORITHM} (Signature Version 4)."
        )
    try:
        expires = int(values["X-Amz-Expires"])
    except ValueError:
        expires = -1
    if not 0 <= expires <= MAX_PRESIGN_EXPIRES:
        raise IncompleteSignature(
            f"X-Amz-Expires must be a whole number of seconds between 0 and {MAX_PRESIGN_EXPIRES}, "
            f"not '{values['X-Amz-Expires']}'."
        )
    key_id, scope_date, region, service = _split_credential(values["X-Amz-Credential"])
    parts = (
        key_id,
        scope_date,
        region,
        service,
        _normalise_date(values["X-Amz-Date"]),
        values["X-Amz-SignedHeaders"],
        values["X-Amz-Signature"],
    )
    return parts, expires


def _normalise_date(value: str) -> str:
    """The request time as ISO-8601 basic (``YYYYMMDD'T'HHMMSS'Z'``); an HTTP ``Date`` is converted."""
    if _AMZ_DATE.fullmatch(value):
        return value
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        parsed = None
    if parsed is None:
        raise IncompleteSignature(
            f"Date must be in ISO-8601 'basic format'. Got '{value}'. See "
            "http://en.wikipedia.org/wiki/ISO_8601"
        )
    if parsed.tzinfo is None:  # "-0000": UTC, says RFC 5322
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _parse_request_time(amz_date: str) -> float:
    try:
        moment = datetime(
            int(amz_date[0:4]),
            int(amz_date[4:6]),
            int(amz_date[6:8]),
            int(amz_date[9:11]),
            int(amz_date[11:13]),
            int(amz_date[13:15]),
            tzinfo=UTC,
        )
    except ValueError:
        raise IncompleteSignature(
            f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'. See "
            "http://en.wikipedia.org/wiki/ISO_8601"
        ) from None
    return moment.timestamp()


def _stamp(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def _duration(seconds: int) -> str:
    return f"{seconds // 60} min." if seconds % 60 == 0 else f"{seconds} sec."


def _expected_service(headers: Mapping[str, str], services: frozenset[str]) -> str:
    target = headers.get("x-amz-target") or ""
    if target.startswith("Logs_") and "logs" in services:
        return "logs"
    if "sagemaker" in services:
        return "sagemaker"
    return min(services) if services else "sagemaker"


# ---------------------------------------------------------------------------------------------
# the canonical request

_UNRESERVED = "-_.~"  # with A-Z a-z 0-9, which quote() never encodes


def _parse_query(query_string: str) -> list[tuple[bytes, bytes]]:
    """Decoded (name, value) pairs. ``+`` is a space, as for the application reading the parameters:
    what is verified is what the request means (signers encode a space as ``%20``)."""
    if "+" in query_string:
        query_string = query_string.replace("+", "%20")
    pairs = []
    for item in query_string.split("&"):
        if not item:
            continue
        key, _, val = item.partition("=")
        pairs.append((unquote_to_bytes(key), unquote_to_bytes(val)))
    return pairs


def _canonical_query(query: list[tuple[bytes, bytes]], *, skip_signature: bool) -> str:
    encoded = sorted(
        (quote(key, safe=_UNRESERVED), quote(val, safe=_UNRESERVED))
        for key, val in query
        if not (skip_signature and key == b"X-Amz-Signature")
    )
    return "&".join(f"{key}={val}" for key, val in encoded)


def _canonical_uri(raw_path: str) -> str:
    path = raw_path or "/"
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    normalised = "/" + "/".join(segments)
    if path.endswith("/") and segments:
        normalised += "/"
    return quote(normalised, safe="/~")


def _header_values(headers: Mapping[str, str], name: str) -> list[str]:
    getlist = getattr(headers, "getlist", None)
    if getlist is not None:
        return list(getlist(name))
    value = headers.get(name)
    return [] if value is None else [value]


def _canonical_headers(names: list[str], headers: Mapping[str, str]) -> str:
    lines = []
    for name in names:
        lookup = "host" if name == ":authority" else name.lower()
        values = _header_values(headers, lookup)
        if not values:
            # A header the client says it signed is not in the request: it cannot match.
            raise InvalidSignature(MISMATCH_MESSAGE)
        lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}\n")
    return "".join(lines)


def _payload_hash(headers: Mapping[str, str], body: bytes) -> str:
    computed = hashlib.sha256(body).hexdigest()
    declared = headers.get("x-amz-content-sha256")
    if declared is None:
        return computed
    declared = declared.strip()
    if not _HEX64.fullmatch(declared):
        raise InvalidSignature(
            f"x-amz-content-sha256 '{declared}' is not accepted by this service: the payload must be "
            "signed with its hex-encoded SHA-256 digest."
        )
    if declared != computed:
        raise InvalidSignature("The provided 'x-amz-content-sha256' header does not match what was computed.")
    return declared
