"""``python -m render_service``: the command line, logging and signal handling."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from render_service.config import RenderConfig
from render_service.failures import RenderFailure
from render_service.ffmpeg_process import run_ffmpeg_captured, watch_children_with_pidfd
from render_service.instance import INSTANCE_ID_RULE, is_instance_id
from render_service.server import create_server
from videojob.endpoints import DEFAULT_RENDER_ADDRESS
from videojob.errors import ObjectStoreMisconfigured, ObjectStoreUnavailable
from videojob.flags import (
    EXIT_USAGE,
    Flag,
    FlagTable,
    Kind,
    integer,
    listen_address,
    location,
    log_format_flag,
    log_level_flag,
    metrics_listen_flag,
    number,
    scratch_dir_flag,
    server_tls_flags,
)
from videojob.grpc_setup import TlsFiles
from videojob.limits import DEFAULT_DRAIN_TIMEOUT_SECONDS
from videojob.logging_setup import configure_logging, set_replica
from videojob.metrics import RENDER, MetricsServer, serve_metrics
from videojob.stop_signals import on_stop_signal, run_service
from videojob.storage.location import LocalDirectory, Location, S3Location
from videojob.storage.settings import StoreSettings
from videojob.tracing import configure_tracing

logger = logging.getLogger("render_service")

FFMPEG_VERSION_SECONDS = 10.0

INSTANCE_ID = Kind(INSTANCE_ID_RULE, str, is_instance_id, "ID")

FLAGS = FlagTable(
    prog="python -m render_service",
    env_prefix="RENDER_",
    description="Runs FFmpeg renders and streams their progress over gRPC.",
    flags=(
        Flag("--listen", listen_address(), DEFAULT_RENDER_ADDRESS, "address to serve on"),
        Flag(
            "--output-dir",
            location(),
            LocalDirectory(Path("./var/renders")),
            "where finished files go: a directory, or an object store location (with the "
            "AWS_* variables saying how to reach it)",
            default_text="./var/renders",
        ),
        Flag(
            "--media-root",
            location(),
            LocalDirectory(Path("./var/media")),
            "input paths are relative to it (s3://BUCKET/PREFIX: objects there, reached with "
            "the AWS_* variables and fetched into --scratch-dir for each render)",
            default_text="./var/media",
        ),
        scratch_dir_flag(),
        Flag(
            "--max-concurrent",
            integer(minimum=1),
            os.cpu_count() or 1,
            "renders running at once",
            default_text="the CPU count",
        ),
        Flag(
            "--max-queue",
            integer(minimum=0),
            256,
            "renders waiting for a slot before RESOURCE_EXHAUSTED",
        ),
        Flag(
            "--stall-timeout",
            number(above=0),
            60.0,
            "seconds without progress before ffmpeg is killed",
        ),
        Flag(
            "--retention",
            number(minimum=0),
            3600.0,
            "seconds a finished render's events are kept",
        ),
        Flag(
            "--instance-id",
            INSTANCE_ID,
            None,
            "names this service in a pool and prefixes its partial files; must differ between "
            "services sharing an output directory",
            default_text="generated once, kept in the output directory per host and address",
        ),
        Flag(
            "--drain-timeout",
            number(minimum=0),
            DEFAULT_DRAIN_TIMEOUT_SECONDS,
            "seconds running renders get to finish after SIGTERM (new ones are refused); "
            "a second SIGTERM or SIGINT cuts it short",
        ),
        *server_tls_flags(),
        log_level_flag(),
        log_format_flag(),
        metrics_listen_flag(),
    ),
)


def config_from_flags(
    flags: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> RenderConfig:
    output: Location = flags.output_dir
    media: Location = flags.media_root
    stored = isinstance(output, S3Location) or isinstance(media, S3Location)
    return RenderConfig(
        listen=flags.listen,
        # With an object store: replaced by the scratch directory at start.
        output_dir=output.path if isinstance(output, LocalDirectory) else Path("renders"),
        output_store=output if isinstance(output, S3Location) else None,
        # With an object store: replaced by a folder of the scratch directory at start.
        media_root=media.path if isinstance(media, LocalDirectory) else Path("inputs"),
        media_store=media if isinstance(media, S3Location) else None,
        store_settings=StoreSettings.from_environ(environ) if stored else None,
        scratch_dir=flags.scratch_dir,
        max_concurrent=flags.max_concurrent,
        max_queue=flags.max_queue,
        stall_timeout=flags.stall_timeout,
        retention=flags.retention,
        instance_id=flags.instance_id or "",
        drain_timeout=flags.drain_timeout,
        tls=TlsFiles(cert=flags.tls_cert, key=flags.tls_key, ca=flags.tls_client_ca),
    )


async def log_ffmpeg_version(binary: str) -> None:
    """Which FFmpeg this service runs, for the log (not fatal: each render reports its own)."""
    try:
        run = await run_ffmpeg_captured(
            [binary, "-hide_banner", "-version"], FFMPEG_VERSION_SECONDS
        )
    except RenderFailure as failure:
        logger.warning("ffmpeg %s does not answer -version: %s", binary, failure.message)
        return
    version = run.stdout.splitlines()[0] if run.stdout else "an unknown version"
    logger.info("ffmpeg %s: %s", binary, version, extra={"ffmpeg_binary": binary})


async def serve(config: RenderConfig, metrics_listen: str = "") -> int:
    """``serve_render`` with the Prometheus metrics served at ``metrics_listen`` (empty: not)."""
    metrics_server: MetricsServer | None = None
    if metrics_listen:
        try:
            metrics_server = serve_metrics(metrics_listen, RENDER)
        except OSError as error:
            print(f"render_service: cannot start: metrics: {error}", file=sys.stderr, flush=True)
            return EXIT_USAGE
    try:
        return await serve_render(config)
    finally:
        if metrics_server is not None:
            await asyncio.to_thread(metrics_server.close)


async def serve_render(config: RenderConfig) -> int:
    """Serves until SIGTERM or SIGINT, then drains (``RenderServer.drain``) until the running
    renders have finished, the drain timeout has passed or a second signal came; the exit
    status."""
    drain, cut_short = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        (cut_short if drain.is_set() else drain).set()

    # Installed first: a signal during the start drains (at once) instead of killing.
    on_stop_signal(on_signal)
    watch_children_with_pidfd()
    try:
        render_server = await create_server(config)
    except (ValueError, OSError) as error:
        print(f"render_service: cannot start: {error}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except (ObjectStoreMisconfigured, ObjectStoreUnavailable) as refusal:
        print(f"render_service: cannot start: {refusal.message}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    try:
        set_replica(render_server.instance_id)
        await log_ffmpeg_version(config.ffmpeg)
        host = config.listen.rsplit(":", 1)[0]
        print(f"render_service listening on {host}:{render_server.port}", flush=True)
        await drain.wait()
        logger.info("draining: health NOT_SERVING, new renders refused")
        await render_server.drain(config.drain_timeout, cut_short)
        logger.info("stopping: ending what still runs")
    finally:
        # Whatever ends the service (a signal, or an error or a cancellation): what still runs
        # is ended (no ffmpeg outlives it) and the server stopped.
        await render_server.stop(config.shutdown_grace)
    logger.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    flags = FLAGS.parse_or_exit(argv, environ)
    configure_logging(flags.log_level, flags.log_format)
    configure_tracing("render_service", environ)
    return run_service(serve(config_from_flags(flags, environ), flags.metrics_listen))


if __name__ == "__main__":
    sys.exit(main())
