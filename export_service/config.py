"""The export service's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from export_service.split_plan import SplitPolicy
from export_service.webhooks.settings import WebhookSettings
from videojob.endpoints import DEFAULT_EXPORT_ADDRESS, DEFAULT_RENDER_ADDRESS
from videojob.grpc_setup import TlsFiles
from videojob.limits import DEFAULT_MAX_PIXEL_RATE
from videojob.storage.location import S3Location
from videojob.storage.settings import StoreSettings

# The embedded default: a SQLite file under ./var.
DEFAULT_DATABASE = "sqlite:///var/export.db"
# How long a replica's hold on its jobs lasts without a renewal (see export_service.ownership).
DEFAULT_LEASE_TTL_SECONDS = 10.0
DEFAULT_ORPHAN_SWEEP_SECONDS = 300.0


@dataclass(frozen=True)
class TrackerSettings:
    # No render event (heartbeats included) for this long: the render is investigated.
    stall_timeout: float = 15.0
    # Render submissions per job: the first, plus one per resubmission of a lost render (the
    # render service restarted or shut down). Re-attaching to a known render is free.
    max_attempts: int = 5
    # Seconds the render service may stay unreachable (or keep failing calls) without a break
    # before the job fails RENDER_UNAVAILABLE. Any answer from it starts the budget afresh.
    retry_budget: float = 60.0
    # Seconds the render of a superseded attempt is asked to cancel (CancelRender at the render
    # service that attempt was placed on) while that one does not answer; then the release is
    # given up, noted on the job's attempt and never asked again, not at a later start either.
    # Minutes: a render service restarting in place answers well within it.
    release_budget: float = 600.0
    # Progress writes per job are coalesced to at most one per interval; terminal events never.
    progress_interval: float = 0.25
    backoff_initial: float = 0.5
    backoff_max: float = 10.0
    # Deadline of the unary render calls (GetRender, CancelRender).
    rpc_timeout: float = 5.0
    # Render calls in a row that brought no new event (silence, empty or broken streams) while
    # the render service still reports the render: after this many the job fails as stalled.
    max_quiet_rounds: int = 3
    # A render reported Completed but its file cannot be seen (yet): re-checked with backoff for
    # this long before the job fails. None: max(10 s, stall_timeout).
    output_wait: float | None = None
    # A render service of a pool that stays silent (or times out) this long while another one
    # could take the render: the job is resubmitted there (attempt + 1), well before the retry
    # budget runs out. A refused connection or NOT_FOUND fails over at once.
    failover_after: float = 15.0
    # A tracker that crashes (a bug, or a fault no rule foresaw) is started again from the job's
    # record after a backoff, this many times per job and process; one more crash fails the job
    # INTERNAL. A crash while the service stops is a handover, never counted.
    max_tracker_restarts: int = 3

    @property
    def output_wait_seconds(self) -> float:
        return self.output_wait if self.output_wait is not None else max(10.0, self.stall_timeout)


@dataclass(frozen=True)
class ExportConfig:
    listen: str = DEFAULT_EXPORT_ADDRESS
    # One render service, or a pool: a comma-separated list (dns:///name:port entries are
    # re-resolved periodically); see export_service.render_pool.
    render_addr: str = DEFAULT_RENDER_ADDRESS
    # The render services' shared output directory as this process sees it (None: it does not
    # see it): where the partial file of a render service that died is removed, and what the
    # orphan sweep judges file by file.
    render_output_dir: Path | None = None
    # The render services' output directory when it is an object store (--render-output-dir
    # s3://...): completed renders' objects are checked there before COMPLETED, and removed
    # with their jobs; ``store_settings`` says how it is reached.
    output_store: S3Location | None = None
    # The media root when it is an object store (--media-root s3://...): the orphan sweep
    # aborts the gateway's unfinished uploads there that its records disown.
    media_store: S3Location | None = None
    store_settings: StoreSettings | None = None
    # Seconds between the orphan sweep's passes over the stores and the directory above
    # (export_service.orphan_sweep); 0: no sweep.
    orphan_sweep_interval: float = DEFAULT_ORPHAN_SWEEP_SECONDS
    database: str = DEFAULT_DATABASE
    max_active_jobs: int = 1000
    # The output pixels per second (width x height x fps) a job may ask for; more is refused
    # at create (INVALID_ARGUMENT naming the frame rate's field).
    max_pixel_rate: int = DEFAULT_MAX_PIXEL_RATE
    # When a job is cut into parts rendered in parallel (export_service.split_plan).
    split: SplitPolicy = field(default_factory=SplitPolicy)
    tracker: TrackerSettings = field(default_factory=TrackerSettings)
    tls: TlsFiles = field(default_factory=TlsFiles)
    render_tls: TlsFiles = field(default_factory=TlsFiles)
    shutdown_grace: float = 5.0
    # Seconds a replica's heartbeat holds its jobs (export_service.ownership argues the default).
    lease_ttl: float = DEFAULT_LEASE_TTL_SECONDS
    # Finished jobs (and their files) are deleted this many seconds after they finished; None
    # keeps them.
    job_retention: float | None = None
    # Without a batched poll (SQLite), each watch re-reads the store at least this often even
    # without a notification (covers another process writing the same file); with one
    # (PostgreSQL), how often list watches (WatchExports) re-read.
    watch_poll_interval: float = 2.0
    # PostgreSQL: LISTEN for other replicas' changes (off: poll only, e.g. behind PgBouncer's
    # transaction pooling), and how often one query checks every watched job's version.
    change_notifications: bool = True
    change_poll_interval: float = 0.5
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
