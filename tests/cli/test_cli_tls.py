"""The CLI's TLS flags against an export service that requires a client certificate (mutual
TLS), with certificates minted in the test."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_cli_stack import COMMAND_TIMEOUT_SECONDS, SCRIPT
from tests.support.certs import Pki, make_test_pki
from videojob.grpc_setup import TlsFiles
from videojob_cli.exit_status import ExitStatus
from videojob_launcher import Role, Stack, StackConfig


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_export(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[str]:
    """A render and an export service (no gateway), each requiring mutual TLS."""
    server_tls = (
        *("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)),
        *("--tls-client-ca", str(pki.ca)),
    )
    render_client_tls = (
        *("--render-tls-ca", str(pki.ca), "--render-tls-cert", str(pki.client.cert)),
        *("--render-tls-key", str(pki.client.key)),
    )
    config = StackConfig(
        tmp_path_factory.mktemp("cli-tls"),
        render=Role(args=server_tls),
        export=Role(args=(*server_tls, *render_client_tls)),
        grpc_tls=TlsFiles(cert=pki.client.cert, key=pki.client.key, ca=pki.ca),
    )
    stack = Stack(config)
    try:
        stack.start_renders()
        stack.start_exports()
        yield stack.export_addr
    finally:
        stack.stop()


def list_jobs(export_addr: str, *tls: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "list", "--json", "--export-addr", export_addr, *tls],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )


def test_the_cli_reaches_an_export_service_over_mutual_tls(mtls_export: str, pki: Pki) -> None:
    tls = ("--tls-ca", str(pki.ca), "--tls-cert", str(pki.client.cert))
    result = list_jobs(mtls_export, *tls, "--tls-key", str(pki.client.key))
    assert result.returncode == ExitStatus.OK, result.stderr


def test_without_a_client_certificate_it_cannot_reach_it(mtls_export: str, pki: Pki) -> None:
    result = list_jobs(mtls_export, "--tls-ca", str(pki.ca))
    assert result.returncode == ExitStatus.UNREACHABLE, result.stderr


def test_a_certificate_without_its_key_is_a_usage_error(mtls_export: str, pki: Pki) -> None:
    result = list_jobs(mtls_export, "--tls-ca", str(pki.ca), "--tls-cert", str(pki.client.cert))
    assert result.returncode == ExitStatus.USAGE
    assert "--tls-cert needs --tls-key too" in result.stderr


def test_an_unreadable_tls_file_is_a_usage_error(mtls_export: str, tmp_path: Path) -> None:
    result = list_jobs(mtls_export, "--tls-ca", str(tmp_path / "missing.pem"))
    assert result.returncode == ExitStatus.USAGE
    assert "missing.pem" in result.stderr
