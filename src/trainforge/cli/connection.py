"""Where requests go and how they are signed: endpoint resolution, botocore session, clients.

The endpoint is the first of ``--endpoint-url``, ``$TRAINFORGE_ENDPOINT``,
``$AWS_ENDPOINT_URL_SAGEMAKER`` and ``$AWS_ENDPOINT_URL``; with none of them, the embedded default
server (started on first use, see :mod:`embedded`). The region defaults to ``us-east-1`` when
neither ``--region`` nor the AWS configuration names one. When no AWS credentials are configured
and the endpoint is on this machine (where a trainforge server without a credentials file accepts
any key), dummy credentials are used so botocore can sign. Timestamps in responses are rendered as
ISO 8601 (the AWS CLI v2 default) unless the profile's ``cli_timestamp_format`` says ``wire``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import IO, Any
from urllib.parse import urlparse

import botocore.session
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ProfileNotFound
from botocore.loaders import Loader, create_loader
from botocore.utils import parse_timestamp

from ..config import DEFAULT_REGION
from . import embedded
from .errors import CLIError

ENDPOINT_VARIABLES = ("TRAINFORGE_ENDPOINT", "AWS_ENDPOINT_URL_SAGEMAKER", "AWS_ENDPOINT_URL")
DUMMY_KEY = "trainforge"


def _identity(value: Any) -> Any:
    return value


def _iso8601(value: Any) -> str:
    """As the AWS CLI prints a timestamp (awscli.customizations.scalarparse.iso_format)."""
    return str(parse_timestamp(value).isoformat())


def configured_endpoint(g: argparse.Namespace) -> str | None:
    if getattr(g, "endpoint_url", None):
        return str(g.endpoint_url)
    for variable in ENDPOINT_VARIABLES:
        if os.environ.get(variable):
            return os.environ[variable]
    return None


def is_local(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_session(g: argparse.Namespace, cli_timestamps: bool = True) -> botocore.session.Session:
    """A botocore session; with ``cli_timestamps`` responses carry timestamps as the AWS CLI prints them."""
    session = botocore.session.Session(profile=getattr(g, "profile", None))
    session.register_component("data_loader", shared_loader())
    session.user_agent_name = "trainforge"
    if not cli_timestamps:
        return session
    try:
        timestamp_format = session.get_scoped_config().get("cli_timestamp_format", "iso8601")
    except ProfileNotFound as exc:
        raise CLIError(str(exc)) from exc
    if timestamp_format not in ("iso8601", "wire", "none"):
        raise CLIError(f'Unknown cli_timestamp_format value: {timestamp_format}, valid values are '
                       '"none", "wire" or "iso8601"')
    factory = session.get_component("response_parser_factory")
    factory.set_parser_defaults(blob_parser=_identity,
                                timestamp_parser=_iso8601 if timestamp_format == "iso8601" else _identity)
    return session


@lru_cache(maxsize=1)
def shared_loader() -> Loader:
    """One loader (it caches the models it has read) for every session this process makes."""
    return create_loader()


@dataclass
class Connection:
    session: botocore.session.Session
    endpoint_url: str
    region: str
    verify: bool | str | None
    config: Config

    def client(self, service: str = "sagemaker") -> Any:
        return self.session.create_client(service, region_name=self.region, endpoint_url=self.endpoint_url,
                                          verify=self.verify, config=self.config)


def _timeout(value: int | None) -> float | None:
    if value is None:
        return 60.0
    return None if value == 0 else float(value)


def connect(g: argparse.Namespace, stderr: IO[str], start_embedded: bool = True,
            cli_timestamps: bool = True) -> Connection:
    """A connection for the parsed global options; may start the embedded server."""
    session = make_session(g, cli_timestamps)
    endpoint = configured_endpoint(g)
    if endpoint is None:
        server_env = dict(os.environ)
        endpoint = embedded.ensure_running(stderr, env=server_env) if start_embedded else embedded.endpoint()
    local = is_local(endpoint)
    if local:
        # Never probe the EC2 instance metadata address while looking for credentials for a local server.
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    region = getattr(g, "region", None) or session.get_config_variable("region") or DEFAULT_REGION
    sign = getattr(g, "sign_request", True)
    if sign and local and session.get_credentials() is None:
        session.set_credentials(DUMMY_KEY, DUMMY_KEY)
    verify: bool | str | None = None
    if getattr(g, "verify_ssl", True) is False:
        verify = False
    elif getattr(g, "ca_bundle", None):
        verify = g.ca_bundle
    config = Config(connect_timeout=_timeout(getattr(g, "cli_connect_timeout", None)),
                    read_timeout=_timeout(getattr(g, "cli_read_timeout", None)),
                    signature_version=UNSIGNED if not sign else None)
    return Connection(session, endpoint, region, verify, config)
