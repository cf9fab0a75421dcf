"""The export service's API against a real render service and real ffmpeg."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from export_service.server import ExportServer
from render_service.instance import INSTANCES_DIR
from tests.export.conftest import (
    InProcessRender,
    RenderProcesses,
    StartExport,
    assert_completed_with_valid_file,
    assert_monotonic,
    pattern_spec,
    slow_spec,
    watch,
)
from tests.support.ports import free_port
from videojob import metrics
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_errors import field_violation
from videojob.grpc_setup import create_channel
from videojob.limits import MAX_REQUEST_ID_LENGTH
from videojob.render.v1 import render_pb2, render_pb2_grpc, spec_pb2

if TYPE_CHECKING:
    from videojob.export.v1.export_pb2_grpc import ExportServiceAsyncStub as Stub


def output_entries(directory: Path) -> list[Path]:
    """The output directory's files, but the render services' own state (their instance ids)."""
    return [entry for entry in directory.iterdir() if entry.name != INSTANCES_DIR]


async def create(stub: Stub, request_id: str = "", duration: float = 2.0) -> export_pb2.VideoJob:
    request = export_pb2.CreateExportRequest(request_id=request_id, spec=pattern_spec(duration))
    return await stub.CreateExport(request)


async def test_full_lifecycle(stub: Stub, export_server: ExportServer) -> None:
    created = await create(stub, "lifecycle-1")
    assert (created.status, created.version, created.attempt) == (export_pb2.QUEUED, 1, 1)
    assert created.spec.output.container == "mp4"  # stored normalized
    updates = await watch(stub, created.id)
    assert updates[0].version >= 1
    assert_monotonic(updates)
    final = updates[-1]
    assert_completed_with_valid_file(final, 2.0)
    assert final.finished_at.seconds > 0 and final.started_at.seconds > 0
    assert await stub.GetExport(export_pb2.GetExportRequest(id=created.id)) == final
    listed = await stub.ListExports(export_pb2.ListExportsRequest())
    assert [job.id for job in listed.jobs] == [created.id]
    assert listed.jobs[0] == final


def placement_writes() -> float:
    return (
        metrics.EXPORT.get_sample_value(
            "videojob_store_write_seconds_count", {"change": "place_attempt"}
        )
        or 0.0
    )


async def test_a_created_job_renders_where_its_create_placed_it(
    stub: Stub, export_server: ExportServer
) -> None:
    """The create records attempt 1's placement in its own insert: the tracker calls Render
    there, and no placement write of its own comes before ffmpeg starts."""
    writes_before = placement_writes()
    created = await create(stub, "placed-by-create", duration=1.0)
    assert [a.attempt for a in created.attempts] == [1]
    assert created.attempts[0].render_id and created.attempts[0].render_service.address
    final = (await watch(stub, created.id))[-1]
    assert_completed_with_valid_file(final, 1.0)
    placed, done = created.attempts[0], final.attempts[0]
    assert (done.attempt, done.render_id, done.render_service) == (
        placed.attempt,
        placed.render_id,
        placed.render_service,
    )
    assert placement_writes() == writes_before


async def test_create_is_idempotent_on_request_id(
    stub: Stub, export_server: ExportServer, render_service: InProcessRender, tmp_path: Path
) -> None:
    first = await create(stub, "same-request")
    again = await create(stub, "same-request")
    assert again.id == first.id
    final = (await watch(stub, first.id))[-1]
    assert_completed_with_valid_file(final, 2.0)
    assert (await create(stub, "same-request")).id == first.id
    assert final.attempt == 1
    assert output_entries(tmp_path / "out") == [Path(final.output_path)]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await create(stub, "same-request", duration=3.0)
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "request_id" in (error.value.details() or "")


async def test_empty_request_id_creates_distinct_jobs(
    stub: Stub, export_server: ExportServer
) -> None:
    a, b = await create(stub), await create(stub)
    assert a.id != b.id and a.request_id != b.request_id
    for job in (a, b):
        assert (await watch(stub, job.id))[-1].status == export_pb2.COMPLETED


async def test_invalid_requests(stub: Stub, export_server: ExportServer) -> None:
    bad_spec = pattern_spec()
    bad_spec.source.test_pattern.width = 161
    cases = [
        (export_pb2.CreateExportRequest(spec=bad_spec), "spec.source.test_pattern.width"),
        (export_pb2.CreateExportRequest(), "spec"),
        (
            export_pb2.CreateExportRequest(
                request_id="x" * (MAX_REQUEST_ID_LENGTH + 1), spec=pattern_spec()
            ),
            "request_id",
        ),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.CreateExport(request)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (error.value.details() or "").startswith(f"{field}:")
        violation = field_violation(error.value)
        assert violation is not None and violation.field == field
    listed = await stub.ListExports(export_pb2.ListExportsRequest())
    assert list(listed.jobs) == []


async def test_unknown_ids_are_not_found(stub: Stub, export_server: ExportServer) -> None:
    for call in (
        stub.GetExport(export_pb2.GetExportRequest(id="0" * 32)),
        stub.CancelExport(export_pb2.CancelExportRequest(id="0" * 32)),
        watch(stub, "0" * 32),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.GetExport(export_pb2.GetExportRequest(id=""))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_cancel_of_a_completed_job_is_a_failed_precondition(
    stub: Stub, export_server: ExportServer
) -> None:
    job = await create(stub)
    final = (await watch(stub, job.id))[-1]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.CancelExport(export_pb2.CancelExportRequest(id=job.id))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "COMPLETED" in (error.value.details() or "")
    assert await stub.GetExport(export_pb2.GetExportRequest(id=job.id)) == final


async def test_watch_resumes_after_a_version(stub: Stub, export_server: ExportServer) -> None:
    job = await create(stub)
    full = await watch(stub, job.id)
    final = full[-1]
    middle = full[len(full) // 2].version if len(full) > 1 else 1
    resumed = await watch(stub, job.id, after_version=middle)
    assert resumed == [final] or all(update.version > middle for update in resumed)
    assert resumed[-1] == final
    assert await watch(stub, job.id, after_version=final.version) == []
    assert await watch(stub, job.id, after_version=0) == [final]


async def test_watch_current_state_first_then_each_change(
    stub: Stub, export_server: ExportServer
) -> None:
    job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=slow_spec()))
    stream = stub.WatchExport(export_pb2.WatchExportRequest(id=job.id))
    first = await stream.read()
    assert isinstance(first, export_pb2.VideoJob) and first.id == job.id
    seen = [first]
    while seen[-1].progress < 5:
        update = await stream.read()
        assert isinstance(update, export_pb2.VideoJob)
        seen.append(update)
    await stub.CancelExport(export_pb2.CancelExportRequest(id=job.id))
    while isinstance(update := await stream.read(), export_pb2.VideoJob):
        seen.append(update)
    assert_monotonic(seen)
    assert seen[-1].status == export_pb2.CANCELLED
    assert any(update.status == export_pb2.RUNNING for update in seen)


async def test_list_pages_filter_and_tokens(stub: Stub, export_server: ExportServer) -> None:
    jobs = [await create(stub, f"list-{index}") for index in range(5)]
    for job in jobs:
        await watch(stub, job.id)
    cancelled = await stub.CreateExport(export_pb2.CreateExportRequest(spec=slow_spec()))
    await stub.CancelExport(export_pb2.CancelExportRequest(id=cancelled.id))
    newest_first = [cancelled.id, *reversed([job.id for job in jobs])]
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListExports(export_pb2.ListExportsRequest(page_size=2, page_token=token))
        assert len(page.jobs) <= 2
        seen += [job.id for job in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen == newest_first
    only = await stub.ListExports(export_pb2.ListExportsRequest(status=export_pb2.CANCELLED))
    assert [job.id for job in only.jobs] == [cancelled.id]
    huge = await stub.ListExports(export_pb2.ListExportsRequest(page_size=100_000))
    assert len(huge.jobs) == 6
    for request, field in (
        (export_pb2.ListExportsRequest(page_token="not a token"), "page_token"),
        (export_pb2.ListExportsRequest(page_size=-1), "page_size"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.ListExports(request)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (error.value.details() or "").startswith(f"{field}:")
        violation = field_violation(error.value)
        assert violation is not None and violation.field == field


async def test_cancel_stops_the_render_and_leaves_no_file(
    stub: Stub, export_server: ExportServer, render_service: InProcessRender, tmp_path: Path
) -> None:
    job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=slow_spec()))
    stream = stub.WatchExport(export_pb2.WatchExportRequest(id=job.id))
    async for update in stream:
        if update.progress > 3:
            break
    stream.cancel()
    cancelled = await stub.CancelExport(export_pb2.CancelExportRequest(id=job.id))
    assert cancelled.status == export_pb2.CANCELLED
    assert cancelled.progress < 100 and cancelled.output_path == ""
    async with grpc.aio.insecure_channel(render_service.address) as channel:
        render = render_pb2_grpc.RenderServiceStub(channel)
        for _ in range(100):
            info = await render.GetRender(render_pb2.GetRenderRequest(render_id=job.id))
            if info.state == render_pb2.RENDER_STATE_CANCELLED:
                break
            await asyncio.sleep(0.05)
        assert info.state == render_pb2.RENDER_STATE_CANCELLED
    assert output_entries(tmp_path / "out") == []
    assert (await stub.GetExport(export_pb2.GetExportRequest(id=job.id))) == cancelled


async def test_max_active_jobs(start_export: StartExport, render_service: InProcessRender) -> None:
    server = await start_export(render_service.address, max_active_jobs=1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        first = await stub.CreateExport(export_pb2.CreateExportRequest(spec=slow_spec()))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.CreateExport(export_pb2.CreateExportRequest(spec=pattern_spec()))
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await stub.CancelExport(export_pb2.CancelExportRequest(id=first.id))
        second = await stub.CreateExport(export_pb2.CreateExportRequest(spec=pattern_spec()))
        assert (await watch(stub, second.id))[-1].status == export_pb2.COMPLETED


def missing_input_spec() -> spec_pb2.RenderSpec:
    spec = pattern_spec()
    spec.source.ClearField("test_pattern")
    spec.source.transcode.input_path = "missing.mp4"
    return spec


async def test_a_missing_input_is_refused_at_create(stub: Stub) -> None:
    """The render service answers CheckInputs: the job is never created."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateExport(export_pb2.CreateExportRequest(spec=missing_input_spec()))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violation = field_violation(caught.value)
    assert violation is not None
    assert violation.field == "spec.source.transcode.input_path"
    assert "missing.mp4" in violation.description
    listed = await stub.ListExports(export_pb2.ListExportsRequest())
    assert list(listed.jobs) == []


async def test_invalid_input_at_the_render_service_fails_without_retry(
    start_export: StartExport, render_processes: RenderProcesses
) -> None:
    """No render service answers CheckInputs at create, so the job is accepted; the render's
    own check refuses the input once the service is up, and that failure is not retried."""
    port = free_port()
    server = await start_export(f"127.0.0.1:{port}")
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=missing_input_spec()))
        render_processes.start(port=port)
        final = (await watch(stub, job.id))[-1]
    assert final.status == export_pb2.FAILED
    assert final.error.code == "INVALID_INPUT"
    assert "missing.mp4" in final.error.message
    assert final.attempt == 1
