"""Every error the gateway answers is JSON ``{"code", "message"[, "field"]}``; gRPC status codes
become HTTP statuses here and only here (via videojob.errors.http_status_for)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import grpc
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.job_json import camel_case_message
from videojob.errors import InvalidArgument, http_status_for

logger = logging.getLogger(__name__)

_HTTP_CODE_NAMES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_argument",
    429: "resource_exhausted",
    500: "internal",
    503: "unavailable",
    504: "deadline_exceeded",
}


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, str] = {
        "code": code or _HTTP_CODE_NAMES.get(status, "error"),
        "message": message,
    }
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers=headers)


def invalid_argument_response(error: InvalidArgument, status: int = 422) -> JSONResponse:
    return error_response(status, error.message, code="invalid_argument", field=error.field)


def grpc_error_response(error: grpc.aio.AioRpcError) -> JSONResponse:
    """The HTTP answer for a failed export-service call."""
    code = error.code()
    status = http_status_for(code)
    details = error.details() or code.name.lower()
    field = None
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        details, field = camel_case_message(details)
    if code == grpc.StatusCode.UNAVAILABLE:
        details = "the export service is unavailable"
    if status >= 500:
        logger.warning("export service call failed: %s %s", code.name, error.details())
    return error_response(status, details, code=code.name.lower(), field=field)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error")
