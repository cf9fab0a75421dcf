"""Every limit and enumeration of the API, written once.

The gateway's OpenAPI document, its JSON-Schema check of request bodies, the spec validation
shared by both services and the export service's request checks all read these values, so what
is documented is what is enforced. Failure codes come from the ``FailureCode`` proto enum
(protos/videojob/render/v1/failure.proto); the wire carries their names as strings.
"""

from __future__ import annotations

from typing import Final

from videojob.export.v1 import export_pb2
from videojob.render.v1 import failure_pb2

# --- Identifiers -------------------------------------------------------------------------------

# A request id is what the gateway's Idempotency-Key becomes: one limit on both sides.
MAX_REQUEST_ID_LENGTH: Final = 200
# Job ids are generated (32 hex digits); a longer one cannot name a job.
MAX_JOB_ID_LENGTH: Final = 128
# The export service uses the job id as the render id.
MAX_RENDER_ID_LENGTH: Final = MAX_JOB_ID_LENGTH
# A render service's --instance-id (it prefixes that service's partial file names).
MAX_INSTANCE_ID_LENGTH: Final = 64
# A job's version as an SSE event id (Last-Event-ID): at most this many decimal digits.
MAX_VERSION_DIGITS: Final = 18

# --- Listing -----------------------------------------------------------------------------------

# gRPC ListExports: page_size 0 means the default; a larger one is clamped to the maximum.
DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 500
# HTTP GET /api/jobs?limit=: refused outside 1..MAX_LIST_LIMIT.
DEFAULT_LIST_LIMIT: Final = 20
MAX_LIST_LIMIT: Final = 100
# HTTP GET /api/jobs/{id}/history?limit=: refused outside 1..MAX_HISTORY_LIMIT (a page of
# ListJobHistory, whose own maximum it is).
DEFAULT_HISTORY_LIMIT: Final = 100
MAX_HISTORY_LIMIT: Final = MAX_PAGE_SIZE
# gRPC WatchExports ids, and the HTTP GET /api/events?ids= list: at most this many job ids.
MAX_WATCH_IDS: Final = 200

# --- Uploads (gateway POST /api/media) -------------------------------------------------------

DEFAULT_MAX_UPLOAD_BYTES: Final = 1024 * 1024 * 1024

# --- RenderSpec bounds -------------------------------------------------------------------------

MIN_DURATION_SECONDS: Final = 0.1
MAX_DURATION_SECONDS: Final = 4 * 3600.0
MIN_FPS: Final = 1.0
MAX_FPS: Final = 240.0
MAX_WIDTH: Final = 7680
MAX_HEIGHT: Final = 4320
# yuv420p encoders need even dimensions.
DIMENSION_MULTIPLE: Final = 2
MIN_SLIDES: Final = 1
MAX_SLIDES: Final = 500
MAX_PATH_LENGTH: Final = 1024
MAX_PATH_COMPONENT_BYTES: Final = 255
MIN_CRF: Final = 0
MAX_CRF: Final = 63
# Each encoder's crf scale: a value outside its codec's range is refused, never clamped.
CRF_RANGE_BY_CODEC: Final[dict[str, tuple[int, int]]] = {
    "h264": (0, 51),
    "hevc": (0, 51),
    "vp9": (0, 63),
    "av1": (0, 63),
}

DEFAULT_TEST_PATTERN_WIDTH: Final = 1280
DEFAULT_TEST_PATTERN_HEIGHT: Final = 720
DEFAULT_TEST_PATTERN_FPS: Final = 30.0
# A slideshow's frame rate without output.fps.
DEFAULT_SLIDESHOW_FPS: Final = 25.0

# The export service's --max-pixel-rate: the output pixels per second (width x height x frames
# per second) a job may ask for, an operator's bound on the work one render holds a slot for.
# The default is the largest frame at 30 fps (8K at 30, 4K at 120, 1080p at 240 pass; 8K at 60
# does not): every size and every frame rate the spec allows stays reachable on its own.
DEFAULT_MAX_PIXEL_RATE: Final = MAX_WIDTH * MAX_HEIGHT * 30

# output.split.parts: the most parts any job may ask for (the export service's --split-max-parts
# is at most this).
MAX_SPLIT_PARTS: Final = 64

# --- Containers and codecs ---------------------------------------------------------------------

DEFAULT_CONTAINER: Final = "mp4"
CONTAINERS: Final = ("mp4", "webm")
CONTAINER_MEDIA_TYPES: Final = {"mp4": "video/mp4", "webm": "video/webm"}
VIDEO_CODECS_BY_CONTAINER: Final[dict[str, tuple[str, ...]]] = {
    "mp4": ("h264", "hevc", "av1"),
    "webm": ("vp9", "av1"),
}
AUDIO_CODECS_BY_CONTAINER: Final[dict[str, tuple[str, ...]]] = {
    "mp4": ("aac", "opus"),
    "webm": ("opus",),
}
DEFAULT_VIDEO_CODEC: Final = {"mp4": "h264", "webm": "vp9"}
DEFAULT_AUDIO_CODEC: Final = {"mp4": "aac", "webm": "opus"}
# Containers where ``faststart`` (moov atom first) means anything.
FASTSTART_CONTAINERS: Final = ("mp4",)
PRESETS: Final = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)


def _distinct(groups: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for names in groups.values() for name in names))


VIDEO_CODECS: Final = _distinct(VIDEO_CODECS_BY_CONTAINER)
AUDIO_CODECS: Final = _distinct(AUDIO_CODECS_BY_CONTAINER)

# --- Job statuses ------------------------------------------------------------------------------

# Names as the proto enum and the store spell them; the HTTP API uses them in lowercase.
JOB_STATUSES: Final = tuple(
    value.name for value in export_pb2.JobStatus.DESCRIPTOR.values if value.number != 0
)
ACTIVE_JOB_STATUSES: Final = ("QUEUED", "RUNNING")
TERMINAL_JOB_STATUSES: Final = ("COMPLETED", "FAILED", "CANCELLED")
API_JOB_STATUSES: Final = tuple(name.lower() for name in JOB_STATUSES)
API_TERMINAL_JOB_STATUSES: Final = tuple(name.lower() for name in TERMINAL_JOB_STATUSES)
assert set(ACTIVE_JOB_STATUSES) | set(TERMINAL_JOB_STATUSES) == set(JOB_STATUSES)

# --- Progress ----------------------------------------------------------------------------------

# The highest percent a job may show before it completes; 100 belongs to COMPLETED alone.
# 99.0, not 99.9: the last running band is Verifying at 99 (design's progress bands), the render
# service never reports more, and a store that accepted up to 99.9 only left room for a value
# nothing legitimate produces.
MAX_RUNNING_PROGRESS: Final = 99.0

# Stages the export service shows of its own (the render reports the others: Queued, Preparing,
# Rendering, Finalizing, Verifying; the store writes Complete, Failed, Cancelled). Written by the
# job's owner, under its lease, while the render service of the job's attempt does not answer and
# the owner keeps asking it (within --retry-budget): the job keeps its progress and has no ETA.
STAGE_WAITING_FOR_RENDER: Final = "Waiting for a render service"
# Never written: shown when an active job is read while no export replica drives it (its owner
# stopped renewing its lease, or handed the job back, and no other replica has taken it over yet).
STAGE_WAITING_FOR_OWNER: Final = "Waiting for its export replica"

# --- Failure codes -----------------------------------------------------------------------------


def _failure_name(value: failure_pb2.FailureCode.ValueType) -> str:
    return failure_pb2.FailureCode.Name(value)


# Every value but the zero one (FAILURE_CODE_UNSPECIFIED), by the name the wire carries.
FAILURE_CODES: Final = frozenset(
    value.name for value in failure_pb2.FailureCode.DESCRIPTOR.values if value.number != 0
)
FAILURE_INVALID_INPUT: Final = _failure_name(failure_pb2.INVALID_INPUT)
FAILURE_FFMPEG_ERROR: Final = _failure_name(failure_pb2.FFMPEG_ERROR)
FAILURE_STALLED: Final = _failure_name(failure_pb2.STALLED)
FAILURE_VERIFICATION_FAILED: Final = _failure_name(failure_pb2.VERIFICATION_FAILED)
FAILURE_OUTPUT_UNWRITABLE: Final = _failure_name(failure_pb2.OUTPUT_UNWRITABLE)
FAILURE_SHUTDOWN: Final = _failure_name(failure_pb2.SHUTDOWN)
FAILURE_INTERNAL: Final = _failure_name(failure_pb2.INTERNAL)
FAILURE_STORAGE_UNAVAILABLE: Final = _failure_name(failure_pb2.STORAGE_UNAVAILABLE)
FAILURE_RENDER_LOST: Final = _failure_name(failure_pb2.RENDER_LOST)
FAILURE_RENDER_UNAVAILABLE: Final = _failure_name(failure_pb2.RENDER_UNAVAILABLE)
FAILURE_RENDER_STALLED: Final = _failure_name(failure_pb2.RENDER_STALLED)
# Failed codes a render service reports when it lost a render rather than judged it (it was shut
# down, or the object store did not answer for its inputs or its output): the export service
# resubmits instead of failing the job.
RETRYABLE_RENDER_FAILURES: Final = frozenset({FAILURE_SHUTDOWN, FAILURE_STORAGE_UNAVAILABLE})
# A Failed SHUTDOWN with never_started set is a render handed back by a draining render service
# before it started: the export service submits it elsewhere at once, costing no attempt.

# --- Job lifecycle -----------------------------------------------------------------------------

# A failed job keeps at most this much of ffmpeg's log (its last lines).
MAX_LOG_TAIL_LINES: Final = 20
MAX_LOG_TAIL_BYTES: Final = 4096
# CreateExport asks a render service to check the spec's input files within this deadline; when
# none answers in time the job is accepted and the render's own check decides.
CHECK_INPUTS_TIMEOUT_SECONDS: Final = 3.0
# The export service's --job-retention sweep: terminal jobs older than the retention are deleted
# this many at a time; passes come at least every MAX_JOB_RETENTION_SWEEP_SECONDS.
JOB_RETENTION_BATCH: Final = 100
MAX_JOB_RETENTION_SWEEP_SECONDS: Final = 60.0
# Retry-After (seconds) on a 429 (too many active jobs) or a 503 (the export service is away).
RETRY_AFTER_SECONDS: Final = 2


def bounded_log_tail(text: str) -> str:
    """The last MAX_LOG_TAIL_LINES lines of ``text``, at most MAX_LOG_TAIL_BYTES of UTF-8
    (whole lines, the newest kept; one line longer than that keeps its end)."""
    lines = [line for line in text.splitlines() if line.strip()][-MAX_LOG_TAIL_LINES:]
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        cost = len(line.encode()) + (1 if kept else 0)
        if size + cost > MAX_LOG_TAIL_BYTES:
            if not kept:
                kept.append(line.encode()[-MAX_LOG_TAIL_BYTES:].decode(errors="ignore"))
            break
        kept.append(line)
        size += cost
    return "\n".join(reversed(kept))


# --- Render service ----------------------------------------------------------------------------

# Seconds a draining render service (SIGTERM) gives its running renders to finish before it fails
# what is left with SHUTDOWN; the launcher waits this long (plus its stop grace) before SIGKILL.
DEFAULT_DRAIN_TIMEOUT_SECONDS: Final = 300.0


def is_failure_code(code: str) -> bool:
    return code in FAILURE_CODES
