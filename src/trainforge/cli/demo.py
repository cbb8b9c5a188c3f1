"""``trainforge demo``: train a real model end to end on the embedded default server.

Fisher's Iris measurements (shipped in :mod:`demo_data`) are split into train and validation
channels under ``$TRAINFORGE_HOME/demo``, :mod:`demo_train` becomes the job's ``train.py``, and a
script-mode job runs exactly as ``trainforge run`` would submit it. On a server with the embedded S3
endpoint (the default) the channels are uploaded to its default bucket and the job reads and writes
``s3://`` URIs, as on SageMaker; elsewhere it uses ``file://`` URIs. The live view shows the
status transitions, the metrics and the log tail; at the end the model is read back from its
``model.tar.gz`` and checked on the validation flowers.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlparse

from botocore.exceptions import ClientError

from . import demo_train, embedded
from .argparser import ArgParser, parse_strict
from .connection import Connection, connect
from .demo_data import IRIS_CSV
from .envcmd import s3_client, s3_info
from .logs import LogFollower, make_console
from .runcmd import submit
from .scriptjob import ScriptJob, job_name_for
from .watch import exit_code, watch

METRICS = [
    {"Name": "train:loss", "Regex": r"train_loss=([0-9.]+)"},
    {"Name": "validation:loss", "Regex": r"validation_loss=([0-9.]+)"},
    {"Name": "validation:accuracy", "Regex": r"validation_accuracy=([0-9.]+)"},
]


def build_parser() -> ArgParser:
    from .globalopts import add_global_options

    parser = ArgParser(prog="trainforge demo", description="Train a softmax regression on Fisher's Iris data "
                       "(shipped with trainforge) as a SageMaker script-mode job on the local server.")
    parser.add_argument("--epochs", type=int, default=200, help="training epochs (200)")
    parser.add_argument("--learning-rate", type=float, default=1.0, help="gradient descent step (1.0)")
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between status polls (0.25)")
    add_global_options(parser, exclude=frozenset({"output", "query"}))
    return parser


def prepare(base: Path) -> tuple[Path, Path, Path]:
    """Write the script and the two channels; (code dir, train dir, validation dir)."""
    code, train, validation = base / "code", base / "data" / "train", base / "data" / "validation"
    for directory in (code, train, validation):
        directory.mkdir(parents=True, exist_ok=True)
    (code / "train.py").write_text(Path(demo_train.__file__).read_text())
    header, *rows = IRIS_CSV.strip().splitlines()
    (train / "iris.csv").write_text("\n".join([header] + [r for i, r in enumerate(rows) if i % 5 != 4]) + "\n")
    (validation / "iris.csv").write_text("\n".join([header] + [r for i, r in enumerate(rows) if i % 5 == 4]) + "\n")
    return code, train, validation


def check_model(model_uri: str, validation: Path, s3: Any = None) -> str | None:
    """Classify the validation flowers with the saved model; a one-line report (None: not readable here)."""
    parsed = urlparse(model_uri)
    try:
        if parsed.scheme == "s3" and s3 is not None:
            archive = validation.parent.parent / "model.tar.gz"
            s3.download_file(parsed.netloc, parsed.path.lstrip("/"), str(archive))
        elif parsed.scheme == "file":
            archive = Path(unquote(parsed.path))
        else:
            return None
        with tarfile.open(archive) as tar:
            member = tar.extractfile("model.json")
            model: dict[str, Any] = json.load(member) if member else {}
    except (OSError, KeyError, tarfile.TarError, ValueError, ClientError):
        return None
    _header, *rows = (validation / "iris.csv").read_text().strip().splitlines()
    correct = 0
    for row in rows:
        *values, species = row.split(",")
        x = [(float(v) - m) / s for v, m, s in zip(values, model["means"], model["stds"])]
        scores = [w[0] + sum(wi * xi for wi, xi in zip(w[1:], x)) for w in model["weights"]]
        correct += model["classes"][max(range(len(scores)), key=scores.__getitem__)] == species
    return (f"the saved model ({len(model['classes'])} classes, {len(model['features'])} features) classifies "
            f"{correct}/{len(rows)} validation flowers correctly ({correct / len(rows):.1%})"
            if rows else None)


def locations(connection: Connection, job_name: str, train: Path, validation: Path) -> tuple[dict[str, str], str, Any]:
    """(channels, output URI, S3 client or None): on the embedded S3 endpoint when the server has one (the
    channels are uploaded there, as a SageMaker user would), else file:// URIs of the local directories."""
    info = s3_info(connection)
    if info is None:
        return ({"train": train.resolve().as_uri() + "/", "validation": validation.resolve().as_uri() + "/"},
                (embedded.home() / "output").resolve().as_uri(), None)
    s3 = s3_client(info)
    prefix = f"s3://{info['bucket']}/trainforge-demo"
    channels = {}
    for name, directory in (("train", train), ("validation", validation)):
        s3.upload_file(str(directory / "iris.csv"), info["bucket"], f"trainforge-demo/{job_name}/data/{name}/iris.csv")
        channels[name] = f"{prefix}/{job_name}/data/{name}/"
    return channels, f"{prefix}/output", s3


def command(argv: list[str], stdout: IO[str], stderr: IO[str]) -> int:
    ns = parse_strict(build_parser(), argv)
    connection = connect(ns, stderr, cli_timestamps=False)
    base = embedded.home() / "demo"
    code, train, validation = prepare(base)
    job_name = job_name_for("trainforge-demo")
    channels, output_uri, s3 = locations(connection, job_name, train, validation)
    job = ScriptJob(script="train.py", source_dir=code, job_name=job_name, channels=channels,
                    hyperparameters={"epochs": str(ns.epochs), "learning-rate": json.dumps(ns.learning_rate)},
                    output_uri=output_uri, region=connection.region,
                    metric_definitions=METRICS, max_runtime=600)
    console = make_console(stdout, ns.color)
    console.print(f"Training a softmax regression on Fisher's Iris flowers (150 samples, 3 species) as "
                  f"SageMaker training job [bold]{job.job_name}[/bold] at {connection.endpoint_url}",
                  highlight=False)
    client, _ = submit(connection, job, stderr, s3_client=(lambda: s3) if s3 is not None else None)
    description = watch(client, job.job_name, console, ns.poll, LogFollower(connection.client("logs"),
                                                                             job.job_name), tail=6)
    model_uri = (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    report = check_model(model_uri, validation, s3) if model_uri else None
    if report:
        console.print(report, highlight=False, markup=False)
    console.print(f"\nnext:  trainforge logs {job.job_name}\n"
                  f"       trainforge describe-training-job --training-job-name {job.job_name}\n"
                  f"       trainforge run {code / 'train.py'} --channel train={train} "
                  f"--channel validation={validation}"
                  + (f"\n       eval \"$(trainforge env)\"; aws s3 ls --recursive {output_uri}/{job.job_name}/"
                     if s3 is not None else ""), highlight=False, markup=False)
    return exit_code(description)
