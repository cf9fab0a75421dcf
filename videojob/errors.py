"""Domain errors, defined once, and their mapping to gRPC status codes and HTTP statuses."""

from __future__ import annotations

import grpc


class VideoJobError(Exception):
    """Base class of every error a client may be shown."""

    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(VideoJobError):
    """A request field is malformed or out of bounds; ``field`` names it (proto path)."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


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


def http_status_for(code: grpc.StatusCode) -> int:
    """The HTTP status a gateway answers for a gRPC status code (500 for anything unexpected)."""
    return HTTP_STATUS_FOR_GRPC_CODE.get(code, 500)
