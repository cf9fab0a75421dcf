"""Where a job that waits for a render slot stands: its place in the line and when it is expected
to start. Derived when jobs are read, never stored: the line moves without a job's version
changing.

The line is the render service's. A render service runs ``max_concurrent`` renders and starts its
queued ones in the order their Render calls came, and a job's placement is recorded before its
Render call: so the line a job waits in is every waiting job placed on the same render service,
whichever export replica placed it, in the order they were placed. Jobs placed on other render
services wait in other lines and are never ahead of it. A job not placed yet is in no line.

The estimate: each slot of the render service frees when its render ends (the running job's
ETA); each job ahead then holds the first free slot for the mean run time of the jobs that last
completed on that render service. Where that needs a number nobody has (nothing completed there
yet, a running render without an ETA, a render service that does not answer or does not say its
slots), there is no estimate.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from export_service.store.base import (
    STAGE_QUEUED,
    STAGE_WAITING_FOR_RENDER,
    Job,
    JobStatus,
    JobStore,
    RenderAttempt,
)

logger = logging.getLogger(__name__)

# How old a view of the lines a read may be shown from: reads within it share one look at the
# store (a job the view does not hold yet is looked up afresh).
MAX_VIEW_AGE_SECONDS = 1.0
# The completed jobs whose run times make the mean: the newest this many.
RECENT_COMPLETED_JOBS = 50

# The render slots of a render service (by instance id and address), when it answers and says
# them; None otherwise.
SlotsOf = Callable[[str, str], int | None]


@dataclass(frozen=True)
class QueuePlace:
    """A waiting job's place: ``position`` 1 is the next to start on its render service."""

    position: int
    estimated_start: datetime | None


def waits_for_slot(job: Job) -> bool:
    """QUEUED (queued on its render service, or asking one that does not answer), or a
    resubmitted render queued again on its new render service."""
    return not job.terminal and (job.status is JobStatus.QUEUED or job.stage == STAGE_QUEUED)


def _line_of(attempt: RenderAttempt | None) -> str | None:
    if attempt is None:
        return None
    return attempt.instance_id or attempt.address or None


def _placed_order(job: Job) -> tuple[datetime, datetime, str]:
    attempt = job.current_attempt
    placed = attempt.started_at if attempt is not None else job.created_at
    return (placed, job.created_at, job.id)


class QueueView:
    """The lines as the store held them at ``now``."""

    def __init__(
        self,
        active: Sequence[Job],
        completed: Sequence[Job],
        slots_of: SlotsOf,
        now: datetime,
    ) -> None:
        self.now = now
        self._slots_of = slots_of
        self._lines: defaultdict[str, list[Job]] = defaultdict(list)
        self._running: defaultdict[str, list[Job]] = defaultdict(list)
        self._attempts: dict[str, RenderAttempt] = {}
        for job in active:
            attempt = job.current_attempt
            line = _line_of(attempt)
            if line is None or attempt is None:
                continue
            self._attempts[line] = attempt
            (self._lines if waits_for_slot(job) else self._running)[line].append(job)
        for waiting in self._lines.values():
            waiting.sort(key=_placed_order)
        self._run_times: defaultdict[str, list[float]] = defaultdict(list)
        for job in completed:
            line = _line_of(job.current_attempt)
            if line is not None and job.started_at is not None and job.finished_at is not None:
                seconds = (job.finished_at - job.started_at).total_seconds()
                self._run_times[line].append(max(seconds, 0.0))

    def holds(self, job: Job) -> bool:
        """Whether this view has ``job`` waiting in the line it waits in."""
        line = _line_of(job.current_attempt)
        return line is not None and any(other.id == job.id for other in self._lines.get(line, ()))

    def place_of(self, job: Job) -> QueuePlace | None:
        """None when ``job`` waits for no slot, or in no line this view holds it in."""
        line = _line_of(job.current_attempt)
        if not waits_for_slot(job) or line is None:
            return None
        waiting = self._lines.get(line, [])
        ids = [other.id for other in waiting]
        if job.id not in ids:
            return None
        position = ids.index(job.id) + 1
        estimate: datetime | None = None
        if job.stage != STAGE_WAITING_FOR_RENDER:
            seconds = self._seconds_until_start(line, position)
            if seconds is not None:
                estimate = self.now + timedelta(seconds=round(seconds))
        return QueuePlace(position, estimate)

    def _mean_run_time(self, line: str) -> float | None:
        times = self._run_times.get(line)
        return sum(times) / len(times) if times else None

    def _seconds_until_start(self, line: str, position: int) -> float | None:
        attempt = self._attempts[line]
        slots = self._slots_of(attempt.instance_id, attempt.address)
        if not slots:
            return None
        mean = self._mean_run_time(line)
        free_in: list[float] = []
        for job in self._running[line]:
            remaining = self._remaining(job, mean)
            if remaining is None:
                return None
            free_in.append(remaining)
        # A render that just finished may still count as running here: the soonest free win.
        free_in = heapq.nsmallest(slots, [*free_in, *[0.0] * max(slots - len(free_in), 0)])
        heapq.heapify(free_in)
        for _ahead in range(position - 1):
            if mean is None:
                return None
            heapq.heappush(free_in, heapq.heappop(free_in) + mean)
        return free_in[0]

    def _remaining(self, job: Job, mean: float | None) -> float | None:
        """Seconds until a running render ends: its ETA as of its last write, else what the
        mean run time leaves of it; None when neither is known."""
        if job.eta_seconds > 0:
            return max(job.eta_seconds - (self.now - job.updated_at).total_seconds(), 0.0)
        if mean is None or job.started_at is None:
            return None
        return max(mean - (self.now - job.started_at).total_seconds(), 0.0)


class QueueLines:
    """Views of the lines for the servicer's reads: one look at the store (every active job, and
    the newest completed ones) serves every read for MAX_VIEW_AGE_SECONDS, and only reads that
    show a waiting job look at all."""

    def __init__(
        self,
        store: JobStore,
        slots_of: SlotsOf,
        *,
        max_age: float = MAX_VIEW_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._slots_of = slots_of
        self._max_age = max_age
        self._clock = clock
        self._view: QueueView | None = None
        self._taken_at = 0.0
        self._lock = asyncio.Lock()

    async def places(self, jobs: Iterable[Job]) -> dict[str, QueuePlace]:
        """The place of each of ``jobs`` that waits for a slot in a line, by job id."""
        waiting = [job for job in jobs if waits_for_slot(job) and job.current_attempt is not None]
        if not waiting:
            return {}
        view = await self._view_holding(waiting)
        places = {job.id: view.place_of(job) for job in waiting}
        return {job_id: place for job_id, place in places.items() if place is not None}

    async def _view_holding(self, jobs: Sequence[Job]) -> QueueView:
        async with self._lock:
            view = self._view
            fresh = view is not None and self._clock() - self._taken_at < self._max_age
            if view is None or not fresh or not all(view.holds(job) for job in jobs):
                taken_at = self._clock()
                view = await self._look()
                self._view, self._taken_at = view, taken_at
            return view

    async def _look(self) -> QueueView:
        active = await self._store.list_active()
        completed = await self._store.list_jobs(
            limit=RECENT_COMPLETED_JOBS, status=JobStatus.COMPLETED
        )
        return QueueView(active, completed, self._slots_of, datetime.now(UTC))
