"""``trainforge env``: the environment that points AWS clients (and the SageMaker SDK) at trainforge.

``eval "$(trainforge env)"`` sets the endpoint of every service the server answers on its one port
(:data:`SERVER_SERVICES`), the embedded S3 endpoint, the region and, for the embedded S3 of a server
on this machine, its key pair (the server without a credentials file accepts any key, so the same
pair signs the SageMaker calls too). ``--sagemaker-config`` also writes the SageMaker Python SDK's
own configuration file with the embedded S3's default bucket and a role, so ``Session()`` and
``Estimator(...)`` need neither. Starts the embedded default server when nothing answers, as every
other command does.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import IO, Any

from .. import embedded_s3
from . import embedded
from .argparser import ArgParser, parse_strict
from .connection import Connection, configured_endpoint, connect, is_local
from .errors import CLIError

# The services that answer on the server's own port, as the AWS_ENDPOINT_URL_<SERVICE> suffixes
# botocore reads (the service id, upper case, spaces as underscores). Adding one is one line.
SERVER_SERVICES = (
    "SAGEMAKER",
    "CLOUDWATCH_LOGS",
    "CLOUDWATCH",
    "STS",
    "IAM",  # the SageMaker SDK v3 checks the training role with GetRole
)
# What a previous shell setup may have left that would sign with the wrong identity.
CLEARED = ("AWS_SESSION_TOKEN", "AWS_PROFILE")


def build_parser() -> ArgParser:
    from .globalopts import add_global_options

    parser = ArgParser(prog="trainforge env", description="Print shell commands that point AWS clients and the "
                       "SageMaker SDK at trainforge: eval \"$(trainforge env)\".")
    parser.add_argument("--shell", choices=("sh", "fish"), default="sh",
                        help="sh (bash, zsh: export NAME=value; the default) or fish (set -gx NAME value)")
    parser.add_argument("--sagemaker-config", nargs="?", const=str(sdk_config_default()), default=None,
                        metavar="PATH", help="also write the SageMaker Python SDK's config.yaml (default "
                        "location: $XDG_CONFIG_HOME/sagemaker/config.yaml, else ~/.config/sagemaker/config.yaml)")
    parser.add_argument("--role-arn", default=None,
                        help="the role written to the SDK config (default arn:aws:iam::<account>:role/trainforge)")
    add_global_options(parser, exclude=frozenset({"output", "query"}))
    return parser


def sdk_config_default() -> Path:
    """Where the SageMaker SDK looks for the user's config file (platformdirs' user_config_dir)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sagemaker" / "config.yaml"


def s3_info(connection: Connection) -> dict[str, str] | None:
    """The embedded S3 of the server ``connection`` talks to, when it is on this machine, its data
    directory is ``$TRAINFORGE_HOME`` and its S3 endpoint answers; else None."""
    if not is_local(connection.endpoint_url):
        return None
    info = embedded_s3.read_info(embedded.home())
    if not info:
        return None
    host, _, port = info["endpoint_url"].rpartition("//")[2].partition(":")
    return info if port.isdigit() and embedded.answering(host, int(port)) else None


def s3_client(info: dict[str, str]) -> Any:
    """A boto3 S3 client of the embedded endpoint ``info`` names, signing with its key pair."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=info["endpoint_url"], region_name=info["region"],
                        aws_access_key_id=info["access_key_id"], aws_secret_access_key=info["secret_access_key"],
                        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"))


def variables(connection: Connection, info: dict[str, str] | None) -> dict[str, str]:
    values = {f"AWS_ENDPOINT_URL_{service}": connection.endpoint_url for service in SERVER_SERVICES}
    region = (info or {}).get("region") or connection.region
    values.update({"AWS_DEFAULT_REGION": region, "AWS_REGION": region})
    if info:
        values.update({"AWS_ENDPOINT_URL_S3": info["endpoint_url"], "AWS_ACCESS_KEY_ID": info["access_key_id"],
                       "AWS_SECRET_ACCESS_KEY": info["secret_access_key"]})
    return values


def render(values: dict[str, str], shell: str, cleared: tuple[str, ...] = CLEARED) -> str:
    if shell == "fish":
        quote = lambda v: "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
        lines = [f"set -e {name};" for name in cleared] + [f"set -gx {k} {quote(v)};" for k, v in values.items()]
    else:
        lines = [f"unset {' '.join(cleared)};"] if cleared else []
        lines += [f"export {k}={shlex.quote(v)};" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def write_sdk_config(path: Path, bucket: str, role_arn: str) -> None:
    """Set the default bucket and the training role in the SDK's config file (other keys are kept)."""
    import yaml

    try:
        current = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        current = {}
    except (OSError, yaml.YAMLError) as exc:
        raise CLIError(f"trainforge env: cannot read {path}: {exc}") from exc
    if not isinstance(current, dict):
        raise CLIError(f"trainforge env: {path} does not hold a mapping; not overwriting it")
    current.setdefault("SchemaVersion", "1.0")
    sagemaker = current.setdefault("SageMaker", {})
    modules = sagemaker.setdefault("PythonSDK", {}).setdefault("Modules", {})
    modules.setdefault("Session", {})["DefaultS3Bucket"] = bucket
    modules["TelemetryOptOut"] = True  # the SDKs otherwise reach for AWS's telemetry bucket
    sagemaker.setdefault("TrainingJob", {})["RoleArn"] = role_arn
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(current, sort_keys=False))


def command(argv: list[str], stdout: IO[str], stderr: IO[str]) -> int:
    ns = parse_strict(build_parser(), argv)
    connection = connect(ns, stderr, cli_timestamps=False)
    info = s3_info(connection)
    if info is None:
        where = "configured" if configured_endpoint(ns) else "embedded"
        print(f"trainforge env: no embedded S3 endpoint of the {where} server at {connection.endpoint_url} "
              f"(off, external, or another data directory than {embedded.home()}): S3 and credentials "
              "are left as they are", file=stderr)
    values = variables(connection, info)
    if ns.sagemaker_config:
        if info is None:
            raise CLIError("trainforge env: --sagemaker-config needs the embedded S3 endpoint (its default bucket)")
        path = Path(ns.sagemaker_config).expanduser().resolve()
        account = info.get("account_id") or "000000000000"
        write_sdk_config(path, info["bucket"], ns.role_arn or f"arn:aws:iam::{account}:role/trainforge")
        if path != sdk_config_default().resolve():
            values["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(path)
        print(f"trainforge env: wrote the SageMaker SDK configuration {path} (default bucket {info['bucket']})",
              file=stderr)
    stdout.write(render(values, ns.shell, CLEARED if info else ()))
    return 0
