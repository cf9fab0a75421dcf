"""What ``decide`` asks the runner to do.

A decision is any number of effects (done in order, nothing to report) followed by exactly one
next step: a question whose answer comes back as an observation, or ``Stop``."""

from __future__ import annotations

from dataclasses import dataclass

# Questions: each produces exactly one observation.


@dataclass(frozen=True)
class ReadJob:
    """The job as stored → JobRead or JobMissing."""


@dataclass(frozen=True)
class CallRender:
    """Render(render_id, spec) on the render service of the attempt: starts the render, or
    attaches to it and replays it from seq 1; then reads the stream's first event → a stream
    observation. The attempt's own render id (store.base.render_id_for) names it.

    An attempt not placed yet (or ``elsewhere``: placed anew, the render service that refused
    or handed it back being among ``avoid``) is placed first: the pool chooses a render
    service by load and a fenced write records it on the job → NotPlaced when none can take
    it. An attempt
    placed already has its lease confirmed by a fenced write instead. Either write refused:
    LeaseLost (another owner), Refused or JobMissing, and Render is not called. Render refused
    because the service drains → Draining. ``avoid``: render services (pool keys) that refused
    or failed the job, not chosen for it. ``lease_proven``: the job's create recorded this
    placement with a fenced insert, proof of the lease: no confirming write."""

    attempt: int
    elsewhere: bool = False
    avoid: frozenset[str] = frozenset()
    lease_proven: bool = False


@dataclass(frozen=True)
class WatchRender:
    """WatchRender after ``after_seq``, then its first event → a stream observation."""

    after_seq: int


@dataclass(frozen=True)
class ReadStream:
    """The open stream's next event, within the stall timeout → EventReceived, StreamEnded,
    StreamSilent or RpcFailed."""


@dataclass(frozen=True)
class GetRender:
    """→ RenderReport or RpcFailed. ``why`` is what prompted the question."""

    why: str


@dataclass(frozen=True)
class CheckOutput:
    """The shared output check of a completed render's file (or stored object: its size and
    the store's checksum as the render reported them) → OutputChecked."""

    path: str
    size_bytes: int
    store_checksum: str = ""


@dataclass(frozen=True)
class BeginAttempt:
    """attempt + 1 in the store (render seq back to 0) → Written, Refused or JobMissing."""

    expected_attempt: int


@dataclass(frozen=True)
class WriteComplete:
    """COMPLETED → Written, Refused or JobMissing."""

    output_path: str
    size_bytes: int
    duration_seconds: float
    render_seq: int
    output_sha256: str = ""


@dataclass(frozen=True)
class WriteFail:
    """FAILED → Written, Refused or JobMissing. ``release_render``: the render is to be
    cancelled and its output removed (the tracker gave up on it)."""

    code: str
    message: str
    field: str = ""
    release_render: bool = False
    # The last lines of ffmpeg's log, kept on the job.
    log_tail: str = ""


@dataclass(frozen=True)
class WriteCancel:
    """CANCELLED (the render was cancelled at the render service) → Written, Refused or
    JobMissing."""


@dataclass(frozen=True)
class Wait:
    """→ TimerFired after ``seconds``. Logged as "<why>; <then> in <seconds> s"."""

    seconds: float
    why: str
    then: str


@dataclass(frozen=True)
class Stop:
    """The tracker's work is over: the only way it ends."""


Question = (
    ReadJob
    | CallRender
    | WatchRender
    | ReadStream
    | GetRender
    | CheckOutput
    | BeginAttempt
    | WriteComplete
    | WriteFail
    | WriteCancel
    | Wait
)
NextStep = Question | Stop

# Effects: done in order before the next step; they report nothing.


@dataclass(frozen=True)
class CloseStream:
    """Cancels the open render call, if any."""


@dataclass(frozen=True)
class OfferProgress:
    """Hands progress to the coalescing progress writer (it is written soon, or replaced)."""

    percent: float
    stage: str
    eta_seconds: float
    render_seq: int
    stage_progress: float = 0.0


@dataclass(frozen=True)
class OfferStage:
    """Hands a stage of the tracker's own (no render reports it: "Waiting for a render
    service") to the coalescing progress writer: written with the job's progress as it stands
    (it does not move) and no ETA, fenced by the lease like every progress write, until the
    render's next progress replaces it."""

    stage: str


@dataclass(frozen=True)
class FlushProgress:
    """Writes the newest offered progress now: a terminal write follows."""


@dataclass(frozen=True)
class DiscardProgress:
    """Forgets offered progress without waiting for a write of it in flight: a completion
    follows, which supersedes any progress (the store's single writer keeps the order)."""


@dataclass(frozen=True)
class DropProgress:
    """Forgets offered progress: the render is being replaced (its seq restarts)."""


@dataclass(frozen=True)
class MarkRenderReleased:
    """The render is known stopped and its output gone: nothing for a clean-up to do."""


@dataclass(frozen=True)
class RemoveOutput:
    """Removes the file a render left (the job did not complete with it)."""

    path: str


@dataclass(frozen=True)
class ReleaseAttempt:
    """An attempt was given up for a newer one: its render is cancelled on the render service
    it was placed on, now or when that one answers again, and what it left is removed (its
    partial file at once when the service is gone: ``service_lost``)."""

    attempt: int
    service_lost: bool = False


Effect = (
    CloseStream
    | OfferProgress
    | OfferStage
    | FlushProgress
    | DiscardProgress
    | DropProgress
    | MarkRenderReleased
    | RemoveOutput
    | ReleaseAttempt
)
