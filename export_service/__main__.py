"""python -m export_service --listen HOST:PORT --render-addr HOST:PORT --database URL"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from export_service.config import ExportConfig, TrackerSettings
from export_service.server import create_server
from export_service.store import open_store
from export_service.store.factory import DEFAULT_DATABASE
from videojob.grpc_setup import TlsFiles

logger = logging.getLogger("export_service")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"EXPORT_{name}", default)


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = ExportConfig()
    tracker = TrackerSettings()
    parser = argparse.ArgumentParser(
        prog="python -m export_service",
        description="Owns every VideoJob: stores it, drives its render, reports it truthfully. "
        "Every flag can also be set by the environment variable named in its help.",
    )

    def add(flag: str, env: str, default: object, help_text: str, kind: type = str) -> None:
        parser.add_argument(
            flag, type=kind, default=_env(env, None) or default, help=f"{help_text} [EXPORT_{env}]"
        )

    add("--listen", "LISTEN", defaults.listen, "address to serve on (port 0 picks one)")
    add("--render-addr", "RENDER_ADDR", defaults.render_addr, "the render service's address")
    add("--database", "DATABASE", DEFAULT_DATABASE, "sqlite:///path (or a bare path)")
    add(
        "--stall-timeout",
        "STALL_TIMEOUT",
        tracker.stall_timeout,
        "seconds without a render event before the render is investigated",
        float,
    )
    add(
        "--max-attempts",
        "MAX_ATTEMPTS",
        tracker.max_attempts,
        "render submissions per job (the first plus resubmissions of a lost render, e.g. after "
        "a render service restart) before it fails RENDER_LOST; re-attaching to a render the "
        "render service still knows is free",
        int,
    )
    add(
        "--retry-budget",
        "RETRY_BUDGET",
        tracker.retry_budget,
        "seconds the render service may stay unreachable without a break before a job fails "
        "RENDER_UNAVAILABLE (asked again with backoff meanwhile; also how long the clean-up "
        "of a failed or cancelled job's render is retried)",
        float,
    )
    add(
        "--output-wait",
        "OUTPUT_WAIT",
        None,
        "seconds a completed render's file that cannot be seen is re-checked before the job "
        "fails VERIFICATION_FAILED (default: max(10, stall timeout))",
        float,
    )
    add(
        "--progress-interval",
        "PROGRESS_INTERVAL",
        tracker.progress_interval,
        "minimum seconds between progress writes of one job",
        float,
    )
    add(
        "--max-active-jobs",
        "MAX_ACTIVE_JOBS",
        defaults.max_active_jobs,
        "queued + running jobs accepted before CreateExport answers RESOURCE_EXHAUSTED",
        int,
    )
    add(
        "--backoff-initial",
        "BACKOFF_INITIAL",
        tracker.backoff_initial,
        "first retry delay in seconds (doubles per retry, with jitter)",
        float,
    )
    add("--backoff-max", "BACKOFF_MAX", tracker.backoff_max, "largest retry delay", float)
    add(
        "--shutdown-grace",
        "SHUTDOWN_GRACE",
        defaults.shutdown_grace,
        "seconds open calls get on SIGTERM",
        float,
    )
    add("--tls-cert", "TLS_CERT", None, "server certificate (PEM)")
    add("--tls-key", "TLS_KEY", None, "server private key (PEM)")
    add("--tls-client-ca", "TLS_CLIENT_CA", None, "CA that client certificates must chain to")
    add("--render-tls-ca", "RENDER_TLS_CA", None, "CA that verifies the render service")
    add("--render-tls-cert", "RENDER_TLS_CERT", None, "client certificate for the render service")
    add("--render-tls-key", "RENDER_TLS_KEY", None, "client key for the render service")
    add("--log-level", "LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> ExportConfig:
    return ExportConfig(
        listen=args.listen,
        render_addr=args.render_addr,
        database=args.database,
        max_active_jobs=int(args.max_active_jobs),
        tracker=TrackerSettings(
            stall_timeout=float(args.stall_timeout),
            max_attempts=int(args.max_attempts),
            retry_budget=float(args.retry_budget),
            output_wait=None if args.output_wait is None else float(args.output_wait),
            progress_interval=float(args.progress_interval),
            backoff_initial=float(args.backoff_initial),
            backoff_max=float(args.backoff_max),
        ),
        tls=TlsFiles(
            cert=_path(args.tls_cert), key=_path(args.tls_key), ca=_path(args.tls_client_ca)
        ),
        render_tls=TlsFiles(
            cert=_path(args.render_tls_cert),
            key=_path(args.render_tls_key),
            ca=_path(args.render_tls_ca),
        ),
        shutdown_grace=float(args.shutdown_grace),
    )


async def serve(config: ExportConfig) -> None:
    store = await open_store(config.database)
    export = await create_server(config, store)
    host = config.listen.rsplit(":", 1)[0]
    print(f"export_service listening on {host}:{export.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("shutting down")
    await export.stop(config.shutdown_grace)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=str(args.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = config_from_args(args)
        asyncio.run(serve(config))
    except (ValueError, OSError) as error:
        print(f"export_service: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
