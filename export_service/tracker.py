"""Drives each job's render and writes what it reports into the store.

One ``JobTracker`` task per QUEUED or RUNNING job: it calls Render (the job id is the render id),
writes progress (coalesced) and the terminal event (at once), and never leaves a job alone:

- a broken or ended stream, or silence for ``stall_timeout`` → GetRender, then re-attach with
  WatchRender from the last seq seen, or apply the terminal event the render service holds.
  Re-attaching never costs an attempt; ``max_quiet_rounds`` re-attaches in a row that bring no
  event fail the job RENDER_STALLED;
- a lost render (NOT_FOUND, Failed SHUTDOWN) → resubmitted with Render after a backoff,
  attempt + 1 on the job, up to ``max_attempts`` (RENDER_LOST);
- an unreachable render service → asked again with exponential backoff and jitter until it
  answers; unreachable for ``retry_budget`` seconds without a break → RENDER_UNAVAILABLE.
  A busy one (RESOURCE_EXHAUSTED) answered, so it is asked again with backoff, unbounded;
- Completed naming a file that cannot be seen → re-checked for ``output_wait_seconds`` before
  VERIFICATION_FAILED (the output storage may be briefly unreachable);
- a render verdict (Failed with any other code) or an invalid spec → the job FAILED.

When the tracker gives up on a job, the job is failed with ``release_render``: the supervisor
cancels the render and removes its output, so a failed job leaves no file (retried at the next
start if the render service cannot be reached meanwhile).

The ``RenderSupervisor`` starts a tracker per job on create and, on start, for every non-terminal
job in the store; after a cancel it stops the tracker, cancels the render and removes its output.
Trackers are stopped on shutdown without touching renders: the next start re-attaches.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import random
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from export_service.config import TrackerSettings
from export_service.progress_writer import ProgressWriter
from export_service.store import (
    MAX_RUNNING_PROGRESS,
    JobStatus,
    JobStore,
    OutputMissing,
    ProgressUpdate,
    TransitionRejected,
)
from videojob.render.v1 import render_pb2, spec_pb2
from videojob.spec_validation import expected_duration_seconds

if TYPE_CHECKING:
    from videojob.render.v1.render_pb2_grpc import RenderServiceAsyncStub

logger = logging.getLogger(__name__)

STREAM_END: object = grpc.aio.EOF  # type: ignore[attr-defined]
RenderStream = grpc.aio.UnaryStreamCall[Any, render_pb2.RenderEvent]

RENDER_LOST = "RENDER_LOST"
RENDER_UNAVAILABLE = "RENDER_UNAVAILABLE"
RENDER_STALLED = "RENDER_STALLED"
INVALID_INPUT = "INVALID_INPUT"
VERIFICATION_FAILED = "VERIFICATION_FAILED"
INTERNAL = "INTERNAL"
# Completed must carry the duration the spec implies, within this (as the render service checks).
DURATION_TOLERANCE = 0.5
# A render service going down reports its renders as Failed SHUTDOWN: lost, not judged.
RETRYABLE_RENDER_FAILURES = frozenset({"SHUTDOWN"})


class JobFinished(Exception):
    """The job is terminal in the store; the tracker's work is over."""


class Next(enum.Enum):
    SUBMIT = "submit"  # Render: starts the render, or attaches and replays it from seq 1
    ATTACH = "attach"  # WatchRender after the last seq seen


@dataclass
class Retry:
    """The render is lost: resubmit it (attempt + 1)."""

    code: str
    message: str


@dataclass
class Unreachable:
    """The render service did not answer (or answered busy): ask it again after a backoff."""

    message: str
    busy: bool = False


Step = Next | Retry | Unreachable


def backoff_delay(settings: TrackerSettings, attempt: int) -> float:
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


@dataclass(frozen=True)
class OutputProblem:
    reason: str
    # False: the file may yet be seen (missing, or its directory unreachable): check again.
    lasting: bool


def output_problem(path: str, size_bytes: int) -> OutputProblem | None:
    """Blocking. What is wrong with a completed render's output file, if anything."""
    if not path:
        return OutputProblem("it named no output file", lasting=True)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return OutputProblem(f"output {path!r} does not exist", lasting=False)
    except OSError as error:
        return OutputProblem(f"output {path!r} cannot be reached ({error.strerror})", lasting=False)
    if not stat.S_ISREG(info.st_mode):
        return OutputProblem(f"output {path!r} is not a regular file", lasting=True)
    if info.st_size == 0:
        return OutputProblem(f"output {path!r} is empty", lasting=True)
    if size_bytes and info.st_size != size_bytes:
        return OutputProblem(
            f"output {path!r} has {info.st_size} bytes, the render reported {size_bytes}",
            lasting=True,
        )
    return None


class JobTracker:
    def __init__(
        self,
        job_id: str,
        store: JobStore,
        stub: RenderServiceAsyncStub,
        settings: TrackerSettings,
        progress: ProgressWriter,
    ) -> None:
        self.job_id = job_id
        self._store = store
        self._stub = stub
        self._settings = settings
        self._progress = progress
        self._spec = spec_pb2.RenderSpec()
        self._attempt = 1
        self._last_seq = 0
        # Render calls in a row that brought no new event (silence, an empty or broken stream).
        self._quiet_rounds = 0
        self._events_seen = 0
        # Since when the render service has not answered (None: it answered last time).
        self._unreachable_since: float | None = None
        self._unreachable_rounds = 0

    async def run(self) -> None:
        job = await self._store.get(self.job_id)
        if job.terminal:
            return
        self._spec.ParseFromString(job.spec)
        self._attempt = job.attempt
        self._last_seq = job.last_render_seq
        self._progress.register(self.job_id, job.progress)
        step: Step = Next.ATTACH if job.last_render_seq > 0 else Next.SUBMIT
        try:
            while True:
                if isinstance(step, Unreachable | Retry):
                    await self._stop_if_finished()
                if isinstance(step, Retry):
                    step = await self._resubmit(step)
                elif isinstance(step, Unreachable):
                    step = await self._wait_for_render_service(step)
                else:
                    step = await self._follow(step)
        except JobFinished:
            return
        finally:
            self._progress.forget(self.job_id)

    async def _stop_if_finished(self) -> None:
        """Before asking the render service again: a job that became terminal meanwhile (a
        cancel, a second tracker) needs nothing more, whether or not this task was told."""
        if (await self._store.get(self.job_id)).terminal:
            raise JobFinished

    # One render call, followed to its end.

    async def _follow(self, step: Next) -> Step:
        call: RenderStream
        if step is Next.SUBMIT:
            self._last_seq = 0
            logger.info("job %s: Render (attempt %d)", self.job_id, self._attempt)
            call = self._stub.Render(
                render_pb2.RenderRequest(render_id=self.job_id, spec=self._spec)
            )
        else:
            logger.info("job %s: WatchRender after seq %d", self.job_id, self._last_seq)
            call = self._stub.WatchRender(
                render_pb2.WatchRenderRequest(render_id=self.job_id, after_seq=self._last_seq)
            )
        events_before = self._events_seen
        try:
            outcome = await self._read_until_terminal(call)
        except grpc.aio.AioRpcError as error:
            self._count_quiet_round(events_before)
            return await self._after_rpc_error(error, step)
        finally:
            call.cancel()
        self._count_quiet_round(events_before)
        if outcome is not None:
            return outcome
        return await self._investigate("the render stream ended without a terminal event")

    async def _read_until_terminal(self, call: RenderStream) -> Step | None:
        """Applies events until a terminal one (returns what to do next, raises JobFinished when
        the job is finished) or until the stream ends or goes silent (returns None)."""
        while True:
            try:
                # asyncio.timeout, not wait_for: no task per event (10 events/s per job).
                async with asyncio.timeout(self._settings.stall_timeout):
                    event = await call.read()
            except TimeoutError:
                logger.warning(
                    "job %s: no render event for %.1f s", self.job_id, self._settings.stall_timeout
                )
                return None
            if event is STREAM_END:
                return None
            assert isinstance(event, render_pb2.RenderEvent)
            self._answered()
            if event.seq <= self._last_seq:
                continue
            self._last_seq = event.seq
            self._events_seen += 1
            next_step = await self._apply(event)
            if next_step is not None:
                return next_step

    async def _apply(self, event: render_pb2.RenderEvent) -> Retry | None:
        kind = event.WhichOneof("event")
        if kind == "progress":
            await self._on_progress(event)
            return None
        await self._flush_progress()
        if kind == "completed":
            await self._on_completed(event)
        elif kind == "failed":
            failed = event.failed
            if failed.code in RETRYABLE_RENDER_FAILURES:
                return Retry(RENDER_LOST, f"the render was lost ({failed.code}: {failed.message})")
            if failed.log_tail:
                logger.info("job %s: ffmpeg log tail:\n%s", self.job_id, failed.log_tail)
            await self._write_fail(failed.code or INTERNAL, failed.message or "the render failed")
        elif kind == "cancelled":
            await self._on_render_cancelled(event)
        raise JobFinished

    # Investigating: silence, a broken stream, an unreachable render service.

    async def _investigate(self, why: str) -> Step:
        logger.info("job %s: %s; asking the render service", self.job_id, why)
        try:
            info = await self._stub.GetRender(
                render_pb2.GetRenderRequest(render_id=self.job_id),
                timeout=self._settings.rpc_timeout,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                self._answered()
                return Retry(RENDER_LOST, "the render service no longer knows the render")
            return Unreachable(self._unreachable(error))
        self._answered()
        last = info.last_event
        if last.WhichOneof("event") in ("completed", "failed", "cancelled"):
            self._last_seq = max(self._last_seq, last.seq)
            retry = await self._apply(last)
            if retry is not None:
                return retry
        if self._quiet_rounds >= self._settings.max_quiet_rounds:
            await self._give_up(
                RENDER_STALLED,
                "the render service says the render is running, but its stream brought "
                f"nothing {self._quiet_rounds} times in a row "
                f"(stall timeout {self._settings.stall_timeout:g} s)",
            )
        if self._quiet_rounds:
            await asyncio.sleep(backoff_delay(self._settings, self._quiet_rounds))
        return Next.ATTACH

    def _count_quiet_round(self, events_before: int) -> None:
        if self._events_seen == events_before:
            self._quiet_rounds += 1
        else:
            self._quiet_rounds = 0

    async def _after_rpc_error(self, error: grpc.aio.AioRpcError, step: Next) -> Step:
        code = error.code()
        if code == grpc.StatusCode.INVALID_ARGUMENT and step is Next.SUBMIT:
            await self._write_fail(INVALID_INPUT, error.details() or "invalid render spec")
            raise JobFinished
        if code == grpc.StatusCode.NOT_FOUND:
            self._answered()
            return Retry(RENDER_LOST, "the render service no longer knows the render")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            self._answered()
            return Unreachable(f"the render service is busy: {error.details()}", busy=True)
        return await self._investigate(f"the render stream broke ({code.name})")

    def _unreachable(self, error: grpc.aio.AioRpcError) -> str:
        return f"the render service is unreachable ({error.code().name}: {error.details()})"

    def _answered(self) -> None:
        self._unreachable_since = None
        self._unreachable_rounds = 0

    async def _wait_for_render_service(self, unreachable: Unreachable) -> Step:
        """Backoff, then the same question again. Costs no attempt; bounded by the retry
        budget while the render service does not answer at all."""
        now = time.monotonic()
        self._unreachable_rounds += 1
        delay = backoff_delay(self._settings, self._unreachable_rounds)
        if not unreachable.busy:
            if self._unreachable_since is None:
                self._unreachable_since = now
            waited = now - self._unreachable_since
            budget = self._settings.retry_budget
            if waited >= budget:
                await self._give_up(
                    RENDER_UNAVAILABLE,
                    f"{unreachable.message}; gave up after {waited:.0f} s "
                    f"(retry budget {budget:g} s)",
                )
            delay = min(delay, budget - waited)
        logger.warning(
            "job %s: %s; asking again in %.1f s", self.job_id, unreachable.message, delay
        )
        await asyncio.sleep(delay)
        if self._last_seq == 0:
            # Nothing seen of this attempt's render: Render starts it, or attaches to it.
            return Next.SUBMIT
        return await self._investigate("the render service was unreachable")

    async def _resubmit(self, retry: Retry) -> Next:
        if self._attempt >= self._settings.max_attempts:
            await self._give_up(
                retry.code, f"{retry.message}; gave up after {self._attempt} attempts"
            )
        delay = backoff_delay(self._settings, self._attempt)
        logger.warning(
            "job %s: %s; resubmitting in %.1f s (attempt %d)",
            self.job_id,
            retry.message,
            delay,
            self._attempt + 1,
        )
        await asyncio.sleep(delay)
        # The old render's progress must not land after the new attempt's seq reset.
        await self._progress.drop(self.job_id)
        try:
            job = await self._store.begin_attempt(self.job_id, expected_attempt=self._attempt)
        except TransitionRejected as rejected:
            self._finish_if_terminal(rejected)
            job = rejected.current
        self._attempt = job.attempt
        self._quiet_rounds = 0
        return Next.SUBMIT

    async def _give_up(self, code: str, message: str, output_path: str = "") -> None:
        """FAILED with the render to be released (cancelled, its output removed)."""
        try:
            await self._store.fail(self.job_id, code=code, message=message, release_render=True)
            logger.info("job %s: failed: %s: %s", self.job_id, code, message)
        except TransitionRejected as rejected:
            logger.debug("job %s: failure refused: %s", self.job_id, rejected.message)
            raise JobFinished from None
        if output_path:
            await asyncio.to_thread(remove_output, output_path)
        raise JobFinished

    # Writes. The store decides; a refusal because the job is terminal ends the tracker.

    async def _on_progress(self, event: render_pb2.RenderEvent) -> None:
        progress = event.progress
        if progress.heartbeat:
            return
        self._progress.offer(
            ProgressUpdate(
                job_id=self.job_id,
                progress=min(max(progress.percent, 0.0), MAX_RUNNING_PROGRESS),
                stage=progress.stage,
                eta_seconds=progress.eta_seconds,
                render_seq=event.seq,
            )
        )
        if self._progress.finished(self.job_id):
            raise JobFinished

    async def _flush_progress(self) -> None:
        """Before a terminal write: the newest progress, at once."""
        await self._progress.flush(self.job_id)

    async def _on_completed(self, event: render_pb2.RenderEvent) -> None:
        done = event.completed
        expected = expected_duration_seconds(self._spec)
        if expected is not None and abs(done.duration_seconds - expected) > DURATION_TOLERANCE:
            await self._give_up(
                VERIFICATION_FAILED,
                f"the render reported {done.duration_seconds:.2f} s of video, "
                f"expected {expected:.2f} s",
                output_path=done.output_path,
            )
        deadline = time.monotonic() + self._settings.output_wait_seconds
        delay = 0.1
        while True:
            problem = await asyncio.to_thread(output_problem, done.output_path, done.size_bytes)
            if problem is None:
                try:
                    await self._store.complete(
                        self.job_id,
                        output_path=done.output_path,
                        size_bytes=done.size_bytes,
                        duration_seconds=done.duration_seconds,
                        render_seq=event.seq,
                    )
                    logger.info("job %s: completed: %s", self.job_id, done.output_path)
                    return
                except OutputMissing as missing:
                    problem = OutputProblem(missing.reason, lasting=False)
                except TransitionRejected as rejected:
                    if rejected.current.status is JobStatus.CANCELLED:
                        await asyncio.to_thread(remove_output, done.output_path)
                    logger.debug("job %s: completion refused: %s", self.job_id, rejected.message)
                    return
            remaining = deadline - time.monotonic()
            if problem.lasting or remaining <= 0:
                await self._give_up(
                    VERIFICATION_FAILED,
                    f"the render reported completion but {problem.reason}",
                    output_path=done.output_path,
                )
            logger.warning("job %s: %s; checking again", self.job_id, problem.reason)
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 2.0)

    async def _on_render_cancelled(self, event: render_pb2.RenderEvent) -> None:
        try:
            await self._store.cancel(self.job_id)
            logger.info("job %s: the render was cancelled at the render service", self.job_id)
        except TransitionRejected:
            return
        await self._store.render_released(self.job_id)

    async def _write_fail(self, code: str, message: str) -> None:
        try:
            await self._store.fail(self.job_id, code=code, message=message)
            logger.info("job %s: failed: %s: %s", self.job_id, code, message)
        except TransitionRejected as rejected:
            logger.debug("job %s: failure refused: %s", self.job_id, rejected.message)

    def _finish_if_terminal(self, rejected: TransitionRejected) -> None:
        if rejected.current.terminal:
            raise JobFinished from None


class RenderSupervisor:
    """Owns the tracker tasks and the clean-up of cancelled jobs."""

    def __init__(
        self,
        store: JobStore,
        stub: RenderServiceAsyncStub,
        settings: TrackerSettings,
    ) -> None:
        self._store = store
        self._stub = stub
        self._settings = settings
        self._progress = ProgressWriter(store, settings.progress_interval)
        self._trackers: dict[str, asyncio.Task[None]] = {}
        self._cleanups: dict[str, asyncio.Task[None]] = {}
        self._stopped = False

    @property
    def tracked(self) -> set[str]:
        return set(self._trackers)

    async def start(self) -> None:
        """Re-attaches or resubmits every non-terminal job and finishes pending cancellations."""
        self._progress.start()
        active = await self._store.list_active()
        for job in active:
            self.track(job.id)
        for job in await self._store.list_pending_cancellations():
            self._schedule_cleanup(job.id)
        if active:
            logger.info("reconciling %d non-terminal jobs", len(active))

    def track(self, job_id: str) -> None:
        if self._stopped or job_id in self._trackers:
            return
        self._progress.start()
        tracker = JobTracker(job_id, self._store, self._stub, self._settings, self._progress)
        task = asyncio.create_task(self._run_tracker(tracker), name=f"track-{job_id}")
        self._trackers[job_id] = task
        task.add_done_callback(lambda _: self._forget(self._trackers, job_id, task))

    async def job_cancelled(self, job_id: str) -> None:
        """Called after the store recorded CANCELLED: stops the tracker, then the render."""
        task = self._trackers.pop(job_id, None)
        if task is not None:
            task.cancel()
            # The tracker also stops by itself once it sees the job terminal; never let a
            # cancel request wait on it without bound.
            _, pending = await asyncio.wait([task], timeout=self._settings.rpc_timeout)
            if pending:
                logger.warning("job %s: tracker still stopping after the cancel", job_id)
        self._schedule_cleanup(job_id)

    async def stop(self) -> None:
        """Stops every task; renders keep running and jobs stay as stored, to be reconciled
        at the next start. Jobs created from now on wait for that start too."""
        self._stopped = True
        tasks = [*self._trackers.values(), *self._cleanups.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await self._progress.stop()

    async def _run_tracker(self, tracker: JobTracker) -> None:
        try:
            await tracker.run()
        except Exception as error:  # a bug must not leave the job running forever
            logger.exception("job %s: tracker crashed", tracker.job_id)
            await self._fail_after_crash(tracker.job_id, error)
        job = await self._store.get(tracker.job_id)
        if job.terminal and job.cancel_requested:
            self._schedule_cleanup(job.id)

    async def _fail_after_crash(self, job_id: str, error: Exception) -> None:
        """Writes the INTERNAL failure, retrying while the store itself fails (it may be the
        cause); a job left active here would only be resumed at the next start."""
        for attempt in range(1, self._settings.max_attempts + 1):
            try:
                await self._store.fail(
                    job_id,
                    code=INTERNAL,
                    message=f"tracking the render failed: {error}",
                    release_render=True,
                )
                return
            except TransitionRejected:
                return
            except Exception:
                logger.exception("job %s: recording the failure failed", job_id)
                await asyncio.sleep(backoff_delay(self._settings, attempt))

    def _schedule_cleanup(self, job_id: str) -> None:
        if self._stopped or job_id in self._cleanups:
            return
        task = asyncio.create_task(self._cleanup(job_id), name=f"cleanup-{job_id}")
        self._cleanups[job_id] = task
        task.add_done_callback(lambda _: self._forget(self._cleanups, job_id, task))

    async def _cleanup(self, job_id: str) -> None:
        """CancelRender and removal of any output the render left, retried with backoff for
        the retry budget (then at the next start)."""
        request = render_pb2.CancelRenderRequest(render_id=job_id)
        deadline = time.monotonic() + self._settings.retry_budget
        not_found = 0
        attempt = 0
        while True:
            attempt += 1
            try:
                info = await self._stub.CancelRender(request, timeout=self._settings.rpc_timeout)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    # A Render call still in flight may create it a moment later: ask twice.
                    not_found += 1
                    if not_found >= 2:
                        break
                    await asyncio.sleep(0.5)
                    continue
                logger.warning("job %s: CancelRender failed: %s", job_id, error.code().name)
            else:
                path = info.last_event.completed.output_path
                if await asyncio.to_thread(remove_output, path):
                    break
            if time.monotonic() >= deadline:
                logger.warning(
                    "job %s: render not confirmed released; retried at next start", job_id
                )
                return
            await asyncio.sleep(backoff_delay(self._settings, attempt))
        await self._store.render_released(job_id)

    @staticmethod
    def _forget(
        tasks: dict[str, asyncio.Task[None]], job_id: str, task: asyncio.Task[None]
    ) -> None:
        if tasks.get(job_id) is task:
            del tasks[job_id]
