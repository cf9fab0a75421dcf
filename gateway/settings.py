"""The gateway's configuration, filled from the command line / environment by __main__."""

from __future__ import annotations

from dataclasses import dataclass, field

from videojob.grpc_setup import TlsFiles

DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_HEARTBEAT_SECONDS = 15.0
DEFAULT_RPC_TIMEOUT_SECONDS = 10.0
DEFAULT_UPSTREAM_RETRY_SECONDS = 20.0


@dataclass(frozen=True)
class Settings:
    export_addr: str = "127.0.0.1:50052"
    export_tls: TlsFiles = field(default_factory=TlsFiles)
    # When set, every /api route requires "Authorization: Bearer <token>".
    api_token: str | None = None
    # Origins allowed to call the API from a browser; empty means CORS is off.
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    rpc_timeout_seconds: float = DEFAULT_RPC_TIMEOUT_SECONDS
    # How long a job's shared watch keeps re-opening a broken WatchExport before it ends its
    # clients' event streams (they then reconnect with Last-Event-ID).
    upstream_retry_seconds: float = DEFAULT_UPSTREAM_RETRY_SECONDS
