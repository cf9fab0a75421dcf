"""TLS and mutual TLS through videojob.grpc_setup, on a real server and socket, with
certificates minted inside the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.certs import Pki, make_test_pki
from videojob.grpc_setup import (
    SERVER_OPTIONS,
    TlsFiles,
    add_health_and_reflection,
    bind,
    create_channel,
)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_test_pki(tmp_path / "pki")


async def start_health_server(tls: TlsFiles) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    await add_health_and_reflection(server, ["videojob.test.v1.Nothing"])
    port = bind(server, "127.0.0.1:0", tls)
    await server.start()
    return server, port


async def check(port: int, tls: TlsFiles | None) -> int:
    async with create_channel(f"localhost:{port}", tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(response.status)


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[int]:
    server, port = await start_health_server(TlsFiles(cert=pki.server.cert, key=pki.server.key))
    yield port
    await server.stop(None)


@pytest.fixture
async def mtls_server(pki: Pki) -> AsyncIterator[int]:
    tls = TlsFiles(cert=pki.server.cert, key=pki.server.key, ca=pki.ca)
    server, port = await start_health_server(tls)
    yield port
    await server.stop(None)


async def test_tls_client_trusting_the_ca_is_served(tls_server: int, pki: Pki) -> None:
    assert await check(tls_server, TlsFiles(ca=pki.ca)) == health_pb2.HealthCheckResponse.SERVING


async def test_tls_client_trusting_another_ca_is_refused(tls_server: int, pki: Pki) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(tls_server, TlsFiles(ca=pki.other_ca))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_client_cannot_talk_to_a_tls_server(tls_server: int) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(tls_server, None)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate(mtls_server: int, pki: Pki) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(mtls_server, TlsFiles(ca=pki.ca))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_serves_a_client_with_a_certificate_from_the_ca(
    mtls_server: int, pki: Pki
) -> None:
    client = TlsFiles(cert=pki.client.cert, key=pki.client.key, ca=pki.ca)
    assert await check(mtls_server, client) == health_pb2.HealthCheckResponse.SERVING


async def test_a_server_certificate_without_its_key_is_a_configuration_error(pki: Pki) -> None:
    server = grpc.aio.server()
    with pytest.raises(ValueError, match="key"):
        bind(server, "127.0.0.1:0", TlsFiles(cert=pki.server.cert))
    await server.stop(None)
