"""``python -m render_service``: the command line, logging and signal handling."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from render_service.config import RenderConfig
from render_service.server import create_server
from videojob.grpc_setup import TlsFiles

logger = logging.getLogger("render_service")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def parse_args(argv: Sequence[str] | None = None) -> RenderConfig:
    parser = argparse.ArgumentParser(
        prog="python -m render_service",
        description="Runs FFmpeg renders and streams their progress over gRPC. "
        "Every flag can also be set by the environment variable shown.",
    )
    parser.add_argument(
        "--listen",
        default=_env("RENDER_LISTEN", "127.0.0.1:50051"),
        help="HOST:PORT; port 0 picks a free port (RENDER_LISTEN)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=_env("RENDER_OUTPUT_DIR", "./var/renders"),
        help="where finished files go (RENDER_OUTPUT_DIR)",
    )
    parser.add_argument(
        "--media-root",
        type=Path,
        default=_env("RENDER_MEDIA_ROOT", "./var/media"),
        help="input paths are relative to it (RENDER_MEDIA_ROOT)",
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=int(_env("RENDER_MAX_CONCURRENT") or (os.cpu_count() or 1)),
        help="renders running at once; default: CPU count (RENDER_MAX_CONCURRENT)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=int(_env("RENDER_MAX_QUEUE", "256") or 256),
        help="renders waiting for a slot before RESOURCE_EXHAUSTED (RENDER_MAX_QUEUE)",
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=float(_env("RENDER_STALL_TIMEOUT", "60") or 60),
        help="seconds without progress before ffmpeg is killed (RENDER_STALL_TIMEOUT)",
    )
    parser.add_argument(
        "--retention",
        type=float,
        default=float(_env("RENDER_RETENTION", "3600") or 3600),
        help="seconds a finished render's events are kept (RENDER_RETENTION)",
    )
    parser.add_argument(
        "--tls-cert", type=Path, default=_env("RENDER_TLS_CERT"), help="PEM (RENDER_TLS_CERT)"
    )
    parser.add_argument(
        "--tls-key", type=Path, default=_env("RENDER_TLS_KEY"), help="PEM (RENDER_TLS_KEY)"
    )
    parser.add_argument(
        "--tls-client-ca",
        type=Path,
        default=_env("RENDER_TLS_CLIENT_CA"),
        help="require client certificates signed by this CA (RENDER_TLS_CLIENT_CA)",
    )
    args = parser.parse_args(argv)
    if args.max_concurrent < 1:
        parser.error("--max-concurrent must be at least 1")
    if args.max_queue < 0:
        parser.error("--max-queue must not be negative")
    if args.stall_timeout <= 0:
        parser.error("--stall-timeout must be positive")
    if args.retention < 0:
        parser.error("--retention must not be negative")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    return RenderConfig(
        listen=args.listen,
        output_dir=Path(args.output_dir),
        media_root=Path(args.media_root),
        max_concurrent=args.max_concurrent,
        max_queue=args.max_queue,
        stall_timeout=args.stall_timeout,
        retention=args.retention,
        tls=TlsFiles(
            cert=Path(args.tls_cert) if args.tls_cert else None,
            key=Path(args.tls_key) if args.tls_key else None,
            ca=Path(args.tls_client_ca) if args.tls_client_ca else None,
        ),
    )


async def serve(config: RenderConfig) -> None:
    render_server = await create_server(config)
    host = config.listen.rsplit(":", 1)[0]
    print(f"render_service listening on {host}:{render_server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    logger.info("stopping: health NOT_SERVING, ending active renders")
    await render_server.stop(config.shutdown_grace)
    logger.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("RENDER_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
