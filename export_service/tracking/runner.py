"""Drives each job's render and writes what it reports into the store.

One ``JobTracker`` task per QUEUED or RUNNING job: it calls Render on the render service of the
job's current attempt (placed by load over the pool, export_service.render_pool, and recorded on
the job before the call; the attempt's own render id, store.base.render_id_for), sends every
later call of that attempt to the same render service, writes progress (coalesced) and the
terminal event (at once), and never leaves a job alone:

- a broken or ended stream, or silence for ``stall_timeout`` → GetRender, then re-attach with
  WatchRender from the last seq seen, or apply the terminal event the render service holds.
  Re-attaching never costs an attempt; ``max_quiet_rounds`` re-attaches in a row that bring no
  event fail the job RENDER_STALLED;
- a lost render (NOT_FOUND, Failed SHUTDOWN) → resubmitted with Render after a backoff,
  attempt + 1 on the job, up to ``max_attempts`` (RENDER_LOST); in a pool, at once on another
  render service, and also when the attempt's render service refuses connections (or stays
  silent for ``failover_after``). The superseded render is cancelled on its render service when
  that one answers (``RenderSupervisor.release_attempt``);
- an unreachable render service → asked again with exponential backoff and jitter until it
  answers; unreachable for ``retry_budget`` seconds without a break → RENDER_UNAVAILABLE.
  A busy one (RESOURCE_EXHAUSTED) answered, so it is asked again with backoff, unbounded;
- Completed naming a file that cannot be seen → re-checked (videojob.output_check) for
  ``output_wait_seconds`` before VERIFICATION_FAILED (the output storage may be briefly
  unreachable); only then COMPLETED;
- a render verdict (Failed with any other code, with the field it names) or an invalid spec →
  the job FAILED.

When the tracker gives up on a job, the job is failed with ``release_render``: the supervisor
cancels the render and removes its output, so a failed job leaves no file (retried at the next
start if the render service cannot be reached meanwhile).

Every one of those decisions is made in ``export_service.tracking.decide`` and, for the render
attempt it follows, ``tracking.attempt`` (pure, tested without I/O); ``JobTracker`` here only
performs what they decide (gRPC calls, store writes, timers) and feeds back what it observed,
as facts (where an event came from, which other render services could take a render, what the
job's record holds). It ends in one way: ``decide`` returns Stop, whether the job reached
a terminal state through this tracker, became terminal elsewhere (``tell(JobEnded())``: a cancel,
or a progress write refused as terminal) or the service is stopping (``tell(Stopping())``).

The supervisor (tracking.supervisor) starts a tracker per job and stops it; see there.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, assert_never

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace

from export_service.config import TrackerSettings
from export_service.input_check import planning_facts
from export_service.progress_writer import ProgressWriter
from export_service.render_pool import RenderMember, RenderPool
from export_service.split_plan import SplitPolicy, Whole, WholeCause, plan_split
from export_service.store import (
    Job,
    JobNotFound,
    JobStatus,
    JobStore,
    ProgressUpdate,
    TransitionRejected,
)
from export_service.store.base import Lease, RenderAttempt, StaleLease, render_id_for
from export_service.store.split_record import planned
from export_service.stored_outputs import Outputs
from export_service.tracking.actions import (
    BeginAttempt,
    CallRender,
    CheckOutput,
    CloseStream,
    DiscardProgress,
    DropProgress,
    Effect,
    FlushProgress,
    GetRender,
    MarkRenderReleased,
    OfferProgress,
    OfferStage,
    Question,
    ReadJob,
    ReadStream,
    ReleaseAttempt,
    RemoveOutput,
    Stop,
    Wait,
    WatchRender,
    WriteCancel,
    WriteComplete,
    WriteFail,
)
from export_service.tracking.activity_labels import (
    TRACKER_START,
    observation_label,
    question_label,
)
from export_service.tracking.attempt import render_call_failure
from export_service.tracking.decide import decide, start
from export_service.tracking.observations import (
    Cancelled,
    Completed,
    EventReceived,
    Failed,
    JobEnded,
    JobMissing,
    JobRead,
    LeaseLost,
    NotPlaced,
    Observation,
    OutputChecked,
    Progress,
    Refused,
    RenderOutcome,
    RenderReport,
    RpcFailed,
    Stopping,
    StreamEnded,
    StreamSilent,
    TimerFired,
    Written,
)
from videojob import metrics, stamps, tracing
from videojob.errors import Reason
from videojob.grpc_errors import error_info, field_violation
from videojob.limits import bounded_log_tail
from videojob.logging_setup import bind_log_context
from videojob.render.v1 import render_pb2, spec_pb2
from videojob.spec_validation import expected_duration_seconds

if TYPE_CHECKING:
    from collections.abc import Callable

    from export_service.ownership import Ownership
    from export_service.tracking.split_runner import SplitTracker

    # (job id, the superseded attempt, whether its render service is gone)
    ReleaseCallback = Callable[[str, RenderAttempt, bool], None]

logger = logging.getLogger(__name__)

STREAM_END: object = grpc.aio.EOF  # type: ignore[attr-defined]
RenderStream = grpc.aio.UnaryStreamCall[Any, render_pb2.RenderEvent]

# Questions news from outside may cut short: render calls and timers, never a store write.
_INTERRUPTIBLE = (CallRender, WatchRender, ReadStream, GetRender, CheckOutput, Wait)


def placed_on(member: RenderMember, job_id: str, attempt: int) -> RenderAttempt:
    """The record of the job's attempt placed on ``member``, from now."""
    return RenderAttempt(
        attempt=attempt,
        render_id=render_id_for(job_id, attempt),
        instance_id=member.instance_id,
        address=member.address,
        started_at=datetime.now(UTC),
    )


def render_outcome(event: render_pb2.RenderEvent) -> RenderOutcome | None:
    """What a render event says; None for an event of no kind this service knows."""
    match event.WhichOneof("event"):
        case "progress":
            progress = event.progress
            return Progress(
                percent=progress.percent,
                stage=progress.stage,
                eta_seconds=progress.eta_seconds,
                heartbeat=progress.heartbeat,
                stage_progress=progress.stage_progress,
            )
        case "completed":
            done = event.completed
            return Completed(
                done.output_path,
                done.size_bytes,
                done.duration_seconds,
                sha256=done.sha256,
                store_checksum=done.store_checksum,
            )
        case "failed":
            failed = event.failed
            return Failed(
                failed.code,
                failed.message,
                failed.field,
                bounded_log_tail(failed.log_tail),
                never_started=failed.never_started,
            )
        case "cancelled":
            return Cancelled()
    return None


def _never_connected(error: grpc.aio.AioRpcError) -> bool:
    """The call found no connection to its render service (gRPC's words for it): its request
    was never sent."""
    return error.code() == grpc.StatusCode.UNAVAILABLE and (
        "failed to connect to all addresses" in (error.details() or "")
    )


def count_question(question: Question, reason: str) -> None:
    """The question's metrics; ``reason`` (an observation label) is why it is asked."""
    metrics.TRACKER_QUESTIONS.labels(question_label(question)).inc()
    if isinstance(question, WatchRender):
        metrics.RENDER_REATTACHES.labels(reason).inc()
    elif isinstance(question, BeginAttempt):
        metrics.RENDER_RESUBMITS.labels(reason).inc()
    elif isinstance(question, Wait):
        metrics.TRACKER_RETRIES.labels(reason).inc()


def activity_key(observation: Observation) -> str:
    """A bounded name for what a tracker observed (an RPC failure with its status code), as
    the supervisor's in-process ``activity`` counts it."""
    if isinstance(observation, RpcFailed):
        return f"RpcFailed.{observation.code.name}"
    return type(observation).__name__


class JobTracker:
    """Performs what ``decide`` decides for one job, until it decides Stop."""

    def __init__(
        self,
        job_id: str,
        store: JobStore,
        pool: RenderPool,
        settings: TrackerSettings,
        progress: ProgressWriter,
        activity: Counter[str] | None = None,
        lease: Lease | None = None,
        ownership: Ownership | None = None,
        on_release: ReleaseCallback | None = None,
        created: Job | None = None,
        news: list[Observation] | None = None,
        outputs: Outputs | None = None,
        split_policy: SplitPolicy | None = None,
    ) -> None:
        self.job_id = job_id
        self._split_policy = split_policy or SplitPolicy()
        self._outputs = outputs or Outputs()
        # The row the job's create committed: the first ReadJob is answered from it.
        self._created = created
        # This replica's hold on the job: every write names it (None: unfenced, no owners).
        self.lease = lease
        self._ownership = ownership
        self._activity: Counter[str] = Counter() if activity is None else activity
        self._store = store
        self._pool = pool
        self._settings = settings
        self._progress = progress
        self._on_release = on_release
        # Where each attempt was placed (as recorded on the job), and which render services
        # refused or failed the current one (not chosen again for it).
        self._placements: dict[int, RenderAttempt] = {}
        self._spec: spec_pb2.RenderSpec | None = None
        self._call: RenderStream | None = None
        # News from outside (JobEnded, Stopping), answered in place of the next question
        # (``news``: what a crashed predecessor had not read yet).
        self._inbox: list[Observation] = list(news or ())
        self.news_arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_interruptible = False
        self._interrupting = False
        self._span: trace.Span | None = None
        self._attempt = 0
        # The terminal row this tracker committed, if it wrote one.
        self.terminal_row: Job | None = None
        # A split job's tracking, while it runs (tracking.split_runner).
        self._split: SplitTracker | None = None

    def tell(self, news: JobEnded | Stopping | LeaseLost) -> None:
        """Delivers news at once: a render call or timer in progress is cut short."""
        if self._split is not None:
            self._split.tell(news)
        self._inbox.append(news)
        self.news_arrived.set()
        if self._in_interruptible and not self._interrupting and self._task is not None:
            self._interrupting = True
            self._task.cancel()

    def take_news(self) -> list[Observation]:
        """The news not read yet (this tracker stopped without reading them)."""
        news, self._inbox = self._inbox, []
        self.news_arrived.clear()
        return news

    async def run(self) -> None:
        self._task = asyncio.current_task()
        stamps.stamp("export.tracker_start", self.job_id)
        bind_log_context(job_id=self.job_id, render_id=self.job_id)
        decision = start(self._settings, seed=random.getrandbits(64))
        reason = TRACKER_START
        try:
            if await self._track_split():
                return
            while True:
                for effect in decision.effects:
                    await self._perform(effect)
                if isinstance(decision.next, Stop):
                    return
                count_question(decision.next, reason)
                self._activity[type(decision.next).__name__] += 1
                observation = await self._ask(decision.next)
                self._activity[activity_key(observation)] += 1
                reason = observation_label(observation)
                metrics.TRACKER_OBSERVATIONS.labels(reason).inc()
                decision = decide(decision.state, observation, time.monotonic())
        finally:
            self._close_stream()
            self._progress.forget(self.job_id)
            if self._span is not None:
                self._span.end()

    async def _track_split(self) -> bool:
        """A split job (its parts planned, or due to be: nothing rendered yet and the planner
        splits it) is tracked part by part (tracking.split_runner) instead; True once that
        ended."""
        from export_service.tracking.split_runner import SplitTracker  # imports this module

        if self._inbox:
            return False
        job = self._created
        if job is None:
            try:
                job = await self._store.get(self.job_id)
            except JobNotFound:
                return False
        if job.terminal:
            return False
        spec = spec_pb2.RenderSpec.FromString(job.spec)
        if job.split is None:
            fresh = job.attempt == 1 and job.last_render_seq == 0 and not job.split_reason
            if not (fresh and job.status is JobStatus.QUEUED) or not await self._plan(job, spec):
                return False
            job = await self._store.get(self.job_id)
            if job.split is None:
                return False
        self._split = SplitTracker(
            job,
            spec,
            store=self._store,
            pool=self._pool,
            settings=self._settings,
            progress=self._progress,
            outputs=self._outputs,
            write_gate=None if self._ownership is None else self._ownership.ready,
            on_lease_refused=None if self._ownership is None else self._ownership.note_refused,
            on_release=self._on_release,
            lease=self.lease,
        )
        try:
            await self._split.run()
        finally:
            self.terminal_row = self._split.terminal_row
            self._inbox.clear()
        return True

    async def _plan(self, job: Job, spec: spec_pb2.RenderSpec) -> bool:
        """Plans a job nothing rendered yet: True once its parts are recorded. A job that can't
        be split safely has the planner's reason recorded (it renders whole and says why); one
        asked whole, or not worth splitting, is left as it is."""
        requested = spec.output.split.parts
        free_slots = self._pool.free_slots()
        if requested == 1 or (requested == 0 and len(free_slots) < 2):
            return False  # never split, or a pool of one: no facts to ask for
        facts = await planning_facts(self._pool.any_usable().stub, spec)
        verdict = plan_split(spec, facts, self._split_policy, free_slots)
        if isinstance(verdict, Whole):
            if verdict.cause is WholeCause.UNSPLITTABLE:
                await self._write(
                    "why the job renders whole",
                    self._store.plan_split(
                        job.id, split=None, reason=verdict.shown, lease=self.lease
                    ),
                )
            return False
        split = planned(
            verdict.total_frames,
            tuple((part.first_frame, part.frame_count) for part in verdict.parts),
            verdict.fps,
            # The output's audio rendered beside the parts: the join only muxes it.
            audio=facts is not None and facts.has_audio,
            pad_frames=verdict.pad_frames,
        )
        written = await self._write(
            "the split plan", self._store.plan_split(job.id, split=split, lease=self.lease)
        )
        if isinstance(written, Written):
            logger.info("job %s: split into %d parts", job.id, len(split.parts))
            return True
        return False  # the next ReadJob finds out why

    async def _ask(self, question: Question) -> Observation:
        if self._inbox:
            return self._inbox.pop(0)
        if not isinstance(question, _INTERRUPTIBLE):
            return await self._answer(question)
        self._in_interruptible = True
        try:
            return await self._answer(question)
        except asyncio.CancelledError:
            if not self._interrupting:
                raise
            self._interrupting = False
            task = asyncio.current_task()
            if task is not None and task.uncancel() > 0:
                raise  # cancelled from outside as well
            return self._inbox.pop(0)
        finally:
            self._in_interruptible = False

    # Questions: each returns what was observed.

    async def _answer(self, question: Question) -> Observation:
        match question:
            case ReadJob():
                return await self._read_job()
            case CallRender(attempt=attempt, elsewhere=elsewhere, avoid=avoid):
                assert self._spec is not None
                placed = await self._place(attempt, elsewhere, avoid, question.lease_proven)
                if not isinstance(placed, RenderAttempt):
                    return placed
                member = self._pool.member_for(placed.instance_id, placed.address)
                bind_log_context(attempt=attempt, render_id=placed.render_id)
                logger.info(
                    "job %s: Render %s (attempt %d) on %s (%s)",
                    self.job_id,
                    placed.render_id,
                    attempt,
                    member.address,
                    member.key,
                )
                self._close_stream()
                stamps.stamp("export.render_call", self.job_id)
                request = render_pb2.RenderRequest(render_id=placed.render_id, spec=self._spec)
                self._call = member.stub.Render(request)
                return await self._read_stream(member, submitted=True)
            case WatchRender(after_seq=after_seq):
                member, render_id = self._target()
                logger.info(
                    "job %s: WatchRender %s after seq %d", self.job_id, render_id, after_seq
                )
                self._close_stream()
                watch = render_pb2.WatchRenderRequest(render_id=render_id, after_seq=after_seq)
                self._call = member.stub.WatchRender(watch)
                return await self._read_stream(member)
            case ReadStream():
                return await self._read_stream(self._target()[0])
            case GetRender(why=why):
                return await self._get_render(why)
            case CheckOutput(path=path, size_bytes=size_bytes, store_checksum=checksum):
                stamps.stamp("export.check_start", self.job_id)
                problem = await self._outputs.check(
                    path, size_bytes=size_bytes, store_checksum=checksum
                )
                stamps.stamp("export.check_end", self.job_id)
                return OutputChecked(problem)
            case BeginAttempt(expected_attempt=expected):
                return await self._write(
                    "new attempt",
                    self._store.begin_attempt(
                        self.job_id, expected_attempt=expected, lease=self.lease
                    ),
                )
            case WriteComplete():
                stamps.stamp("export.complete_start", self.job_id)
                observation = await self._write(
                    "completion",
                    self._store.complete(
                        self.job_id,
                        output_path=question.output_path,
                        size_bytes=question.size_bytes,
                        duration_seconds=question.duration_seconds,
                        render_seq=question.render_seq,
                        lease=self.lease,
                        output_sha256=question.output_sha256,
                    ),
                )
                if isinstance(observation, Written):
                    logger.info("job %s: completed: %s", self.job_id, question.output_path)
                return observation
            case WriteFail():
                observation = await self._write(
                    "failure",
                    self._store.fail(
                        self.job_id,
                        code=question.code,
                        message=question.message,
                        field=question.field,
                        release_render=question.release_render,
                        log_tail=question.log_tail,
                        lease=self.lease,
                    ),
                )
                if isinstance(observation, Written):
                    logger.info(
                        "job %s: failed: %s: %s", self.job_id, question.code, question.message
                    )
                return observation
            case WriteCancel():
                observation = await self._write(
                    "cancel", self._store.cancel(self.job_id, lease=self.lease)
                )
                if isinstance(observation, Written):
                    logger.info(
                        "job %s: the render was cancelled at the render service", self.job_id
                    )
                return observation
            case Wait(seconds=seconds, why=why, then=then):
                logger.warning("job %s: %s; %s in %.1f s", self.job_id, why, then, seconds)
                await asyncio.sleep(seconds)
                return TimerFired()
        assert_never(question)

    async def _read_job(self) -> Observation:
        job, self._created = self._created, None
        placed_by_create = job is not None and bool(job.attempts)
        if job is None:
            try:
                job = await self._store.get(self.job_id)
            except JobNotFound:
                return JobMissing()
        if self._spec is None and not job.terminal:
            self._spec = spec_pb2.RenderSpec.FromString(job.spec)
            self._progress.register(self.job_id, job.attempt_progress)
            await self._continue_trace(job)
        self._placements = {attempt.attempt: attempt for attempt in job.attempts}
        expected = expected_duration_seconds(self._spec) if self._spec is not None else None
        self._attempt = job.attempt
        return JobRead(
            job.terminal,
            job.attempt,
            job.last_render_seq,
            expected,
            placed_attempts=tuple(attempt.attempt for attempt in job.attempts),
            placed_by_create=placed_by_create,
        )

    async def _read_stream(self, member: RenderMember, *, submitted: bool = False) -> Observation:
        call = self._call
        assert call is not None, "no open render call"
        try:
            # asyncio.timeout, not wait_for: no task per event (10 events/s per job).
            async with asyncio.timeout(self._settings.stall_timeout):
                event = await call.read()
        except TimeoutError:
            return StreamSilent(self._settings.stall_timeout)
        except grpc.aio.AioRpcError as error:
            return self._rpc_failed(error, member, submitted=submitted)
        if event is STREAM_END:
            return StreamEnded()
        assert isinstance(event, render_pb2.RenderEvent)
        kind = event.WhichOneof("event")
        stamps.stamp(f"export.received.{kind}", self.job_id, event.seq)
        metrics.RENDER_EVENTS_RECEIVED.labels(kind or "unknown").inc()
        if kind == "failed" and event.failed.log_tail:
            logger.info(
                "job %s: the render failed (%s); ffmpeg log tail attached",
                self.job_id,
                event.failed.code,
                extra={"log_tail": event.failed.log_tail},
            )
        return EventReceived(event.seq, render_outcome(event), member.key)

    async def _continue_trace(self, job: Job) -> None:
        """Every render call of this tracker joins the trace of the request that created the
        job (stored with it), whichever process or start picks the job up."""
        if not tracing.tracing_enabled():
            return
        self._span = tracing.tracer().start_span(
            "track job",
            context=tracing.extract_context(await self._store.trace_context(job.id)),
            attributes={tracing.JOB_ID_ATTRIBUTE: job.id, tracing.ATTEMPT_ATTRIBUTE: job.attempt},
        )
        otel_context.attach(trace.set_span_in_context(self._span))

    async def _get_render(self, why: str) -> Observation:
        member, render_id = self._target()
        logger.info("job %s: %s; asking %s about %s", self.job_id, why, member.address, render_id)
        try:
            info = await member.stub.GetRender(
                render_pb2.GetRenderRequest(render_id=render_id),
                timeout=self._settings.rpc_timeout,
            )
        except grpc.aio.AioRpcError as error:
            return self._rpc_failed(error, member)
        return RenderReport(info.last_event.seq, render_outcome(info.last_event), member.key)

    def _rpc_failed(
        self, error: grpc.aio.AioRpcError, member: RenderMember, *, submitted: bool = False
    ) -> Observation:
        """The facts of a failed render call, for decide to judge."""
        violation = field_violation(error)
        info = error_info(error)
        return render_call_failure(
            error.code(),
            error.details() or "",
            member=member.key,
            submitted=submitted,
            draining=info is not None and info.reason == Reason.DRAINING,
            never_connected=_never_connected(error),
            others_usable=self._pool.others_available(member.key),
            others_with_room=self._pool.others_available(member.key, with_room=True),
            field=violation.field if violation else "",
        )

    def _target(self) -> tuple[RenderMember, str]:
        """The render service and render id of the current attempt (the first listed service
        and the job id for a render placed before placements were recorded)."""
        attempt = self._current_attempt
        placed = self._placements.get(attempt)
        if placed is None:
            return self._pool.first(), render_id_for(self.job_id, attempt)
        return self._pool.member_for(placed.instance_id, placed.address), placed.render_id

    @property
    def _current_attempt(self) -> int:
        return self._attempt or 1

    async def _place(
        self, attempt: int, elsewhere: bool, avoid: frozenset[str], lease_proven: bool
    ) -> RenderAttempt | Observation:
        """The attempt's placement: the recorded one (its lease confirmed unless
        ``lease_proven``), or (none yet, or ``elsewhere``) a new one chosen by the pool (not
        among ``avoid``) and recorded with a fenced write; else what the write observed
        instead."""
        self._attempt = attempt
        placed = self._placements.get(attempt)
        if placed is not None and not elsewhere:
            if lease_proven:
                return placed
            confirmed = await self._confirm_lease()
            return placed if confirmed is None else confirmed
        member = self._pool.choose(avoid)
        if member is None:
            avoided = ", ".join(sorted(avoid))
            busy = any(m.healthy for m in self._pool.members)
            return NotPlaced(f"every render service is draining or refused it ({avoided})", busy)
        placement = placed_on(member, self.job_id, attempt)
        written = await self._write(
            "the placement before Render",
            self._store.place_attempt(
                self.job_id,
                placed=placement,
                superseded_outcome=f"superseded by attempt {attempt}",
                lease=self.lease,
            ),
        )
        if isinstance(written, Written):
            self._placements[attempt] = placement
            return placement
        return written  # LeaseLost, Refused or JobMissing: decide's to judge

    async def _confirm_lease(self) -> Observation | None:
        """Before Render: None when this replica still holds the job (a fenced write said so),
        else what the write observed instead (LeaseLost, Refused or JobMissing)."""
        if self.lease is None:
            return None
        confirmed = await self._write(
            "the lease before Render", self._store.confirm_lease(self.job_id, lease=self.lease)
        )
        return None if isinstance(confirmed, Written) else confirmed

    async def _write(self, what: str, change: Awaitable[Job]) -> Observation:
        """A store write; a fenced one waits while this replica's own lease may have expired
        (the database then decides). A refused lease → LeaseLost."""
        if self.lease is not None and self._ownership is not None:
            try:
                await self._ownership.ready()
            except BaseException:
                if isinstance(change, Coroutine):
                    change.close()
                raise
        try:
            job = await change
        except StaleLease as stale:
            if self._ownership is not None:
                self._ownership.note_refused()
            logger.warning(
                "job %s: %s refused: %s; leaving the job and its render to that owner",
                self.job_id,
                what,
                stale.message,
            )
            return LeaseLost()
        except TransitionRejected as rejected:
            logger.debug("job %s: %s refused: %s", self.job_id, what, rejected.message)
            return Refused(rejected.current.status, rejected.current.attempt)
        except JobNotFound:
            return JobMissing()
        if job.terminal:
            self.terminal_row = job
            # The commit woke the job's watchers: they send the news before this tracker's
            # bookkeeping (logs, metrics, clean-up) runs.
            await asyncio.sleep(0)
        return Written(job.attempt)

    # Effects.

    async def _perform(self, effect: Effect) -> None:
        match effect:
            case CloseStream():
                self._close_stream()
            case OfferProgress():
                self._progress.offer(
                    ProgressUpdate(
                        job_id=self.job_id,
                        progress=effect.percent,
                        stage=effect.stage,
                        eta_seconds=effect.eta_seconds,
                        render_seq=effect.render_seq,
                        lease=self.lease,
                        stage_progress=effect.stage_progress,
                    )
                )
            case OfferStage(stage=stage):
                self._progress.offer_stage(self.job_id, stage, self.lease)
            case FlushProgress():
                await self._progress.flush(self.job_id)
            case DiscardProgress():
                self._progress.discard(self.job_id)
            case DropProgress():
                await self._progress.drop(self.job_id)
            case MarkRenderReleased():
                await self._store.render_released(self.job_id)
            case RemoveOutput(path=path):
                await self._outputs.remove(path)
            case ReleaseAttempt(attempt=attempt, service_lost=service_lost):
                placed = self._placements.get(attempt)
                if placed is not None and self._on_release is not None:
                    self._on_release(self.job_id, placed, service_lost)
            case _:
                assert_never(effect)

    def _close_stream(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None
