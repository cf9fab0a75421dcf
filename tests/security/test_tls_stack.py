"""Mutual TLS on every gRPC hop of a real stack, configured only through the command-line flags:
render (--tls-*), export (--tls-* and --render-tls-*), gateway (--export-tls-*), with
certificates minted in the test. tests/export/test_tls_and_cli.py covers the export service
in-process (TlsFiles); this is the same through the processes' own flags."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.gateway.conftest import tiny_spec, wait_terminal
from tests.support.certs import Pki, make_test_pki
from videojob.grpc_setup import TlsFiles
from videojob_launcher import (
    EXPORT_SERVICE,
    RENDER_SERVICE,
    Role,
    ServiceProcess,
    Stack,
    StackConfig,
)


@dataclass
class TlsStack:
    pki: Pki
    render: ServiceProcess
    export: ServiceProcess
    gateway: ServiceProcess
    output_dir: Path


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsStack]:
    root = tmp_path_factory.mktemp("tls-stack")
    pki = make_test_pki(root / "pki")
    server = ("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
              "--tls-client-ca", str(pki.ca))  # fmt: skip
    ca, cert, key = str(pki.ca), str(pki.client.cert), str(pki.client.key)
    render_client = ("--render-tls-ca", ca, "--render-tls-cert", cert, "--render-tls-key", key)
    export_client = ("--export-tls-ca", ca, "--export-tls-cert", cert, "--export-tls-key", key)
    config = StackConfig(
        root,
        output_dir=root / "out",
        render=Role(args=server),
        export=Role(args=(*server, *render_client)),
        gateway=Role(args=export_client),
        # The launcher's own health checks need a client certificate too.
        grpc_tls=TlsFiles(cert=pki.client.cert, key=pki.client.key, ca=pki.ca),
    )
    with Stack(config) as stack:
        yield TlsStack(pki, stack.render, stack.export, stack.gateway, stack.output_dir)


def test_a_job_completes_over_mutual_tls_on_every_hop(tls_stack: TlsStack) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{tls_stack.gateway.port}", timeout=30) as http:
        assert http.get("/healthz").status_code == 200
        created = http.post("/api/jobs", json=tiny_spec())
        assert created.status_code == 201, created.text
        job = wait_terminal(http, created.json()["id"])
    assert job["status"] == "completed", job
    assert Path(job["outputPath"]).parent == tls_stack.output_dir.resolve()


def health_code(address: str, service: str, credentials: grpc.ChannelCredentials | None) -> str:
    channel = (
        grpc.secure_channel(address, credentials)
        if credentials is not None
        else grpc.insecure_channel(address)
    )
    with channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5
            )
        except grpc.RpcError as error:
            return str(error.code().name)
    return "OK"


@pytest.mark.parametrize("which", ["render", "export"])
def test_clients_without_the_right_certificates_are_refused(
    tls_stack: TlsStack, which: str
) -> None:
    process, service = (
        (tls_stack.render, RENDER_SERVICE)
        if which == "render"
        else (tls_stack.export, EXPORT_SERVICE)
    )
    pki = tls_stack.pki
    ca = pki.ca.read_bytes()
    client_cert, client_key = pki.client.cert.read_bytes(), pki.client.key.read_bytes()
    with_certificate = grpc.ssl_channel_credentials(ca, client_key, client_cert)
    assert health_code(process.address, service, with_certificate) == "OK"

    no_certificate = grpc.ssl_channel_credentials(ca)
    wrong_ca = grpc.ssl_channel_credentials(pki.other_ca.read_bytes(), client_key, client_cert)
    for credentials in (None, no_certificate, wrong_ca):
        assert health_code(process.address, service, credentials) == "UNAVAILABLE"
