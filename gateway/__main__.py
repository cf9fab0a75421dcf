"""``python -m gateway --listen HOST:PORT --export-addr HOST:PORT``: serve the HTTP gateway.

Every flag is also read from an environment variable (GATEWAY_LISTEN, GATEWAY_EXPORT_ADDR, ...).
uvicorn's server is the only owner of SIGINT/SIGTERM: it stops accepting, gives open
responses (event streams included) a short grace, then runs the lifespan shutdown.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from gateway.app import create_app
from gateway.settings import (
    DEFAULT_HEARTBEAT_SECONDS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_RPC_TIMEOUT_SECONDS,
    DEFAULT_UPSTREAM_RETRY_SECONDS,
    Settings,
)
from videojob.grpc_setup import TlsFiles

logger = logging.getLogger("gateway")

GRACEFUL_SHUTDOWN_SECONDS = 3


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"GATEWAY_{name}", default)


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _optional_path(value: str | None) -> Path | None:
    return Path(value) if value else None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default=_env("LISTEN", "127.0.0.1:8080"), help="HOST:PORT")
    parser.add_argument(
        "--export-addr", default=_env("EXPORT_ADDR", "127.0.0.1:50052"), help="HOST:PORT"
    )
    parser.add_argument("--export-tls-ca", default=_env("EXPORT_TLS_CA"), help="CA bundle (PEM)")
    parser.add_argument("--export-tls-cert", default=_env("EXPORT_TLS_CERT"), help="client cert")
    parser.add_argument("--export-tls-key", default=_env("EXPORT_TLS_KEY"), help="client key")
    parser.add_argument(
        "--api-token",
        default=_env("API_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' on /api routes (env GATEWAY_API_TOKEN)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[o for o in (_env("CORS_ORIGIN") or "").split(",") if o],
        help="allow this browser origin (repeatable; env: comma-separated); CORS is off otherwise",
    )
    parser.add_argument(
        "--max-body-bytes", type=int, default=int(_env("MAX_BODY_BYTES") or DEFAULT_MAX_BODY_BYTES)
    )
    parser.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=float(_env("HEARTBEAT_SECONDS") or DEFAULT_HEARTBEAT_SECONDS),
        help="keep-alive comment interval on event streams",
    )
    parser.add_argument(
        "--rpc-timeout-seconds",
        type=float,
        default=float(_env("RPC_TIMEOUT_SECONDS") or DEFAULT_RPC_TIMEOUT_SECONDS),
    )
    parser.add_argument(
        "--upstream-retry-seconds",
        type=float,
        default=float(_env("UPSTREAM_RETRY_SECONDS") or DEFAULT_UPSTREAM_RETRY_SECONDS),
        help="how long an event stream's broken WatchExport is re-opened before the stream ends",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=_flag(_env("ACCESS_LOG")),
        help="log every request (off by default; env GATEWAY_ACCESS_LOG=1)",
    )
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if args.max_body_bytes <= 0 or args.heartbeat_seconds <= 0 or args.rpc_timeout_seconds <= 0:
        parser.error("--max-body-bytes, --heartbeat-seconds and --rpc-timeout-seconds must be > 0")
    if args.upstream_retry_seconds < 0:
        parser.error("--upstream-retry-seconds must be >= 0")
    return args


def split_host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"--listen must be HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)


class RedactAccessToken(logging.Filter):
    """Keeps ``?access_token=`` values out of the access log."""

    _TOKEN = re.compile(r"(access_token=)[^&\s]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._TOKEN.sub(r"\1[redacted]", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


class AnnouncingServer(uvicorn.Server):
    """Prints ``gateway listening on HOST:PORT`` (the bound port) once the app is up."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit or not self.servers:
            return
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        print(f"gateway listening on {host}:{port}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("uvicorn.access").addFilter(RedactAccessToken())
    settings = Settings(
        export_addr=args.export_addr,
        export_tls=TlsFiles(
            cert=_optional_path(args.export_tls_cert),
            key=_optional_path(args.export_tls_key),
            ca=_optional_path(args.export_tls_ca),
        ),
        api_token=args.api_token or None,
        cors_origins=tuple(args.cors_origin),
        max_body_bytes=args.max_body_bytes,
        heartbeat_seconds=args.heartbeat_seconds,
        rpc_timeout_seconds=args.rpc_timeout_seconds,
        upstream_retry_seconds=args.upstream_retry_seconds,
    )
    host, port = split_host_port(args.listen)
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_config=None,
        access_log=args.access_log,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        server_header=False,
    )
    server = AnnouncingServer(config)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
