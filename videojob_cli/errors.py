"""What ends a command early: a ``CliError`` carries the exit status and the one line to print.
``rpc_failure`` words a failed export service call in the HTTP API's terms."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from videojob.errors import ERROR_DOMAIN
from videojob.job_json import http_message
from videojob_cli.exit_status import ExitStatus

_STATUS_OF_CODE: dict[grpc.StatusCode, ExitStatus] = {
    grpc.StatusCode.NOT_FOUND: ExitStatus.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE: ExitStatus.UNREACHABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: ExitStatus.UNREACHABLE,
    grpc.StatusCode.INVALID_ARGUMENT: ExitStatus.USAGE,
    grpc.StatusCode.FAILED_PRECONDITION: ExitStatus.REFUSED,
    grpc.StatusCode.ALREADY_EXISTS: ExitStatus.REFUSED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ExitStatus.REFUSED,
}


class CliError(Exception):
    def __init__(self, status: ExitStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status the server attached to a failed call (None when it sent none)."""
    try:
        status: status_pb2.Status | None = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:  # details that contradict the call's own code or message
        return None
    return status


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """A failed call's google.rpc.ErrorInfo from a videojob service, if it has one."""
    status = rich_status(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == ERROR_DOMAIN:
                return info
    return None


def _violated_field(error: grpc.RpcError) -> str:
    status = rich_status(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            if bad_request.field_violations:
                return str(bad_request.field_violations[0].field)
    return ""


def rpc_failure(error: grpc.RpcError, export_addr: str, job_id: str = "") -> CliError:
    code = error.code()
    exit_status = _STATUS_OF_CODE.get(code, ExitStatus.ERROR)
    details = error.details() or code.name.lower()
    if exit_status is ExitStatus.UNREACHABLE:
        return CliError(
            exit_status,
            f"the export service at {export_addr} cannot be reached "
            f"({code.name.lower()}: {details})",
        )
    if code is grpc.StatusCode.NOT_FOUND:
        return CliError(exit_status, f"no job has the id {job_id!r}" if job_id else details)
    field = _violated_field(error)
    return CliError(exit_status, http_message(field, details) if field else details)
