"""The JobStore interface and the Job record.

Every state change of a job is one named method here, implemented as one conditional update in
one transaction. The invariants live in those conditions, not in callers:

- a terminal status (COMPLETED, FAILED, CANCELLED) never changes;
- progress never decreases, and 100 appears only with COMPLETED;
- COMPLETED requires an output path;
- ``version`` rises by exactly one per change.

The store records; it does not look at files. That the output file exists (and is the one the
render reported) is checked before ``complete`` is called (videojob.output_check), by the process
that can see the output storage: a database server cannot.

A refused change raises ``TransitionRejected`` carrying the job as it is now.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from videojob import limits
from videojob.errors import FailedPrecondition, NotFound


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

# Progress below 100 is all a running job may show; 100 belongs to COMPLETED alone.
MAX_RUNNING_PROGRESS = limits.MAX_RUNNING_PROGRESS


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

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


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


@dataclass(frozen=True)
class ListCursor:
    """Position after the last job of a page (newest first: created_at desc, id desc)."""

    created_at_us: int
    job_id: str


@dataclass(frozen=True)
class ProgressUpdate:
    """One job's progress, as record_progress takes it."""

    job_id: str
    progress: float
    stage: str
    eta_seconds: float
    render_seq: int


# Per update of a batch: the job as written, or why it was not.
ProgressResult = Job | TransitionRejected | JobNotFound

ChangeListener = Callable[[Job], None]


class JobStore(ABC):
    """The single record of every job. Implementations: sqlite.SqliteJobStore (PostgreSQL next)."""

    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []

    def add_listener(self, listener: ChangeListener) -> None:
        """``listener(job)`` is called in the event loop after every committed change."""
        self._listeners.append(listener)

    def _committed(self, job: Job) -> Job:
        for listener in self._listeners:
            listener(job)
        return job

    @abstractmethod
    async def close(self) -> None: ...

    # Reads.

    @abstractmethod
    async def get(self, job_id: str) -> Job:
        """The job, or JobNotFound."""

    @abstractmethod
    async def list_jobs(
        self, *, limit: int, status: JobStatus | None = None, after: ListCursor | None = None
    ) -> list[Job]:
        """Newest first, at most ``limit`` jobs, starting after ``after``."""

    @abstractmethod
    async def list_active(self) -> list[Job]:
        """Every QUEUED or RUNNING job, oldest first."""

    @abstractmethod
    async def list_pending_cancellations(self) -> list[Job]:
        """CANCELLED (or FAILED with release_render) jobs whose render is not yet known to be
        stopped and cleaned up."""

    # Changes: one conditional update each.

    @abstractmethod
    async def create(
        self, *, job_id: str, request_id: str, spec: bytes, max_active: int | None = None
    ) -> tuple[Job, bool]:
        """Inserts a QUEUED job (attempt 1, version 1) and returns (job, True); when
        ``request_id`` is already known returns (that job, False) instead. Raises
        ResourceExhausted when ``max_active`` jobs are already QUEUED or RUNNING."""

    @abstractmethod
    async def record_progress(
        self, job_id: str, *, progress: float, stage: str, eta_seconds: float, render_seq: int
    ) -> Job:
        """An active job's progress. Moves QUEUED to RUNNING unless ``stage`` is Queued.
        Rejected when terminal, when ``progress`` is below the stored one, or is 100 or more.
        Less durable than the terminal changes: a crash of the machine may lose the last
        progress writes (never a terminal state), which the next render event re-derives."""

    @abstractmethod
    async def record_progress_batch(
        self, updates: Sequence[ProgressUpdate], *, urgent: bool = False
    ) -> list[ProgressResult]:
        """Several jobs' progress in one transaction: each update is applied exactly as
        record_progress would (its own conditional update, version + 1, the same refusals),
        and its result is returned in the same position instead of raised. ``urgent``: ahead
        of queued progress writes (a terminal event follows)."""

    @abstractmethod
    async def complete(
        self,
        job_id: str,
        *,
        output_path: str,
        size_bytes: int,
        duration_seconds: float,
        render_seq: int,
    ) -> Job:
        """COMPLETED with progress 100. Rejected when the job is already terminal or when
        ``output_path`` is empty. The file itself is the caller's to check."""

    @abstractmethod
    async def fail(
        self,
        job_id: str,
        *,
        code: str,
        message: str,
        field: str = "",
        release_render: bool = False,
    ) -> Job:
        """FAILED with an error code, message and the field it concerns ("" for none);
        rejected when already terminal.
        ``release_render`` sets cancel_requested: the render is to be stopped and its output
        removed, as for a cancelled job."""

    @abstractmethod
    async def cancel(self, job_id: str) -> Job:
        """CANCELLED (with cancel_requested set); rejected when already terminal."""

    @abstractmethod
    async def begin_attempt(self, job_id: str, *, expected_attempt: int) -> Job:
        """attempt + 1 for a resubmitted render (render seq back to 0); rejected when terminal
        or when the attempt is no longer ``expected_attempt`` (someone else already retried)."""

    @abstractmethod
    async def render_released(self, job_id: str) -> None:
        """Clears cancel_requested: the job's render is stopped and its output gone.
        Bookkeeping only, not a change of the job (version unchanged)."""
