"""The render service's settings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from videojob.endpoints import DEFAULT_RENDER_ADDRESS
from videojob.ffmpeg_binary import ffmpeg_binary
from videojob.grpc_setup import TlsFiles
from videojob.limits import DEFAULT_DRAIN_TIMEOUT_SECONDS
from videojob.storage.location import S3Location
from videojob.storage.settings import StoreSettings


@dataclass(frozen=True)
class RenderConfig:
    # Where renders are written and verified: the output directory itself, or with an object
    # store as the output directory (``output_store``), the private scratch directory.
    output_dir: Path
    media_root: Path
    # ``--output-dir s3://...``: finished files are uploaded there, then removed from
    # ``output_dir`` (the scratch directory; create_server sets it).
    output_store: S3Location | None = None
    # ``--media-root s3://...``: inputs are objects there, and media_root is where renders fetch
    # them (under the scratch directory; create_server sets it).
    media_store: S3Location | None = None
    # How the object store is reached (None: from the AWS_* variables).
    store_settings: StoreSettings | None = None
    # This service's private work directory (never shared); None: a fresh one under the
    # system's temporary directory, made at start and removed at stop (render_service.own_scratch).
    scratch_dir: Path | None = None
    listen: str = DEFAULT_RENDER_ADDRESS
    max_concurrent: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_queue: int = 256
    stall_timeout: float = 60.0
    retention: float = 3600.0
    tls: TlsFiles = field(default_factory=TlsFiles)
    # Empty: the id kept in the output directory for this host and address (see instance.py).
    instance_id: str = ""
    # Seconds a draining service (SIGTERM) gives its running renders before failing them.
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT_SECONDS
    # A heartbeat goes out after this much silence; the contract is one at least every 2 s.
    heartbeat_after: float = 1.0
    max_retained_events: int = 2000
    max_pending_per_watcher: int = 64
    shutdown_grace: float = 5.0
    # The FFmpeg executable every render and probe runs (FFMPEG_BINARY, else PATH's, else the
    # imageio-ffmpeg wheel's).
    ffmpeg: str = field(default_factory=ffmpeg_binary)
