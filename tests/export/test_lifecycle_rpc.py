"""The job lifecycle over gRPC: DeleteExport and the tombstone of its request id, CreateExport's
idempotent-replayed metadata, idempotent CancelExport, inputs checked by the render service at
create time (and accepted as before when no render service answers), and ffmpeg's log tail on a
failed job's JobError."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from tests.export.conftest import StartExport, grpc_code, pattern_spec, slow_spec, watch
from tests.support.media import make_clip
from tests.support.ports import unused_address
from tests.support.render_dirs import RenderDirs
from videojob.endpoints import IDEMPOTENT_REPLAYED_METADATA
from videojob.errors import Reason
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_errors import error_info, field_violation
from videojob.grpc_setup import create_channel
from videojob.render.v1 import spec_pb2

if TYPE_CHECKING:
    from videojob.export.v1.export_pb2_grpc import ExportServiceAsyncStub as Stub


def cut_clip(media: Path) -> None:
    """cut.mp4: a clip cut after its header (moov first): readable header, unreadable frames."""
    whole = make_clip(media / "clip.mp4").read_bytes()
    (media / "cut.mp4").write_bytes(whole[:3000])


def transcode(path: str) -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec()
    spec.source.transcode.input_path = path
    spec.output.preset = "ultrafast"
    return spec


async def test_delete_then_not_found_and_the_request_id_is_remembered(stub: Stub) -> None:
    request = export_pb2.CreateExportRequest(request_id="lifecycle-1", spec=pattern_spec(0.5))
    job = await stub.CreateExport(request)
    final = (await watch(stub, job.id))[-1]
    assert final.status == export_pb2.COMPLETED
    output = Path(final.output_path)
    assert await asyncio.to_thread(output.is_file)

    await stub.DeleteExport(export_pb2.DeleteExportRequest(id=job.id))
    assert not await asyncio.to_thread(output.exists)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetExport(export_pb2.GetExportRequest(id=job.id))
    assert grpc_code(missing) == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as history:
        await stub.ListJobHistory(export_pb2.ListJobHistoryRequest(id=job.id))
    assert grpc_code(history) == grpc.StatusCode.NOT_FOUND

    with pytest.raises(grpc.aio.AioRpcError) as replayed:
        await stub.CreateExport(request)
    assert grpc_code(replayed) == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(replayed.value)
    assert info is not None and info.reason == Reason.REQUEST_ID_DELETED
    assert info.metadata["job_id"] == job.id


async def test_an_active_job_is_not_deleted(stub: Stub) -> None:
    job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=slow_spec()))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.DeleteExport(export_pb2.DeleteExportRequest(id=job.id))
    assert grpc_code(refused) == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(refused.value)
    assert info is not None and info.reason == Reason.JOB_ACTIVE
    first = await stub.CancelExport(export_pb2.CancelExportRequest(id=job.id))
    again = await stub.CancelExport(export_pb2.CancelExportRequest(id=job.id))
    assert first.status == again.status == export_pb2.CANCELLED
    assert again.version == first.version


async def test_a_replayed_create_says_so_in_its_metadata(stub: Stub) -> None:
    request = export_pb2.CreateExportRequest(request_id="lifecycle-2", spec=pattern_spec(0.5))
    first = stub.CreateExport(request)
    created = await first
    assert (IDEMPOTENT_REPLAYED_METADATA, "true") not in tuple(await first.trailing_metadata())
    second = stub.CreateExport(request)
    assert (await second).id == created.id
    assert (IDEMPOTENT_REPLAYED_METADATA, "true") in tuple(await second.trailing_metadata())
    await watch(stub, created.id)


@pytest.mark.ffmpeg
async def test_inputs_are_checked_by_the_render_service_at_create(
    stub: Stub, render_dirs: RenderDirs
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.CreateExport(export_pb2.CreateExportRequest(spec=transcode("absent.mp4")))
    assert grpc_code(missing) == grpc.StatusCode.INVALID_ARGUMENT
    violation = field_violation(missing.value)
    assert violation is not None and violation.field == "spec.source.transcode.input_path"

    await asyncio.to_thread(cut_clip, render_dirs.media)
    job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=transcode("cut.mp4")))
    failed = (await watch(stub, job.id))[-1]
    assert failed.status == export_pb2.FAILED
    assert failed.error.code == "FFMPEG_ERROR"
    assert "Invalid data found" in failed.error.message
    lines = failed.error.log_tail.splitlines()
    assert 0 < len(lines) <= 20


async def test_without_a_render_service_the_job_is_accepted_as_before(
    start_export: StartExport,
) -> None:
    server = await start_export(unused_address())
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        nowhere = export_pb2_grpc.ExportServiceStub(channel)
        job = await nowhere.CreateExport(
            export_pb2.CreateExportRequest(spec=transcode("absent.mp4")), timeout=30
        )
        assert job.status == export_pb2.QUEUED
        await nowhere.CancelExport(export_pb2.CancelExportRequest(id=job.id), timeout=30)
