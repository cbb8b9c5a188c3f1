"""The SageMaker service model shipped with botocore: the one source of shapes and constraints."""

from __future__ import annotations

from functools import cache

from botocore.model import OperationModel, ServiceModel

SUPPORTED_OPERATIONS = (
    "CreateTrainingJob",
    "DescribeTrainingJob",
    "ListTrainingJobs",
    "StopTrainingJob",
    "UpdateTrainingJob",
    "DeleteTrainingJob",
    "AddTags",
    "ListTags",
    "DeleteTags",
    "CreateAlgorithm",
    "DescribeAlgorithm",
    "ListAlgorithms",
    "DeleteAlgorithm",
)


@cache
def service_model(name: str = "sagemaker") -> ServiceModel:
    import botocore.session

    return botocore.session.get_session().get_service_model(name)


@cache
def operation(name: str, service: str = "sagemaker") -> OperationModel:
    return service_model(service).operation_model(name)


@cache
def all_operation_names(service: str = "sagemaker") -> frozenset[str]:
    return frozenset(service_model(service).operation_names)
