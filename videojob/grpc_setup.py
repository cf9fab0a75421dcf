"""gRPC server and channel settings every videojob process shares: message size limits,
keepalive, health and reflection, and optional TLS / mutual TLS."""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

# The public async servicer; grpc-stubs predate it.
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from videojob import tracing
from videojob.backoff import UNARY_RETRYABLE
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
    return grpc.aio.server(
        options=SERVER_OPTIONS,
        interceptors=[*tracing.server_interceptors(), DomainErrorInterceptor()],
    )


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
    interceptors = tracing.client_interceptors() or None
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=interceptors)
    return grpc.aio.secure_channel(
        target, credentials, options=CHANNEL_OPTIONS, interceptors=interceptors
    )


# A call that finds its replica down (UNAVAILABLE before any response) is tried on another.
REPLICA_RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": sorted(code.name for code in UNARY_RETRYABLE),
}


def replica_service_config(service_full_name: str) -> str:
    """The service config of a channel to interchangeable replicas of ``service_full_name``:
    calls spread round-robin over the replicas whose health service says SERVING for it (a
    replica stopping or without its database is skipped), and a call refused UNAVAILABLE is
    retried on another. Retried calls include creates: callers send a request id (the gateway
    and the CLI always do), so a retry returns the job the first try created."""
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "healthCheckConfig": {"serviceName": service_full_name},
            "methodConfig": [
                {"name": [{"service": service_full_name}], "retryPolicy": REPLICA_RETRY_POLICY}
            ],
        }
    )


def replica_target(addresses: str) -> str:
    """A gRPC target for ``HOST:PORT[,HOST:PORT...]``: one address (or a URI such as
    ``dns:///name:port``, which may resolve to several) as it is; several as one
    ``ipv4:``/``ipv6:`` list, host names resolved now (once: a replica that moves needs a
    restart of the client). Blocks on name resolution: call it off the event loop.
    ValueError when a name does not resolve or IPv4 and IPv6 are mixed."""
    items = [item.strip() for item in addresses.split(",") if item.strip()]
    if not items:
        raise ValueError("no address given")
    if len(items) == 1:
        return items[0]
    families: set[int] = set()
    resolved: list[str] = []
    for item in items:
        host, _, port = item.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or "/" in item:
            raise ValueError(f"{item!r}: a list of addresses takes HOST:PORT items only")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = ipaddress.ip_address(_resolve(host, int(port)))
        families.add(address.version)
        resolved.append(f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}")
    if len(families) > 1:
        raise ValueError(f"{addresses!r}: mixes IPv4 and IPv6 addresses")
    scheme = "ipv6" if families == {6} else "ipv4"
    return f"{scheme}:{','.join(resolved)}"


def _resolve(host: str, port: int) -> str:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise ValueError(f"cannot resolve {host!r}: {error}") from None
    return str(infos[0][4][0])


def replica_channel_options(service_full_name: str) -> list[tuple[str, int | str]]:
    """CHANNEL_OPTIONS plus the replica service config (see replica_service_config); for a
    channel built by hand, such as a synchronous one."""
    return [
        *CHANNEL_OPTIONS,
        ("grpc.service_config", replica_service_config(service_full_name)),
        ("grpc.enable_retries", 1),
    ]


def replica_server_name(addresses: str) -> str:
    """The host name TLS verifies for a list of addresses resolved by replica_target: the
    first item's host when it is a name (the replicas share a certificate), else ""."""
    first = addresses.split(",")[0].strip()
    host = first.rpartition(":")[0].strip("[]") if "," in addresses else ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return ""


def create_replica_channel(
    target: str, service_full_name: str, tls: TlsFiles | None = None, server_name: str = ""
) -> grpc.aio.Channel:
    """A channel spreading calls over every replica of ``target`` (see replica_target) that
    serves ``service_full_name``. A server stream is never moved once it started: when its
    replica dies the call fails UNAVAILABLE and the caller re-opens it (the next replica).
    ``server_name``: the name TLS verifies (see replica_server_name)."""
    options = replica_channel_options(service_full_name)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    credentials = channel_credentials(tls) if tls else None
    interceptors = tracing.client_interceptors() or None
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)


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
