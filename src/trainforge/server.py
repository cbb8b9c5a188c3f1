"""Assembling and running the trainforge server: store, services, scheduler, HTTP app."""

from __future__ import annotations

import logging
import os
import signal
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainforge.api.agent_api import agent_routes
from trainforge.api.app import AwsJsonEndpoint, CachedAnswers, build_app, sagemaker_handlers
from trainforge.api.errors import ValidationError
from trainforge.api.sigv4 import Authenticator
from trainforge.api.validation import warm
from trainforge.awsmodel import SUPPORTED_OPERATIONS
from trainforge.config import Config
from trainforge.scheduler.capacity import CapacityModel
from trainforge.scheduler.scheduler import Scheduler
from trainforge.service.create_rules import check_create
from trainforge.service.logs import Logs
from trainforge.service.pagination import TokenSigner
from trainforge.service.reports import Reports
from trainforge.service.tags import Tags
from trainforge.service.training_jobs import TrainingJobs
from trainforge.service.unsupported import check_supported
from trainforge.store.db import Database
from trainforge.store.jobs import JobStore

log = logging.getLogger("trainforge")


@dataclass
class Isolation:
    """How instances run here: ``sandbox`` (its settings for the instance specs), ``none``
    (configured explicitly), or ``unavailable`` (``reason`` says why: jobs are refused)."""

    mode: str
    settings: dict[str, Any] | None = None
    reason: str = ""


def detect_isolation(mode: str, data_dir: Path) -> Isolation:
    """``auto``: the sandbox when this host can run one, else jobs are refused (``none`` must be
    chosen explicitly); ``sandbox`` (``namespace``, its former name): required, the server does not
    start without it; ``none``: training code runs as the server's user."""
    if mode == "none":
        return Isolation("none")
    if mode not in ("auto", "sandbox", "namespace"):
        raise SystemExit(f"isolation must be auto, sandbox or none, not {mode!r}")
    from trainforge.sandbox.host import probe

    host = probe(str(data_dir / "sandbox"), str(data_dir))
    if host.available:
        return Isolation("sandbox", host.settings)
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
    app: CachedAnswers


def build(config: Config, *, start_scheduler: bool = True) -> Server:
    from trainforge.images.catalog import validate as validate_images

    validate_images(config.images)  # a malformed catalog entry stops the server at start, not a job later
    make_private(config.data_path)
    db = Database(config.effective_database_url)
    db.migrate()
    logging.getLogger("alembic").setLevel(logging.WARNING)
    store = JobStore(db)
    signer = TokenSigner(bytes.fromhex(store.setting("pagination_key", TokenSigner.new_key)))
    isolation = detect_isolation(config.isolation, config.data_path)
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
    jobs = TrainingJobs(store, config, signer, check_create=create_rules)
    scheduler = Scheduler(store, config, isolation=isolation.mode, sandbox=isolation.settings)
    jobs.set_wake(scheduler.wake)
    reports = Reports(store, on_job_change=scheduler.wake)
    tags = Tags(store, signer)
    logs = Logs(store)
    auth = Authenticator(config.load_credentials(), config.account_id, config.region)
    endpoint = AwsJsonEndpoint(auth.authenticate, config.max_body_bytes,
                               sagemaker_handlers(jobs, tags), logs.handlers(), store_version=db.read_version)
    startup = [scheduler.start] if start_scheduler else []
    app = build_app(endpoint, agent_routes(store, reports, config), startup, [scheduler.stop, db.dispose])
    log.info("isolation: %s%s", isolation.mode, f" ({isolation.reason})" if isolation.reason else "")
    return Server(config, db, store, jobs, scheduler, app)


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
    uv_server = uvicorn.Server(uv_config)
    # Bound here, not by uvicorn, so that port 0 (any free port) works: the banner and the agents'
    # control URL (config.endpoint_url) name the port the kernel chose.
    sock = uv_config.bind_socket()
    config.port = sock.getsockname()[1]
    print(f"trainforge listening on http://{config.host}:{config.port} (data: {config.data_path}, "
          f"isolation: {server.scheduler.isolation})", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: setattr(uv_server, "should_exit", True))
    uv_server.run(sockets=[sock])


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


def config_from_args(args: Any) -> Config:
    return Config.load(args.config, host=args.host, port=args.port, data_dir=args.data_dir,
                       database_url=args.database_url, allowed_local_roots=args.allow_local_root,
                       credentials_file=args.credentials_file)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m trainforge.server")
    add_server_arguments(parser)
    run(config_from_args(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
