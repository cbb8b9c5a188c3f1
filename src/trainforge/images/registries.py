"""Where an image is pulled from and with which credentials: the configuration key ``registries``.

``registries`` maps a registry host (exact, or an :func:`fnmatch.fnmatchcase` pattern such as
``*.dkr.ecr.*.amazonaws.com``; exact names win, then patterns in order) to its settings::

    registries:
      "*.dkr.ecr.*.amazonaws.com":
        endpoint: "mirror.example.com:5000"   # pull from here instead (a mirror); host[:port]
        prefix: "ecr"                         # repository prefix on the endpoint (default none)
        plain_http: false                     # default: true for loopback endpoints, as Docker does
        ca_file: /etc/trainforge/registry-ca.pem   # a CA to trust for this endpoint
        username: puller                      # credentials: a user and password,
        password: "..."
        auth_file: /root/.docker/config.json  # or a Docker config.json (its entry for the host),
        credential_helper: docker-credential-ecr-login   # or a Docker credential helper
        credentials_provider_arn: "arn:aws:lambda:us-east-1:111122223333:function:creds"

``credentials_provider_arn`` ties an entry's credentials to a request's
``AlgorithmSpecification.TrainingImageConfig.TrainingRepositoryAuthConfig.TrainingRepositoryCredentialsProviderArn``
(SageMaker calls that Lambda function for the credentials; here the configuration holds them).
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

from trainforge.config_checks import known_mapping
from trainforge.images.reference import Reference

KEYS = ("endpoint", "prefix", "plain_http", "ca_file", "username", "password", "auth_file", "credential_helper",
        "credentials_provider_arn")
HELPER_TIMEOUT = 30


class RegistryConfigError(ValueError):
    """A malformed ``registries`` entry (reported when the server starts)."""


class CredentialsError(RuntimeError):
    """The configured credentials cannot be had (a helper failed, a file is missing)."""


@dataclass
class Route:
    """How to pull one reference: from where, over what, as whom."""

    source: Reference
    plain_http: bool = False
    ca_file: str = ""
    credentials: tuple[str, str] | None = None

    @property
    def transport(self) -> str:
        return f"docker://{self.source}"


def validate(registries: Any) -> None:
    if not isinstance(registries, dict):
        raise RegistryConfigError("the config key 'registries' must map registry hosts to settings")
    for host, entry in registries.items():
        known_mapping(entry, f"registries[{host!r}]", KEYS, RegistryConfigError)
        if ("username" in entry) != ("password" in entry):
            raise RegistryConfigError(f"registries[{host!r}]: 'username' and 'password' go together")
        for key in KEYS:
            if key in entry and key != "plain_http" and not isinstance(entry[key], str):
                raise RegistryConfigError(f"registries[{host!r}].{key} must be a string")


def entry_for(host: str, registries: dict[str, Any]) -> dict[str, Any]:
    if host in registries:
        return dict(registries[host])
    for pattern, entry in registries.items():
        if fnmatch.fnmatchcase(host, pattern):
            return dict(entry)
    return {}


def provider(arn: str, registries: dict[str, Any]) -> dict[str, Any] | None:
    """The entry whose ``credentials_provider_arn`` is ``arn``."""
    for entry in registries.values():
        if isinstance(entry, dict) and entry.get("credentials_provider_arn") == arn:
            return dict(entry)
    return None


def is_loopback(host: str) -> bool:
    """Whether a registry ``host[:port]`` is on this machine's loopback (``localhost``, 127/8, ::1).
    (The agent imports no botocore: not ``cli.connection.is_local``.)"""
    from urllib.parse import urlsplit

    name = urlsplit("//" + host).hostname or ""
    return name in ("localhost", "::1") or name.startswith("127.")


def route(ref: Reference, registries: dict[str, Any] | None, provider_arn: str | None = None) -> Route:
    """Where ``ref`` is pulled from (the mirror of its host, or the host) and with what credentials."""
    registries = registries or {}
    entry = entry_for(ref.host, registries)
    source = ref.on(entry["endpoint"], entry.get("prefix", "")) if entry.get("endpoint") else ref
    plain = entry.get("plain_http")
    plain_http = is_loopback(source.host) if plain is None else bool(plain)
    creds_from = entry
    if provider_arn:
        found = provider(provider_arn, registries)
        if found is None:
            raise CredentialsError(f"the credentials provider {provider_arn} is not configured under 'registries'")
        creds_from = found
    return Route(source, plain_http, str(entry.get("ca_file") or ""), credentials(creds_from, source.host, ref.host))


def credentials(entry: dict[str, Any], *hosts: str) -> tuple[str, str] | None:
    """(user, secret) from the entry: plain, a Docker config.json's entry, or a credential helper."""
    if entry.get("username") is not None:
        return str(entry["username"]), str(entry.get("password") or "")
    if entry.get("auth_file"):
        return _from_auth_file(str(entry["auth_file"]), hosts)
    if entry.get("credential_helper"):
        return _from_helper(str(entry["credential_helper"]), hosts[0])
    return None


def _from_auth_file(path: str, hosts: tuple[str, ...]) -> tuple[str, str] | None:
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            auths = (json.load(f) or {}).get("auths") or {}
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"cannot read the registry auth file {path}: {exc}") from None
    for host in hosts:
        for key in (host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"):
            value = auths.get(key)
            if isinstance(value, dict) and value.get("auth"):
                user, _, secret = base64.b64decode(value["auth"]).decode().partition(":")
                return user, secret
            if isinstance(value, dict) and value.get("username"):
                return str(value["username"]), str(value.get("password") or "")
    return None


def _from_helper(command: str, host: str) -> tuple[str, str]:
    """The Docker credential-helper protocol: ``<helper> get``, the host on stdin, JSON on stdout."""
    import shlex

    try:
        done = subprocess.run([*shlex.split(command), "get"], input=host.encode(), capture_output=True,
                              timeout=HELPER_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CredentialsError(f"the credential helper {command!r} failed: {exc}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).decode(errors="replace").strip()[:200]
        raise CredentialsError(f"the credential helper {command!r} failed: {detail or f'exit {done.returncode}'}")
    try:
        answer = json.loads(done.stdout)
        return str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(f"the credential helper {command!r} answered no Username/Secret") from None
