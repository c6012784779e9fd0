"""The gateway's one exception tree. Each error carries its HTTP status and SageMaker code.

    GatewayError                      500 InternalFailure
    ├── ValidationError               400 ValidationError
    │   ├── ModelNotFound             400 on SageMaker routes, 404 on KServe v2 routes
    │   ├── PayloadTooLarge           413
    │   ├── TargetTooLong             414 (request line over the front's limit)
    │   └── HeadersTooLarge           431 (header section over the front's limits)
    ├── AuthError                     403 (--auth-file: the caller is not let in)
    │   ├── MissingAuthenticationToken  403 MissingAuthenticationTokenException (no credentials)
    │   ├── UnrecognizedClient        403 UnrecognizedClientException (unknown key or token)
    │   ├── InvalidSignature          403 InvalidSignatureException (bad or expired signature)
    │   └── AccessDenied              403 AccessDeniedException (model outside its patterns)
    ├── UnknownOperation              404 UnknownOperationException (no such route here)
    ├── NotLoaded                     404 ModelNotFound (management API: not loaded)
    ├── AlreadyLoaded                 409 ModelAlreadyLoaded (management API)
    ├── ModelError                    424 ModelError (the model itself failed)
    ├── ModelNotReady                 429 ModelNotReadyException (load still running)
    ├── ServiceUnavailable            503 ServiceUnavailable, Retry-After 1 (Triton down or not
    │   │                                 ready, the store failing: each passes)
    │   └── TritonUnavailable         503, Retry-After from the restart (Triton restarting or hung)
    └── InsufficientMemory            507 InsufficientMemory

Adapters (``triton/errors.py``, ``store/s3.py``) translate third-party errors into these;
``front/replies.py`` is the one place that renders them.
"""

from __future__ import annotations

from typing import Any, Self


class GatewayError(Exception):
    status = 500
    error_type = "InternalFailure"
    model = ""
    """The name the message gives the model (set where one error may answer clients who
    named the model differently: a shared load, a remembered failure)."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra
        """Additional members of the SageMaker error shape (OriginalStatusCode, ...)."""

    def copy(self) -> Self:
        """A new exception like this one: a remembered error is raised for many requests,
        and raising one object again and again would grow its traceback."""
        clone = self.__class__.__new__(self.__class__)
        clone.__dict__.update(self.__dict__)
        clone.args = self.args
        return clone

    def for_model(self, name: str) -> Self:
        """A copy that names the model ``name`` wherever this one named it ``model``."""
        clone = self.copy()
        if self.model and name != self.model:
            old, new = f"'{self.model}'", f"'{name}'"
            clone.message = self.message.replace(old, new)
            clone.args = (clone.message,)
            clone.extra = {
                k: v.replace(old, new) if isinstance(v, str) else v for k, v in self.extra.items()
            }
            clone.model = name
        return clone


class ValidationError(GatewayError):
    status = 400
    error_type = "ValidationError"


class ModelNotFound(ValidationError):
    """The target model is not in the model store."""

    kserve_status = 404


class PayloadTooLarge(ValidationError):
    status = 413


class TargetTooLong(ValidationError):
    status = 414


class HeadersTooLarge(ValidationError):
    status = 431


class AuthError(GatewayError):
    """403 with botocore's codes, so clients raise the exception AWS itself would."""

    status = 403
    error_type = "AccessDeniedException"


class MissingAuthenticationToken(AuthError):
    error_type = "MissingAuthenticationTokenException"


class UnrecognizedClient(AuthError):
    error_type = "UnrecognizedClientException"


class InvalidSignature(AuthError):
    error_type = "InvalidSignatureException"


class AccessDenied(AuthError):
    error_type = "AccessDeniedException"


class UnknownOperation(GatewayError):
    status = 404
    error_type = "UnknownOperationException"


class NotLoaded(GatewayError):
    status = 404
    error_type = "ModelNotFound"


class AlreadyLoaded(GatewayError):
    status = 409
    error_type = "ModelAlreadyLoaded"


class ModelError(GatewayError):
    status = 424
    error_type = "ModelError"

    def __init__(self, message: str, original_status: int, original_message: str) -> None:
        super().__init__(
            message, OriginalStatusCode=original_status, OriginalMessage=original_message
        )


class ModelNotReady(GatewayError):
    status = 429
    error_type = "ModelNotReadyException"


class ServiceUnavailable(GatewayError):
    status = 503
    error_type = "ServiceUnavailable"
    retry_after = 1
    """Seconds in the Retry-After header: a 503 here is always a passing condition (the
    first request to find Triton gone meets a closed connection before the watch does)."""


class TritonUnavailable(ServiceUnavailable):
    """Triton is down, restarting or hung: answered at once, with a Retry-After."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InsufficientMemory(GatewayError):
    status = 507
    error_type = "InsufficientMemory"
