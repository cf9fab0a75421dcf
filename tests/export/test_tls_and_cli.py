"""The command line (flags and environment variables, exit codes) and TLS on both of the export
service's connections."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.export.conftest import (
    RenderProcesses,
    StartExport,
    assert_completed_with_valid_file,
    pattern_spec,
    stop_processes,
    watch,
)
from tests.support.certs import make_test_pki
from tests.support.ports import unused_address
from tests.support.processes import REPO_ROOT, start_service
from videojob.endpoints import EXPORT_SERVICE
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import TlsFiles, create_channel


async def test_mutual_tls_to_clients_and_to_the_render_service(
    start_export: StartExport, render_processes: RenderProcesses, tmp_path: Path
) -> None:
    pki = make_test_pki(tmp_path / "pki")
    render = render_processes.start_with(
        "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
        "--tls-client-ca", str(pki.ca),
    )  # fmt: skip
    server = await start_export(
        render.address,
        tls=TlsFiles(cert=pki.server.cert, key=pki.server.key, ca=pki.ca),
        render_tls=TlsFiles(cert=pki.client.cert, key=pki.client.key, ca=pki.ca),
    )
    client_tls = TlsFiles(cert=pki.client.cert, key=pki.client.key, ca=pki.ca)
    async with create_channel(f"127.0.0.1:{server.port}", client_tls) as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=pattern_spec()))
        assert_completed_with_valid_file((await watch(stub, job.id))[-1], 2.0)
    async with create_channel(f"127.0.0.1:{server.port}") as plaintext:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await export_pb2_grpc.ExportServiceStub(plaintext).GetExport(
                export_pb2.GetExportRequest(id=job.id), timeout=5
            )
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_an_unreachable_postgresql_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    database = f"postgresql://videojob:secret@{unused_address()}/videojob"
    result = subprocess.run(
        [sys.executable, "-m", "export_service", "--listen", "127.0.0.1:0",
         "--database", database],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "cannot open the database postgresql://videojob:***@" in result.stderr
    assert "secret" not in result.stderr


async def test_settings_from_the_environment_and_sigterm(
    render_processes: RenderProcesses, tmp_path: Path
) -> None:
    render = render_processes.start()
    database = tmp_path / "env" / "jobs.db"
    process = start_service(
        "export_service",
        [],
        env={
            "EXPORT_LISTEN": "127.0.0.1:0",
            "EXPORT_RENDER_ADDR": render.address,
            "EXPORT_DATABASE": f"sqlite:///{database}",
            "EXPORT_STALL_TIMEOUT": "3",
            "EXPORT_MAX_ATTEMPTS": "2",
        },
    )
    try:
        async with create_channel(process.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(health_pb2.HealthCheckRequest(service=EXPORT_SERVICE))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            stub = export_pb2_grpc.ExportServiceStub(channel)
            job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=pattern_spec()))
            assert (await watch(stub, job.id))[-1].status == export_pb2.COMPLETED
        assert database.is_file()
        assert await process.astop() == 0
    finally:
        stop_processes([process])
