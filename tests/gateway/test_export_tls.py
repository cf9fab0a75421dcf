"""The gateway's export channel over TLS and mutual TLS (--export-tls-*), checked through
/healthz against a real gRPC health server with certificates minted in the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from tests.gateway.conftest import start_gateway, stop
from tests.support.certs import Pki, make_test_pki
from videojob.endpoints import EXPORT_SERVICE
from videojob.grpc_setup import SERVER_OPTIONS, TlsFiles, add_health_and_reflection, bind


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_test_pki(tmp_path / "pki")


@pytest.fixture
async def mtls_export(pki: Pki) -> AsyncIterator[int]:
    """A health-only stand-in for the export service that requires a client certificate."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    await add_health_and_reflection(server, [EXPORT_SERVICE])
    port = bind(
        server, "127.0.0.1:0", TlsFiles(cert=pki.server.cert, key=pki.server.key, ca=pki.ca)
    )
    await server.start()
    yield port
    await server.stop(None)


async def health_status(gateway_port: int) -> int:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(f"http://127.0.0.1:{gateway_port}/healthz")
        return response.status_code


async def test_gateway_reaches_export_over_mutual_tls(mtls_export: int, pki: Pki) -> None:
    gateway = start_gateway(
        f"localhost:{mtls_export}",
        "--export-tls-ca",
        str(pki.ca),
        "--export-tls-cert",
        str(pki.client.cert),
        "--export-tls-key",
        str(pki.client.key),
    )
    try:
        assert await health_status(gateway.port) == 200
    finally:
        stop(gateway)


async def test_gateway_without_a_client_certificate_is_refused(mtls_export: int, pki: Pki) -> None:
    gateway = start_gateway(f"localhost:{mtls_export}", "--export-tls-ca", str(pki.ca))
    plaintext = start_gateway(f"localhost:{mtls_export}")
    try:
        assert await health_status(gateway.port) == 503
        assert await health_status(plaintext.port) == 503
    finally:
        stop(gateway)
        stop(plaintext)
