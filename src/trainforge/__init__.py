"""trainforge: the SageMaker training-job API, self-hosted, running jobs for real."""

__version__ = "0.1.0"
