"""Domain errors on the gRPC wire, for every videojob server and client.

``DomainErrorInterceptor`` is the one place a ``VideoJobError`` raised by a servicer becomes a
gRPC status: a google.rpc.Status (grpcio-status) whose details carry a google.rpc.BadRequest
field violation for an ``InvalidArgument`` and a google.rpc.ErrorInfo when the error has a
reason. The readers below give a client those details back.

``job_end_status`` is the google.rpc.Status a job that did not complete ends with (the error of
its long-running operation), in the same style: an ErrorInfo whose reason is its failure code.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, NoReturn

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

# Importing error_details_pb2 also puts google.rpc.BadRequest and ErrorInfo in the default
# descriptor pool, where server reflection finds them for grpcurl.
from videojob.errors import ERROR_DOMAIN, InvalidArgument, VideoJobError
from videojob.render.v1 import failure_pb2

_Context = grpc.aio.ServicerContext[Any, Any]


def rich_status(error: VideoJobError) -> status_pb2.Status:
    """The google.rpc.Status a client receives for ``error``."""
    details: list[Message] = []
    if isinstance(error, InvalidArgument):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=error.problem, reason=error.kind.value
        )
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    if error.error_reason is not None:
        details.append(
            error_details_pb2.ErrorInfo(
                reason=error.error_reason.value, domain=ERROR_DOMAIN, metadata=error.error_metadata
            )
        )
    status = status_pb2.Status(code=error.grpc_code.value[0], message=error.message)
    for detail in details:
        status.details.add().Pack(detail)
    return status


_FAILURE = failure_pb2.FailureCode

# The code of a failed job's google.rpc.Status, by its failure code (a FailureCode name; any
# other is UNKNOWN). The table in docs/grpc.md says the same.
JOB_FAILURE_STATUS_CODES: Mapping[str, grpc.StatusCode] = {
    _FAILURE.Name(_FAILURE.INVALID_INPUT): grpc.StatusCode.INVALID_ARGUMENT,
    _FAILURE.Name(_FAILURE.FFMPEG_ERROR): grpc.StatusCode.INTERNAL,
    _FAILURE.Name(_FAILURE.STALLED): grpc.StatusCode.DEADLINE_EXCEEDED,
    _FAILURE.Name(_FAILURE.VERIFICATION_FAILED): grpc.StatusCode.DATA_LOSS,
    _FAILURE.Name(_FAILURE.OUTPUT_UNWRITABLE): grpc.StatusCode.INTERNAL,
    _FAILURE.Name(_FAILURE.SHUTDOWN): grpc.StatusCode.UNAVAILABLE,
    _FAILURE.Name(_FAILURE.INTERNAL): grpc.StatusCode.INTERNAL,
    _FAILURE.Name(_FAILURE.STORAGE_UNAVAILABLE): grpc.StatusCode.UNAVAILABLE,
    _FAILURE.Name(_FAILURE.RENDER_LOST): grpc.StatusCode.UNAVAILABLE,
    _FAILURE.Name(_FAILURE.RENDER_UNAVAILABLE): grpc.StatusCode.UNAVAILABLE,
    _FAILURE.Name(_FAILURE.RENDER_STALLED): grpc.StatusCode.DEADLINE_EXCEEDED,
}


def job_end_status(
    *, cancelled: bool, failure_code: str, message: str, metadata: Mapping[str, str]
) -> status_pb2.Status:
    """The google.rpc.Status of a job that ended without completing: CANCELLED (code 1) when
    it was cancelled, else the code its ``failure_code`` maps to (JOB_FAILURE_STATUS_CODES);
    ``message`` is why (the job's error message); an ErrorInfo whose reason is the failure
    code, with ``metadata``, when the job has one."""
    if cancelled:
        code = grpc.StatusCode.CANCELLED
    else:
        code = JOB_FAILURE_STATUS_CODES.get(failure_code, grpc.StatusCode.UNKNOWN)
    status = status_pb2.Status(code=code.value[0], message=message)
    if failure_code:
        info = error_details_pb2.ErrorInfo(
            reason=failure_code, domain=ERROR_DOMAIN, metadata=dict(metadata)
        )
        status.details.add().Pack(info)
    return status


async def abort_with(context: _Context, error: VideoJobError) -> NoReturn:
    """Ends the call with ``error``'s rich status (``abort_with_status``, spelled with the
    typed ``abort``)."""
    status: grpc.Status = rpc_status.to_status(rich_status(error))
    await context.abort(status.code, status.details, status.trailing_metadata)


def _unary(behavior: Callable[[Any, _Context], Awaitable[Any]]) -> Callable[..., Any]:
    async def answer(request: Any, context: _Context) -> Any:
        try:
            return await behavior(request, context)
        except VideoJobError as error:
            await abort_with(context, error)

    return answer


def _streaming(behavior: Callable[[Any, _Context], AsyncIterator[Any]]) -> Callable[..., Any]:
    async def answer(request: Any, context: _Context) -> AsyncIterator[Any]:
        try:
            async for response in behavior(request, context):
                yield response
        except VideoJobError as error:
            await abort_with(context, error)

    return answer


def _wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):
        return _streaming(behavior)
    return _unary(behavior)


class DomainErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps every method (unary or streaming, also after it has yielded) so that a
    ``VideoJobError`` ends the call with its rich status. Anything else, cancellation and
    ``AbortError`` included, passes through untouched."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],  # type: ignore[type-arg]
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:  # type: ignore[type-arg]
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(_wrap(handler.unary_unary), **serializers)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(_wrap(handler.unary_stream), **serializers)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(_wrap(handler.stream_unary), **serializers)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _wrap(handler.stream_stream), **serializers
            )
        return handler


def status_of(error: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status a server attached to a failed call (None when it sent none)."""
    try:
        status: status_pb2.Status | None = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:  # details that contradict the call's own code or message
        return None
    return status


def field_violation(
    error: grpc.RpcError,
) -> error_details_pb2.BadRequest.FieldViolation | None:
    """The first field violation of a failed call's google.rpc.BadRequest, if it has one."""
    status = status_of(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            if bad_request.field_violations:
                return bad_request.field_violations[0]
    return None


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """A failed call's google.rpc.ErrorInfo from a videojob service, if it has one."""
    status = status_of(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == ERROR_DOMAIN:
                return info
    return None
