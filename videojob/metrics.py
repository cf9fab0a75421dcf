"""Every Prometheus metric of the three processes, defined once, and how each process serves them.

Each process has its own registry (``EXPORT``, ``RENDER``, ``GATEWAY``), so that it exposes only
what it measures. Names follow the Prometheus conventions: the ``videojob_`` prefix, ``_total``
on counters, ``_seconds`` on durations, base units. Label values are bounded: statuses, failure
codes (``failure_code_label``), transition names, event kinds, the tracker's questions and
observations under their operator names (export_service.tracking.activity_labels), HTTP methods,
route templates and status codes; never a job or render id, never a raw request path.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from videojob.limits import FAILURE_CODES

logger = logging.getLogger(__name__)

EXPORT = CollectorRegistry()
RENDER = CollectorRegistry()
GATEWAY = CollectorRegistry()

# Jobs take from a fraction of a second to hours.
JOB_SECONDS_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)
# An HTTP answer takes milliseconds; an upload or a download of a large file, minutes.
HTTP_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
STORE_WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
NO_FAILURE = ""
OTHER_FAILURE = "OTHER"

# Export service.

JOBS_CREATED = Counter(
    "videojob_jobs_created_total", "Jobs created by CreateExport.", registry=EXPORT
)
JOBS_FINISHED = Counter(
    "videojob_jobs_finished_total",
    "Jobs that reached a terminal status, by status and failure code (empty unless FAILED).",
    ["status", "code"],
    registry=EXPORT,
)
JOB_DURATION = Histogram(
    "videojob_job_duration_seconds",
    "From a job's creation to its terminal status, by that status.",
    ["status"],
    buckets=JOB_SECONDS_BUCKETS,
    registry=EXPORT,
)
JOB_QUEUED = Histogram(
    "videojob_job_queued_seconds",
    "From a job's creation to its first RUNNING state.",
    buckets=JOB_SECONDS_BUCKETS,
    registry=EXPORT,
)
JOBS_ACTIVE = Gauge(
    "videojob_jobs_active",
    "Non-terminal jobs this export process knows of, by status (queued or running).",
    ["status"],
    registry=EXPORT,
)
STORE_WRITE = Histogram(
    "videojob_store_write_seconds",
    "Time of one conditional job UPDATE in the job database, by transition.",
    ["change"],
    buckets=STORE_WRITE_BUCKETS,
    registry=EXPORT,
)
STORE_AVAILABLE = Gauge(
    "videojob_store_available",
    "1 while the job database answers, 0 while it does not.",
    registry=EXPORT,
)
RENDER_EVENTS_RECEIVED = Counter(
    "videojob_render_events_received_total",
    "Render events the trackers read from render services, by kind.",
    ["event"],
    registry=EXPORT,
)
TRACKER_QUESTIONS = Counter(
    "videojob_tracker_questions_total",
    "What the trackers asked or did, by question (render, watch_render, get_render, "
    "backoff_wait, write_completed...: docs/operations.md lists them).",
    ["question"],
    registry=EXPORT,
)
TRACKER_OBSERVATIONS = Counter(
    "videojob_tracker_observations_total",
    "What the trackers observed, by observation (render_event, stream_ended, retry_timer, "
    "render_call_failed_<grpc code>...: docs/operations.md lists them).",
    ["observation"],
    registry=EXPORT,
)
RENDER_REATTACHES = Counter(
    "videojob_render_reattaches_total",
    "WatchRender calls re-attaching to a known render, by the observation that led to it "
    "(an observation label of videojob_tracker_observations_total).",
    ["reason"],
    registry=EXPORT,
)
RENDER_RESUBMITS = Counter(
    "videojob_render_resubmits_total",
    "New attempts of a job's render (Render again), by the observation that led to it "
    "(an observation label of videojob_tracker_observations_total).",
    ["reason"],
    registry=EXPORT,
)
TRACKER_RETRIES = Counter(
    "videojob_tracker_retries_total",
    "Backoff waits before asking a render service again, by the observation that led to it "
    "(an observation label of videojob_tracker_observations_total).",
    ["reason"],
    registry=EXPORT,
)
TRACKER_CRASHES = Counter(
    "videojob_tracker_crashes_total",
    "Job trackers that raised an unexpected error, by what followed: retracked (tracked again "
    "from the job's record), handed_over (the service was stopping: the job's next owner "
    "tracks it), failed (it crashed too often: the job failed INTERNAL).",
    ["outcome"],
    registry=EXPORT,
)
TRACKER_CRASH_OUTCOMES = ("retracked", "handed_over", "failed")
for _outcome in TRACKER_CRASH_OUTCOMES:
    TRACKER_CRASHES.labels(_outcome)
RENDER_RELEASES_GIVEN_UP = Counter(
    "videojob_render_releases_given_up_total",
    "Superseded renders whose cancel at their render service was given up: it did not answer "
    "for --release-budget seconds (noted on the job's attempt, never asked again).",
    registry=EXPORT,
)
ORPHANS_REMOVED = Counter(
    "videojob_orphans_removed_total",
    "Objects, unfinished uploads and files the orphan sweep removed, by kind: output_object, "
    "output_upload and output_file (under --render-output-dir, an s3:// location or a "
    "directory: no job's record claims them), media_upload (the "
    "gateway's unfinished uploads under --media-root whose record is gone or whose name is "
    "stored already).",
    ["kind"],
    registry=EXPORT,
)
ORPHAN_KINDS = ("output_object", "output_upload", "output_file", "media_upload")
for _kind in ORPHAN_KINDS:
    ORPHANS_REMOVED.labels(_kind)
PROGRESS_COALESCED = Counter(
    "videojob_progress_coalesced_total",
    "Progress events replaced by a newer one of the same job before being written.",
    registry=EXPORT,
)
EXPORT_WATCHERS = Gauge(
    "videojob_export_watchers",
    "Open WatchExport (job) and WatchExports (list) streams, and waiting WaitOperation calls "
    "(operation).",
    ["watch"],
    registry=EXPORT,
)
LEASE_TAKEOVERS = Counter(
    "videojob_lease_takeovers_total",
    "Jobs this export process claimed, by reason: expired (its owner's lease ran out), "
    "handed_back (no owner: released by a replica that stopped, or never owned), restart "
    "(the only replica of an exclusive database takes its predecessor's jobs at its start).",
    ["reason"],
    registry=EXPORT,
)
TAKEOVER_REASONS = ("expired", "handed_back", "restart")
for _reason in TAKEOVER_REASONS:
    LEASE_TAKEOVERS.labels(_reason)
WEBHOOK_ATTEMPTS = Counter(
    "videojob_webhook_attempts_total",
    "Webhook delivery attempts this export process made, by outcome: delivered (a 2xx answer), "
    "retry (another answer, no answer, a refused destination: tried again later), gone (410: "
    "given up at once), gave_up (the retry period ran out).",
    ["outcome"],
    registry=EXPORT,
)
WEBHOOK_OUTCOMES = ("delivered", "retry", "gone", "gave_up")
for _outcome in WEBHOOK_OUTCOMES:
    WEBHOOK_ATTEMPTS.labels(_outcome)
WEBHOOKS_GAVE_UP = Counter(
    "videojob_webhooks_gave_up_total",
    "Webhook deliveries given up (410 Gone, or no 2xx answer within --webhook-retry-for): "
    "their state is gave_up in the job's deliveries.",
    registry=EXPORT,
)
WEBHOOK_DELIVERY_SECONDS = Histogram(
    "videojob_webhook_delivery_seconds",
    "From the change a webhook tells of being recorded to its delivery (a 2xx answer).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400),
    registry=EXPORT,
)
RENDER_SERVICE_UP = Gauge(
    "videojob_render_service_up",
    "1 while the render service answers its health check, 0 while it does not.",
    registry=EXPORT,
)

# Render service.

RENDERS = Gauge(
    "videojob_renders",
    "Renders this render service holds that are not finished, by state (running or queued).",
    ["state"],
    registry=RENDER,
)
RENDER_MAX_CONCURRENT = Gauge(
    "videojob_render_max_concurrent",
    "Renders this render service runs at once.",
    registry=RENDER,
)
RENDER_MAX_QUEUE = Gauge(
    "videojob_render_max_queue",
    "Renders this render service lets wait for a slot.",
    registry=RENDER,
)
RENDER_DRAINING = Gauge(
    "videojob_render_draining",
    "1 while this render service drains (takes no new renders).",
    registry=RENDER,
)
FFMPEG_PROCESSES = Gauge(
    "videojob_ffmpeg_processes",
    "FFmpeg processes started by this render service and not yet reaped.",
    registry=RENDER,
)
RENDER_EVENTS = Counter(
    "videojob_render_events_total",
    "Events this render service recorded, by kind (progress, completed, failed, cancelled).",
    ["event"],
    registry=RENDER,
)
RENDERS_FINISHED = Counter(
    "videojob_renders_finished_total",
    "Renders that ended, by outcome and failure code (empty unless failed).",
    ["outcome", "code"],
    registry=RENDER,
)
RENDER_EVENTS_DROPPED = Counter(
    "videojob_render_watcher_events_dropped_total",
    "Progress events dropped for a watcher that fell behind (it gets the newest instead).",
    registry=RENDER,
)

# Gateway.

SSE_SUBSCRIBERS = Gauge(
    "videojob_sse_subscribers",
    "Open event streams, by stream (job: /api/jobs/{id}/events, list: /api/events).",
    ["stream"],
    registry=GATEWAY,
)
GATEWAY_UPSTREAM_WATCHES = Gauge(
    "videojob_gateway_upstream_watches",
    "WatchExport (job) and WatchExports (list) calls the gateway holds open.",
    ["watch"],
    registry=GATEWAY,
)
SSE_COALESCED = Counter(
    "videojob_sse_events_coalesced_total",
    "Job states replaced by a newer one before a slow event stream client took them.",
    ["stream"],
    registry=GATEWAY,
)

HTTP_REQUESTS = Counter(
    "videojob_http_requests_total",
    "HTTP requests the gateway answered, by method, route template (unmatched: no route) and "
    "status code; an event stream is counted when its response starts.",
    ["method", "route", "code"],
    registry=GATEWAY,
)
HTTP_REQUEST_DURATION = Histogram(
    "videojob_http_request_duration_seconds",
    "Time the gateway took to answer, by method and route template: until the response's last "
    "byte, except for event streams (text/event-stream), measured until their response starts "
    "(a stream stays open for as long as its client reads it).",
    ["method", "route"],
    buckets=HTTP_SECONDS_BUCKETS,
    registry=GATEWAY,
)


def failure_code_label(code: str) -> str:
    """A failure code as a label value: one of the known codes, else OTHER."""
    if not code:
        return NO_FAILURE
    return code if code in FAILURE_CODES else OTHER_FAILURE


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in the text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


@dataclass
class MetricsServer:
    """A metrics endpoint on its own thread (``GET /metrics``, any path answers)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def serve_metrics(listen: str, registry: CollectorRegistry) -> MetricsServer:
    """Serves ``registry`` on ``listen`` (``HOST:PORT``; port 0 picks one). ``OSError`` when
    the address cannot be bound."""
    host, _, port = listen.rpartition(":")
    server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    metrics = MetricsServer(server, thread)
    logger.info("metrics on http://%s:%d/metrics", host, metrics.port)
    return metrics
