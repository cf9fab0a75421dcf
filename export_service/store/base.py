"""The JobStore: every operation on the record of jobs, written once for both databases.

Every state change of a job is a transition declared in store.transitions, applied as one
conditional write in one transaction. The invariants live in those conditions, not in callers:

- a terminal status (COMPLETED, FAILED, CANCELLED) never changes;
- progress never decreases, and 100 appears only with COMPLETED;
- COMPLETED requires an output path;
- ``version`` rises by exactly one per change.

The store records; it does not look at files. That the output file exists (and is the one the
render reported) is checked before ``complete`` is called (videojob.output_check), by the process
that can see the output storage: a database server cannot.

A refused change raises ``TransitionRejected`` carrying the job as it is now.

Every committed change is also appended, in the same transaction, to the job's history (one
``HistoryEntry`` per version: the named change, the state it left, when, and who wrote it). The
history lives and dies with its job. A write that names a ``Lease`` (every write of a job's
tracker) adds the owner and lease epoch to its ``WHERE`` and is refused with StaleLease when
another replica holds the job. The job row and each history entry carry ``owner`` and
``lease_epoch``.

A database that cannot be reached raises ``StoreUnavailable`` (gRPC UNAVAILABLE); the store tells
its availability listeners when it goes and comes back.

How it is built: each operation is a plan of neutral statements (store.sql, store.transitions)
that a backend runs in one transaction of the operation's lane (``_execute``: SQLite on its
worker thread, PostgreSQL on a pooled connection). Every call of an operation goes through one
hook, ``_operation`` (see ``operation``), which store.outage.PatientStore overrides to make the
same call on the store it wraps until the database answers. What is a
backend's own (connections, migrations, claims and heartbeats, LISTEN/NOTIFY) stays in it.
The job's record and the store's words (Job, Lease, the errors...) are store.records', named
here too.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from export_service.store import outbox, sql
from export_service.store.outbox import AttemptRecord, Delivery, WebhookTarget
from export_service.store.records import (
    ACTIVE_STATUSES,
    FORGET_REPLICA_SECONDS,
    MAX_RUNNING_PROGRESS,
    RELEASE_GIVEN_UP_NOTE,
    STAGE_CANCELLED,
    STAGE_COMPLETE,
    STAGE_FAILED,
    STAGE_QUEUED,
    STAGE_WAITING_FOR_OWNER,
    STAGE_WAITING_FOR_RENDER,
    STAGES_BEFORE_RUNNING,
    TERMINAL_STATUSES,
    AvailabilityListener,
    Change,
    ChangeListener,
    HistoryEntry,
    Job,
    JobNotFound,
    JobStatus,
    Lease,
    ListCursor,
    ProgressResult,
    ProgressUpdate,
    RenderAttempt,
    ReplicaBeat,
    RequestIdDeleted,
    StaleLease,
    StoreUnavailable,
    TransitionRejected,
    attempts_from_json,
    attempts_to_json,
    created_at_us,
    cursor_after,
    decode_cursor,
    default_writer,
    deletable,
    encode_cursor,
    first_attempts_json,
    lease_holds,
    render_id_for,
    with_placement,
    with_release_given_up,
)
from export_service.store.split_record import SplitRecord, frames_to_json
from export_service.store.sql import Plan
from export_service.store.transitions import (
    BEGIN_ATTEMPT,
    CANCEL,
    COMPLETE,
    CONFIRM_LEASE,
    CONFIRM_RELEASE,
    DELETE,
    FAIL,
    GIVE_UP_RELEASE,
    PART_DONE,
    PART_RETRY,
    PART_STARTED,
    PLACE_ATTEMPT,
    PLACE_PART,
    PLAN_SPLIT,
    PROGRESS,
    RENDER_RELEASED,
    Lane,
    Transition,
    apply,
    apply_batch,
)
from videojob import stamps

__all__ = [
    "ACTIVE_STATUSES",
    "FORGET_REPLICA_SECONDS",
    "MAX_RUNNING_PROGRESS",
    "RELEASE_GIVEN_UP_NOTE",
    "STAGES_BEFORE_RUNNING",
    "STAGE_CANCELLED",
    "STAGE_COMPLETE",
    "STAGE_FAILED",
    "STAGE_QUEUED",
    "STAGE_WAITING_FOR_OWNER",
    "STAGE_WAITING_FOR_RENDER",
    "TERMINAL_STATUSES",
    "AvailabilityListener",
    "Call",
    "Change",
    "ChangeListener",
    "HistoryEntry",
    "Job",
    "JobNotFound",
    "JobStatus",
    "JobStore",
    "Lane",
    "Lease",
    "ListCursor",
    "ProgressResult",
    "ProgressUpdate",
    "RenderAttempt",
    "ReplicaBeat",
    "RequestIdDeleted",
    "StaleLease",
    "StoreUnavailable",
    "TransitionRejected",
    "attempts_from_json",
    "attempts_to_json",
    "created_at_us",
    "cursor_after",
    "decode_cursor",
    "default_writer",
    "deletable",
    "encode_cursor",
    "first_attempts_json",
    "lease_holds",
    "render_id_for",
    "with_placement",
    "with_release_given_up",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

P = ParamSpec("P")
S = TypeVar("S", bound="JobStore")

# Job ids one jobs_among read takes (a caller with more reads in batches).
JOBS_AMONG_MAX = 500


@dataclass(frozen=True)
class Call:
    """A call of one of JobStore's operations: made again on another store by ``on``."""

    name: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]

    def on(self, store: JobStore) -> Awaitable[Any]:
        return cast(Awaitable[Any], getattr(store, self.name)(*self.args, **self.kwargs))

    def __str__(self) -> str:
        subject = self.args[0] if self.args and isinstance(self.args[0], str) else ""
        return f"{self.name} {subject}".strip()


def operation(
    method: Callable[Concatenate[S, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """Routes every call of a public operation through the store's one hook, _operation."""

    @functools.wraps(method)
    async def routed(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        call = Call(method.__name__, args, kwargs)
        return await self._operation(call, lambda: method(self, *args, **kwargs))

    return routed


class JobStore(ABC):
    """The single record of every job. Backends: sqlite.SqliteJobStore and
    postgres.PostgresJobStore; tests/export/test_store.py is the contract both pass.

    Ownership (export_service.ownership): ``lease`` on a change fences it (refused with
    StaleLease unless the job is still held by that lease); ``claim_jobs``, ``heartbeat`` and
    ``release_replica`` move jobs between replicas."""

    # True when one process alone may use the database (SQLite): ownership is then trivial.
    exclusive = False

    def __init__(self, writer: str = "") -> None:
        self._listeners: list[ChangeListener] = []
        self._availability_listeners: list[AvailabilityListener] = []
        self._available = True
        self.writer = writer or default_writer()

    def add_listener(self, listener: ChangeListener) -> None:
        """``listener(job)`` is called in the event loop after every committed change."""
        self._listeners.append(listener)

    def add_availability_listener(self, listener: AvailabilityListener) -> None:
        """``listener(False)`` when the database stops answering, ``listener(True)`` when it
        answers again; called in the event loop."""
        self._availability_listeners.append(listener)

    @property
    def available(self) -> bool:
        return self._available

    def _set_available(self, available: bool, detail: str = "") -> None:
        if available == self._available:
            return
        self._available = available
        if available:
            logger.warning("the job database answers again")
        else:
            logger.error("the job database is unavailable: %s", detail)
        for listener in self._availability_listeners:
            listener(available)

    def _committed(self, job: Job) -> Job:
        stamps.stamp("export.committed", job.id, f"{job.version}:{job.last_render_seq}")
        for listener in self._listeners:
            listener(job)
        return job

    # What a backend provides.

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def _execute(self, plan: Callable[[], Plan[T]], lane: Lane, *, atomic: bool) -> T:
        """Runs a fresh ``plan()`` in one transaction of ``lane`` (``atomic`` False: a plan
        whose statements need no transaction together, each its own) and returns its result;
        StoreUnavailable when the database cannot be used."""

    # The one way every operation runs: JobStore's public operations are @operation, whose
    # calls all go through this hook.

    async def _operation(self, call: Call, run: Callable[[], Awaitable[T]]) -> T:
        """Runs ``run()``, this store's own work for ``call``. A view of the store overrides
        this hook to make the same call its own way (store.outage.PatientStore: on the store it
        wraps, again while the database is unavailable)."""
        return await run()

    async def _read(self, plan: Callable[[], Plan[T]]) -> T:
        return await self._execute(plan, Lane.READ, atomic=False)

    async def _change(
        self, transition: Transition, job_id: str, lease: Lease | None = None, **args: Any
    ) -> Job:
        """Applies ``transition`` to the job; the listeners hear of a new version."""
        job = await self._execute(
            lambda: apply(transition, job_id, args, lease, self.writer),
            transition.lane,
            atomic=transition.atomic,
        )
        return self._committed(job) if transition.versioned else job

    # Reads.

    @operation
    async def get(self, job_id: str) -> Job:
        """The job, or JobNotFound."""
        return await self._read(lambda: sql.read_job(job_id))

    @operation
    async def list_jobs(
        self,
        *,
        limit: int,
        status: JobStatus | None = None,
        after: ListCursor | None = None,
        done: bool | None = None,
    ) -> list[Job]:
        """Newest first, at most ``limit`` jobs, starting after ``after``; only terminal jobs
        (``done`` True) or only active ones (False) when ``done`` is given."""
        return await self._read(lambda: sql.list_jobs(limit, status, after, done))

    @operation
    async def list_active(self) -> list[Job]:
        """Every QUEUED or RUNNING job, oldest first."""
        return await self._read(lambda: sql.read_jobs(sql.ACTIVE_JOBS))

    @operation
    async def jobs_among(self, job_ids: Collection[str]) -> list[Job]:
        """The jobs of ``job_ids`` that exist (an id without a job, never created or deleted,
        is left out), in one read of at most JOBS_AMONG_MAX ids."""
        if len(job_ids) > JOBS_AMONG_MAX:
            raise ValueError(f"at most {JOBS_AMONG_MAX} job ids at once, not {len(job_ids)}")
        if not job_ids:
            return []
        return await self._read(lambda: sql.jobs_among(job_ids))

    @operation
    async def list_pending_cancellations(self) -> list[Job]:
        """CANCELLED (or FAILED with release_render) jobs whose render is not yet known to be
        stopped and cleaned up, oldest first."""
        return await self._read(
            lambda: sql.read_jobs(sql.PENDING_CANCELLATIONS),
        )

    @operation
    async def history(
        self, job_id: str, *, after_version: int = 0, limit: int | None = None
    ) -> list[HistoryEntry]:
        """The job's committed changes with a version above ``after_version``, oldest first,
        at most ``limit``; JobNotFound for an unknown job."""
        return await self._read(
            lambda: sql.history(job_id, after_version, limit),
        )

    # Changes: one conditional write each (store.transitions).

    @operation
    async def create(
        self,
        *,
        job_id: str,
        request_id: str,
        spec: bytes,
        max_active: int | None = None,
        owner: str | None = None,
        trace_context: str = "",
        placement: RenderAttempt | None = None,
        webhooks: Sequence[WebhookTarget] = (),
    ) -> tuple[Job, bool]:
        """Inserts a QUEUED job (attempt 1, version 1) and returns (job, True); when
        ``request_id`` is already known returns (that job, False) instead, or (that job, True)
        when it is this ``job_id``'s (the repeat of a create that did commit). Raises
        ResourceExhausted when ``max_active`` jobs are already QUEUED or RUNNING. ``owner``:
        the replica that owns the new job from the insert on (lease epoch 1).
        ``trace_context``: the trace of the request that creates it (videojob.tracing), kept
        in the same insert, so that no tracker ever sees the job without it. ``placement``:
        where attempt 1 will render, recorded by the same insert (as place_attempt would).
        ``webhooks``: the job's endpoints, written with it (store.outbox)."""

        job, created = await self._execute(
            lambda: sql.create(
                job_id=job_id,
                request_id=request_id,
                spec=spec,
                max_active=max_active,
                owner=owner,
                trace_context=trace_context,
                placement=placement,
                writer=self.writer,
                webhooks=webhooks,
            ),
            Lane.CHANGE,
            atomic=True,
        )
        if created:
            self._committed(job)
        # A repeat of a create whose commit was not acknowledged finds its own job.
        return job, created or job.id == job_id

    @operation
    async def record_progress(
        self,
        job_id: str,
        *,
        progress: float,
        stage: str,
        eta_seconds: float,
        render_seq: int,
        lease: Lease | None = None,
        stage_progress: float = 0.0,
    ) -> Job:
        """An active job's progress. Moves QUEUED to RUNNING unless ``stage`` is one of
        STAGES_BEFORE_RUNNING (Queued, Waiting for a render service).
        ``progress`` is the current attempt's: stored as ``attempt_progress``, and the job's
        progress becomes the larger of the stored one and it (never decreasing). Rejected when
        terminal, when ``progress`` is below the attempt's stored one, or is 100 or more.
        Less durable than the terminal changes: a crash of the machine may lose the last
        progress writes (never a terminal state), which the next render event re-derives."""
        update = ProgressUpdate(
            job_id, progress, stage, eta_seconds, render_seq, lease, stage_progress
        )
        (result,) = await self.record_progress_batch([update])
        if isinstance(result, Job):
            return result
        raise result

    @operation
    async def record_progress_batch(
        self, updates: Sequence[ProgressUpdate], *, urgent: bool = False
    ) -> list[ProgressResult]:
        """Several jobs' progress in one transaction: each update is applied exactly as
        record_progress would (its own conditional write, version + 1, the same refusals),
        and its result is returned in the same position instead of raised. ``urgent``: ahead
        of queued progress writes (a terminal event follows)."""
        items = [
            (
                update.job_id,
                {
                    "progress": update.progress,
                    "stage": update.stage,
                    "eta": update.eta_seconds,
                    "seq": update.render_seq,
                    "stage_progress": update.stage_progress,
                    "split_frames": frames_to_json(update.split_frames),
                },
                update.lease,
            )
            for update in updates
        ]
        lane = Lane.URGENT_PROGRESS if urgent else Lane.PROGRESS

        results = await self._execute(
            lambda: apply_batch(PROGRESS, items, self.writer), lane, atomic=True
        )
        for result in results:
            if isinstance(result, Job):
                self._committed(result)
        return results

    @operation
    async def complete(
        self,
        job_id: str,
        *,
        output_path: str,
        size_bytes: int,
        duration_seconds: float,
        render_seq: int,
        lease: Lease | None = None,
        output_sha256: str = "",
    ) -> Job:
        """COMPLETED with progress 100. Rejected when the job is already terminal or when
        ``output_path`` is empty. The file (or stored object) itself is the caller's to check;
        ``output_sha256``: the whole file's SHA-256 of an object in a store ("" otherwise)."""
        return await self._change(
            COMPLETE,
            job_id,
            lease,
            output_path=output_path,
            sha256=output_sha256,
            size=size_bytes,
            duration=duration_seconds,
            seq=render_seq,
        )

    @operation
    async def fail(
        self,
        job_id: str,
        *,
        code: str,
        message: str,
        field: str = "",
        release_render: bool = False,
        lease: Lease | None = None,
        log_tail: str = "",
    ) -> Job:
        """FAILED with an error code, message and the field it concerns ("" for none), and
        the last lines of ffmpeg's log (``log_tail``, "" for none); rejected when already
        terminal.
        ``release_render`` sets cancel_requested: the render is to be stopped and its output
        removed, as for a cancelled job."""
        return await self._change(
            FAIL,
            job_id,
            lease,
            code=code,
            message=message,
            field=field,
            release=release_render,
            log_tail=log_tail,
        )

    @operation
    async def cancel(self, job_id: str, *, lease: Lease | None = None) -> Job:
        """CANCELLED (with cancel_requested set); rejected when already terminal. A user's
        cancel names no lease (any replica may cancel); the owner's tracker names its own."""
        return await self._change(CANCEL, job_id, lease)

    @operation
    async def place_attempt(
        self,
        job_id: str,
        *,
        placed: RenderAttempt,
        superseded_outcome: str = "",
        lease: Lease | None = None,
    ) -> Job:
        """Records where the job's current attempt renders (bookkeeping: no new version),
        fenced like every tracker write: made before Render is called.
        Rejected when the job is terminal or its attempt is no longer ``placed.attempt``.
        Earlier open attempts are closed with ``superseded_outcome`` (with_placement)."""
        return await self._change(
            PLACE_ATTEMPT,
            job_id,
            lease,
            placed=placed,
            superseded_outcome=superseded_outcome,
        )

    @operation
    async def give_up_release(
        self, job_id: str, *, render_id: str, lease: Lease | None = None
    ) -> Job:
        """Notes on the job's superseded attempt with ``render_id`` that the release of its
        render (CancelRender at its render service) was given up (``release_given_up_at``,
        with_release_given_up), so that no later start asks again. Bookkeeping, as
        place_attempt: no new version, no history entry, made whatever the job's status (a
        finished job stays as it is), fenced by ``lease``. Rejected when that attempt is the
        job's current one or the job has no attempt with that render id; JobNotFound."""
        return await self._change(
            GIVE_UP_RELEASE,
            job_id,
            lease,
            render_id=render_id,
        )

    @operation
    async def begin_attempt(
        self, job_id: str, *, expected_attempt: int, lease: Lease | None = None
    ) -> Job:
        """attempt + 1 for a resubmitted render (render seq and attempt progress back to 0, the
        job's progress kept); rejected when terminal
        or when the attempt is no longer ``expected_attempt`` (someone else already retried)."""
        return await self._change(BEGIN_ATTEMPT, job_id, lease, expected=expected_attempt)

    # A split job (store.split_record): its plan and each part's render.

    @operation
    async def plan_split(
        self,
        job_id: str,
        *,
        split: SplitRecord | None,
        reason: str = "",
        stage: str | None = None,
        lease: Lease | None = None,
    ) -> Job:
        """Records the job's parts (``split``), or why it renders whole (``reason``, with no
        parts), once: refused when its parts are planned already or it is terminal."""
        return await self._change(
            PLAN_SPLIT, job_id, lease, planned=split, split_reason=reason, stage=stage
        )

    @operation
    async def place_part(
        self,
        job_id: str,
        *,
        index: int,
        part_attempt: int,
        render_id: str,
        instance_id: str,
        address: str,
        stage: str | None = None,
        lease: Lease | None = None,
    ) -> Job:
        """Records the render of part ``index`` (JOIN_INDEX: the join) as its attempt
        ``part_attempt`` on a render service, before Render is called. Refused when the part is
        done, on a later attempt already, or the job terminal."""
        return await self._change(
            PLACE_PART,
            job_id,
            lease,
            index=index,
            part_attempt=part_attempt,
            render_id=render_id,
            instance_id=instance_id,
            address=address,
            stage=stage,
        )

    @operation
    async def part_started(
        self, job_id: str, *, index: int, render_id: str, lease: Lease | None = None
    ) -> Job:
        """Part ``index``'s render ``render_id`` has left its render service's line (it has a
        slot). Refused when the part is rendered by another render now, or that render was
        recorded as started already."""
        return await self._change(PART_STARTED, job_id, lease, index=index, render_id=render_id)

    @operation
    async def part_done(
        self,
        job_id: str,
        *,
        index: int,
        render_id: str,
        output_path: str,
        lease: Lease | None = None,
    ) -> Job:
        """Part ``index``'s render ``render_id`` completed with ``output_path`` (kept for the
        join). Refused when the part is rendered by another render now."""
        return await self._change(
            PART_DONE, job_id, lease, index=index, render_id=render_id, output_path=output_path
        )

    @operation
    async def part_retry(
        self,
        job_id: str,
        *,
        index: int,
        render_id: str,
        note: str,
        stage: str,
        lease: Lease | None = None,
    ) -> Job:
        """Part ``index``'s render ``render_id`` is given up, to be rendered again (``note``
        says why, ``stage`` what the job shows meanwhile). Its frames go back to zero; the
        job's progress holds."""
        return await self._change(
            PART_RETRY, job_id, lease, index=index, render_id=render_id, note=note, stage=stage
        )

    # The job lifecycle: finding a request id, deleting, retention.

    @operation
    async def find_by_request_id(self, request_id: str) -> Job | None:
        """The job ``request_id`` created, None when it is unknown; RequestIdDeleted when that
        job was deleted."""
        return await self._read(
            lambda: sql.find_by_request_id(request_id),
        )

    @operation
    async def delete(self, job_id: str) -> Job:
        """Removes a terminal job whose render clean-up is done (not cancel_requested), with
        its history, and remembers its request id (a tombstone: create() with it then raises
        RequestIdDeleted). Returns the job as it was; TransitionRejected (with the job) when it
        is active or its clean-up is pending, JobNotFound when there is no such job. The
        output file is the caller's to remove."""
        return await self._change(DELETE, job_id)

    @operation
    async def list_expired(self, *, finished_before: datetime, limit: int) -> list[Job]:
        """At most ``limit`` deletable jobs that finished before ``finished_before``, oldest
        first (what a retention sweep deletes)."""
        return await self._read(
            lambda: sql.read_jobs(sql.EXPIRED_JOBS, {"before": finished_before, "limit": limit}),
        )

    @operation
    async def render_released(self, job_id: str) -> None:
        """Clears cancel_requested: the job's render is stopped and its output gone.
        Bookkeeping only, not a change of the job (version unchanged); nothing for an
        unknown job."""
        with contextlib.suppress(JobNotFound):
            await self._change(RENDER_RELEASED, job_id)

    # Tracing: the context of the request that created a job (videojob.tracing), so that
    # whichever tracker drives the job continues that trace.

    @operation
    async def trace_context(self, job_id: str) -> str:
        """The ``trace_context`` the job was created with ("" when none or the job is
        unknown)."""
        return await self._read(
            lambda: sql.trace_context(job_id),
        )

    # Ownership: the fenced checks are transitions; claims and heartbeats are each backend's.

    @operation
    async def confirm_lease(self, job_id: str, *, lease: Lease) -> Job:
        """A fenced write that changes nothing (no new version, no history entry): made just
        before a call that changes the job's render (Render), so that a replica that lost its
        lease makes no such call. StaleLease when ``lease`` no longer holds the job,
        TransitionRejected when the job is terminal, JobNotFound."""
        return await self._change(CONFIRM_LEASE, job_id, lease)

    @operation
    async def confirm_release(self, job_id: str, *, lease: Lease) -> Job:
        """A fenced write that changes nothing, made just before the calls that release a
        finished job's render (CancelRender): only the job's owner releases it. StaleLease when
        ``lease`` no longer holds the job, TransitionRejected when its render is released
        already, JobNotFound."""
        return await self._change(CONFIRM_RELEASE, job_id, lease)

    # The webhook outbox (store.outbox): its rows are written by the transitions; deliverers
    # claim them and record each attempt.

    @operation
    async def list_deliveries(self, job_id: str) -> list[Delivery]:
        """The job's webhook deliveries, oldest first; JobNotFound for an unknown job."""
        return await self._read(lambda: outbox.list_deliveries(job_id))

    @operation
    async def claim_deliveries(
        self,
        owner: str,
        *,
        at: datetime,
        until: datetime,
        limit: int,
        per_endpoint: int = outbox.NO_CAP,
    ) -> list[Delivery]:
        """At most ``limit`` deliveries due at ``at`` that no deliverer holds, oldest first, held
        by ``owner`` until ``until``, each with its secret; of one endpoint (its origin) only as
        many as keep its deliveries held by anyone at ``per_endpoint`` or fewer. Rows other
        transactions are writing are skipped. A read comes first: when nothing may be claimed,
        no write transaction is made."""
        if not await self._read(lambda: outbox.any_due(at, per_endpoint)):
            return []
        return await self._execute(
            lambda: outbox.claim(owner, at, until, limit, per_endpoint), Lane.CHANGE, atomic=True
        )

    @operation
    async def record_delivery_attempt(
        self, delivery_id: str, *, owner: str, outcome: AttemptRecord
    ) -> bool:
        """One attempt's outcome, if ``owner`` still holds the delivery (False otherwise)."""
        return await self._execute(
            lambda: outbox.record_attempt(delivery_id, owner, outcome), Lane.CHANGE, atomic=True
        )

    @abstractmethod
    async def heartbeat(
        self, replica_id: str, *, ttl_seconds: float, refused_writes: int = 0
    ) -> list[ReplicaBeat]:
        """Registers or renews the replica: alive until the database's ``now()`` plus
        ``ttl_seconds``. ``refused_writes``: how many of its fenced writes were refused (for
        the record: a replica that lost jobs says so). In the same transaction, the rows of
        replicas whose heartbeat expired more than FORGET_REPLICA_SECONDS ago are deleted
        (a crashed replica never deletes its own; to a claim a missing row and an expired one
        are the same, and a replica that comes back registers again). Returns the other
        replicas' rows as that transaction saw them (what a reader of a job tells its owner's
        state by, export_service.ownership.owner_gone), in the same round trip."""

    @abstractmethod
    async def release_replica(self, replica_id: str) -> int:
        """Hands back every job the replica owns (owner unset) and removes its heartbeat; the
        number of jobs handed back."""

    @abstractmethod
    async def claim_jobs(
        self, replica_id: str, *, limit: int, take_over: bool = False
    ) -> list[Job]:
        """Takes up to ``limit`` jobs that need an owner (QUEUED, RUNNING, or terminal with
        their render still to release) and have none, or whose owner's heartbeat expired:
        owner = ``replica_id``, lease epoch + 1, in one short transaction that skips rows other
        transactions hold. ``take_over``: whoever owns them (the only replica of an exclusive
        database, at its start). Oldest first, each with ``claimed_from`` set."""

    @abstractmethod
    async def active_among(self, job_ids: Sequence[str]) -> set[str]:
        """Those of ``job_ids`` that are QUEUED or RUNNING."""
