"""Errors a client can see, shaped as AWS JSON 1.1 errors (``__type`` + ``message``)."""

from __future__ import annotations


class ServiceError(Exception):
    """An error answered to the client. ``code`` is the AWS error code (``__type``)."""

    code = "InternalFailure"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status

    def body(self) -> dict[str, str]:
        return {"__type": self.code, "message": self.message}


class ValidationError(ServiceError):
    code = "ValidationException"


class ResourceNotFound(ServiceError):
    code = "ResourceNotFound"


class ResourceInUse(ServiceError):
    code = "ResourceInUse"


class ResourceLimitExceeded(ServiceError):
    code = "ResourceLimitExceeded"


class SerializationError(ServiceError):
    code = "SerializationException"


class UnknownOperation(ServiceError):
    code = "UnknownOperationException"


class AccessDenied(ServiceError):
    code = "AccessDeniedException"


class InvalidSignature(ServiceError):
    code = "InvalidSignatureException"
    status = 403


class UnrecognizedClient(ServiceError):
    code = "UnrecognizedClientException"
    status = 403


class MissingAuthentication(ServiceError):
    code = "MissingAuthenticationTokenException"
    status = 403


class PayloadTooLarge(ServiceError):
    code = "RequestEntityTooLargeException"
    status = 413


class InternalFailure(ServiceError):
    code = "InternalFailure"
    status = 500


def internal_failure() -> InternalFailure:
    """What a client sees of a bug: a 500 with no details (the server log has them)."""
    return InternalFailure("We encountered an internal error. Please try again.")


NOT_FOUND_MESSAGE = "Requested resource not found."


def job_not_found() -> ValidationError:
    """What AWS answers for a training job that does not exist."""
    return ValidationError(NOT_FOUND_MESSAGE)
