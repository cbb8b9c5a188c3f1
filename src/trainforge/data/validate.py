"""Create-time checks of InputDataConfig: the combinations SageMaker refuses, refused the same way.

``input_config_error(request)`` returns the message of the ValidationException to answer, or
None. The API layer calls it on CreateTrainingJob (after the botocore-model validation), so a
job that would fail at staging for one of these reasons is never accepted.
"""

from __future__ import annotations

from typing import Any


def input_config_error(request: dict[str, Any]) -> str | None:
    job_mode = (request.get("AlgorithmSpecification") or {}).get("TrainingInputMode") or "File"
    seen: set[str] = set()
    for raw in request.get("InputDataConfig") or []:
        name = raw.get("ChannelName", "")
        if name in seen:
            return f"Channel names must be unique. Channel '{name}' appears more than once."
        seen.add(name)
        mode = raw.get("InputMode") or job_mode
        ds = raw.get("DataSource") or {}
        s3: dict[str, Any] = ds.get("S3DataSource") or {}
        fs = ds.get("FileSystemDataSource")
        if s3 and fs:
            return f"Channel '{name}': specify only one of S3DataSource and FileSystemDataSource."
        if not s3 and not fs:
            return f"Channel '{name}': a DataSource needs S3DataSource or FileSystemDataSource."
        if raw.get("CompressionType") == "Gzip" and mode != "Pipe":
            return (f"Channel '{name}': CompressionType 'Gzip' is supported only with Pipe input mode, "
                    f"not {mode}.")
        if raw.get("RecordWrapperType") == "RecordIO" and mode != "Pipe":
            return (f"Channel '{name}': RecordWrapperType 'RecordIO' is supported only with Pipe input mode, "
                    f"not {mode}.")
        if fs:
            if mode != "File":
                return (f"Channel '{name}': FileSystemDataSource supports only File input mode, not {mode}.")
            if raw.get("ShuffleConfig"):
                return f"Channel '{name}': ShuffleConfig is not supported with FileSystemDataSource."
            continue
        dtype = s3.get("S3DataType") or "S3Prefix"
        attrs = s3.get("AttributeNames")
        if dtype == "AugmentedManifestFile":
            if mode != "Pipe":
                return (f"Channel '{name}': S3DataType 'AugmentedManifestFile' is supported only with Pipe "
                        f"input mode, not {mode}.")
            if not attrs:
                return f"Channel '{name}': AttributeNames are required with S3DataType 'AugmentedManifestFile'."
        elif attrs:
            return (f"Channel '{name}': AttributeNames can be given only with S3DataType "
                    f"'AugmentedManifestFile', not '{dtype}'.")
        uri = s3.get("S3Uri", "")
        if not (uri.startswith(("s3://", "file://"))):
            return f"Channel '{name}': S3Uri '{uri}' must be an s3:// URI (or file:// under an allowed root)."
    return None
