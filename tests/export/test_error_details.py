"""The export service's refusals carry their details machine-readably: a BadRequest field
violation that grpcurl (through server reflection) can read, and an ErrorInfo with the job's
status when a finished job cannot be cancelled. No render service is needed: nothing here
renders."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from export_service.server import ExportServer
from tests.export.conftest import StartExport, pattern_spec
from tests.support.readme_recipes import GRPCURL
from videojob.errors import Reason, ViolationKind
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_errors import error_info, field_violation
from videojob.grpc_setup import create_channel

# Nothing listens here: created jobs stay queued.
NO_RENDER_SERVICE = "127.0.0.1:1"


@pytest.fixture
async def server(start_export: StartExport) -> ExportServer:
    return await start_export(NO_RENDER_SERVICE)


@pytest.fixture
async def stub(server: ExportServer) -> AsyncIterator[export_pb2_grpc.ExportServiceAsyncStub]:
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        yield export_pb2_grpc.ExportServiceStub(channel)


def run_grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GRPCURL), "-plaintext", "-format", "json", "-format-error", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_grpcurl_reads_the_field_violation_of_a_bad_spec(server: ExportServer) -> None:
    spec = {"source": {"test_pattern": {"duration_seconds": 1}}, "output": {"container": "avi"}}
    request = {"request_id": "bad-spec", "spec": spec}
    result = await asyncio.to_thread(
        run_grpcurl,
        "-d",
        json.dumps(request),
        f"127.0.0.1:{server.port}",
        "videojob.export.v1.ExportService/CreateExport",
    )
    assert result.returncode != 0, result.stdout
    # -format-error prints the status as JSON on stderr.
    status: dict[str, Any] = json.loads(result.stderr)
    assert status["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0], status
    assert status["message"].startswith("spec.output.container: "), status
    [detail] = status["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest", detail
    [violation] = detail["field_violations"]
    assert violation["field"] == "spec.output.container", violation
    assert violation["description"] == status["message"].removeprefix("spec.output.container: ")
    assert violation["reason"] == ViolationKind.INVALID


async def test_a_foreign_page_token_is_a_malformed_value(
    stub: export_pb2_grpc.ExportServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListExports(export_pb2.ListExportsRequest(page_token="bm9wZQ"), timeout=10)
    violation = field_violation(caught.value)
    assert violation is not None
    assert (violation.field, violation.reason) == ("page_token", ViolationKind.MALFORMED)


async def test_cancelling_a_finished_job_names_its_status(
    server: ExportServer, stub: export_pb2_grpc.ExportServiceAsyncStub
) -> None:
    job = await stub.CreateExport(
        export_pb2.CreateExportRequest(request_id="cancel-failed", spec=pattern_spec(1.0)),
        timeout=10,
    )
    # Nothing renders here: the store records the failure a render would have reported.
    await server.store.fail(job.id, code="FFMPEG_ERROR", message="the render failed")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CancelExport(export_pb2.CancelExportRequest(id=job.id), timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(caught.value)
    assert info is not None
    assert info.reason == Reason.JOB_FINISHED
    assert dict(info.metadata) == {"job_id": job.id, "status": "FAILED"}


async def test_cancelling_a_cancelled_job_again_returns_it(
    stub: export_pb2_grpc.ExportServiceAsyncStub,
) -> None:
    job = await stub.CreateExport(
        export_pb2.CreateExportRequest(request_id="cancel-twice", spec=pattern_spec(1.0)),
        timeout=10,
    )
    cancelled = await stub.CancelExport(export_pb2.CancelExportRequest(id=job.id), timeout=10)
    assert cancelled.status == export_pb2.CANCELLED
    again = await stub.CancelExport(export_pb2.CancelExportRequest(id=job.id), timeout=10)
    assert (again.id, again.status) == (job.id, export_pb2.CANCELLED)
    assert again.version == cancelled.version


async def test_a_reused_request_id_names_the_job(
    stub: export_pb2_grpc.ExportServiceAsyncStub,
) -> None:
    first = await stub.CreateExport(
        export_pb2.CreateExportRequest(request_id="reused", spec=pattern_spec(1.0)), timeout=10
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateExport(
            export_pb2.CreateExportRequest(request_id="reused", spec=pattern_spec(2.0)),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    info = error_info(caught.value)
    assert info is not None and info.reason == Reason.REQUEST_ID_REUSED
    assert dict(info.metadata) == {"request_id": "reused", "job_id": first.id}


async def test_watching_with_a_bad_id_is_refused_with_the_field(
    stub: export_pb2_grpc.ExportServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.WatchExport(export_pb2.WatchExportRequest(id=""), timeout=10):
            pass
    violation = field_violation(caught.value)
    assert violation is not None and violation.field == "id"
