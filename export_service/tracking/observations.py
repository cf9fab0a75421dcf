"""What the runner tells ``decide``: each answer to an action, and news from outside."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from export_service.store import JobStatus
from videojob.output_check import OutputProblem

# What a render event says (from a stream, or GetRender's last event).


@dataclass(frozen=True)
class Progress:
    percent: float
    stage: str
    eta_seconds: float
    # A heartbeat only proves the render is alive; it carries no progress to write.
    heartbeat: bool = False
    # 0-100 of the current stage where it has a measure of its own (Uploading).
    stage_progress: float = 0.0


@dataclass(frozen=True)
class Completed:
    output_path: str
    size_bytes: int
    duration_seconds: float
    # An object in a store: the whole file's SHA-256 (hex) and the store's checksum of it.
    sha256: str = ""
    store_checksum: str = ""


@dataclass(frozen=True)
class Failed:
    code: str
    message: str
    # The request field the failure is about ("" for none).
    field: str = ""
    # The last lines of ffmpeg's log ("" for none).
    log_tail: str = ""
    # SHUTDOWN only: a draining render service handed the render back before it started
    # (nothing was rendered): placed elsewhere at once, costing no attempt.
    never_started: bool = False


@dataclass(frozen=True)
class Cancelled:
    pass


RenderOutcome = Progress | Completed | Failed | Cancelled
TERMINAL_OUTCOMES = (Completed, Failed, Cancelled)

# Answers of the store (ReadJob, BeginAttempt, WriteComplete, WriteFail, WriteCancel).


@dataclass(frozen=True)
class JobRead:
    terminal: bool
    attempt: int
    last_render_seq: int
    # What the job's spec implies (None: only the render can tell).
    expected_duration_seconds: float | None
    # The attempts recorded on the job with the render service each was placed on.
    placed_attempts: tuple[int, ...] = ()
    # The row the job's create committed, with the current attempt's placement recorded.
    placed_by_create: bool = False


@dataclass(frozen=True)
class JobMissing:
    """The store does not know the job (deleted underneath)."""


@dataclass(frozen=True)
class Written:
    """The store committed the change; ``attempt`` is the job's attempt after it."""

    attempt: int


@dataclass(frozen=True)
class Refused:
    """The store refused the change: the job is terminal, or on another attempt."""

    status: JobStatus
    attempt: int

    @property
    def terminal(self) -> bool:
        return self.status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


# Answers of the render service (CallRender, WatchRender, ReadStream, GetRender).


@dataclass(frozen=True)
class EventReceived:
    seq: int
    # None: an event of a kind this service does not know.
    event: RenderOutcome | None
    # The render service (its pool key) the stream is open on.
    member: str = ""


@dataclass(frozen=True)
class StreamEnded:
    """The render stream ended without a terminal event."""


@dataclass(frozen=True)
class StreamSilent:
    """No event (heartbeats included) for ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class RpcFailed:
    code: grpc.StatusCode
    details: str
    # The request field an INVALID_ARGUMENT is about, when the status names one.
    field: str = ""
    # Another render service of the pool is healthy, not draining and not the attempt's own:
    # somewhere to fail over to (always False for a pool of one).
    others_available: bool = False
    # The render service that failed the call (its pool key).
    member: str = ""


@dataclass(frozen=True)
class RenderReport:
    """GetRender's answer: the render's last event (None when it has none yet)."""

    seq: int
    last_event: RenderOutcome | None
    # The render service (its pool key) that answered.
    member: str = ""


# Answers of placement (in CallRender) and of a render service refusing new work.


@dataclass(frozen=True)
class NotPlaced:
    """No render service of the pool can take the render now. ``busy``: some answer, but none
    has room (as RESOURCE_EXHAUSTED); otherwise none answers at all."""

    why: str
    busy: bool = False


@dataclass(frozen=True)
class Draining:
    """Render was refused UNAVAILABLE with reason DRAINING: the render service is finishing
    its running renders before it stops. Nothing started there; placed elsewhere for free."""

    instance_id: str
    details: str


@dataclass(frozen=True)
class Unreached:
    """Render could not reach its render service at all (no connection: the request was never
    sent, so nothing started there) while another render service can take it: placed elsewhere
    for free, like a draining refusal."""

    instance_id: str
    details: str


# Answers of the output check and the clock.


@dataclass(frozen=True)
class OutputChecked:
    # None: the file is there, as reported.
    problem: OutputProblem | None = None


@dataclass(frozen=True)
class TimerFired:
    pass


# News from outside, delivered whatever the tracker was waiting for.


@dataclass(frozen=True)
class JobEnded:
    """The job became terminal elsewhere (a cancel, another writer): nothing more to do."""


@dataclass(frozen=True)
class Stopping:
    """The service is stopping: leave the job as stored, the next start re-attaches."""


@dataclass(frozen=True)
class LeaseLost:
    """A fenced write was refused: another export replica owns the job now. Leave the job and
    its render alone (the new owner re-attaches to it). Also the answer to CallRender when the
    write that must precede Render is refused this way."""


# Every observation; the runner treats a value outside it as a bug.
Observation = (
    JobRead
    | JobMissing
    | Written
    | Refused
    | EventReceived
    | StreamEnded
    | StreamSilent
    | RpcFailed
    | RenderReport
    | NotPlaced
    | Draining
    | Unreached
    | OutputChecked
    | TimerFired
    | JobEnded
    | Stopping
    | LeaseLost
)
