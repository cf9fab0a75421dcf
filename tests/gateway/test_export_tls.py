"""The gateway's export channel over TLS and mutual TLS (its export_tls settings), checked
through /healthz of the app in-process against a real gRPC health server with certificates
minted in the test. A gateway process's --export-tls-* flags: tests/security/test_tls_stack.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.gateway.inprocess import app_client, gateway_settings
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


async def health_status(export_addr: str, export_tls: TlsFiles) -> int:
    settings = gateway_settings(export_addr, export_tls=export_tls)
    async with app_client(settings) as http:
        response = await http.get("/healthz")
        return response.status_code


async def test_gateway_reaches_export_over_mutual_tls(mtls_export: int, pki: Pki) -> None:
    tls = TlsFiles(ca=pki.ca, cert=pki.client.cert, key=pki.client.key)
    assert await health_status(f"localhost:{mtls_export}", tls) == 200


async def test_gateway_without_a_client_certificate_is_refused(mtls_export: int, pki: Pki) -> None:
    assert await health_status(f"localhost:{mtls_export}", TlsFiles(ca=pki.ca)) == 503
    assert await health_status(f"localhost:{mtls_export}", TlsFiles()) == 503
