"""CancelExport while the render service is unreachable: every cancel returns promptly, the job
ends CANCELLED, and its tracker stops instead of retrying a render for a cancelled job."""

from __future__ import annotations

import asyncio

import grpc

from export_service.server import ExportServer
from tests.export.conftest import StartExport, pattern_spec
from tests.support.ports import unused_address
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel


async def test_cancel_never_hangs_while_the_render_service_is_unreachable(
    start_export: StartExport,
) -> None:
    server: ExportServer = await start_export(unused_address())
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        for round_number in range(60):
            job = await stub.CreateExport(
                export_pb2.CreateExportRequest(request_id=f"r{round_number}", spec=pattern_spec()),
                timeout=10,
            )
            # Vary the moment of the cancel relative to the tracker's failing Render calls.
            await asyncio.sleep((round_number % 7) * 0.01)
            try:
                cancelled = await stub.CancelExport(
                    export_pb2.CancelExportRequest(id=job.id), timeout=10
                )
            except grpc.aio.AioRpcError as error:
                raise AssertionError(
                    f"round {round_number}: CancelExport {error.code().name}: {error.details()}"
                ) from None
            assert cancelled.status == export_pb2.CANCELLED
            # CancelExport answers once the job's tracker task has ended (or after the RPC
            # timeout, which would fail here): no tracker outlives its cancelled job.
            assert job.id not in server.supervisor.tracked, (
                f"round {round_number}: the tracker still runs after the cancel returned"
            )
        assert not server.supervisor.tracked
