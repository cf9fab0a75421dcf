"""``python -m gateway --listen HOST:PORT --export-addr HOST:PORT``: serve the HTTP gateway.

uvicorn's server is the only owner of SIGINT/SIGTERM. On either it stops accepting, ends every
event stream at once (clients resume elsewhere with ``Last-Event-ID``), gives the other open
responses a short grace, runs the lifespan shutdown and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from gateway.app import create_app
from gateway.settings import (
    DEFAULT_DOWNLOAD_LINK_SECONDS,
    DEFAULT_DOWNLOADS,
    DEFAULT_HEARTBEAT_SECONDS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_EVENT_VIEWS,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_MEDIA_ROOT,
    DEFAULT_RPC_TIMEOUT_SECONDS,
    DEFAULT_UPSTREAM_RETRY_SECONDS,
    Settings,
)
from gateway.stored_download import DOWNLOAD_MODES
from videojob.endpoints import DEFAULT_GATEWAY_ADDRESS
from videojob.errors import ObjectStoreMisconfigured, ObjectStoreUnavailable
from videojob.flags import (
    BOOLEAN,
    EXIT_USAGE,
    Flag,
    FlagTable,
    choice,
    client_tls_flags,
    integer,
    listen_address,
    location,
    log_format_flag,
    log_level_flag,
    number,
    store_public_endpoint_flag,
    target_addresses,
    text,
)
from videojob.grpc_setup import TlsFiles
from videojob.logging_setup import configure_logging
from videojob.storage.location import LocalDirectory, Location, S3Location
from videojob.storage.settings import StoreSettings
from videojob.tracing import configure_tracing

logger = logging.getLogger("gateway")

GRACEFUL_SHUTDOWN_SECONDS = 3

FLAGS = FlagTable(
    prog="python -m gateway",
    env_prefix="GATEWAY_",
    description="Serves the HTTP API, its event streams and the page over the export service.",
    flags=(
        Flag("--listen", listen_address(), DEFAULT_GATEWAY_ADDRESS, "address to serve on"),
        Flag(
            "--export-addr",
            target_addresses(),
            Settings().export_addr,
            "the export service's address, or its replicas' as a comma-separated list: calls "
            "go round-robin to those serving, a broken event stream resumes on another",
        ),
        *client_tls_flags("export", "the export service"),
        Flag(
            "--api-token",
            text("TOKEN"),
            None,
            "require 'Authorization: Bearer TOKEN' on /api routes",
        ),
        Flag(
            "--cors-origin",
            text("ORIGIN"),
            (),
            "allow this browser origin; CORS is off otherwise",
            repeatable=True,
        ),
        Flag(
            "--max-body-bytes",
            integer(minimum=1),
            DEFAULT_MAX_BODY_BYTES,
            "largest request body accepted",
        ),
        Flag(
            "--heartbeat-seconds",
            number(above=0),
            DEFAULT_HEARTBEAT_SECONDS,
            "keep-alive comment interval on event streams",
        ),
        Flag(
            "--rpc-timeout-seconds",
            number(above=0),
            DEFAULT_RPC_TIMEOUT_SECONDS,
            "deadline of each call to the export service",
        ),
        Flag(
            "--upstream-retry-seconds",
            number(minimum=0),
            DEFAULT_UPSTREAM_RETRY_SECONDS,
            "how long an event stream's broken WatchExport is re-opened before the stream ends",
        ),
        Flag(
            "--max-event-views",
            integer(minimum=1),
            DEFAULT_MAX_EVENT_VIEWS,
            "how many different views /api/events follows at once (one upstream watch each)",
        ),
        Flag(
            "--media-root",
            location(),
            LocalDirectory(DEFAULT_MEDIA_ROOT),
            "the render services' media root: uploads are written here (s3://BUCKET/PREFIX: "
            "stored there, reached with the AWS_* variables)",
        ),
        Flag(
            "--render-output-dir",
            location(),
            None,
            "the render services' output directory when it is an object store (s3://, their "
            "--output-dir): downloads of the jobs' objects are served from it (the AWS_* "
            "variables say how to reach it)",
            default_text="none: outputs are files this gateway reads by their path",
        ),
        Flag(
            "--downloads",
            choice(*DOWNLOAD_MODES),
            DEFAULT_DOWNLOADS,
            "how an output in an object store is downloaded: proxy streams it through the "
            "gateway (Range works), redirect answers 302 with a presigned link to the store "
            "(computed per request; the client must reach the store, see "
            "--store-public-endpoint)",
        ),
        Flag(
            "--download-link-seconds",
            integer(minimum=1, maximum=7 * 24 * 3600),
            DEFAULT_DOWNLOAD_LINK_SECONDS,
            "how long a presigned download link is valid (--downloads redirect)",
        ),
        store_public_endpoint_flag(),
        Flag(
            "--max-upload-bytes",
            integer(minimum=1),
            DEFAULT_MAX_UPLOAD_BYTES,
            "largest upload POST /api/media accepts",
        ),
        Flag(
            "--access-log",
            BOOLEAN,
            False,
            "log one record per request (logger uvicorn.access: the client, method, path and "
            "status code)",
        ),
        log_level_flag(),
        log_format_flag(),
    ),
)


def settings_from_flags(
    flags: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> Settings:
    media: Location = flags.media_root
    output: Location | None = flags.render_output_dir
    stored = isinstance(media, S3Location) or isinstance(output, S3Location)
    return Settings(
        export_addr=flags.export_addr,
        export_tls=TlsFiles(
            cert=flags.export_tls_cert, key=flags.export_tls_key, ca=flags.export_tls_ca
        ),
        api_token=flags.api_token,
        cors_origins=flags.cors_origin,
        max_body_bytes=flags.max_body_bytes,
        heartbeat_seconds=flags.heartbeat_seconds,
        rpc_timeout_seconds=flags.rpc_timeout_seconds,
        upstream_retry_seconds=flags.upstream_retry_seconds,
        max_event_views=flags.max_event_views,
        media_root=media.path if isinstance(media, LocalDirectory) else DEFAULT_MEDIA_ROOT,
        media_store=media if isinstance(media, S3Location) else None,
        max_upload_bytes=flags.max_upload_bytes,
        output_store=output if isinstance(output, S3Location) else None,
        store_settings=(
            StoreSettings.from_environ(environ, public_endpoint=flags.store_public_endpoint)
            if stored
            else None
        ),
        downloads=flags.downloads,
        download_link_seconds=flags.download_link_seconds,
    )


async def check_stores(settings: Settings) -> str | None:
    """Why an object store (of the media root or of downloads) cannot be used (one line naming
    the flag or variable), or None when they can (or there is none)."""
    checks = [
        (settings.media_store, "--media-root"),
        (settings.output_store, "--render-output-dir"),
    ]
    wanted = [(location, flag) for location, flag in checks if location is not None]
    if not wanted:
        return None
    from videojob.storage.object_store import ObjectStore  # aiobotocore: only when used

    try:
        async with ObjectStore(settings.store_settings or StoreSettings.from_environ()) as store:
            for location, flag in wanted:
                await store.check(location, flag=flag)
    except (ObjectStoreMisconfigured, ObjectStoreUnavailable) as error:
        return error.message
    return None


def split_host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
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


class GatewayServer(uvicorn.Server):
    """Prints ``gateway listening on HOST:PORT`` (the bound port) once the app is up, and
    ends the app's event streams as soon as shutdown begins: they never end by themselves,
    so waiting for them would only run out the grace period and cut them."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit or not self.servers:
            return
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        print(f"gateway listening on {host}:{port}", flush=True)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn's own handler also records the signal to raise it again once shut down, so
        # the process would die by it; here a stop signal is handled in full and the process
        # exits 0, as the other services do. A second SIGINT still forces the exit.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop accepting first, so that no client resumes its stream on this process.
        for server in self.servers:
            server.close()
        # The lifespan knows what streams there are (gateway.app); None: it never started.
        end_event_streams: Callable[[], Awaitable[None]] | None = getattr(
            self._app.state, "end_event_streams", None
        )
        if end_event_streams is not None:
            await end_event_streams()
        await super().shutdown(sockets)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    flags = FLAGS.parse_or_exit(argv, environ)
    configure_logging(flags.log_level, flags.log_format)
    logging.getLogger("uvicorn.access").addFilter(RedactAccessToken())
    settings = settings_from_flags(flags, environ)
    refused = asyncio.run(check_stores(settings))
    if refused is not None:
        print(f"gateway: cannot start: {refused}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    app = create_app(settings)
    served: ASGIApp = app
    if configure_tracing("gateway", environ):
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        served = OpenTelemetryMiddleware(app, excluded_urls="/metrics,/livez,/readyz,/healthz")
    host, port = split_host_port(flags.listen)
    config = uvicorn.Config(
        served,
        host=host,
        port=port,
        log_config=None,
        access_log=flags.access_log,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        server_header=False,
    )
    server = GatewayServer(config, app)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
