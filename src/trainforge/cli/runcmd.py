"""``trainforge run SCRIPT``: the fastest way to try a training script as a SageMaker job."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import boto3

from . import embedded
from .argparser import ArgParser, parse_strict
from .connection import Connection, configured_endpoint, connect, is_local
from .errors import ParamError
from .logs import LogFollower, LogPrinter, make_console
from .scriptjob import (
    DEFAULT_IMAGE,
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_ROLE,
    ScriptJob,
    encode_hyperparameter,
    job_name_for,
    parse_pairs,
    request,
    stage_channel,
    to_uri,
    under,
    upload_source,
)
from .watch import exit_code, stream_lines, summary


def build_parser() -> ArgParser:
    from .globalopts import add_global_options

    parser = ArgParser(prog="trainforge run", description="Run a local training script as a SageMaker "
                       "script-mode job: pack its directory as sourcedir.tar.gz, create the job, follow its logs.")
    add = parser.add_argument
    add("script", help="the entry point (a path; relative to --source-dir when that is given)")
    add("--source-dir", help="the directory packed as the job's code (default: the script's directory)")
    add("--channel", action="append", default=[], metavar="NAME=PATH_OR_URI",
        help="an input channel: a local directory or file, file://, or s3:// (repeatable)")
    add("--hp", action="append", default=[], metavar="KEY=VALUE",
        help="a hyperparameter, JSON-encoded as the SageMaker SDK does (repeatable)")
    add("--metric", action="append", default=[], metavar="NAME=REGEX", help="a metric definition (repeatable)")
    add("--env", action="append", default=[], metavar="KEY=VALUE", help="an environment variable (repeatable)")
    add("--instance-type", default=DEFAULT_INSTANCE_TYPE, help=f"default {DEFAULT_INSTANCE_TYPE}")
    add("--instance-count", type=int, default=1, help="default 1")
    add("--image", default=DEFAULT_IMAGE, help="the training image (default: a PyTorch CPU image, run in script mode)")
    add("--output", metavar="URI", help="S3OutputPath: s3://..., file://... or a directory "
        "(default $TRAINFORGE_HOME/output); with s3:// the code is uploaded there too")
    add("--job-name", help="default: <script>-<UTC time>")
    add("--role-arn", default=DEFAULT_ROLE)
    add("--max-runtime", type=int, default=86400, help="MaxRuntimeInSeconds (86400)")
    add("--no-follow", action="store_true", help="create the job, print its name and return")
    add("--poll", type=float, default=0.5, help="seconds between polls (0.5)")
    add_global_options(parser, exclude=frozenset({"output", "query"}))
    return parser


def resolve_script(script: str, source_dir: str | None) -> tuple[str, Path]:
    """(entry point relative to the source directory, source directory)."""
    if source_dir is None:
        path = Path(script).expanduser().resolve()
        if not path.is_file():
            raise ParamError(f"run: script {script} not found")
        return path.name, path.parent
    root = Path(source_dir).expanduser().resolve()
    if not root.is_dir():
        raise ParamError(f"run: --source-dir {source_dir} is not a directory")
    candidate = Path(script).expanduser()
    path = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if not path.is_file():
        candidate_cwd = candidate.resolve()
        if candidate_cwd.is_file():
            path = candidate_cwd
        else:
            raise ParamError(f"run: script {script} not found in {root}")
    try:
        return str(path.relative_to(root)), root
    except ValueError as exc:
        raise ParamError(f"run: script {script} is not inside --source-dir {root}") from exc


def channel_uri(name: str, value: str, job_name: str, stage: bool) -> str:
    """An s3:// or file:// URI for a channel; with the embedded server, a local path outside the
    directories it reads by default ($TRAINFORGE_HOME and the home directory) is staged first."""
    uri = to_uri(value, f"--channel {name}")
    if not (stage and uri.startswith("file://")) or value.startswith("file://"):
        return uri
    path = Path(value).expanduser().resolve()
    if under(path, [embedded.home().resolve(), Path.home().resolve()]):
        return uri
    staged = stage_channel(path, embedded.home() / "uploads" / job_name / "channels" / name)
    return staged.resolve().as_uri() + "/"


def job_from_args(ns: argparse.Namespace, stage: bool) -> ScriptJob:
    """The job the arguments describe; every local path is checked (and staged) before any server is contacted."""
    entry, source_dir = resolve_script(ns.script, ns.source_dir)
    name = ns.job_name or job_name_for(entry)
    channels = {k: channel_uri(k, v, name, stage) for k, v in parse_pairs(ns.channel, "--channel").items()}
    hps = {k: encode_hyperparameter(v) for k, v in parse_pairs(ns.hp, "--hp").items()}
    metrics = [{"Name": k, "Regex": v} for k, v in parse_pairs(ns.metric, "--metric").items()]
    output = ns.output
    if output and urlparse(output).scheme not in ("s3", "file"):
        Path(output).expanduser().mkdir(parents=True, exist_ok=True)
        output = to_uri(output, "--output")
    if ns.instance_count < 1:
        raise ParamError("run: --instance-count must be at least 1")
    return ScriptJob(script=entry, source_dir=source_dir, job_name=name, channels=channels, hyperparameters=hps,
                     image=ns.image, instance_type=ns.instance_type, instance_count=ns.instance_count,
                     output_uri=output or (embedded.home() / "output").resolve().as_uri(), role_arn=ns.role_arn,
                     max_runtime=ns.max_runtime, metric_definitions=metrics,
                     environment=parse_pairs(ns.env, "--env"))


def submit(connection: Connection, job: ScriptJob, stderr: IO[str],
           s3_client: Any = None) -> tuple[Any, dict[str, Any]]:
    """Upload the source (with ``s3_client()`` when given) and create the job; (sagemaker client, request)."""
    if not is_local(connection.endpoint_url) and not job.output_uri.startswith("s3://"):
        print("trainforge: warning: the endpoint is not on this machine; it may not read file:// paths "
              "(use --output s3://... and s3:// channels)", file=stderr)
    (embedded.home() / "output").mkdir(parents=True, exist_ok=True)
    submit_uri = upload_source(job, embedded.home() / "uploads", s3_client or (lambda: boto3.session.Session(
        botocore_session=connection.session).client("s3", region_name=connection.region)))
    body = request(job, submit_uri)
    client = connection.client("sagemaker")
    client.create_training_job(**body)
    return client, body


def command(argv: list[str], stdout: IO[str], stderr: IO[str]) -> int:
    ns = parse_strict(build_parser(), argv)
    job = job_from_args(ns, stage=configured_endpoint(ns) is None)
    connection = connect(ns, stderr, cli_timestamps=False)
    job.region = connection.region
    client, _ = submit(connection, job, stderr)
    console = make_console(stdout, ns.color)
    err_console = make_console(stderr, ns.color)
    err_console.print(f"trainforge: created training job {job.job_name} "
                      f"({job.script} from {job.source_dir})", highlight=False, markup=False)
    if ns.no_follow:
        print(job.job_name, file=stdout)
        return 0
    follower = LogFollower(connection.client("logs"), job.job_name)
    description = stream_lines(client, job.job_name, console, ns.poll, follower, LogPrinter(console))
    for line in summary(description):
        console.print(line, highlight=False)
    return exit_code(description)
