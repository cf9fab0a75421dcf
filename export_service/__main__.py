"""python -m export_service --listen HOST:PORT --render-addr HOST:PORT --database URL"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Mapping, Sequence

import uvloop

from export_service.config import DEFAULT_DATABASE, ExportConfig, TrackerSettings
from export_service.server import create_server
from export_service.split_plan import SplitPolicy
from export_service.store import open_store
from export_service.store.base import default_writer
from export_service.store.outbox import NotifyEvents
from export_service.webhooks.settings import WebhookSettings
from videojob.errors import ObjectStoreMisconfigured, ObjectStoreUnavailable
from videojob.flags import (
    BOOLEAN,
    EXIT_USAGE,
    Flag,
    FlagTable,
    choice,
    client_tls_flags,
    http_url,
    integer,
    listen_address,
    location,
    log_format_flag,
    log_level_flag,
    metrics_listen_flag,
    number,
    path,
    server_tls_flags,
    target_addresses,
    text,
    webhook_secret,
)
from videojob.grpc_setup import TlsFiles
from videojob.limits import MAX_SPLIT_PARTS
from videojob.logging_setup import configure_logging, set_replica
from videojob.metrics import EXPORT, MetricsServer, serve_metrics
from videojob.stop_signals import run_service, stop_signalled
from videojob.storage.location import LocalDirectory, S3Location
from videojob.storage.settings import StoreSettings
from videojob.tracing import configure_tracing

logger = logging.getLogger("export_service")

_DEFAULTS = ExportConfig()
_TRACKER = TrackerSettings()
_WEBHOOKS = WebhookSettings()
_SPLIT = SplitPolicy()

FLAGS = FlagTable(
    prog="python -m export_service",
    env_prefix="EXPORT_",
    description="Owns every VideoJob: stores it, drives its render, reports it truthfully.",
    flags=(
        Flag(
            "--listen",
            listen_address(),
            _DEFAULTS.listen,
            "address to serve on (port 0 picks one)",
        ),
        Flag(
            "--render-addr",
            target_addresses(),
            _DEFAULTS.render_addr,
            "the render service's address, or a pool of them: a comma-separated list (a "
            "dns:///NAME:PORT entry stands for every address the name resolves to, resolved "
            "again every 30 s); each job's render is placed on the least loaded of two "
            "healthy ones and every call for it goes to that one",
        ),
        Flag(
            "--failover-after",
            number(above=0),
            _TRACKER.failover_after,
            "seconds a render service of a pool may stay silent or time out before its jobs are "
            "resubmitted on another one (one that refuses connections or no longer knows the "
            "render: at once); a pool of one waits out the retry budget instead",
        ),
        Flag(
            "--render-output-dir",
            location(),
            None,
            "the render services' output directory as this process sees it, if it does: the "
            "partial file of a render service that died is removed here when its render is "
            "resubmitted elsewhere, and the orphan sweep removes the render outputs no job's "
            "record claims; an s3:// location (the render services' --output-dir) is "
            "where completed renders' objects are checked before COMPLETED and removed with "
            "their jobs (the AWS_* variables say how to reach it)",
            default_text="not seen: a dead render service's partial file is left to its restart",
        ),
        Flag(
            "--media-root",
            location(),
            None,
            "the media root of the render services and the gateway (their --media-root), when "
            "it is an s3:// location: the orphan sweep aborts the gateway's unfinished uploads "
            "there whose record is gone or whose name is stored already (a directory: nothing "
            "is swept there)",
            default_text="not swept",
        ),
        Flag(
            "--orphan-sweep-interval",
            number(minimum=0),
            _DEFAULTS.orphan_sweep_interval,
            "seconds between passes of the orphan sweep over --render-output-dir (an s3:// "
            "location or a directory) and the s3:// --media-root: objects, unfinished uploads "
            "and files named like a render's output that no job's record claims are removed, "
            "decided from the records, never by age (so those locations must be this job "
            "database's alone); 0 turns it off",
        ),
        Flag(
            "--database",
            text("URL"),
            DEFAULT_DATABASE,
            "sqlite:///path (or a bare path), or postgresql://USER@HOST:PORT/DB (several export "
            "processes may share one PostgreSQL database)",
        ),
        Flag(
            "--stall-timeout",
            number(above=0),
            _TRACKER.stall_timeout,
            "seconds without a render event before the render is investigated",
        ),
        Flag(
            "--max-attempts",
            integer(minimum=1),
            _TRACKER.max_attempts,
            "render submissions per job (the first plus resubmissions of a lost render, e.g. "
            "after a render service restart) before it fails RENDER_LOST; re-attaching to a "
            "render the render service still knows is free",
        ),
        Flag(
            "--retry-budget",
            number(minimum=0),
            _TRACKER.retry_budget,
            "seconds the render service may stay unreachable without a break before a job fails "
            "RENDER_UNAVAILABLE (asked again with backoff meanwhile; also how long the clean-up "
            "of a failed or cancelled job's render is retried)",
        ),
        Flag(
            "--release-budget",
            number(minimum=0),
            _TRACKER.release_budget,
            "seconds the render of a superseded attempt (its job moved to another attempt) is "
            "asked to cancel at the render service it was placed on while that one does not "
            "answer; then the release is given up, noted on the job's attempt and never asked "
            "again, not after a restart either",
        ),
        Flag(
            "--output-wait",
            number(minimum=0),
            _TRACKER.output_wait,
            "seconds a completed render's file that cannot be seen is re-checked before the job "
            "fails VERIFICATION_FAILED",
            default_text="max(10, the stall timeout)",
        ),
        Flag(
            "--progress-interval",
            number(minimum=0),
            _TRACKER.progress_interval,
            "minimum seconds between progress writes of one job",
        ),
        Flag(
            "--max-active-jobs",
            integer(minimum=1),
            _DEFAULTS.max_active_jobs,
            "queued + running jobs accepted before CreateExport answers RESOURCE_EXHAUSTED",
        ),
        Flag(
            "--max-pixel-rate",
            integer(minimum=1),
            _DEFAULTS.max_pixel_rate,
            "output pixels per second (width x height x frames per second) a job may ask for; "
            "more is refused at create naming its frame rate (output.fps, or the test "
            "pattern's). The default is 8K at 30 fps (4K at 120 fps, 1080p at 240 fps)",
        ),
        Flag(
            "--split-min-seconds",
            number(minimum=0),
            _SPLIT.min_seconds,
            "the shortest output a job that leaves output.split.parts at 0 is split for: its "
            "parts are rendered in parallel on the pool's free render slots, then joined. "
            "Shorter outputs render whole (the join and the parts' checks would cost more than "
            "they save); a pool of one render service, or one slot free, never splits",
        ),
        Flag(
            "--split-max-parts",
            integer(2, MAX_SPLIT_PARTS),
            _SPLIT.max_parts,
            "the most parts a job is split into; a job asking for more (output.split.parts) is "
            "refused at create naming the field",
        ),
        Flag(
            "--split-part-seconds",
            number(above=0),
            _SPLIT.part_seconds,
            "about how long each part of a split the policy makes is: a longer output gets more "
            "parts (at least two), up to the free render slots and --split-max-parts",
        ),
        Flag(
            "--job-retention",
            number(above=0),
            _DEFAULTS.job_retention,
            "seconds after a job finished (completed, failed or cancelled) when it is deleted "
            "with its history and its output file, swept in batches; not the render service's "
            "--retention (how long it remembers a render's events)",
            default_text="off: finished jobs are kept until deleted",
        ),
        Flag(
            "--backoff-initial",
            number(above=0),
            _TRACKER.backoff_initial,
            "first retry delay in seconds (doubles per retry, with jitter)",
        ),
        Flag("--backoff-max", number(above=0), _TRACKER.backoff_max, "largest retry delay"),
        Flag(
            "--change-notifications",
            BOOLEAN,
            _DEFAULTS.change_notifications,
            "PostgreSQL: hear other replicas' job changes at once by LISTEN/NOTIFY (off: by the "
            "poll alone, e.g. behind PgBouncer's transaction pooling)",
        ),
        Flag(
            "--change-poll-interval",
            number(above=0),
            _DEFAULTS.change_poll_interval,
            "PostgreSQL: seconds between the checks of every watched job's version (one query), "
            "which catch a change whose notification was lost",
        ),
        Flag(
            "--lease-ttl",
            number(above=0),
            _DEFAULTS.lease_ttl,
            "seconds this replica's jobs stay its own without a heartbeat (renewed every third "
            "of it); after a crash another replica takes them over this long later and "
            "re-attaches to their renders. Short enough that a dead replica's jobs move on "
            "quickly, long enough that a busy event loop or a GC pause never costs a lease",
        ),
        Flag(
            "--shutdown-grace",
            number(minimum=0),
            _DEFAULTS.shutdown_grace,
            "seconds open calls get on SIGTERM",
        ),
        Flag(
            "--webhook-url",
            http_url(),
            (),
            "an operator's webhook endpoint: every job created while it is set tells it of "
            "its changes (--webhook-events), signed with --webhook-secret",
            repeatable=True,
            requires=("--webhook-secret",),
        ),
        Flag(
            "--webhook-events",
            choice("terminal", "all"),
            _WEBHOOKS.events.value,
            "which changes the --webhook-url endpoints are told of: the terminal state, or "
            "every status change",
        ),
        Flag(
            "--webhook-secret",
            webhook_secret(),
            None,
            "the Standard Webhooks secret that signs the --webhook-url deliveries (better given "
            "by its variable than on the command line)",
        ),
        Flag(
            "--webhook-allow-private",
            BOOLEAN,
            _WEBHOOKS.allow_private,
            "allow webhook destinations that resolve to loopback, private or link-local "
            "addresses (refused otherwise, at create and before every attempt)",
        ),
        Flag(
            "--webhook-ca",
            path("PEM"),
            None,
            "a CA that verifies https:// webhook receivers besides the system's (a private "
            "network's own)",
        ),
        Flag(
            "--webhook-timeout",
            number(above=0),
            _WEBHOOKS.timeout,
            "seconds one webhook attempt may take (connect, send, answer)",
        ),
        Flag(
            "--webhook-retry-for",
            number(above=0),
            _WEBHOOKS.retry_for,
            "seconds a webhook delivery is tried again (exponential backoff with jitter, "
            "Retry-After respected) after the change it tells of; then it is given up",
        ),
        Flag(
            "--webhook-backoff-max",
            number(above=0),
            _WEBHOOKS.backoff_max,
            "the longest wait between two attempts of a webhook delivery, in seconds",
        ),
        Flag(
            "--webhook-concurrency",
            integer(1, 1000),
            _WEBHOOKS.concurrency,
            "webhook attempts this replica makes at once",
        ),
        Flag(
            "--webhook-per-endpoint",
            integer(1, 1000),
            _WEBHOOKS.per_endpoint,
            "webhook attempts in flight at once to one endpoint (scheme, host and port), over "
            "all replicas: a receiver that hangs holds no more, other endpoints get the rest",
        ),
        *server_tls_flags(),
        *client_tls_flags("render", "the render service"),
        log_level_flag(),
        log_format_flag(),
        metrics_listen_flag(),
    ),
)


def config_from_flags(
    flags: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> ExportConfig:
    return ExportConfig(
        listen=flags.listen,
        render_addr=flags.render_addr,
        render_output_dir=(
            flags.render_output_dir.path
            if isinstance(flags.render_output_dir, LocalDirectory)
            else None
        ),
        output_store=(
            flags.render_output_dir if isinstance(flags.render_output_dir, S3Location) else None
        ),
        media_store=flags.media_root if isinstance(flags.media_root, S3Location) else None,
        store_settings=(
            StoreSettings.from_environ(environ)
            if isinstance(flags.render_output_dir, S3Location)
            or isinstance(flags.media_root, S3Location)
            else None
        ),
        orphan_sweep_interval=flags.orphan_sweep_interval,
        database=flags.database,
        max_active_jobs=flags.max_active_jobs,
        max_pixel_rate=flags.max_pixel_rate,
        split=SplitPolicy(
            min_seconds=flags.split_min_seconds,
            max_parts=flags.split_max_parts,
            part_seconds=flags.split_part_seconds,
        ),
        job_retention=flags.job_retention,
        tracker=TrackerSettings(
            stall_timeout=flags.stall_timeout,
            max_attempts=flags.max_attempts,
            retry_budget=flags.retry_budget,
            release_budget=flags.release_budget,
            output_wait=flags.output_wait,
            progress_interval=flags.progress_interval,
            backoff_initial=flags.backoff_initial,
            backoff_max=flags.backoff_max,
            failover_after=flags.failover_after,
        ),
        tls=TlsFiles(cert=flags.tls_cert, key=flags.tls_key, ca=flags.tls_client_ca),
        render_tls=TlsFiles(
            cert=flags.render_tls_cert, key=flags.render_tls_key, ca=flags.render_tls_ca
        ),
        shutdown_grace=flags.shutdown_grace,
        lease_ttl=flags.lease_ttl,
        change_notifications=flags.change_notifications,
        change_poll_interval=flags.change_poll_interval,
        webhooks=WebhookSettings(
            urls=flags.webhook_url,
            events=NotifyEvents(flags.webhook_events),
            secret=flags.webhook_secret or "",
            allow_private=flags.webhook_allow_private,
            ca=flags.webhook_ca,
            timeout=flags.webhook_timeout,
            retry_for=flags.webhook_retry_for,
            backoff_max=flags.webhook_backoff_max,
            concurrency=flags.webhook_concurrency,
            per_endpoint=flags.webhook_per_endpoint,
        ),
    )


async def serve(config: ExportConfig, metrics_listen: str = "") -> int:
    """Serves until SIGTERM or SIGINT; the exit status. ``metrics_listen``: where Prometheus
    metrics are served (empty: nowhere)."""
    metrics_server: MetricsServer | None = None
    if metrics_listen:
        try:
            metrics_server = serve_metrics(metrics_listen, EXPORT)
        except OSError as error:
            print(f"export_service: cannot start: metrics: {error}", file=sys.stderr, flush=True)
            return EXIT_USAGE
    try:
        return await _serve(config)
    finally:
        if metrics_server is not None:
            await asyncio.to_thread(metrics_server.close)


async def _serve(config: ExportConfig) -> int:
    try:
        store = await open_store(config.database, default_writer("export_service"))
    except (ValueError, OSError) as error:
        print(f"export_service: cannot start: {error}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    try:
        export = await create_server(config, store)
    except (ValueError, OSError) as error:
        await store.close()
        print(f"export_service: cannot start: {error}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except (ObjectStoreMisconfigured, ObjectStoreUnavailable) as error:
        await store.close()
        print(f"export_service: cannot start: {error.message}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    try:
        host = config.listen.rsplit(":", 1)[0]
        print(f"export_service listening on {host}:{export.port}", flush=True)
        await stop_signalled()
        logger.info("shutting down")
    finally:
        # Whatever ends the wait (a signal, or an error or a cancellation): stopped as on a
        # signal (trackers, watch streams, the server, the store).
        await export.stop(config.shutdown_grace)
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    flags = FLAGS.parse_or_exit(argv, environ)
    configure_logging(flags.log_level, flags.log_format)
    set_replica(default_writer("export_service"))
    configure_tracing("export_service", environ)
    # uvloop, as the gateway's: the tracking of many renders is CPU-bound on the event loop
    # (docs/performance.md, tracking).
    return run_service(
        serve(config_from_flags(flags, environ), flags.metrics_listen),
        loop_factory=uvloop.new_event_loop,
    )


if __name__ == "__main__":
    sys.exit(main())
