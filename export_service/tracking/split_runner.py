"""Drives a split job: each part as a render of its own, then the join of the parts.

Each part's render is followed exactly as a whole job's render attempt is (the pure
``tracking.attempt``: placement by load, its stream, investigating a quiet or broken stream,
backoff while its render service does not answer); this module performs what it asks, with
the part's own render id, placement and spec. What the job makes of a part's end (done, again
on its next attempt, or the job failed naming the part) and the job's progress are decided by
the pure ``tracking.split``.

- Each part's placement is recorded on the job (``place_part``, fenced) before its Render
  (invariant 11); a part recorded as rendering is re-attached to (WatchRender by its render id)
  by whichever tracker follows the job next: a restart, or a replica taking the job over.
- The frames each part reports ride on the job's coalesced progress write: one version per
  write, however many parts reported meanwhile.
- Finished parts are kept (``part_done``): a lost render service costs only the parts it held.
- Once every part is done, the join renders the job's output (Joining, Verifying, Uploading,
  within 95-99 with stage_progress); its output is checked, then the job COMPLETED, and the
  parts' outputs are removed. A failed or cancelled job's parts (running or done) are released
  by the supervisor's clean-up (``cancel_requested``): no part outlives the job.
- News (the job ended elsewhere, the service stops, the lease is lost) stops every part's
  tracking at once; the renders are left to the clean-up or the next owner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc

from export_service.config import TrackerSettings
from export_service.progress_writer import ProgressWriter
from export_service.render_pool import RenderMember, RenderPool
from export_service.split_plan import Plan, PlannedPart, audio_spec, join_spec, part_spec
from export_service.store import (
    Job,
    JobNotFound,
    JobStatus,
    JobStore,
    ProgressUpdate,
    StoreUnavailable,
    TransitionRejected,
)
from export_service.store.base import STAGE_QUEUED, Lease, RenderAttempt, StaleLease
from export_service.store.split_record import (
    AUDIO_INDEX,
    JOIN_INDEX,
    PartRecord,
    PartState,
    SplitRecord,
    part_render_id,
)
from export_service.stored_outputs import Outputs
from export_service.tracking.actions import (
    CallRender,
    CloseStream,
    DiscardProgress,
    DropProgress,
    Effect,
    FlushProgress,
    GetRender,
    OfferProgress,
    OfferStage,
    Question,
    ReadJob,
    ReadStream,
    Wait,
    WatchRender,
)
from export_service.tracking.attempt import (
    AttemptState,
    GaveUp,
    Jitter,
    JobGone,
    RenderLost,
    Verdict,
    begin,
    decide_attempt,
    render_call_failure,
)
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
    RenderReport,
    Stopping,
    StreamEnded,
    StreamSilent,
    TimerFired,
)
from export_service.tracking.runner import render_outcome
from export_service.tracking.split import (
    AFTER_RENDERING,
    STAGE_JOINING,
    AggregateRate,
    FailJob,
    PartEnded,
    after_part_ended,
    frames_finished,
    join_due,
    part_frames,
    part_outputs,
    rendering_progress,
    rendering_stage,
)
from videojob.backoff import Backoff, Retries
from videojob.errors import Reason
from videojob.grpc_errors import error_info, field_violation
from videojob.limits import FAILURE_INTERNAL, FAILURE_VERIFICATION_FAILED, MAX_RUNNING_PROGRESS
from videojob.output_check import duration_problem
from videojob.render.v1 import render_pb2, spec_pb2
from videojob.spec_validation import expected_duration_seconds

logger = logging.getLogger(__name__)

STREAM_END: object = grpc.aio.EOF  # type: ignore[attr-defined]
RenderStream = grpc.aio.UnaryStreamCall[Any, render_pb2.RenderEvent]
# A superseded part render handed to the supervisor to cancel (and its output removed).
ReleaseCallback = Callable[[str, RenderAttempt, bool], None]


class SplitRecordMoved(Exception):
    """A part's change was refused while the job is active: the record is not as this tracker
    believed it (a bug, or another writer). The tracker ends, and is started again from the
    record."""


class _Stopped(Exception):
    """The job's tracking ends here: it ended elsewhere, or is another's now."""


class _FailedForGood(Exception):
    def __init__(self, failure: FailJob) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass
class _RenderRun:
    """One part's (or the join's) render as this tracker follows it."""

    index: int
    spec: spec_pb2.RenderSpec
    member: RenderMember | None = None
    call: RenderStream | None = None
    # The last progress event's frame and the render's own percent and stage.
    frame: int = 0
    percent: float = 0.0
    stage: str = ""
    stage_progress: float = 0.0
    avoid: frozenset[str] = field(default_factory=frozenset)

    def close(self) -> None:
        if self.call is not None:
            self.call.cancel()
            self.call = None


def plan_of(split: SplitRecord) -> Plan:
    parts = tuple(PlannedPart(p.index, p.first_frame, p.frame_count) for p in split.parts)
    return Plan(parts, split.total_frames, split.fps, split.pad_frames)


class SplitTracker:
    """Performs a split job's tracking until the job is terminal or the tracking stops."""

    def __init__(
        self,
        job: Job,
        spec: spec_pb2.RenderSpec,
        *,
        store: JobStore,
        pool: RenderPool,
        settings: TrackerSettings,
        progress: ProgressWriter,
        outputs: Outputs,
        write_gate: Callable[[], Awaitable[None]] | None,
        on_lease_refused: Callable[[], None] | None,
        on_release: ReleaseCallback | None,
        lease: Lease | None,
    ) -> None:
        assert job.split is not None
        self.job_id = job.id
        self._split: SplitRecord = job.split
        self._frames = list(job.split_frames or (0 for _ in job.split.parts))
        self._held = job.progress
        self._spec = spec
        self._store = store
        self._pool = pool
        self._settings = settings
        self._progress = progress
        self._outputs = outputs
        self._write_gate = write_gate
        self._on_lease_refused = on_lease_refused
        self._on_release = on_release
        self._lease = lease
        self._news = asyncio.Event()
        self._rate: AggregateRate | None = None
        # The job's terminal row: the one this tracker committed, or the one read after news
        # that the job ended (its own completion's, when that news beat the write's reply).
        self.terminal_row: Job | None = None
        self._told: JobEnded | Stopping | LeaseLost | None = None

    def tell(self, news: JobEnded | Stopping | LeaseLost) -> None:
        logger.info("job %s: split tracking told %s", self.job_id, type(news).__name__)
        self._told = news
        self._news.set()

    async def run(self) -> None:
        self._progress.register(self.job_id, self._held)
        work = asyncio.create_task(self._drive(), name=f"split-{self.job_id}")
        news = asyncio.create_task(self._news.wait())
        try:
            await asyncio.wait({work, news}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            news.cancel()
            if not work.done():
                work.cancel()
            await asyncio.wait({work, news})
        if self.terminal_row is None and isinstance(self._told, JobEnded):
            self.terminal_row = await self._ended_row()
        if self.terminal_row is not None and self.terminal_row.status is JobStatus.COMPLETED:
            # Whatever news arrived meanwhile (the completion itself ends the job's tracking).
            await self._remove_part_outputs(self.terminal_row)
        if work.cancelled():
            return
        error = work.exception()
        if error is not None and not isinstance(error, _Stopped):
            raise error

    async def _drive(self) -> None:
        try:
            if self._split.join.state is not PartState.RENDERING:
                await self._render_parts()
            await self._render_join()
        except _FailedForGood as failed:
            await self._fail(failed.failure)

    # The parts.

    async def _render_parts(self) -> None:
        renders = [p for p in self._split.renders if not p.is_join]
        unfinished = [p.index for p in renders if p.state is not PartState.DONE]
        if unfinished:
            self._offer_rendering()
        try:
            async with asyncio.TaskGroup() as group:
                for index in unfinished:
                    group.create_task(self._render_part(index), name=f"{self.job_id}-p{index}")
        except* _FailedForGood as failures:
            first = failures.exceptions[0]
            assert isinstance(first, _FailedForGood)
            raise first from None
        except* _Stopped:
            raise _Stopped() from None

    async def _render_part(self, index: int) -> None:
        plan = plan_of(self._split)
        spec = audio_spec(self._spec, plan) if index == AUDIO_INDEX else None
        run = _RenderRun(index, spec or part_spec(self._spec, plan, index))
        part = self._split.render(index)
        try:
            while True:
                ended = await self._follow(run, part)
                if isinstance(ended, Completed):
                    job = await self._write(
                        f"{part.label} done",
                        self._store.part_done(
                            self.job_id,
                            index=index,
                            render_id=self._split.render(index).render_id,
                            output_path=ended.output_path,
                            lease=self._lease,
                        ),
                    )
                    self._adopt(job)
                    self._offer_rendering()
                    logger.info("job %s: %s done: %s", self.job_id, part.label, ended.output_path)
                    return
                part = await self._retry(run, self._split.render(index), ended)
        finally:
            run.close()

    async def _retry(self, run: _RenderRun, part: PartRecord, ended: PartEnded) -> PartRecord:
        decided = after_part_ended(self._split, part, ended, self._settings.max_attempts)
        if isinstance(decided, FailJob):
            if ended.service_lost:
                # Every render on the lost render service: its partial file removed at once,
                # CancelRender asked while that service may come back.
                for render in self._split.renders:
                    if render.instance_id == part.instance_id and render.render_id:
                        self._release(render, service_lost=True)
            raise _FailedForGood(decided)
        logger.warning(
            "job %s: %s's render %s ended (%s: %s); rendered again as its attempt %d",
            self.job_id,
            part.label,
            part.render_id,
            ended.code,
            ended.message,
            decided.attempt,
        )
        if part.index >= 0:
            # Its next attempt starts over: no progress write may carry this one's frames.
            self._frames[part.index] = 0
            await self._progress.withdraw(self.job_id)
        job = await self._write(
            f"{part.label} retry",
            self._store.part_retry(
                self.job_id,
                index=part.index,
                render_id=part.render_id,
                note=decided.note,
                stage=decided.stage,
                lease=self._lease,
            ),
        )
        self._adopt(job)
        self._release(part, ended.service_lost)
        if decided.elsewhere and run.member is not None:
            run.avoid = run.avoid | {run.member.key}
        run.member = None
        return self._split.render(part.index)

    # The join.

    async def _render_join(self) -> None:
        join = self._split.join
        if join.state is PartState.PENDING and not join_due(self._split):
            raise SplitRecordMoved("the join is due but a part is not done")
        paths = [part.output_path for part in self._split.parts]
        audio = "" if self._split.audio is None else self._split.audio.output_path
        spec = join_spec(self._spec, plan_of(self._split), paths, audio)
        run = _RenderRun(JOIN_INDEX, spec)
        try:
            while True:
                ended = await self._follow(run, join)
                if isinstance(ended, Completed):
                    await self._complete(ended)
                    return
                join = await self._retry(run, self._split.join, ended)
        finally:
            run.close()

    async def _complete(self, done: Completed) -> None:
        expected = expected_duration_seconds(self._spec)
        problem = duration_problem(done.duration_seconds, expected, "the joined output")
        if problem is None:
            problem = await self._outputs.check(
                done.output_path, size_bytes=done.size_bytes, store_checksum=done.store_checksum
            )
        if problem is not None:
            await self._outputs.remove(done.output_path)
            raise _FailedForGood(
                FailJob(
                    FAILURE_VERIFICATION_FAILED,
                    f"the join reported completion but {problem.reason}",
                )
            )
        self._progress.discard(self.job_id)
        job = await self._write(
            "completion",
            self._store.complete(
                self.job_id,
                output_path=done.output_path,
                size_bytes=done.size_bytes,
                duration_seconds=done.duration_seconds,
                render_seq=0,
                lease=self._lease,
                output_sha256=done.sha256,
            ),
        )
        self.terminal_row = job
        logger.info("job %s: completed: %s", self.job_id, done.output_path)

    async def _fail(self, failure: FailJob) -> None:
        await self._progress.flush(self.job_id)
        job = await self._write(
            "failure",
            self._store.fail(
                self.job_id,
                code=failure.code or FAILURE_INTERNAL,
                message=failure.message,
                log_tail=failure.log_tail,
                release_render=True,
                lease=self._lease,
            ),
        )
        self.terminal_row = job
        logger.info("job %s: failed: %s: %s", self.job_id, failure.code, failure.message)

    async def _ended_row(self) -> Job | None:
        """The job's row once news said it ended; None when the store can't tell now (what the
        job left is then the orphan sweep's)."""
        try:
            job = await self._store.get(self.job_id)
        except (JobNotFound, StoreUnavailable) as error:
            logger.warning("job %s: ended, its row not read: %s", self.job_id, error)
            return None
        return job if job.terminal else None

    async def _remove_part_outputs(self, job: Job) -> None:
        """Every part's output of the completed ``job``. A removal that fails (the output
        directory or the store out of reach a while) is tried again with backoff for the
        release budget; what is still there then is left to the orphan sweep."""
        if job.split is None:
            return
        left = list(part_outputs(job.split))
        retries = Retries(
            Backoff(first=self._settings.backoff_initial, cap=self._settings.backoff_max),
            budget=self._settings.release_budget,
        )
        while True:
            left = [path for path in left if not await self._outputs.remove(path)]
            if not left:
                return
            if not await retries.wait():
                logger.warning(
                    "job %s: part outputs not removed, left to the orphan sweep: %s",
                    self.job_id,
                    ", ".join(left),
                )
                return

    # One render (a part's or the join's), followed as an attempt.

    async def _follow(self, run: _RenderRun, part: PartRecord) -> Completed | PartEnded:
        """The render of ``part`` until it ends: Completed, or how it ended without output."""
        placed = part.state is PartState.RENDERING and bool(part.render_id)
        number = part.attempts if placed else part.attempts + 1
        if placed:
            run.member = self._pool.member_for(part.instance_id, part.address)
        state = AttemptState(
            number=number,
            jitter=Jitter(f"{self.job_id}:{part.index}:{number}"),
            avoid=run.avoid,
            elsewhere=not placed and bool(run.avoid),
        )
        decision = begin(state, submit=not placed)
        while True:
            for effect in decision.effects:
                await self._perform(run, effect)
            match decision.next:
                case Verdict(event=Completed() as done):
                    return done
                case Verdict(event=Failed() as failed):
                    return PartEnded(
                        failed.code or FAILURE_INTERNAL,
                        failed.message,
                        failed.log_tail,
                        service_lost=False,
                    )
                case Verdict(event=Cancelled()):
                    raise _Stopped()  # cancelled at the render service: the job's cancel
                case RenderLost(lost=lost):
                    message = lost.shown or lost.message
                    return PartEnded(
                        lost.code, message, service_lost=lost.service_lost or lost.at_once
                    )
                case GaveUp(code=code, message=message):
                    return PartEnded(code, message, service_lost=True)
                case JobGone():
                    raise _Stopped()
            question = decision.next
            assert not isinstance(question, Verdict | RenderLost | GaveUp | JobGone)
            observation = await self._answer(run, question)
            if isinstance(observation, LeaseLost):
                raise _Stopped()
            decision = decide_attempt(decision.state, observation, time.monotonic(), self._settings)

    async def _answer(self, run: _RenderRun, question: Question) -> Observation:
        match question:
            case ReadJob():
                try:
                    job = await self._store.get(self.job_id)
                except JobNotFound:
                    return JobMissing()
                return JobRead(job.terminal, job.attempt, 0, None)
            case CallRender(attempt=attempt, elsewhere=elsewhere, avoid=avoid):
                placed = await self._place(run, attempt, elsewhere, avoid)
                if placed is not None:
                    return placed
                assert run.member is not None
                render_id = self._split.render(run.index).render_id
                logger.info("job %s: Render %s on %s", self.job_id, render_id, run.member.address)
                run.close()
                request = render_pb2.RenderRequest(render_id=render_id, spec=run.spec)
                run.call = run.member.stub.Render(request)
                return await self._read_stream(run, submitted=True)
            case WatchRender(after_seq=after_seq):
                member, render_id = self._target(run)
                logger.info(
                    "job %s: WatchRender %s after seq %d", self.job_id, render_id, after_seq
                )
                run.close()
                watch = render_pb2.WatchRenderRequest(render_id=render_id, after_seq=after_seq)
                run.call = member.stub.WatchRender(watch)
                return await self._read_stream(run)
            case ReadStream():
                return await self._read_stream(run)
            case GetRender(why=why):
                member, render_id = self._target(run)
                logger.info(
                    "job %s: %s; asking %s about %s", self.job_id, why, member.address, render_id
                )
                try:
                    info = await member.stub.GetRender(
                        render_pb2.GetRenderRequest(render_id=render_id),
                        timeout=self._settings.rpc_timeout,
                    )
                except grpc.aio.AioRpcError as error:
                    return self._rpc_failed(error, member)
                return RenderReport(
                    info.last_event.seq, render_outcome(info.last_event), member.key
                )
            case Wait(seconds=seconds, why=why, then=then):
                logger.warning("job %s: %s; %s in %.1f s", self.job_id, why, then, seconds)
                await asyncio.sleep(seconds)
                return TimerFired()
            case _:
                raise AssertionError(f"a render attempt does not ask {question!r}")

    def _target(self, run: _RenderRun) -> tuple[RenderMember, str]:
        part = self._split.render(run.index)
        member = run.member or self._pool.member_for(part.instance_id, part.address)
        return member, part.render_id

    async def _place(
        self, run: _RenderRun, attempt: int, elsewhere: bool, avoid: frozenset[str]
    ) -> Observation | None:
        """The render's placement: kept (its lease confirmed) when recorded for ``attempt``,
        else chosen by load and recorded on the job before Render. None when placed."""
        part = self._split.render(run.index)
        if part.attempts == attempt and part.render_id and run.member is not None and not elsewhere:
            if self._lease is None:
                return None
            job = await self._write(
                "the lease before Render",
                self._store.confirm_lease(self.job_id, lease=self._lease),
            )
            return None if isinstance(job, Job) else job
        # ``avoid``: the attempt's own (it starts from the render services that lost or failed
        # this part, and starts afresh when none is left to choose).
        member = self._pool.choose(avoid)
        if member is None:
            busy = any(m.healthy for m in self._pool.members)
            return NotPlaced("every render service is draining or refused it", busy)
        render_id = part_render_id(self.job_id, run.index, attempt)
        job = await self._write(
            "the placement before Render",
            self._store.place_part(
                self.job_id,
                index=run.index,
                part_attempt=attempt,
                render_id=render_id,
                instance_id=member.instance_id,
                address=member.address,
                stage=STAGE_JOINING if run.index == JOIN_INDEX else None,
                lease=self._lease,
            ),
        )
        if not isinstance(job, Job):
            return job
        self._adopt(job)
        if run.index >= 0:
            self._frames[run.index] = 0  # a new render: the last one's frames are not its own
        run.member = member
        return None

    async def _read_stream(self, run: _RenderRun, *, submitted: bool = False) -> Observation:
        call = run.call
        assert call is not None and run.member is not None
        try:
            async with asyncio.timeout(self._settings.stall_timeout):
                event = await call.read()
        except TimeoutError:
            return StreamSilent(self._settings.stall_timeout)
        except grpc.aio.AioRpcError as error:
            return self._rpc_failed(error, run.member, submitted=submitted)
        if event is STREAM_END:
            return StreamEnded()
        assert isinstance(event, render_pb2.RenderEvent)
        if event.WhichOneof("event") == "progress" and not event.progress.heartbeat:
            run.frame = int(event.progress.frame)
            run.percent = event.progress.percent
            run.stage = event.progress.stage
            run.stage_progress = event.progress.stage_progress
            if run.stage not in ("", STAGE_QUEUED):
                await self._record_started(run)
        return EventReceived(event.seq, render_outcome(event), run.member.key)

    async def _record_started(self, run: _RenderRun) -> None:
        """The render of ``run`` has a slot now: recorded once, so that the jobs placed behind
        it on its render service no longer count it in their line (queue_line)."""
        part = self._split.render(run.index)
        if part.state is not PartState.RENDERING or not part.waiting_for_slot:
            return
        job = await self._write(
            "the part's start",
            self._store.part_started(
                self.job_id, index=run.index, render_id=part.render_id, lease=self._lease
            ),
        )
        self._adopt(job)

    def _rpc_failed(
        self, error: grpc.aio.AioRpcError, member: RenderMember, *, submitted: bool = False
    ) -> Observation:
        violation = field_violation(error)
        info = error_info(error)
        details = error.details() or ""
        return render_call_failure(
            error.code(),
            details,
            member=member.key,
            submitted=submitted,
            draining=info is not None and info.reason == Reason.DRAINING,
            never_connected=error.code() == grpc.StatusCode.UNAVAILABLE
            and "failed to connect to all addresses" in details,
            others_usable=self._pool.others_available(member.key),
            others_with_room=self._pool.others_available(member.key, with_room=True),
            field=violation.field if violation else "",
        )

    async def _perform(self, run: _RenderRun, effect: Effect) -> None:
        match effect:
            case CloseStream():
                run.close()
            case OfferProgress(percent=percent):
                if run.index == JOIN_INDEX:
                    self._offer_joining(run)
                elif run.index == AUDIO_INDEX:
                    pass  # no frames of the output: the parts' frames are its progress
                else:
                    part = self._split.render(run.index)
                    self._frames[run.index] = part_frames(
                        run.frame, percent, part.frame_count, self._frames[run.index]
                    )
                    self._offer_rendering()
            case OfferStage(stage=stage):
                # No render service answers for this part: the job says so until a part moves.
                self._progress.offer_stage(self.job_id, stage, self._lease)
            case FlushProgress() | DiscardProgress() | DropProgress():
                pass  # the job's progress is this tracker's own, offered as parts move
            case _:
                raise AssertionError(f"a render attempt does not ask {effect!r}")

    # The job's progress.

    def _offer_rendering(self) -> None:
        now = time.monotonic()
        finished = frames_finished(self._split, self._frames)
        rate = self._rate or AggregateRate(now, finished, finished)
        self._rate = rate.observed(finished, now)
        percent = rendering_progress(self._split, self._frames, self._held)
        self._held = percent
        eta = self._rate.eta_seconds(finished, self._split.total_frames, now)
        self._offer(percent, rendering_stage(self._split), eta, 0.0)

    def _offer_joining(self, run: _RenderRun) -> None:
        """Joining, Verifying, Uploading: the job's progress held at 95 or above, each stage's
        own movement in stage_progress (the join's percent while it joins)."""
        reported = min(max(run.percent, AFTER_RENDERING), MAX_RUNNING_PROGRESS)
        self._held = min(max(self._held, reported), MAX_RUNNING_PROGRESS)
        stage = run.stage or STAGE_JOINING
        self._offer(self._held, stage, 0.0, min(max(run.stage_progress, 0.0), 100.0))

    def _offer(self, percent: float, stage: str, eta: float, stage_progress: float) -> None:
        self._progress.offer(
            ProgressUpdate(
                job_id=self.job_id,
                progress=percent,
                stage=stage,
                eta_seconds=eta,
                render_seq=0,
                lease=self._lease,
                stage_progress=stage_progress,
                split_frames=tuple(self._frames),
            )
        )

    # Writes and releases.

    def _adopt(self, job: Job) -> None:
        if job.split is not None:
            self._split = job.split

    async def _write(self, what: str, change: Awaitable[Job]) -> Job:
        """A store write; anything but the job as written ends this tracking (_Stopped)."""
        if self._lease is not None and self._write_gate is not None:
            try:
                await self._write_gate()
            except BaseException:
                if isinstance(change, Coroutine):
                    change.close()
                raise
        try:
            return await change
        except StaleLease as stale:
            if self._on_lease_refused is not None:
                self._on_lease_refused()
            logger.warning("job %s: %s refused: %s; left to that owner", self.job_id, what, stale)
            raise _Stopped() from None
        except TransitionRejected as rejected:
            logger.info("job %s: %s refused: %s", self.job_id, what, rejected.reason)
            if rejected.current.terminal:
                raise _Stopped() from None
            # The record moved on without this tracker: tracked afresh from it (the
            # supervisor restarts a tracker that raised).
            raise SplitRecordMoved(f"{what} refused: {rejected.reason}") from None
        except JobNotFound:
            raise _Stopped() from None

    def _release(self, part: PartRecord, service_lost: bool) -> None:
        """The superseded render of ``part``: cancelled where it ran, its output removed."""
        if self._on_release is None or not part.render_id:
            return
        superseded = RenderAttempt(
            attempt=part.attempts,
            render_id=part.render_id,
            instance_id=part.instance_id,
            address=part.address,
            started_at=datetime.now(UTC),
        )
        self._on_release(self.job_id, superseded, service_lost)
