"""Domain errors, defined once, and the one table of their gRPC status codes and HTTP statuses.

Servers raise these; ``videojob.grpc_errors`` turns them into rich gRPC statuses and the
gateway's exception handlers turn those (and its own) into HTTP answers, both through
``http_status_for``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

import grpc

# google.rpc.ErrorInfo.domain of every reason below.
ERROR_DOMAIN = "videojob"


class Reason(StrEnum):
    """google.rpc.ErrorInfo reasons: why a request was refused, for clients that word their own
    message (the gateway). Metadata keys are named on each."""

    JOB_FINISHED = "JOB_FINISHED"  # job_id, status (the proto JobStatus name)
    REQUEST_ID_REUSED = "REQUEST_ID_REUSED"  # request_id, job_id
    # UNAVAILABLE from a render service that is draining: it refuses new renders but still
    # answers for the ones it has; go to another render service (instance_id).
    DRAINING = "DRAINING"
    # FAILED_PRECONDITION: the job is queued or running, or its render's clean-up is pending
    # (job_id, status); it cannot be deleted yet.
    JOB_ACTIVE = "JOB_ACTIVE"
    # FAILED_PRECONDITION: the job this request id created was deleted (request_id, job_id);
    # it is never rendered again. HTTP 410 Gone.
    REQUEST_ID_DELETED = "REQUEST_ID_DELETED"
    # UNAVAILABLE: the object store did not answer in time or at all (endpoint).
    OBJECT_STORE_UNAVAILABLE = "OBJECT_STORE_UNAVAILABLE"
    # NOT_FOUND: a stored object a job needs is not in the store (location).
    OBJECT_MISSING = "OBJECT_MISSING"


class ViolationKind(StrEnum):
    """google.rpc.BadRequest.FieldViolation reasons."""

    MALFORMED = "MALFORMED"  # the value cannot be read as what it should be
    INVALID = "INVALID"  # it can, but it is outside what the API documents


class VideoJobError(Exception):
    """Base class of every error a client may be shown. ``reason`` and ``metadata`` (optional)
    travel as a google.rpc.ErrorInfo."""

    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        reason: Reason | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_reason = reason
        self.error_metadata = dict(metadata or {})

    @property
    def http_status(self) -> int:
        return http_status_for(self.grpc_code, reason=self.error_reason)


class InvalidArgument(VideoJobError):
    """A request value is outside what the API documents (out of range, not one of the allowed
    values, a file that is not there); ``field`` names it (proto path on gRPC)."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    kind = ViolationKind.INVALID

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    @property
    def http_status(self) -> int:
        return http_status_for(self.grpc_code, self.kind)


class MalformedArgument(InvalidArgument):
    """A request value cannot be read as what it should be: not JSON, not a number, not a token
    this service issued."""

    kind = ViolationKind.MALFORMED


class NotFound(VideoJobError):
    grpc_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(VideoJobError):
    grpc_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(VideoJobError):
    """The request is legal but not in the object's current state (e.g. cancel a completed job)."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(VideoJobError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(VideoJobError):
    grpc_code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(VideoJobError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class ObjectStoreUnavailable(Unavailable):
    """The object store could not be reached, or did not answer within its timeouts."""

    def __init__(self, message: str, *, endpoint: str) -> None:
        super().__init__(
            message, reason=Reason.OBJECT_STORE_UNAVAILABLE, metadata={"endpoint": endpoint}
        )


class StoredObjectMissing(NotFound):
    """An object (or a bucket) is not in the store; ``location`` is its ``s3://`` address."""

    def __init__(self, location: str) -> None:
        super().__init__(
            f"{location} is not in the object store",
            reason=Reason.OBJECT_MISSING,
            metadata={"location": location},
        )
        self.location = location


class ObjectStoreFailed(VideoJobError):
    """The store answered an operation with an error that is neither a missing object nor
    refused settings (its S3 error code is in the message)."""


class ObjectStoreMisconfigured(VideoJobError):
    """The store refuses this process's settings (credentials, bucket): an operator's mistake,
    not a client's. ``setting`` names the flag or variable to fix; the message is one line."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


# Which error is which HTTP status (docs/api.md, "Errors"): malformed syntax 400, a value outside
# its documented range 422, unknown 404, state conflict 409, busy 429, upstream unavailable 503.
HTTP_STATUS_FOR_GRPC_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.OUT_OF_RANGE: 422,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
}
MALFORMED_HTTP_STATUS = 400
# Refusals whose ErrorInfo reason says more than their status code.
HTTP_STATUS_FOR_REASON: dict[str, int] = {Reason.REQUEST_ID_DELETED: 410}


def http_status_for(
    code: grpc.StatusCode, violation: ViolationKind | None = None, reason: str | None = None
) -> int:
    """The HTTP status for a gRPC status code (500 for anything unexpected); an
    INVALID_ARGUMENT whose value is malformed is 400; a refusal whose ErrorInfo ``reason`` has
    its own status (HTTP_STATUS_FOR_REASON) gets that one."""
    if code == grpc.StatusCode.INVALID_ARGUMENT and violation == ViolationKind.MALFORMED:
        return MALFORMED_HTTP_STATUS
    if reason is not None and reason in HTTP_STATUS_FOR_REASON:
        return HTTP_STATUS_FOR_REASON[reason]
    return HTTP_STATUS_FOR_GRPC_CODE.get(code, 500)


def error_code_name(code: grpc.StatusCode) -> str:
    """The ``code`` of an HTTP error body: the gRPC status name in lower case."""
    name: str = code.name
    return name.lower()
