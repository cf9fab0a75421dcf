"""google.longrunning.Operations (AIP-151) over the export service's jobs, served beside
ExportService on every replica: each job is the operation ``operations/{job id}``.

Every answer is the job as ExportService shows it (read from the store): ``metadata`` is the
VideoJob as it stands; once the job is terminal the operation is done, with ``response`` the
completed VideoJob or ``error`` the google.rpc.Status the job ended with
(videojob.grpc_errors.job_end_status). The messages and the servicer base are
googleapis-common-protos' (scripts/generate_protos.sh says why)."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import empty_pb2

from videojob.errors import InvalidArgument
from videojob.export.v1 import export_pb2
from videojob.grpc_errors import job_end_status
from videojob.limits import MAX_JOB_ID_LENGTH

if TYPE_CHECKING:
    from export_service.server import ExportServicer

OPERATIONS_SERVICE_NAME: str = operations_pb2.DESCRIPTOR.services_by_name["Operations"].full_name
COLLECTION = "operations"
NAME_PREFIX = f"{COLLECTION}/"
_DONE_FILTER = re.compile(r"\s*done\s*=\s*(true|false)\s*")
# WaitOperation answers this long before the caller's deadline, so the answer still arrives.
WAIT_DEADLINE_MARGIN_SECONDS = 0.2

_Context = grpc.aio.ServicerContext[Any, Any]


def operation_name(job_id: str) -> str:
    return f"{NAME_PREFIX}{job_id}"


def job_id_of(name: str) -> str:
    """The job id of an operation name; InvalidArgument naming ``name`` otherwise."""
    job_id = name.removeprefix(NAME_PREFIX)
    if job_id == name or not job_id or "/" in job_id:
        raise InvalidArgument("name", f'must be "{NAME_PREFIX}{{job id}}", not {name!r}')
    if len(job_id) > MAX_JOB_ID_LENGTH:
        raise InvalidArgument("name", f"the job id must be at most {MAX_JOB_ID_LENGTH} characters")
    return job_id


def job_to_operation(job: export_pb2.VideoJob) -> Any:
    """The job's operation: done once the job is terminal."""
    # googleapis-common-protos ships no type information: its messages are Any to mypy.
    operation = operations_pb2.Operation(name=operation_name(job.id))
    operation.metadata.Pack(job)
    if job.status == export_pb2.COMPLETED:
        operation.done = True
        operation.response.Pack(job)
    elif job.status in (export_pb2.FAILED, export_pb2.CANCELLED):
        operation.done = True
        operation.error.CopyFrom(job_end_status_of(job))
    return operation


def job_end_status_of(job: export_pb2.VideoJob) -> Any:
    cancelled = job.status == export_pb2.CANCELLED
    message = job.error.message or (
        f"job {job.id} was cancelled" if cancelled else f"job {job.id} failed"
    )
    metadata = {"job_id": job.id}
    if job.error.field:
        metadata["field"] = job.error.field
    if job.error.log_tail:
        metadata["log_tail"] = job.error.log_tail
    return job_end_status(
        cancelled=cancelled, failure_code=job.error.code, message=message, metadata=metadata
    )


def _done_filter(text: str) -> bool | None:
    """``done = true`` / ``done = false`` (AIP-160 spacing is free) or empty."""
    if not text.strip():
        return None
    match = _DONE_FILTER.fullmatch(text)
    if match is None:
        raise InvalidArgument(
            "filter", f'must be empty, "done = true" or "done = false", not {text!r}'
        )
    return match.group(1) == "true"


class OperationsServicer(operations_pb2_grpc.OperationsServicer):  # type: ignore[misc]
    """Each call is the ExportService call it stands for, on the same replica."""

    def __init__(self, exports: ExportServicer) -> None:
        self._exports = exports

    async def GetOperation(self, request: Any, context: _Context) -> Any:
        job = await self._exports.get_job(job_id_of(request.name))
        return job_to_operation(job)

    async def ListOperations(self, request: Any, context: _Context) -> Any:
        """Newest first, as ListExports; ``name`` is the collection (empty or "operations")."""
        if request.name not in ("", COLLECTION):
            raise InvalidArgument("name", f'must be empty or "{COLLECTION}", not {request.name!r}')
        done = _done_filter(request.filter)
        page = await self._exports.list_jobs(request.page_size, request.page_token, done=done)
        return operations_pb2.ListOperationsResponse(
            operations=[job_to_operation(job) for job in page.jobs],
            next_page_token=page.next_page_token,
        )

    async def CancelOperation(self, request: Any, context: _Context) -> Any:
        """As CancelExport: a cancelled job again is fine, a completed or failed one is
        FAILED_PRECONDITION."""
        await self._exports.cancel_job(job_id_of(request.name))
        return empty_pb2.Empty()

    async def DeleteOperation(self, request: Any, context: _Context) -> Any:
        """As DeleteExport: terminal jobs only, else FAILED_PRECONDITION."""
        await self._exports.delete_job(job_id_of(request.name))
        return empty_pb2.Empty()

    async def WaitOperation(self, request: Any, context: _Context) -> Any:
        """The operation once done, or as it stands when ``timeout`` (none: no limit) or the
        call's deadline (less WAIT_DEADLINE_MARGIN_SECONDS) comes first, or the server stops.
        Woken by the job's changes, as WatchExport is."""
        job_id = job_id_of(request.name)
        wait_seconds: float | None = None
        if request.HasField("timeout"):
            wait_seconds = request.timeout.ToTimedelta().total_seconds()
            if wait_seconds < 0:
                raise InvalidArgument("timeout", "must not be negative")
        remaining = context.time_remaining()
        if remaining is not None:
            until_deadline = max(0.0, remaining - WAIT_DEADLINE_MARGIN_SECONDS)
            wait_seconds = (
                until_deadline if wait_seconds is None else min(wait_seconds, until_deadline)
            )
        latest: export_pb2.VideoJob | None = None
        try:
            async with asyncio.timeout(wait_seconds) as window:
                async for job in self._exports.watch_job(job_id, 0, "operation"):
                    latest = job
        except TimeoutError:
            if not window.expired():
                raise
        if latest is None:
            latest = await self._exports.get_job(job_id)
        return job_to_operation(latest)


def add_operations_servicer(servicer: OperationsServicer, server: grpc.aio.Server) -> None:
    operations_pb2_grpc.add_OperationsServicer_to_server(servicer, server)
