"""Health probes the launcher waits on: grpc.health.v1 SERVING for the gRPC services, GET
/healthz answering 200 for the gateway. Each answers once, quickly, and never raises."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from videojob.grpc_setup import TlsFiles, channel_credentials
from videojob_launcher.process import Probe

PROBE_TIMEOUT_SECONDS = 2.0
# A local probe never goes through an HTTP proxy named in the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def grpc_serving(service: str, tls: TlsFiles | None = None, server_name: str = "") -> Probe:
    """SERVING for ``service``; ``tls`` (and ``server_name``, the name the server's certificate
    carries when it is not the address's host) for a server that speaks TLS."""
    credentials = channel_credentials(tls) if tls is not None else None
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []

    def probe(address: str) -> bool:
        channel = (
            grpc.secure_channel(address, credentials, options=options)
            if credentials is not None
            else grpc.insecure_channel(address)
        )
        with channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=PROBE_TIMEOUT_SECONDS
                )
            except grpc.RpcError:
                return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    return probe


def http_ok(path: str = "/healthz") -> Probe:
    """GET ``http://ADDRESS{path}`` answers 200."""

    def probe(address: str) -> bool:
        try:
            with _DIRECT.open(f"http://{address}{path}", timeout=PROBE_TIMEOUT_SECONDS) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, http.client.HTTPException, OSError):
            return False

    return probe
