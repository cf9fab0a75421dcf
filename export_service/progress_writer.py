"""Coalesced progress writes for every tracked job.

Trackers hand each progress event to ``offer`` and go on reading their render stream; only the
newest progress of a job waits to be written. A job is written at most once per ``interval``,
measured from the end of its previous write, except when its stage changes (Queued, Preparing,
Rendering, Finalizing, Verifying: a few writes a job; "Waiting for a render service", the
tracker's own, offered with ``offer_stage``), which is due at once. A due job is
written at once; the jobs that fall due while a write is in flight wait for it and then share
one store transaction (``record_progress_batch``): under load the batches grow by themselves,
with no window that delays a lone update, and a slow store delays progress but never makes it
stale or multiplies the writes. Before a failure or cancellation the tracker calls ``flush``:
the newest progress is written at once, ahead of queued progress, and the terminal write
follows. Before a completion it calls ``discard``: the completion supersedes whatever progress
is pending.

A progress write refused because the job is terminal (a cancel, another writer) is news for the
job's tracker: ``on_job_ended(job_id)`` is called once, and the job gets no more writes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from export_service.store import (
    Job,
    JobStore,
    ProgressResult,
    ProgressUpdate,
    TransitionRejected,
)
from export_service.store.base import Lease, StaleLease
from videojob import metrics

logger = logging.getLogger(__name__)


@dataclass
class _JobProgress:
    stored: float
    pending: ProgressUpdate | None = None
    last_done: float = -math.inf
    in_flight: bool = False
    terminal: bool = False
    # The stage as last written (None: nothing written yet).
    stage: str | None = None
    # The highest progress of the current attempt offered or stored: what a stage of the
    # tracker's own is written with (the attempt's progress must not fall).
    newest: float = 0.0


class ProgressWriter:
    def __init__(
        self,
        store: JobStore,
        interval: float,
        on_job_ended: Callable[[str], None] | None = None,
        on_lease_lost: Callable[[str], None] | None = None,
        before_write: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._on_job_ended = on_job_ended
        # A write naming a lease the job no longer has: the job is another replica's now.
        self._on_lease_lost = on_lease_lost
        # Awaited before each write (the writer's own lease is valid again).
        self._before_write = before_write
        self._interval = interval
        self._jobs: dict[str, _JobProgress] = {}
        self._waiting: set[str] = set()
        self._wake = asyncio.Event()
        # While the loop sleeps: when it wakes anyway. An offer due earlier wakes it.
        self._deadline = -math.inf
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="progress-writer")

    async def stop(self) -> None:
        """Pending progress is dropped: the renders report it again after a restart."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])

    def register(self, job_id: str, stored_progress: float) -> None:
        """``stored_progress``: the current attempt's progress as stored (a job's own progress
        never decreases; an attempt's starts from zero)."""
        self._jobs[job_id] = _JobProgress(stored=stored_progress, newest=stored_progress)

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
        self._waiting.discard(job_id)

    def offer(self, update: ProgressUpdate) -> None:
        entry = self._jobs.get(update.job_id)
        # An early refusal that only saves a write: the progress rule's one guarantee is the
        # store's (store/transitions.py, PROGRESS).
        if entry is None or entry.terminal or update.progress < entry.stored:
            return
        if entry.pending is not None:
            metrics.PROGRESS_COALESCED.inc()
        entry.pending = update
        entry.newest = max(entry.newest, update.progress)
        self._waiting.add(update.job_id)
        if self._due_at(entry) < self._deadline:
            self._wake.set()

    def offer_stage(self, job_id: str, stage: str, lease: Lease | None) -> None:
        """Offers ``stage`` (one the tracker shows of its own) with the job's progress as it
        stands and no ETA: written at once, as every new stage is, or replaced by the render's
        next progress."""
        entry = self._jobs.get(job_id)
        if entry is None or entry.terminal:
            return
        seq = entry.pending.render_seq if entry.pending is not None else 0
        progress = max(entry.stored, entry.newest)
        self.offer(ProgressUpdate(job_id, progress, stage, 0.0, seq, lease))

    def _due_at(self, entry: _JobProgress) -> float:
        """When the job's pending progress may be written: at once for a new stage."""
        if entry.pending is not None and entry.pending.stage != entry.stage:
            return -math.inf
        return entry.last_done + self._interval

    async def flush(self, job_id: str) -> None:
        """Writes the job's newest progress now, after any write of it in flight."""
        entry = await self._settle(job_id)
        if entry is None:
            return
        pending, entry.pending = entry.pending, None
        self._waiting.discard(job_id)
        if pending is None or entry.terminal:
            return
        entry.in_flight = True
        try:
            if self._before_write is not None:
                await self._before_write()
            (result,) = await self._store.record_progress_batch([pending], urgent=True)
        finally:
            entry.in_flight = False
            entry.last_done = time.monotonic()
        self._record(job_id, entry, result)

    def discard(self, job_id: str) -> None:
        """Forgets the job's pending progress; a write of it in flight goes on (the store runs
        writes in order, so it lands before whatever the caller writes next)."""
        entry = self._jobs.get(job_id)
        if entry is not None:
            entry.pending = None
            self._waiting.discard(job_id)

    async def withdraw(self, job_id: str) -> None:
        """Forgets the job's pending progress once no write of it is in flight: nothing offered
        before (pending, in flight, or kept after a failed write) lands after what the caller
        writes next."""
        entry = await self._settle(job_id)
        if entry is not None:
            entry.pending = None
            self._waiting.discard(job_id)

    async def drop(self, job_id: str) -> None:
        """Forgets the job's pending progress (its render is being replaced) once no write of
        it is in flight."""
        entry = await self._settle(job_id)
        if entry is not None:
            entry.pending = None
            entry.stored = 0.0  # the next attempt's progress starts again from zero
            entry.newest = 0.0
            self._waiting.discard(job_id)

    async def _settle(self, job_id: str) -> _JobProgress | None:
        entry = self._jobs.get(job_id)
        while entry is not None and entry.in_flight:
            await self._idle.wait()
        return entry

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            due, next_due = self._collect(time.monotonic())
            if not due:
                self._deadline = next_due
                timeout = None if next_due == math.inf else max(next_due - time.monotonic(), 0)
                # asyncio.timeout, not wait_for: no task per wait, so an offer that is due at
                # once wakes the writer in one loop turn.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                self._deadline = -math.inf
                continue
            await self._write(due)

    def _collect(self, now: float) -> tuple[list[str], float]:
        """The jobs whose progress may be written now, and when the next one may."""
        due: list[str] = []
        next_due = math.inf
        for job_id in list(self._waiting):
            entry = self._jobs.get(job_id)
            if entry is None or entry.pending is None or entry.terminal:
                self._waiting.discard(job_id)
            elif not entry.in_flight:
                ready_at = self._due_at(entry)
                if ready_at <= now:
                    due.append(job_id)
                else:
                    next_due = min(next_due, ready_at)
        return due, next_due

    async def _write(self, job_ids: list[str]) -> None:
        batch: list[tuple[_JobProgress, ProgressUpdate]] = []
        for job_id in job_ids:
            entry = self._jobs[job_id]
            if entry.pending is not None:
                batch.append((entry, entry.pending))
                entry.pending = None
                entry.in_flight = True
                self._waiting.discard(job_id)
        if not batch:
            return
        self._idle.clear()
        results: list[ProgressResult] | None = None
        try:
            if self._before_write is not None:
                await self._before_write()
            results = await self._store.record_progress_batch([update for _, update in batch])
        except Exception:  # the store may recover: keep the progress for the next round
            logger.exception("writing the progress of %d jobs failed", len(batch))
        finally:
            done = time.monotonic()
            for entry, _ in batch:
                entry.in_flight = False
                entry.last_done = done
            self._idle.set()
        if results is None:
            for entry, update in batch:
                if entry.pending is None:
                    entry.pending = update
                    self._waiting.add(update.job_id)
            return
        for (entry, update), result in zip(batch, results, strict=True):
            self._record(update.job_id, entry, result)

    def _record(self, job_id: str, entry: _JobProgress, result: ProgressResult) -> None:
        if isinstance(result, Job):
            entry.stored = max(entry.stored, result.attempt_progress)
            entry.stage = result.stage
            return
        was_terminal = entry.terminal
        if isinstance(result, StaleLease):
            entry.terminal = True  # nothing more to write: the job is another replica's
            entry.pending = None
            if not was_terminal and self._on_lease_lost is not None:
                self._on_lease_lost(job_id)
            return
        if isinstance(result, TransitionRejected):
            entry.terminal = result.current.terminal
            entry.stored = max(entry.stored, result.current.attempt_progress)
        else:
            entry.terminal = True  # JobNotFound: nothing left to write to
        if entry.terminal:
            entry.pending = None
            if not was_terminal and self._on_job_ended is not None:
                self._on_job_ended(job_id)
