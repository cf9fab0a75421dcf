"""The gateway's configuration, filled from the command line / environment by __main__."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from videojob import limits
from videojob.endpoints import DEFAULT_EXPORT_ADDRESS
from videojob.grpc_setup import TlsFiles
from videojob.storage.location import S3Location
from videojob.storage.settings import StoreSettings

DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_HEARTBEAT_SECONDS = 15.0
DEFAULT_RPC_TIMEOUT_SECONDS = 10.0
DEFAULT_UPSTREAM_RETRY_SECONDS = 20.0
DEFAULT_MAX_EVENT_VIEWS = 256
DEFAULT_MAX_UPLOAD_BYTES = limits.DEFAULT_MAX_UPLOAD_BYTES
DEFAULT_MEDIA_ROOT = Path("./var/media")
DEFAULT_DOWNLOADS = "proxy"
DEFAULT_DOWNLOAD_LINK_SECONDS = 300


@dataclass(frozen=True)
class Settings:
    export_addr: str = DEFAULT_EXPORT_ADDRESS
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
    # How many different views (status filter, page size, extra job ids) GET /api/events
    # follows at once, each with one upstream WatchExports shared by its clients.
    max_event_views: int = DEFAULT_MAX_EVENT_VIEWS
    # Where uploads go: the render services' media root (shared storage).
    media_root: Path = DEFAULT_MEDIA_ROOT
    # --media-root s3://...: the media root is there instead (media_root is then unused).
    media_store: S3Location | None = None
    # The largest upload POST /api/media accepts (the JSON body limit does not apply to it).
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    # The render services' output directory when it is an object store: downloads of the
    # objects under it are served ("proxy": streamed through the gateway; "redirect": a
    # presigned link valid for download_link_seconds, computed per request).
    output_store: S3Location | None = None
    # How the object store (of media_store or output_store) is reached; None: from the AWS_*
    # variables.
    store_settings: StoreSettings | None = None
    downloads: str = DEFAULT_DOWNLOADS
    download_link_seconds: int = DEFAULT_DOWNLOAD_LINK_SECONDS
