"""The export service's settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from export_service.store.factory import DEFAULT_DATABASE
from videojob.grpc_setup import TlsFiles


@dataclass(frozen=True)
class TrackerSettings:
    # No render event (heartbeats included) for this long: the render is investigated.
    stall_timeout: float = 15.0
    max_attempts: int = 5
    # Progress writes per job are coalesced to at most one per interval; terminal events never.
    progress_interval: float = 0.25
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    # Deadline of the unary render calls (GetRender, CancelRender).
    rpc_timeout: float = 5.0
    # Render calls in a row that brought no new event (silence, empty or broken streams) while
    # the render service still reports the render: after this many the job fails as stalled.
    max_quiet_rounds: int = 3


@dataclass(frozen=True)
class ExportConfig:
    listen: str = "127.0.0.1:50052"
    render_addr: str = "127.0.0.1:50051"
    database: str = DEFAULT_DATABASE
    max_active_jobs: int = 1000
    tracker: TrackerSettings = field(default_factory=TrackerSettings)
    tls: TlsFiles = field(default_factory=TlsFiles)
    render_tls: TlsFiles = field(default_factory=TlsFiles)
    shutdown_grace: float = 5.0
    # WatchExport re-reads the store at least this often even without a notification
    # (covers writers in other processes sharing the database).
    watch_poll_interval: float = 2.0
