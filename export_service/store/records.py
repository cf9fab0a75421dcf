"""A job's record and the words the store speaks: statuses, stages, the named changes, a job and
its render attempts, its history entries, leases, cursors, and the store's refusals.

Plain values only: the store that keeps them is store.base's JobStore, which names them too.
"""

from __future__ import annotations

import base64
import enum
import functools
import json
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from export_service.store.split_record import SplitRecord
from videojob import limits
from videojob.errors import FailedPrecondition, NotFound, Reason, Unavailable


class JobStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


ACTIVE_STATUSES = tuple(JobStatus(name) for name in limits.ACTIVE_JOB_STATUSES)
TERMINAL_STATUSES = tuple(JobStatus(name) for name in limits.TERMINAL_JOB_STATUSES)

STAGE_QUEUED = "Queued"
STAGE_COMPLETE = "Complete"
STAGE_FAILED = "Failed"
STAGE_CANCELLED = "Cancelled"
# The render's own stage, which the export service also shows while it looks for a completed
# render's output.
STAGE_VERIFYING = "Verifying"
STAGE_WAITING_FOR_RENDER = limits.STAGE_WAITING_FOR_RENDER
STAGE_WAITING_FOR_OWNER = limits.STAGE_WAITING_FOR_OWNER
# A progress write with one of these stages leaves a QUEUED job QUEUED (nothing renders yet).
STAGES_BEFORE_RUNNING = frozenset({STAGE_QUEUED, STAGE_WAITING_FOR_RENDER})

# Progress below 100 is all a running job may show; 100 belongs to COMPLETED alone.
MAX_RUNNING_PROGRESS = limits.MAX_RUNNING_PROGRESS
# A replica whose heartbeat expired this long ago is gone: the next heartbeat of any replica
# deletes its row.
FORGET_REPLICA_SECONDS = 3600.0


class Change(enum.StrEnum):
    """The named transitions, as the history records them."""

    CREATE = "create"
    PROGRESS = "progress"
    BEGIN_ATTEMPT = "begin_attempt"
    COMPLETE = "complete"
    FAIL = "fail"
    CANCEL = "cancel"
    # The render service the current attempt runs on, recorded before Render is called.
    PLACE_ATTEMPT = "place_attempt"
    # The release of a superseded attempt's render given up (RenderAttempt.release_given_up_at).
    # Like place_attempt, bookkeeping on the job's attempts: no new version, no history entry.
    RELEASE_GIVEN_UP = "release_given_up"
    # The first entry of a job that existed before the history did: its state at the migration.
    MIGRATED = "migrated"
    # A split job (store.split_record): its plan, or why it renders whole; each part's (and
    # the join's) placement before its render starts, its start once its render service gives
    # it a slot, its completion, and its retry.
    SPLIT_PLANNED = "split_planned"
    PART_PLACED = "part_placed"
    PART_STARTED = "part_started"
    PART_DONE = "part_done"
    PART_RETRY = "part_retry"


# How the API's outcome of an attempt says that its render's release was given up.
RELEASE_GIVEN_UP_NOTE = "release given up (its render service did not answer)"


@dataclass(frozen=True)
class RenderAttempt:
    """One submission of a job's render: which render (its own id, so attempts never share a
    partial file or an event log) on which render service. Superseded attempts stay on the job,
    so a render service that comes back with one of them has it cancelled (unless that release
    was given up: ``release_given_up_at``)."""

    attempt: int
    render_id: str
    instance_id: str
    address: str
    started_at: datetime
    finished_at: datetime | None = None
    # "" while current; why it ended otherwise (superseded: lost, unreachable, ...).
    outcome: str = ""
    # Set once the export service stopped asking the render service of this superseded attempt
    # to cancel its render (it did not answer for --release-budget seconds): never asked again,
    # at no later start either. None: released, being released, or still current.
    release_given_up_at: datetime | None = None

    @property
    def shown_outcome(self) -> str:
        """``outcome`` as the API shows it: noting a release that was given up."""
        if self.release_given_up_at is None:
            return self.outcome
        return f"{self.outcome}; {RELEASE_GIVEN_UP_NOTE}" if self.outcome else RELEASE_GIVEN_UP_NOTE

    def to_dict(self) -> dict[str, object]:
        raw: dict[str, object] = {
            "attempt": self.attempt,
            "render_id": self.render_id,
            "instance_id": self.instance_id,
            "address": self.address,
            "started_at": us_of(self.started_at),
            "finished_at": None if self.finished_at is None else us_of(self.finished_at),
            "outcome": self.outcome,
        }
        if self.release_given_up_at is not None:  # absent otherwise, as before it existed
            raw["release_given_up_at"] = us_of(self.release_given_up_at)
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> RenderAttempt:
        finished = raw.get("finished_at")
        given_up = raw.get("release_given_up_at")
        return cls(
            attempt=int(str(raw["attempt"])),
            render_id=str(raw["render_id"]),
            instance_id=str(raw.get("instance_id", "")),
            address=str(raw.get("address", "")),
            started_at=datetime_of(int(str(raw["started_at"]))),
            finished_at=None if finished is None else datetime_of(int(str(finished))),
            outcome=str(raw.get("outcome", "")),
            release_given_up_at=None if given_up is None else datetime_of(int(str(given_up))),
        )


def us_of(moment: datetime) -> int:
    """Microseconds since the epoch: how SQLite and the attempts' JSON keep a time."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def datetime_of(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


def render_id_for(job_id: str, attempt: int) -> str:
    """The render id of a job's attempt: the job id for the first (as before attempts had ids
    of their own), ``<job id>-a<attempt>`` after."""
    return job_id if attempt <= 1 else f"{job_id}-a{attempt}"


@functools.lru_cache(maxsize=4096)
def attempts_from_json(raw: str) -> tuple[RenderAttempt, ...]:
    """The attempts stored as ``raw``; remembered, since every write of a job reads them back and
    they seldom change (the result is immutable, so it may be shared)."""
    return tuple(RenderAttempt.from_dict(item) for item in json.loads(raw or "[]"))


def attempts_to_json(attempts: Sequence[RenderAttempt]) -> str:
    return json.dumps([attempt.to_dict() for attempt in attempts], separators=(",", ":"))


def first_attempts_json(placement: RenderAttempt | None) -> str:
    """The render attempts of a new job: its first placement, when the create records one."""
    if placement is not None and placement.attempt != 1:
        raise ValueError(f"a new job's placement is attempt 1, not {placement.attempt}")
    return attempts_to_json(() if placement is None else (placement,))


def with_placement(
    attempts: Sequence[RenderAttempt], placed: RenderAttempt, superseded_outcome: str
) -> tuple[RenderAttempt, ...]:
    """``attempts`` with ``placed`` as the current one: an earlier record of the same attempt
    (placed elsewhere, refused there) is replaced; earlier attempts still open are closed with
    ``superseded_outcome``."""
    kept: list[RenderAttempt] = []
    for attempt in attempts:
        if attempt.attempt == placed.attempt:
            continue
        if attempt.finished_at is None:
            attempt = replace(
                attempt, finished_at=placed.started_at, outcome=superseded_outcome or "superseded"
            )
        kept.append(attempt)
    return (*kept, placed)


def with_release_given_up(
    attempts: Sequence[RenderAttempt], render_id: str, at: datetime
) -> tuple[RenderAttempt, ...] | None:
    """``attempts`` with the release of ``render_id``'s render given up ``at`` (an earlier
    give-up kept as it was); None when no attempt has that render id."""
    if not any(attempt.render_id == render_id for attempt in attempts):
        return None
    return tuple(
        replace(attempt, release_given_up_at=at)
        if attempt.render_id == render_id and attempt.release_given_up_at is None
        else attempt
        for attempt in attempts
    )


@dataclass(frozen=True)
class Job:
    id: str
    request_id: str
    status: JobStatus
    progress: float
    stage: str
    output_path: str
    error_code: str
    error_message: str
    # The request field the error is about (its proto path, e.g. spec.source.transcode.input_path),
    # or "" when it is about no one field.
    error_field: str
    attempt: int
    version: int
    spec: bytes
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_render_seq: int
    eta_seconds: float
    output_size_bytes: int
    output_duration_seconds: float
    # Set by cancel() and by fail(release_render=True); cleared by render_released() once the
    # render is known to be stopped and its output removed, so a restart can finish the clean-up.
    cancel_requested: bool
    # The export replica that owns the job and the epoch of its lease (see Lease); None for a
    # job no replica has owned yet.
    owner: str | None = None
    lease_epoch: int | None = None
    # The last lines of ffmpeg's log when it had a say in the failure ("" otherwise), bounded
    # by videojob.limits.bounded_log_tail.
    error_log_tail: str = ""
    # Set by claim_jobs only: the replica that owned the job just before that claim (None: no
    # replica did, it was handed back or never owned). Not part of the job's state.
    claimed_from: str | None = field(default=None, compare=False)
    # The current attempt's own progress (``progress`` is the job's: it never decreases, so a
    # resubmitted render starting from zero shows here).
    attempt_progress: float = 0.0
    # Every placement of the job's render, oldest first (RenderAttempt).
    attempts: tuple[RenderAttempt, ...] = ()
    # The whole output file's SHA-256 (hex) when it is an object in a store; "" otherwise.
    output_sha256: str = ""
    # 0-100 of the current stage where it has a measure of its own (Uploading), else 0.
    stage_progress: float = 0.0
    # Which of its changes its webhook endpoints are told of: "" (it has none), "terminal" or
    # "all" (the widest of its endpoints'; store.outbox.NotifyEvents).
    notify: str = ""
    # A split job's parts and join (None: the job renders whole, or is not planned yet).
    split: SplitRecord | None = None
    # The frames each part reported last, in plan order (written with the job's progress).
    split_frames: tuple[int, ...] = ()
    # Why the job renders whole under the policy ("" when split, asked whole, or not planned).
    split_reason: str = ""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def current_attempt(self) -> RenderAttempt | None:
        """Where the current attempt was placed (None: not placed yet)."""
        for attempt in reversed(self.attempts):
            if attempt.attempt == self.attempt:
                return attempt
        return None

    @property
    def retrying(self) -> bool:
        """An active job whose render was submitted again (attempt 2 or later), or whose owner
        keeps asking a render service that does not answer (STAGE_WAITING_FOR_RENDER)."""
        return not self.terminal and (self.attempt > 1 or self.stage == STAGE_WAITING_FOR_RENDER)


@dataclass(frozen=True)
class HistoryEntry:
    """One committed change of a job: the state it left and who wrote it."""

    job_id: str
    version: int
    change: Change
    status: JobStatus
    progress: float
    stage: str
    attempt: int
    render_seq: int
    error_code: str
    recorded_at: datetime
    # Which process wrote it (see default_writer); ``owner`` and ``lease_epoch`` name the owning
    # replica and its lease at that change (None for a job no replica owned).
    writer: str
    owner: str | None
    lease_epoch: int | None


@dataclass(frozen=True)
class Lease:
    """A replica's hold on one job: the owner and the epoch it claimed (or created) it at. Every
    write the owner makes names it, checked in the same statement as the write; a job claimed
    by another replica has a higher epoch, so the old owner's writes are refused (StaleLease)."""

    owner: str
    epoch: int


@dataclass(frozen=True)
class ReplicaBeat:
    """Another export replica's heartbeat row, as a heartbeat read it, on the database's clock:
    seconds since the replica last renewed it and until it expires (negative once expired)."""

    replica_id: str
    renewed_ago: float
    expires_in: float


def default_writer(name: str = "") -> str:
    """``name@host:pid``: which process wrote a change."""
    prefix = f"{name}@" if name else ""
    return f"{prefix}{socket.gethostname()}:{os.getpid()}"


class JobNotFound(NotFound):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found")
        self.job_id = job_id


class TransitionRejected(FailedPrecondition):
    """The store refused a change; ``current`` is the job as it is now."""

    def __init__(self, current: Job, reason: str) -> None:
        super().__init__(f"job {current.id} is {current.status.value}: {reason}")
        self.current = current
        self.reason = reason


class StaleLease(TransitionRejected):
    """A write named a lease the job no longer has: another replica owns it now (or it was
    handed back). The writer is no longer the owner and must leave the job alone."""

    def __init__(self, current: Job, lease: Lease) -> None:
        super().__init__(
            current,
            f"lease {lease.owner} epoch {lease.epoch} is stale "
            f"(the job is held by {current.owner} epoch {current.lease_epoch})",
        )
        self.lease = lease


def lease_holds(job: Job, lease: Lease | None) -> bool:
    """True when ``lease`` is None (an unfenced write) or still the job's."""
    return lease is None or (job.owner, job.lease_epoch) == (lease.owner, lease.epoch)


class RequestIdDeleted(FailedPrecondition):
    """The job this request id created was deleted; the request id is never used again."""

    def __init__(self, request_id: str, job_id: str) -> None:
        super().__init__(
            f"request_id: {request_id!r} created job {job_id}, which was deleted",
            reason=Reason.REQUEST_ID_DELETED,
            metadata={"request_id": request_id, "job_id": job_id},
        )
        self.request_id = request_id
        self.job_id = job_id


def deletable(job: Job) -> bool:
    """Terminal, and its render's clean-up done: what ``delete`` requires."""
    return job.terminal and not job.cancel_requested


class StoreUnavailable(Unavailable):
    """The database cannot be reached (or dropped the connection mid-operation). A change that
    raised this may or may not have committed; every change is conditional, so repeating it is
    safe (a repeat of a committed terminal change is rejected, a create returns its job)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the job database is unavailable: {detail}")
        self.detail = detail


@dataclass(frozen=True)
class ListCursor:
    """Position after the last job of a page (newest first: created_at desc, id desc)."""

    created_at_us: int
    job_id: str


def created_at_us(job: Job) -> int:
    delta = job.created_at - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def cursor_after(job: Job) -> ListCursor:
    return ListCursor(created_at_us(job), job.id)


def encode_cursor(cursor: ListCursor) -> str:
    raw = f"{cursor.created_at_us}:{cursor.job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> ListCursor:
    """Raises ValueError for anything encode_cursor did not produce."""
    padded = token + "=" * (-len(token) % 4)
    raw = base64.urlsafe_b64decode(padded.encode("ascii")).decode()
    created, _, job_id = raw.partition(":")
    if not job_id or not created.isdigit():
        raise ValueError("malformed cursor")
    return ListCursor(created_at_us=int(created), job_id=job_id)


@dataclass(frozen=True)
class ProgressUpdate:
    """One job's progress, as record_progress takes it."""

    job_id: str
    progress: float
    stage: str
    eta_seconds: float
    render_seq: int
    # The writer's lease on the job (None: unfenced).
    lease: Lease | None = None
    # 0-100 of the current stage where it has a measure of its own (Uploading), else 0.
    stage_progress: float = 0.0
    # A split job's frames finished per part, in plan order (() for any other job).
    split_frames: tuple[int, ...] = ()


# Per update of a batch: the job as written, or why it was not.
ProgressResult = Job | TransitionRejected | JobNotFound

ChangeListener = Callable[[Job], None]
AvailabilityListener = Callable[[bool], None]
