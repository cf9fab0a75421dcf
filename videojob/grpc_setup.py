"""gRPC server and channel settings every videojob process shares: message size limits,
keepalive, health and reflection, and optional TLS / mutual TLS."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

# The public async servicer; grpc-stubs predate it.
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from videojob.grpc_errors import DomainErrorInterceptor

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 4 * 1024 * 1024

SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
]

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for one side of a TLS connection. ``ca`` verifies the peer; on a server,
    setting it requires clients to present a certificate (mutual TLS)."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    @property
    def enabled(self) -> bool:
        return any((self.cert, self.key, self.ca))


def create_server() -> grpc.aio.Server:
    """A gRPC server with the shared options, whose methods answer domain errors with their
    rich status (videojob.grpc_errors)."""
    return grpc.aio.server(options=SERVER_OPTIONS, interceptors=[DomainErrorInterceptor()])


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials | None:
    if not tls.enabled:
        return None
    if tls.cert is None or tls.key is None:
        raise ValueError("a TLS server needs both a certificate and a key")
    root = tls.ca.read_bytes() if tls.ca else None
    return grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())],
        root_certificates=root,
        require_client_auth=root is not None,
    )


def channel_credentials(tls: TlsFiles) -> grpc.ChannelCredentials | None:
    if not tls.enabled:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes() if tls.ca else None,
        private_key=tls.key.read_bytes() if tls.key else None,
        certificate_chain=tls.cert.read_bytes() if tls.cert else None,
    )


def create_channel(target: str, tls: TlsFiles | None = None) -> grpc.aio.Channel:
    credentials = channel_credentials(tls) if tls else None
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)


def bind(server: grpc.aio.Server, listen: str, tls: TlsFiles | None = None) -> int:
    """Binds ``listen`` (port 0 picks a free port) and returns the bound port."""
    credentials = server_credentials(tls) if tls else None
    if credentials is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return port


class GracefulHealth(Protocol):
    """The health servicer, as its server's shutdown uses it."""

    async def enter_graceful_shutdown(self) -> None: ...


async def add_health_and_reflection(
    server: grpc.aio.Server, service_full_names: Iterable[str]
) -> GracefulHealth:
    """Registers grpc.health.v1 (every named service SERVING) and server reflection.

    On shutdown call ``await servicer.enter_graceful_shutdown()``: every service turns
    NOT_SERVING and stays so."""
    names = list(service_full_names)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflected = [*names, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(reflected, server)
    graceful: GracefulHealth = health_servicer
    return graceful
