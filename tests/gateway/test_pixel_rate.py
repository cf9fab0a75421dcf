"""The operator's limit on output pixels per second, against the real stack at its default: a
job over it is refused at create (HTTP 422, gRPC INVALID_ARGUMENT with a field violation),
naming its frame rate; 4K at 60 fps is accepted. An export service given a lower limit
(``--max-pixel-rate``) refuses by that one."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format

from export_service.server import ExportServer
from tests.export.conftest import StartExport
from tests.export.conftest import start_export as start_export
from tests.gateway.conftest import Stack
from tests.support.ports import free_port
from videojob import limits
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_errors import field_violation
from videojob.grpc_setup import create_channel
from videojob.render.v1 import spec_pb2


def pattern_spec(width: int, height: int, fps: float) -> dict[str, Any]:
    pattern = {"durationSeconds": 1, "width": width, "height": height, "fps": fps}
    return {"source": {"testPattern": pattern}, "output": {"preset": "ultrafast"}}


def create(client: httpx.Client, spec: dict[str, Any]) -> httpx.Response:
    """POST /api/jobs; a job it made is cancelled at once (nothing heavy is left rendering)."""
    response = client.post("/api/jobs", json=spec)
    if response.status_code == 201:
        client.post(f"/api/jobs/{response.json()['id']}/cancel")
    return response


def test_8k_at_240_fps_is_refused_at_create_naming_the_frame_rate(
    client: httpx.Client, stack: Stack
) -> None:
    response = create(client, pattern_spec(7680, 4320, 240))
    assert response.status_code == 422, response.text
    body = response.json()
    assert (body["code"], body["field"]) == ("invalid_argument", "source.testPattern.fps"), body
    assert "pixels per second" in body["message"], body
    assert f"{limits.DEFAULT_MAX_PIXEL_RATE:,}" in body["message"], body
    # Set on the output, the output's frame rate is named.
    spec = {**pattern_spec(160, 120, 10), "output": {"width": 7680, "height": 4320, "fps": 60}}
    response = create(client, spec)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "output.fps"

    with grpc.insecure_channel(stack.export.address) as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        proto = json_format.ParseDict(pattern_spec(7680, 4320, 240), spec_pb2.RenderSpec())
        with pytest.raises(grpc.RpcError) as caught:
            job = stub.CreateExport(export_pb2.CreateExportRequest(spec=proto), timeout=10)
            stub.CancelExport(export_pb2.CancelExportRequest(id=job.id), timeout=10)
    assert isinstance(caught.value, grpc.Call)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.source.test_pattern.fps" in (caught.value.details() or "")


def test_4k_at_60_fps_is_accepted(client: httpx.Client) -> None:
    response = create(client, pattern_spec(3840, 2160, 60))
    assert response.status_code == 201, response.text


async def test_the_operator_sets_the_limit(start_export: StartExport) -> None:
    """Nothing listens at the render address: the refusal is the export service's own."""
    server: ExportServer = await start_export(
        f"127.0.0.1:{free_port()}", max_pixel_rate=640 * 480 * 25
    )
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        at_limit = json_format.ParseDict(pattern_spec(640, 480, 25), spec_pb2.RenderSpec())
        job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=at_limit))
        await stub.CancelExport(export_pb2.CancelExportRequest(id=job.id))
        over = json_format.ParseDict(pattern_spec(640, 480, 30), spec_pb2.RenderSpec())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateExport(export_pb2.CreateExportRequest(spec=over))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violation = field_violation(caught.value)
    assert violation is not None and violation.field == "spec.source.test_pattern.fps"
    assert f"{640 * 480 * 25:,}" in violation.description
