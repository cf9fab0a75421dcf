"""A render failure that names a request field: the job's error carries the field as a value
(VideoJob.error.field), not only inside the message."""

from __future__ import annotations

import grpc

from tests.export.conftest import StartExport, pattern_spec, watch
from tests.export.test_render_misbehaviour import ScriptedRenderService
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel
from videojob.render.v1 import render_pb2, render_pb2_grpc

FIELD = "spec.source.transcode.input_path"


async def test_the_field_a_render_failure_names_reaches_the_job(start_export: StartExport) -> None:
    refused = render_pb2.RenderEvent(
        seq=1,
        failed=render_pb2.Failed(code="INVALID_INPUT", message="input not found", field=FIELD),
    )
    render_service = ScriptedRenderService(lambda _: [refused])
    server = grpc.aio.server()
    render_pb2_grpc.add_RenderServiceServicer_to_server(render_service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        export = await start_export(f"127.0.0.1:{port}")
        async with create_channel(f"127.0.0.1:{export.port}") as channel:
            stub = export_pb2_grpc.ExportServiceStub(channel)
            job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=pattern_spec()))
            final = (await watch(stub, job.id))[-1]
            again = await stub.GetExport(export_pb2.GetExportRequest(id=job.id))
    finally:
        await server.stop(0)
    assert final.status == export_pb2.FAILED
    assert (final.error.code, final.error.message, final.error.field) == (
        "INVALID_INPUT",
        "input not found",
        FIELD,
    )
    assert again.error.field == FIELD
