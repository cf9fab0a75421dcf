"""google.longrunning.Operations (AIP-151) on the export service, driven by clients no one here
wrote: google-api-core's OperationsClient and operation futures (synchronous: they run in a
thread beside the in-process export service), and googleapis-common-protos' OperationsStub for
WaitOperation. Real render service process, real ffmpeg, real SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.api_core import exceptions, operation, operations_v1
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from export_service.operations import OPERATIONS_SERVICE_NAME
from export_service.server import ExportServer
from tests.export.conftest import (
    InProcessRender,
    StartExport,
    assert_completed_with_valid_file,
    grpc_code,
    pattern_spec,
    slow_spec,
    wait_for,
)
from tests.export.test_lifecycle_rpc import cut_clip, transcode
from tests.support.render_dirs import RenderDirs
from videojob.endpoints import IDEMPOTENT_REPLAYED_METADATA
from videojob.errors import ERROR_DOMAIN, Reason
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_errors import JOB_FAILURE_STATUS_CODES, error_info, field_violation
from videojob.grpc_setup import create_channel
from videojob.render.v1 import failure_pb2, spec_pb2

# Nothing listens here: created jobs stay queued.
NO_RENDER_SERVICE = "127.0.0.1:1"
# Long enough that no watcher re-reads the store on its own during a test: a WaitOperation that
# returns a finished job was woken by the job's change.
NO_OWN_POLL = 3600.0


class Clients:
    """The export service's own stub and googleapis-common-protos' OperationsStub (asyncio),
    and google-api-core's OperationsClient on a synchronous channel (call it in a thread)."""

    def __init__(self, port: int, aio_channel: grpc.aio.Channel, channel: grpc.Channel) -> None:
        self.port = port
        self.exports = export_pb2_grpc.ExportServiceStub(aio_channel)
        self.operations: Any = operations_pb2_grpc.OperationsStub(aio_channel)
        self.api_core = operations_v1.OperationsClient(channel)

    async def start(self, spec: spec_pb2.RenderSpec, request_id: str = "") -> Any:
        request = export_pb2.CreateExportRequest(request_id=request_id, spec=spec)
        return await self.exports.StartExport(request, timeout=30)

    def future(self, started: Any) -> operation.Operation:
        future: operation.Operation = operation.from_gapic(
            started, self.api_core, export_pb2.VideoJob, metadata_type=export_pb2.VideoJob
        )
        return future


@pytest.fixture
def sync_channel(export_server: ExportServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{export_server.port}") as channel:
        yield channel


async def clients_of(server: ExportServer, channel: grpc.Channel) -> AsyncIterator[Clients]:
    async with create_channel(f"127.0.0.1:{server.port}") as aio_channel:
        yield Clients(server.port, aio_channel, channel)


@pytest.fixture
async def export_server(start_export: StartExport, render_service: InProcessRender) -> ExportServer:
    return await start_export(render_service.address, watch_poll_interval=NO_OWN_POLL)


@pytest.fixture
async def clients(
    export_server: ExportServer, sync_channel: grpc.Channel
) -> AsyncIterator[Clients]:
    async for made in clients_of(export_server, sync_channel):
        yield made


@pytest.fixture
async def idle_clients(start_export: StartExport) -> AsyncIterator[Clients]:
    """Against an export service with no render service: its jobs stay queued."""
    server = await start_export(NO_RENDER_SERVICE, watch_poll_interval=NO_OWN_POLL)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        async for made in clients_of(server, channel):
            yield made


def unpacked_job(packed: Any) -> export_pb2.VideoJob:
    job = export_pb2.VideoJob()
    assert packed.Unpack(job), packed
    return job


def failure_info(status: Any) -> error_details_pb2.ErrorInfo:
    [detail] = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info), detail
    return info


async def test_api_core_follows_a_started_export_to_its_finished_job(clients: Clients) -> None:
    call = clients.exports.StartExport(
        export_pb2.CreateExportRequest(request_id="lro-1", spec=pattern_spec(2.0)), timeout=30
    )
    started = await call
    job_id = unpacked_job(started.metadata).id
    assert started.name == f"operations/{job_id}" and not started.done
    assert (IDEMPOTENT_REPLAYED_METADATA, "true") not in tuple(await call.trailing_metadata())

    future = clients.future(started)
    finished: export_pb2.VideoJob = await asyncio.to_thread(future.result, timeout=90)

    assert finished.id == job_id
    assert_completed_with_valid_file(finished, 2.0)
    assert future.metadata.status == export_pb2.COMPLETED
    assert future.metadata.version == finished.version
    # The same request id again: the same operation, done, and no second render.
    again = clients.exports.StartExport(
        export_pb2.CreateExportRequest(request_id="lro-1", spec=pattern_spec(2.0)), timeout=30
    )
    replayed = await again
    assert replayed.name == started.name and replayed.done
    assert unpacked_job(replayed.response) == finished
    assert (IDEMPOTENT_REPLAYED_METADATA, "true") in tuple(await again.trailing_metadata())


async def test_api_core_sees_progress_in_the_metadata_and_cancels(
    clients: Clients, render_dirs: RenderDirs
) -> None:
    future = clients.future(await clients.start(slow_spec()))

    async def rendering() -> bool:
        if await asyncio.to_thread(future.done):
            return True  # fails below: it must still run
        job = future.metadata
        return job is not None and job.status == export_pb2.RUNNING and job.progress > 2

    await wait_for(rendering, within=60)
    assert not await asyncio.to_thread(future.done)
    assert await asyncio.to_thread(future.cancel)
    assert await asyncio.to_thread(future.cancelled)

    error = await asyncio.to_thread(future.exception, timeout=30)
    assert isinstance(error, exceptions.Cancelled), error
    assert error.grpc_status_code == grpc.StatusCode.CANCELLED
    assert future.metadata.status == export_pb2.CANCELLED
    job_id = future.metadata.id
    got = await clients.exports.GetExport(export_pb2.GetExportRequest(id=job_id), timeout=30)
    assert got.status == export_pb2.CANCELLED
    # A finished operation is not cancelled again: api-core says so without asking.
    assert not await asyncio.to_thread(future.cancel)

    async def no_file_left() -> bool:
        return not any(job_id in path.name for path in render_dirs.output.iterdir())

    await wait_for(no_file_left)


@pytest.mark.ffmpeg
async def test_a_failed_job_ends_its_operation_with_ffmpegs_reason(
    clients: Clients, render_dirs: RenderDirs
) -> None:
    await asyncio.to_thread(cut_clip, render_dirs.media)
    future = clients.future(await clients.start(transcode("cut.mp4")))

    error = await asyncio.to_thread(future.exception, timeout=90)

    assert isinstance(error, exceptions.InternalServerError), error
    assert error.grpc_status_code == grpc.StatusCode.INTERNAL
    assert "Invalid data found" in error.message
    [status] = error.errors
    assert status.code == code_pb2.INTERNAL
    info = failure_info(status)
    assert (info.reason, info.domain) == ("FFMPEG_ERROR", ERROR_DOMAIN)
    job = future.metadata
    assert job.status == export_pb2.FAILED
    assert info.metadata["job_id"] == job.id
    assert info.metadata["log_tail"] == job.error.log_tail != ""


async def test_wait_operation_returns_when_the_job_ends(clients: Clients) -> None:
    started = await clients.start(pattern_spec(2.0))
    request = operations_pb2.WaitOperationRequest(
        name=started.name, timeout=duration_pb2.Duration(seconds=600)
    )

    # The watchers of this service never re-read on their own (NO_OWN_POLL): only the job's
    # changes can wake this wait before its timeout.
    waited = await clients.operations.WaitOperation(request, timeout=120)

    assert waited.done and waited.name == started.name
    finished = unpacked_job(waited.response)
    assert_completed_with_valid_file(finished, 2.0)
    assert unpacked_job(waited.metadata) == finished
    # Done already: answered at once, the same.
    assert await clients.operations.WaitOperation(request, timeout=30) == waited


async def test_wait_operation_returns_the_job_as_it_stands_at_its_timeout(
    idle_clients: Clients,
) -> None:
    started = await idle_clients.start(pattern_spec(2.0))
    timeout = duration_pb2.Duration(nanos=300_000_000)
    request = operations_pb2.WaitOperationRequest(name=started.name, timeout=timeout)

    waited = await idle_clients.operations.WaitOperation(request, timeout=30)

    assert not waited.done and not waited.HasField("result")
    assert unpacked_job(waited.metadata).status == export_pb2.QUEUED
    # No timeout: the call's own deadline bounds the wait, and the answer still comes.
    endless = operations_pb2.WaitOperationRequest(name=started.name)
    waited = await idle_clients.operations.WaitOperation(endless, timeout=1.5)
    assert not waited.done and unpacked_job(waited.metadata).status == export_pb2.QUEUED


async def test_wait_operation_refuses_a_negative_timeout(idle_clients: Clients) -> None:
    started = await idle_clients.start(pattern_spec(2.0))
    request = operations_pb2.WaitOperationRequest(
        name=started.name, timeout=duration_pb2.Duration(seconds=-1)
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await idle_clients.operations.WaitOperation(request, timeout=30)
    assert grpc_code(refused) == grpc.StatusCode.INVALID_ARGUMENT
    violation = field_violation(refused.value)
    assert violation is not None and violation.field == "timeout"


async def test_list_operations_pages_and_filters(idle_clients: Clients) -> None:
    names = [(await idle_clients.start(pattern_spec(2.0))).name for _ in range(3)]
    newest_first = names[::-1]
    cancelled = names[1]
    await asyncio.to_thread(idle_clients.api_core.cancel_operation, cancelled)
    list_operations = idle_clients.operations.ListOperations

    first = await list_operations(operations_pb2.ListOperationsRequest(page_size=2), timeout=30)
    assert [op.name for op in first.operations] == newest_first[:2]
    assert first.next_page_token
    rest = await list_operations(
        operations_pb2.ListOperationsRequest(
            name="operations", page_size=2, page_token=first.next_page_token
        ),
        timeout=30,
    )
    assert [op.name for op in rest.operations] == newest_first[2:]
    assert rest.next_page_token == ""

    done = await list_operations(
        operations_pb2.ListOperationsRequest(filter="done = true"), timeout=30
    )
    [ended] = done.operations
    assert (ended.name, ended.done, ended.error.code) == (cancelled, True, code_pb2.CANCELLED)
    active = await list_operations(
        operations_pb2.ListOperationsRequest(filter="done=false"), timeout=30
    )
    assert [op.name for op in active.operations] == [n for n in newest_first if n != cancelled]
    assert not any(op.done for op in active.operations)
    # google-api-core's pager reads the same list.
    every = await asyncio.to_thread(
        lambda: [op.name for op in idle_clients.api_core.list_operations("operations", "")]
    )
    assert every == newest_first


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"filter": "status = RUNNING"}, "filter"),
        ({"filter": "done = maybe"}, "filter"),
        ({"name": "jobs"}, "name"),
        ({"page_size": -1}, "page_size"),
        ({"page_token": "bm9wZQ"}, "page_token"),
    ],
)
async def test_list_operations_refuses_what_it_cannot_read_naming_the_field(
    idle_clients: Clients, request_fields: dict[str, Any], field: str
) -> None:
    request = operations_pb2.ListOperationsRequest(**request_fields)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await idle_clients.operations.ListOperations(request, timeout=30)
    assert grpc_code(refused) == grpc.StatusCode.INVALID_ARGUMENT
    violation = field_violation(refused.value)
    assert violation is not None and violation.field == field


async def test_delete_operation_refuses_an_active_job_then_deletes_it_once_cancelled(
    clients: Clients,
) -> None:
    name = (await clients.start(slow_spec())).name
    client = clients.api_core
    with pytest.raises(exceptions.FailedPrecondition) as refused:
        await asyncio.to_thread(client.delete_operation, name)
    info = error_info(refused.value.response)
    assert info is not None and info.reason == Reason.JOB_ACTIVE

    await asyncio.to_thread(client.cancel_operation, name)
    await asyncio.to_thread(client.cancel_operation, name)  # cancelled already: fine

    async def deleted() -> bool:
        """Once its render is stopped and cleaned up, the cancelled job can be deleted."""
        try:
            await asyncio.to_thread(client.delete_operation, name)
        except exceptions.FailedPrecondition:
            return False
        return True

    await wait_for(deleted)
    with pytest.raises(exceptions.NotFound):
        await asyncio.to_thread(client.get_operation, name)


@pytest.mark.parametrize("name", ["", "operations/", "jobs/abc", "operations/a/b"])
async def test_a_name_that_is_no_operation_is_invalid(idle_clients: Clients, name: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await idle_clients.operations.GetOperation(
            operations_pb2.GetOperationRequest(name=name), timeout=30
        )
    assert grpc_code(refused) == grpc.StatusCode.INVALID_ARGUMENT
    violation = field_violation(refused.value)
    assert violation is not None and violation.field == "name"


async def test_an_unknown_operation_is_not_found(idle_clients: Clients) -> None:
    for call in (
        idle_clients.operations.GetOperation(
            operations_pb2.GetOperationRequest(name="operations/nope"), timeout=30
        ),
        idle_clients.operations.WaitOperation(
            operations_pb2.WaitOperationRequest(name="operations/nope"), timeout=30
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await call
        assert grpc_code(missing) == grpc.StatusCode.NOT_FOUND


async def test_the_operations_service_has_its_health(idle_clients: Clients) -> None:
    async with create_channel(f"127.0.0.1:{idle_clients.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(
            health_pb2.HealthCheckRequest(service=OPERATIONS_SERVICE_NAME), timeout=30
        )
    assert OPERATIONS_SERVICE_NAME == "google.longrunning.Operations"
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_every_failure_code_has_its_status_code() -> None:
    names = set(failure_pb2.FailureCode.keys()) - {"FAILURE_CODE_UNSPECIFIED"}
    assert set(JOB_FAILURE_STATUS_CODES) == names
