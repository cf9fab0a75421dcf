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

Every one of those decisions is made in ``export_service.tracking.decide`` (pure, tested without
I/O); ``JobTracker`` here only performs what it decides (gRPC calls, store writes, timers) and
feeds back what it observed. It ends in one way: ``decide`` returns Stop, whether the job reached
a terminal state through this tracker, became terminal elsewhere (``tell(JobEnded())``: a cancel,
or a progress write refused as terminal) or the service is stopping (``tell(Stopping())``).

The ``RenderSupervisor`` starts a tracker per job on create and, on start, for every non-terminal
job in the store; after a cancel it stops the tracker, cancels the render and removes its output.
Trackers are stopped on shutdown without touching renders: the next start re-attaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, assert_never

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace

from export_service.config import TrackerSettings
from export_service.progress_writer import ProgressWriter
from export_service.render_pool import RenderMember, RenderPool
from export_service.store import (
    Job,
    JobNotFound,
    JobStore,
    ProgressUpdate,
    TransitionRejected,
)
from export_service.store.base import Lease, RenderAttempt, StaleLease, render_id_for
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
from export_service.tracking.decide import decide, start
from export_service.tracking.observations import (
    Cancelled,
    Completed,
    Draining,
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
    Unreached,
    Written,
)
from videojob import metrics, stamps, tracing
from videojob.errors import Reason
from videojob.grpc_errors import error_info, field_violation
from videojob.limits import FAILURE_INTERNAL, bounded_log_tail
from videojob.logging_setup import bind_log_context
from videojob.output_check import OutputProblem, check_output
from videojob.render.v1 import render_pb2, spec_pb2
from videojob.spec_validation import expected_duration_seconds

if TYPE_CHECKING:
    from collections.abc import Callable

    from export_service.ownership import Ownership

    # (job id, the superseded attempt, whether its render service is gone)
    ReleaseCallback = Callable[[str, RenderAttempt, bool], None]

logger = logging.getLogger(__name__)

STREAM_END: object = grpc.aio.EOF  # type: ignore[attr-defined]
RenderStream = grpc.aio.UnaryStreamCall[Any, render_pb2.RenderEvent]

# Questions news from outside may cut short: render calls and timers, never a store write.
_INTERRUPTIBLE = (CallRender, WatchRender, ReadStream, GetRender, CheckOutput, Wait)


def backoff_delay(settings: TrackerSettings, attempt: int) -> float:
    """For the supervisor's own retries (clean-ups, recording a crash)."""
    delay = min(settings.backoff_max, settings.backoff_initial * 2 ** max(attempt - 1, 0))
    return random.uniform(delay / 2, delay)


def remove_output(path: str) -> bool:
    """Blocking. True once no file is left at ``path``."""
    if not path:
        return True
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return True
    except OSError as error:
        logger.warning("could not remove output %s: %s", path, error)
        return False
    logger.info("removed output %s of a job that did not complete", path)
    return True


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
            )
        case "completed":
            done = event.completed
            return Completed(done.output_path, done.size_bytes, done.duration_seconds)
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


def count_question(question: Question, last_observed: str) -> None:
    """The question's metrics; ``last_observed`` (an activity key) is why it is asked."""
    metrics.TRACKER_QUESTIONS.labels(type(question).__name__).inc()
    if isinstance(question, WatchRender):
        metrics.RENDER_REATTACHES.labels(last_observed).inc()
    elif isinstance(question, BeginAttempt):
        metrics.RENDER_RESUBMITS.labels(last_observed).inc()
    elif isinstance(question, Wait):
        metrics.TRACKER_RETRIES.labels(last_observed).inc()


def activity_key(observation: Observation) -> str:
    """A bounded name for what a tracker observed (an RPC failure with its status code)."""
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
    ) -> None:
        self.job_id = job_id
        # The row the job's create committed: the first ReadJob is answered from it.
        self._created = created
        # An attempt whose placement that create recorded: its fenced insert is this
        # replica's proof of the lease, as a placement write would be.
        self._placed_by_create: int | None = None
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
        self._avoid: set[str] = set()
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

    def tell(self, news: JobEnded | Stopping | LeaseLost) -> None:
        """Delivers news at once: a render call or timer in progress is cut short."""
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
        last_observed = "Start"
        try:
            while True:
                for effect in decision.effects:
                    await self._perform(effect)
                if isinstance(decision.next, Stop):
                    return
                count_question(decision.next, last_observed)
                self._activity[type(decision.next).__name__] += 1
                observation = await self._ask(decision.next)
                last_observed = activity_key(observation)
                self._activity[last_observed] += 1
                metrics.TRACKER_OBSERVATIONS.labels(last_observed).inc()
                decision = decide(decision.state, observation, time.monotonic())
        finally:
            self._close_stream()
            self._progress.forget(self.job_id)
            if self._span is not None:
                self._span.end()

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
            case CallRender(attempt=attempt, elsewhere=elsewhere):
                assert self._spec is not None
                placed = await self._place(attempt, elsewhere)
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
            case CheckOutput(path=path, size_bytes=size_bytes):
                stamps.stamp("export.check_start", self.job_id)
                result = await asyncio.to_thread(check_output, path, size_bytes=size_bytes)
                stamps.stamp("export.check_end", self.job_id)
                return OutputChecked(result if isinstance(result, OutputProblem) else None)
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
        if job is not None:
            self._placed_by_create = job.attempt if job.attempts else None
        else:
            try:
                job = await self._store.get(self.job_id)
            except JobNotFound:
                return JobMissing()
        if self._spec is None and not job.terminal:
            self._spec = spec_pb2.RenderSpec.FromString(job.spec)
            self._progress.register(self.job_id, job.attempt_progress)
            await self._continue_trace(job)
            # Superseded attempts a render service may still hold (it was unreachable when
            # they were given up): released again, which costs a CancelRender each; not those
            # whose release was given up before (release_attempt skips them).
            for attempt in job.attempts:
                if attempt.attempt != job.attempt and self._on_release is not None:
                    self._on_release(self.job_id, attempt, False)
        self._placements = {attempt.attempt: attempt for attempt in job.attempts}
        expected = expected_duration_seconds(self._spec) if self._spec is not None else None
        self._attempt = job.attempt
        return JobRead(job.terminal, job.attempt, job.last_render_seq, expected)

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
            info = error_info(error)
            if submitted and info is not None and info.reason == Reason.DRAINING:
                self._avoid.add(member.key)
                return Draining(member.key, error.details() or "")
            if submitted and _never_connected(error) and self._pool.others_available(member.key):
                self._avoid.add(member.key)
                return Unreached(member.key, error.details() or "")
            return self._rpc_failed(error, member)
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
        outcome = render_outcome(event)
        if outcome is None:  # a kind of event this service does not know: proof of life only
            outcome = Progress(0.0, "", 0.0, heartbeat=True)
        return EventReceived(event.seq, outcome)

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
        return RenderReport(info.last_event.seq, render_outcome(info.last_event))

    def _rpc_failed(self, error: grpc.aio.AioRpcError, member: RenderMember) -> RpcFailed:
        code = error.code()
        violation = field_violation(error)
        busy = code == grpc.StatusCode.RESOURCE_EXHAUSTED
        others = self._pool.others_available(member.key, with_room=busy)
        if others and code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
            self._avoid.add(member.key)
        return RpcFailed(
            code,
            error.details() or "",
            violation.field if violation else "",
            others_available=others,
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

    async def _place(self, attempt: int, elsewhere: bool) -> RenderAttempt | Observation:
        """The attempt's placement: the recorded one (its lease confirmed), or a new one
        chosen by the pool and recorded with a fenced write; else what to observe instead."""
        self._attempt = attempt
        placed = self._placements.get(attempt)
        placed_by_create, self._placed_by_create = self._placed_by_create == attempt, None
        if placed is not None and not elsewhere:
            if placed_by_create:
                return placed
            confirmed = await self._confirm_lease()
            return placed if confirmed is None else confirmed
        if placed is not None:
            self._avoid.add(placed.instance_id or placed.address)
        member = self._pool.choose(frozenset(self._avoid))
        if member is None:
            avoided = ", ".join(sorted(self._avoid))
            self._avoid.clear()
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
        if isinstance(written, LeaseLost):
            return written
        if isinstance(written, Refused) and not written.terminal:
            return StreamEnded()  # the attempt moved on meanwhile: investigated, then followed
        return JobEnded()

    async def _confirm_lease(self) -> Observation | None:
        """Before Render: None when this replica still holds the job (a fenced write said so),
        else what to observe instead of calling it (LeaseLost, or JobEnded)."""
        if self.lease is None:
            return None
        confirmed = await self._write(
            "the lease before Render", self._store.confirm_lease(self.job_id, lease=self.lease)
        )
        if isinstance(confirmed, Written):
            return None
        if isinstance(confirmed, LeaseLost):
            return confirmed
        return JobEnded()

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
                await asyncio.to_thread(remove_output, path)
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


class RenderSupervisor:
    """Owns the tracker tasks and the clean-up of cancelled jobs."""

    def __init__(
        self,
        store: JobStore,
        pool: RenderPool,
        settings: TrackerSettings,
        ownership: Ownership | None = None,
        render_output_dir: Path | None = None,
    ) -> None:
        self._store = store
        self._pool = pool
        # The render services' shared output directory as this process sees it (None: not
        # shared with it): where a dead render service's partial files are removed.
        self._render_output_dir = render_output_dir
        # Superseded renders being cancelled on their render service, by render id.
        self._releases: dict[str, asyncio.Task[None]] = {}
        self._settings = settings
        # None: no owners (every active job is this process's, writes unfenced).
        self.ownership = ownership
        self._progress = ProgressWriter(
            store,
            settings.progress_interval,
            on_job_ended=self._job_ended,
            on_lease_lost=self._lease_lost,
            before_write=None if ownership is None else ownership.ready,
        )
        # Jobs claimed anew while a tracker of an older lease still stops: tracked after it.
        self._next_leases: dict[str, Lease] = {}
        self._trackers: dict[str, tuple[JobTracker, asyncio.Task[None]]] = {}
        # What every tracker asked and observed, by kind ("WatchRender", "RpcFailed.UNAVAILABLE").
        self.activity: Counter[str] = Counter()
        self._cleanups: dict[str, asyncio.Task[None]] = {}
        self._stopped = False

    @property
    def tracked(self) -> set[str]:
        """Jobs whose tracker task is still running (a job leaves this set when its task ends)."""
        return set(self._trackers)

    @property
    def stopping(self) -> bool:
        """The service is stopping: trackers end, jobs stay as recorded for the next start."""
        return self._stopped

    @property
    def owner(self) -> str | None:
        """This replica's id, which owns the jobs it creates (None: no owners)."""
        return None if self.ownership is None else self.ownership.replica_id

    async def start(self) -> None:
        """Re-attaches or resubmits every non-terminal job this replica owns (claimed now, and
        from then on as others stop or die) and finishes pending cancellations."""
        self._progress.start()
        if self.ownership is None:
            active = await self._store.list_active()
            for job in active:
                self.track(job.id)
        else:
            claimed = await self.ownership.start()
            active = [job for job in claimed if not job.terminal]
            self._adopt(claimed)
            self.ownership.run(self._adopt, lambda: self._trackers.keys(), self._jobs_ended)
        for job in await self._store.list_pending_cancellations():
            self._schedule_cleanup(job.id)
        if active:
            logger.info("reconciling %d non-terminal jobs", len(active))

    def first_placement(self, job_id: str) -> RenderAttempt | None:
        """Where a job this replica is creating will render first, for its create to record
        (sparing the tracker the placement write); None when no render service is known to be
        usable now: the tracker then places the job itself, waiting for one as it does."""
        if not self._pool.usable_count():
            return None
        member = self._pool.choose()
        if member is None or not member.usable:
            return None
        return placed_on(member, job_id, 1)

    def track_created(self, job: Job, *, found_again: bool = False) -> None:
        """A job the API created (or found again for a retried create): tracked when it is this
        replica's to drive. The tracker starts from the row the create committed; a job found
        again is read afresh."""
        created = None if found_again else job
        if self.ownership is None:
            self.track(job.id, created=created)
        elif job.owner == self.ownership.replica_id and job.lease_epoch is not None:
            self.track(job.id, Lease(job.owner, job.lease_epoch), created=created)

    def track(self, job_id: str, lease: Lease | None = None, created: Job | None = None) -> None:
        """``created``: the row the job's create committed (spares a read)."""
        if self._stopped:
            return
        entry = self._trackers.get(job_id)
        if entry is not None:
            if lease is not None and entry[0].lease != lease:
                self._next_leases[job_id] = lease
                entry[0].tell(LeaseLost())
            return
        self._progress.start()
        tracker = JobTracker(
            job_id,
            self._store,
            self._pool,
            self._settings,
            self._progress,
            self.activity,
            lease=lease,
            ownership=self.ownership,
            on_release=self.release_attempt,
            created=created,
        )
        task = asyncio.create_task(self._run_tracker(tracker), name=f"track-{job_id}")
        self._trackers[job_id] = (tracker, task)
        task.add_done_callback(lambda _: self._forget_tracker(job_id, task))

    async def job_cancelled(self, job: Job) -> None:
        """Called after the store recorded CANCELLED (``job``, as recorded): stops the tracker,
        then the render. A job another replica owns has its render stopped from here at once,
        so that FFmpeg stops within a call's time even when that owner is dead; the owner (or,
        after a dead owner's lease, whoever claims the job) still records the release."""
        job_id = job.id
        entry = self._trackers.get(job_id)
        if entry is not None:
            tracker, task = entry
            tracker.tell(JobEnded())
            # Never let a cancel request wait on the tracker without bound.
            _, pending = await asyncio.wait([task], timeout=self._settings.rpc_timeout)
            if pending:
                logger.warning("job %s: tracker still stopping after the cancel", job_id)
        elif self.ownership is not None and job.owner != self.ownership.replica_id:
            await self._stop_owned_elsewhere(job)
        self._schedule_cleanup(job_id)

    async def _stop_owned_elsewhere(self, job: Job) -> None:
        """One CancelRender for the current attempt of a cancelled job this replica does not
        own. Nothing is written: the release stays the owner's, under its lease."""
        attempt = job.current_attempt
        if attempt is None:
            return  # not placed yet: nothing renders
        member = self._pool.member_for(attempt.instance_id, attempt.address)
        request = render_pb2.CancelRenderRequest(render_id=attempt.render_id)
        try:
            await member.stub.CancelRender(request, timeout=self._settings.rpc_timeout)
        except grpc.aio.AioRpcError as error:
            logger.info(
                "job %s: render %s not stopped from this replica (%s); its owner releases it",
                job.id,
                attempt.render_id,
                error.code().name,
            )
        else:
            logger.info(
                "job %s: render %s stopped for its owner %s", job.id, attempt.render_id, job.owner
            )

    async def stop(self) -> None:
        """Stops every task; renders keep running and jobs stay as stored, to be reconciled
        at the next start. Jobs created from now on wait for that start too."""
        self._stopped = True
        trackers = [task for _, task in self._trackers.values()]
        for tracker, _ in self._trackers.values():
            tracker.tell(Stopping())
        if trackers:
            _, pending = await asyncio.wait(trackers, timeout=self._settings.rpc_timeout)
            for task in pending:  # stuck in a store write: the store is closing anyway
                task.cancel()
        cleanups = [*self._cleanups.values(), *self._releases.values()]
        for task in cleanups:
            task.cancel()
        if trackers or cleanups:
            await asyncio.wait([*trackers, *cleanups])
        await self._progress.stop()
        if self.ownership is not None:
            await self.ownership.stop()

    def _adopt(self, jobs: list[Job]) -> None:
        """Jobs this replica claimed: tracked, or (terminal) their render released."""
        for job in jobs:
            if job.terminal:
                if job.cancel_requested:
                    self._schedule_cleanup(job.id)
            elif job.owner is not None and job.lease_epoch is not None:
                self.track(job.id, Lease(job.owner, job.lease_epoch))

    def _job_ended(self, job_id: str) -> None:
        entry = self._trackers.get(job_id)
        if entry is not None:
            entry[0].tell(JobEnded())

    def _jobs_ended(self, job_ids: set[str]) -> None:
        """Tracked jobs found terminal (a cancel through another replica): their trackers stop,
        then the clean-up of a cancelled one runs."""
        for job_id in job_ids:
            self._job_ended(job_id)

    def _lease_lost(self, job_id: str) -> None:
        if self.ownership is not None:
            self.ownership.note_refused()
        entry = self._trackers.get(job_id)
        if entry is not None:
            entry[0].tell(LeaseLost())

    async def _run_tracker(self, tracker: JobTracker) -> None:
        job_id = tracker.job_id
        crashes = 0
        while True:
            try:
                await tracker.run()
                break
            except Exception as error:  # a bug must not leave the job running forever
                if self._stopped:
                    metrics.TRACKER_CRASHES.labels("handed_over").inc()
                    logger.warning(
                        "job %s: tracker crashed while the service stops (%s); the job is left "
                        "as recorded, for its next owner",
                        job_id,
                        error,
                        exc_info=True,
                    )
                    return
                crashes += 1
                if crashes > self._settings.max_tracker_restarts:
                    metrics.TRACKER_CRASHES.labels("failed").inc()
                    logger.exception("job %s: tracker crashed %d times", job_id, crashes)
                    await self._fail_after_crash(job_id, error, tracker.lease)
                    break
                metrics.TRACKER_CRASHES.labels("retracked").inc()
                delay = backoff_delay(self._settings, crashes)
                logger.exception(
                    "job %s: tracker crashed (%d of %d restarts); tracked again from its record "
                    "in %.1f s",
                    job_id,
                    crashes,
                    self._settings.max_tracker_restarts,
                    delay,
                )
                successor = await self._after_crash(tracker, delay)
                if successor is None:
                    return
                tracker = successor
        if self._stopped:
            return
        job = await self._store.get(job_id)
        if job.terminal and job.cancel_requested:
            self._schedule_cleanup(job.id)

    async def _after_crash(self, crashed: JobTracker, delay: float) -> JobTracker | None:
        """A new tracker of the crashed one's job and lease, which starts from the job's record
        (it re-attaches to the render, which costs no attempt) once ``delay`` has passed or news
        arrived (handed on to it); None when the service stops meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await crashed.news_arrived.wait()
        if self._stopped:
            return None
        entry = self._trackers.get(crashed.job_id)
        successor = JobTracker(
            crashed.job_id,
            self._store,
            self._pool,
            self._settings,
            self._progress,
            self.activity,
            lease=crashed.lease,
            ownership=self.ownership,
            on_release=self.release_attempt,
            news=crashed.take_news(),
        )
        if entry is not None and entry[0] is crashed:
            self._trackers[crashed.job_id] = (successor, entry[1])
        return successor

    async def _fail_after_crash(self, job_id: str, error: Exception, lease: Lease | None) -> None:
        """Writes the INTERNAL failure, retrying while the store itself fails (it may be the
        cause); a job left active here would only be resumed at the next start."""
        for attempt in range(1, self._settings.max_attempts + 1):
            try:
                await self._store.fail(
                    job_id,
                    code=FAILURE_INTERNAL,
                    message=f"tracking the render failed: {error}",
                    release_render=True,
                    lease=lease,
                )
                return
            except (TransitionRejected, JobNotFound):
                return
            except Exception:
                logger.exception("job %s: recording the failure failed", job_id)
                await asyncio.sleep(backoff_delay(self._settings, attempt))

    def _schedule_cleanup(self, job_id: str) -> None:
        if self._stopped or job_id in self._cleanups:
            return
        task = asyncio.create_task(self._cleanup(job_id), name=f"cleanup-{job_id}")
        self._cleanups[job_id] = task
        task.add_done_callback(lambda _: self._forget_cleanup(job_id, task))

    async def _cleanup(self, job_id: str) -> None:
        """CancelRender and removal of any output the render left, on the render service of
        each of the job's attempts, retried with backoff for the retry budget (then at the next
        start). Only the job's owner does it, after a fenced write."""
        job = await self._store.get(job_id)
        if not await self._may_release(job):
            return
        for superseded in job.attempts:
            if superseded.attempt != job.attempt:
                self.release_attempt(job_id, superseded, False)
        targets = [
            (self._pool.member_for(a.instance_id, a.address), a.render_id)
            for a in job.attempts
            if a.attempt == job.attempt  # superseded ones are released on their own
        ] or [(self._pool.first(), render_id_for(job_id, job.attempt))]
        deadline = time.monotonic() + self._settings.retry_budget
        for member, render_id in targets:
            if not await self._cancel_render(member, render_id, deadline):
                logger.warning(
                    "job %s: render not confirmed released; retried at next start", job_id
                )
                return
        await self._store.render_released(job_id)

    async def _may_release(self, job: Job) -> bool:
        """Whether this replica releases ``job``'s render now: it owns the job and a fenced
        write says it still does, so a replica that lost the job makes no CancelRender. A cancel
        accepted by another replica is released by the owner, which notices it within its claim
        interval; the job of a dead owner by whoever claims it next."""
        if self.ownership is None:
            return True
        if job.owner != self.ownership.replica_id or job.lease_epoch is None:
            logger.info("job %s: its render is released by its owner (%s)", job.id, job.owner)
            return False
        try:
            await self._store.confirm_release(job.id, lease=Lease(job.owner, job.lease_epoch))
        except StaleLease:
            logger.info("job %s: lost to another owner before its render was released", job.id)
            return False
        except TransitionRejected:
            return False  # released already
        return True

    async def _cancel_render(self, member: RenderMember, render_id: str, deadline: float) -> bool:
        """True once the render is known stopped and its output removed (or unknown to its
        render service); False when ``deadline`` passed first. The first failed call is logged
        as a warning, the tries after it and the backoff between them at debug: the caller
        says how it ends."""
        request = render_pb2.CancelRenderRequest(render_id=render_id)
        not_found = 0
        attempt = 0
        while True:
            attempt += 1
            try:
                info = await member.stub.CancelRender(request, timeout=self._settings.rpc_timeout)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    # A Render call still in flight may create it a moment later: ask twice.
                    not_found += 1
                    if not_found >= 2:
                        # Unknown to a render service that restarted: the file it may have
                        # finished before is nobody's now.
                        await asyncio.to_thread(self._remove_finished_outputs, render_id)
                        return True
                    await asyncio.sleep(0.5)
                    continue
                failure = error.code().name
            else:
                path = info.last_event.completed.output_path
                if await asyncio.to_thread(remove_output, path):
                    return True
                failure = "its output was not removed"
            if attempt == 1:
                logger.warning(
                    "render %s: CancelRender at %s failed: %s", render_id, member.address, failure
                )
            if time.monotonic() >= deadline:
                return False
            delay = backoff_delay(self._settings, attempt)
            logger.debug(
                "render %s: CancelRender at %s, try %d: %s; asked again in %.1f s",
                render_id,
                member.address,
                attempt,
                failure,
                delay,
            )
            await asyncio.sleep(delay)

    @property
    def releasing(self) -> set[str]:
        """Render ids of the superseded renders whose release is under way."""
        return set(self._releases)

    def release_attempt(self, job_id: str, attempt: RenderAttempt, service_lost: bool) -> None:
        """A superseded attempt: its render is cancelled on the render service it was placed on
        (as soon as that one answers again, for ``release_budget`` seconds) and its output
        removed. Given up after that (that render service may have moved or be gone): noted on
        the job's attempt (``release_given_up_at``, the only write the release makes), so that
        no later start asks again. ``service_lost``: that render service stopped answering, so
        its partial file is removed here at once (it may never come back)."""
        if self._stopped or attempt.render_id in self._releases:
            return
        if attempt.release_given_up_at is not None:
            return  # given up for good: that render service is not asked again
        if service_lost:
            self._remove_partial_files(attempt)
        task = asyncio.create_task(
            self._release(job_id, attempt), name=f"release-{attempt.render_id}"
        )
        self._releases[attempt.render_id] = task
        task.add_done_callback(lambda _: self._releases.pop(attempt.render_id, None))

    def _remove_partial_files(self, attempt: RenderAttempt) -> None:
        directory = self._render_output_dir
        if directory is None or not attempt.instance_id:
            return
        pattern = f".{attempt.instance_id}.{attempt.render_id}.partial.*"
        for partial in directory.glob(pattern):
            remove_output(str(partial))

    def _remove_finished_outputs(self, render_id: str) -> None:
        """Blocking. The finished file a render left (``<output dir>/<render id>.<container>``),
        when the render service's output directory is known here (--render-output-dir)."""
        directory = self._render_output_dir
        if directory is None:
            return
        for output in directory.glob(f"{glob.escape(render_id)}.*"):
            remove_output(str(output))

    async def _release(self, job_id: str, attempt: RenderAttempt) -> None:
        member = self._pool.member_for(attempt.instance_id, attempt.address)
        budget = self._settings.release_budget
        if await self._cancel_render(member, attempt.render_id, time.monotonic() + budget):
            logger.info(
                "job %s: superseded render %s on %s released",
                job_id,
                attempt.render_id,
                member.address,
            )
            return
        metrics.RENDER_RELEASES_GIVEN_UP.inc()
        logger.warning(
            "job %s: gave up releasing superseded render %s on %s: not released within %g s "
            "(--release-budget); noted on the job, not asked again",
            job_id,
            attempt.render_id,
            member.address,
            budget,
        )
        await self._note_release_given_up(job_id, attempt.render_id)

    async def _note_release_given_up(self, job_id: str, render_id: str) -> None:
        """Writes the give-up on the job's attempt, fenced by this replica's lease on the job
        (read now, as for a cancelled job's release): a replica that lost the job leaves it
        to its new owner, which releases the render again from its own start."""
        try:
            job = await self._store.get(job_id)
            lease = None
            if self.ownership is not None:
                if job.owner != self.ownership.replica_id or job.lease_epoch is None:
                    logger.info(
                        "job %s: owned by %s now; the release of %s is left to it",
                        job_id,
                        job.owner,
                        render_id,
                    )
                    return
                lease = Lease(job.owner, job.lease_epoch)
                await self.ownership.ready()
            await self._store.give_up_release(job_id, render_id=render_id, lease=lease)
        except JobNotFound:
            return  # deleted meanwhile: nothing is left to note it on
        except StaleLease:
            if self.ownership is not None:
                self.ownership.note_refused()
            logger.info("job %s: lost before the release of %s was noted", job_id, render_id)
        except TransitionRejected as rejected:
            logger.warning(
                "job %s: the release of %s was not noted: %s", job_id, render_id, rejected.reason
            )

    def _forget_tracker(self, job_id: str, task: asyncio.Task[None]) -> None:
        entry = self._trackers.get(job_id)
        if entry is not None and entry[1] is task:
            del self._trackers[job_id]
            lease = self._next_leases.pop(job_id, None)
            if lease is not None:
                self.track(job_id, lease)

    def _forget_cleanup(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self._cleanups.get(job_id) is task:
            del self._cleanups[job_id]
