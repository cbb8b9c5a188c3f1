"""The names of a training job's CloudWatch log streams (group ``/aws/sagemaker/TrainingJobs``).

Each instance has two streams:

- ``<job>/algo-N-<epoch>``: the algorithm's output only (the training process's stdout and
  stderr, rendered as SageMaker's log agent renders it: ``agent/logtext.py``), named as SageMaker
  names it;
- ``<job>.trainforge/algo-N-<epoch>``: trainforge's own lines for that instance (isolation,
  staging, checkpoints, uploads, MetricDefinitions warnings; each ``[trainforge] ...``).

Why that name: every client that shows a SageMaker job's log finds the job's streams by the
prefix ``<job>/`` — the SageMaker Python SDK's ``logs_for_job`` (``session._flush_log_streams``:
``DescribeLogStreams(logStreamNamePrefix=job_name + "/", orderBy="LogStreamName",
limit=InstanceCount)``, and every stream it lists is printed as an algorithm's), the console,
``trainforge logs``. A job name is ``[a-zA-Z0-9](-*[a-zA-Z0-9])*``: it never holds a ``.`` nor a
``/``, so ``<job>.trainforge/...`` is under no job's ``<job>/`` prefix — neither this job's nor
another's (a job named ``trainforge`` included, which a ``trainforge/<job>/...`` name would
collide with) — and its first ``/`` follows a text no job can be named. The prefix ``<job>``
(without the slash) lists both streams of the job side by side.
"""

from __future__ import annotations

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
PLATFORM_MARK = ".trainforge"  # between the job name and the "/" of the instance's stream name
PLATFORM_KIND = "trainforge"  # the ``stream`` of an agent's report event that is trainforge's own line


def algorithm_stream(job: str, host: str, epoch: int) -> str:
    """SageMaker's name of an instance's stream: ``<job>/algo-N-<epoch>``."""
    return f"{job}/{host}-{epoch}"


def platform_stream(algorithm: str) -> str:
    """The stream of trainforge's own lines beside an algorithm stream ``<job>/algo-N-<epoch>``."""
    job, _, rest = algorithm.partition("/")
    return f"{job}{PLATFORM_MARK}/{rest}"


def job_prefixes(job: str) -> tuple[str, str]:
    """The stream-name prefixes of a job's algorithm streams and of its trainforge streams."""
    return f"{job}/", f"{job}{PLATFORM_MARK}/"
