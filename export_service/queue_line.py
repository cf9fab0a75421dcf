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
    StoreUnavailable,
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
        # A render service is its instance id; an attempt placed while it had not said its id
        # yet names only its address.
        self._instance_at = {
            attempt.address: attempt.instance_id
            for job in (*active, *completed)
            if (attempt := job.current_attempt) is not None and attempt.instance_id
        }
        self._lines: defaultdict[str, list[Job]] = defaultdict(list)
        self._running: defaultdict[str, list[Job]] = defaultdict(list)
        self._attempts: dict[str, RenderAttempt] = {}
        for job in active:
            attempt = job.current_attempt
            line = self._line_of(attempt)
            if line is None or attempt is None:
                continue
            self._attempts[line] = attempt
            (self._lines if waits_for_slot(job) else self._running)[line].append(job)
        # Each waiting job's line and its place in it (0: the next to start).
        self._where: dict[str, tuple[str, int]] = {}
        for line, waiting in self._lines.items():
            waiting.sort(key=_placed_order)
            self._where.update((job.id, (line, index)) for index, job in enumerate(waiting))
        self._run_times: defaultdict[str, list[float]] = defaultdict(list)
        for job in completed:
            line = self._line_of(job.current_attempt)
            if line is not None and job.started_at is not None and job.finished_at is not None:
                seconds = (job.finished_at - job.started_at).total_seconds()
                self._run_times[line].append(max(seconds, 0.0))
        self._starts: dict[str, list[float | None]] = {}

    def _line_of(self, attempt: RenderAttempt | None) -> str | None:
        if attempt is None:
            return None
        return attempt.instance_id or self._instance_at.get(attempt.address) or attempt.address

    def holds(self, job: Job) -> bool:
        """Whether this view has ``job`` waiting in the line it waits in."""
        where = self._where.get(job.id)
        return where is not None and where[0] == self._line_of(job.current_attempt)

    def join(self, job: Job) -> bool:
        """Holds ``job`` at the end of its line when it was placed there after every job this
        view holds in it (a job created since the view was taken): True when it does now."""
        if self.holds(job):
            return True
        attempt = job.current_attempt
        line = self._line_of(attempt)
        if attempt is None or line is None or not waits_for_slot(job) or job.id in self._where:
            return False
        waiting = self._lines[line]
        if waiting and _placed_order(job) < _placed_order(waiting[-1]):
            return False
        self._attempts.setdefault(line, attempt)
        self._where[job.id] = (line, len(waiting))
        waiting.append(job)
        self._starts.pop(line, None)
        return True

    def place_of(self, job: Job) -> QueuePlace | None:
        """None when ``job`` waits for no slot, or in no line this view holds it in."""
        if not waits_for_slot(job) or not self.holds(job):
            return None
        line, index = self._where[job.id]
        estimate: datetime | None = None
        if job.stage != STAGE_WAITING_FOR_RENDER:
            seconds = self._seconds_until_starts(line)[index]
            if seconds is not None:
                estimate = self.now + timedelta(seconds=round(seconds))
        return QueuePlace(index + 1, estimate)

    def _mean_run_time(self, line: str) -> float | None:
        times = self._run_times.get(line)
        return sum(times) / len(times) if times else None

    def _seconds_until_starts(self, line: str) -> list[float | None]:
        """For each job of the line, in order: seconds until it should start (None: unknown)."""
        known = self._starts.get(line)
        if known is None:
            known = self._starts[line] = self._estimate_line(line)
        return known

    def _estimate_line(self, line: str) -> list[float | None]:
        unknown: list[float | None] = [None] * len(self._lines[line])
        attempt = self._attempts[line]
        instance_id = attempt.instance_id or self._instance_at.get(attempt.address, "")
        slots = self._slots_of(instance_id, attempt.address)
        if not slots:
            return unknown
        mean = self._mean_run_time(line)
        free_in: list[float] = []
        for job in self._running[line]:
            remaining = self._remaining(job, mean)
            if remaining is None:
                return unknown
            free_in.append(remaining)
        # A render that just finished may still count as running here: the soonest free win.
        free_in = heapq.nsmallest(slots, [*free_in, *[0.0] * max(slots - len(free_in), 0)])
        heapq.heapify(free_in)
        starts: list[float | None] = []
        for _job in self._lines[line]:
            if not free_in:
                break
            starts.append(free_in[0])
            if mean is None:  # how long it holds that slot is unknown: the slot is gone
                heapq.heappop(free_in)
            else:
                heapq.heapreplace(free_in, free_in[0] + mean)
        return [*starts, *unknown[len(starts) :]]

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
    show a waiting job look at all. A job placed since the look joins the end of its line in the
    view (so a burst of creates costs no look each); any other job the view does not hold makes
    a new look."""

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
        """The place of each of ``jobs`` that waits for a slot in a line, by job id (none while
        the job database does not answer)."""
        waiting = [job for job in jobs if waits_for_slot(job) and job.current_attempt is not None]
        if not waiting:
            return {}
        try:
            view = await self._view_holding(waiting)
        except StoreUnavailable as error:
            # The job itself was read: it is shown, with no place rather than none at all.
            logger.warning("no queue positions: %s", error)
            return {}
        places = {job.id: view.place_of(job) for job in waiting}
        return {job_id: place for job_id, place in places.items() if place is not None}

    async def _view_holding(self, jobs: Sequence[Job]) -> QueueView:
        async with self._lock:
            view = self._view
            fresh = view is not None and self._clock() - self._taken_at < self._max_age
            if view is None or not fresh or not all(view.join(job) for job in jobs):
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
