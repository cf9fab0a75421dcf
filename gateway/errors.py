"""Every error the gateway answers is JSON ``{"code", "message"[, "field"]}``, made here and only
here: ``EXCEPTION_HANDLERS`` (registered once by gateway.app) answer the domain errors the
routes raise, the export service's failed calls and Starlette's HTTP exceptions. Statuses come
from the one table in videojob.errors (docs/api.md, "Errors"); ``code`` is the gRPC status name in
lower case, or for the few answers no gRPC status describes, the HTTP reason in snake case.
Fields are named as the HTTP API names them, read from the google.rpc.BadRequest details of an
export-service error, never from its message text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import grpc
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from videojob.errors import (
    InvalidArgument,
    Reason,
    VideoJobError,
    ViolationKind,
    error_code_name,
    http_status_for,
)
from videojob.grpc_errors import error_info, field_violation
from videojob.job_json import api_status_name, http_field
from videojob.limits import API_TERMINAL_JOB_STATUSES, RETRY_AFTER_SECONDS

logger = logging.getLogger(__name__)

_CODE_FOR_HTTP_STATUS = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    409: "failed_precondition",
    422: "invalid_argument",
    429: "resource_exhausted",
    500: "internal",
    501: "unimplemented",
    503: "unavailable",
    504: "deadline_exceeded",
    # HTTP-only situations.
    405: "method_not_allowed",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
}
# Busy (429) and away (503): a client may try again, after this many seconds.
RETRY_AFTER_STATUSES = frozenset({429, 503})
_UPSTREAM_MESSAGES = {
    grpc.StatusCode.UNAVAILABLE: "the export service is unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the export service did not answer in time",
}


def _utf8(text: str) -> str:
    """``text`` as UTF-8 can carry it: a lone surrogate a client sent (JSON's ``\\ud800``, in
    a field's name) is spelled as that escape rather than failing the answer."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, str] = {
        "code": code or _CODE_FOR_HTTP_STATUS.get(status, "error"),
        "message": _utf8(message),
    }
    if field is not None:
        body["field"] = _utf8(field)
    if status in RETRY_AFTER_STATUSES and not any(
        name.lower() == "retry-after" for name in headers or {}
    ):
        headers = {**(headers or {}), "Retry-After": str(RETRY_AFTER_SECONDS)}
    return JSONResponse(body, status_code=status, headers=headers)


async def domain_error_handler(request: Request, exc: Exception) -> Response:
    """A domain error the gateway raised itself (its fields already have their HTTP names)."""
    assert isinstance(exc, VideoJobError)
    field = exc.field if isinstance(exc, InvalidArgument) else None
    return error_response(
        exc.http_status, exc.message, code=error_code_name(exc.grpc_code), field=field
    )


def _reworded(reason: str, metadata: Mapping[str, str]) -> tuple[str, str | None] | None:
    """The API's message (and field) for an export-service refusal with a known reason."""
    if reason == Reason.JOB_FINISHED:
        status = api_status_name(metadata.get("status", ""))
        return f"the job is {status}; only queued or running jobs can be cancelled", None
    if reason == Reason.REQUEST_ID_DELETED:
        job_id = metadata.get("job_id", "")
        message = f"this Idempotency-Key created job {job_id}, which was deleted"
        return message, "Idempotency-Key"
    if reason == Reason.JOB_ACTIVE:
        status = api_status_name(metadata.get("status", ""))
        if status in API_TERMINAL_JOB_STATUSES:
            return f"the job is {status} but its render is still being cleaned up; retry", None
        return f"the job is {status}; only finished jobs can be deleted (cancel it first)", None
    if reason == Reason.OBJECT_STORE_UNAVAILABLE:
        endpoint = metadata.get("endpoint") or "its endpoint"
        return f"the object store holding the inputs ({endpoint}) does not answer; retry", None
    if reason == Reason.REQUEST_ID_REUSED:
        job_id = metadata.get("job_id", "")
        message = f"this Idempotency-Key was already used for job {job_id} with a different spec"
        return message, "Idempotency-Key"
    return None


def grpc_error_response(exc: grpc.aio.AioRpcError) -> JSONResponse:
    """A failed export-service call, in the API's words."""
    code = exc.code()
    violation = field_violation(exc)
    info = error_info(exc)
    kind = None
    message = exc.details() or code.name.lower()
    field = None
    if violation is not None:
        field = http_field(violation.field)
        message = f"{field}: {violation.description}"
        malformed = violation.reason == ViolationKind.MALFORMED
        kind = ViolationKind.MALFORMED if malformed else ViolationKind.INVALID
    elif info is not None and (worded := _reworded(info.reason, info.metadata)) is not None:
        message, field = worded
    elif code in _UPSTREAM_MESSAGES:
        message = _UPSTREAM_MESSAGES[code]
    status = http_status_for(code, kind, info.reason if info is not None else None)
    if status >= 500:
        logger.warning("export service call failed: %s %s", code.name, exc.details())
    return error_response(status, message, code=error_code_name(code), field=field)


async def export_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, grpc.aio.AioRpcError)
    return grpc_error_response(exc)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error")


ExceptionHandler = Callable[[Request, Exception], Coroutine[Any, Any, Response]]
EXCEPTION_HANDLERS: dict[Any, ExceptionHandler] = {
    VideoJobError: domain_error_handler,
    grpc.aio.AioRpcError: export_error_handler,
    HTTPException: http_exception_handler,
    Exception: unexpected_error_handler,
}
