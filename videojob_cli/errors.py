"""What ends a command early: a ``CliError`` carries the exit status and the one line to print.
``rpc_failure`` words a failed export service call in the HTTP API's terms."""

from __future__ import annotations

import grpc

from videojob.grpc_errors import field_violation
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
    violation = field_violation(error)
    if violation is None or not violation.field:
        return CliError(exit_status, details)
    return CliError(exit_status, http_message(violation.field, details))
