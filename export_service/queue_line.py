"""Where a job that waits for a render slot stands: its place in the line and when it is expected
to start. Derived when jobs are read, never stored: the line moves without a job's version
changing.

The line is the render service's. A render service runs ``max_concurrent`` renders and starts its
queued ones in the order their Render calls came, and a job's placement is recorded before its
Render call: so the line a job waits in is every waiting job placed on the same render service,
whichever export replica placed it, in the order they were placed. Jobs placed on other render
services wait in other lines and are never ahead of it. A job not placed yet is in no line.
The parts of split jobs (their audio and join too) are renders of the same lines: a part placed
before a job and not started yet (``PartRecord.waiting_for_slot``) stands ahead of it, and a
part that started holds a slot. A split job itself shows no place (its parts wait in several
lines).

The estimate: each slot of the render service frees when its render ends (the running job's
ETA); each job ahead then holds the first free slot for the mean run time of the jobs that last
completed on that render service. Where that needs a number nobody has (nothing completed there
yet, a running render without an ETA, a part running there, a render service that does not
answer or does not say its slots), there is no estimate.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
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
from export_service.store.split_record import PartRecord, PartState

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


def _part_order(job: Job, part: PartRecord) -> tuple[datetime, datetime, str]:
    return (datetime.fromtimestamp(part.placed_at, UTC), job.created_at, f"{job.id}/{part.index}")


def _placed_renders(job: Job) -> Iterator[PartRecord]:
    """The renders of a split job's parts (its audio and join too) placed on a render service
    now, waiting for a slot there or running."""
    if job.split is None or job.terminal:
        return
    for part in job.split.renders:
        if part.state is PartState.RENDERING and part.render_id and part.address:
            yield part


def _parts_mark(placed: Sequence[PartRecord]) -> frozenset[tuple[int, str, bool]]:
    return frozenset((part.index, part.render_id, part.waiting_for_slot) for part in placed)


@dataclass(frozen=True)
class _Waiting:
    """A render waiting in a line: a job's (``job``), or a split job's part's (None: a part has
    no place of its own to show, it only stands ahead of what was placed after it)."""

    order: tuple[datetime, datetime, str]
    job: Job | None = None


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
        # A render service is its instance id; a render placed while it had not said its id
        # yet names only its address.
        self._instance_at = {
            attempt.address: attempt.instance_id
            for job in (*active, *completed)
            if (attempt := job.current_attempt) is not None and attempt.instance_id
        }
        self._instance_at.update(
            (part.address, part.instance_id)
            for job in active
            for part in _placed_renders(job)
            if part.instance_id
        )
        self._lines: defaultdict[str, list[_Waiting]] = defaultdict(list)
        self._running: defaultdict[str, list[Job]] = defaultdict(list)
        # Split jobs' parts that hold a slot (how long they hold it, nobody can say).
        self._running_parts: Counter[str] = Counter()
        # Each line's render service: (instance id, address).
        self._services: dict[str, tuple[str, str]] = {}
        # What this view holds of each split job's placed renders (see disagrees).
        self._parts_seen: dict[str, frozenset[tuple[int, str, bool]]] = {}
        for job in active:
            if job.split is not None:
                self._add_parts(job)
                continue
            attempt = job.current_attempt
            line = self._line_of(attempt)
            if line is None or attempt is None:
                continue
            self._services.setdefault(line, (attempt.instance_id, attempt.address))
            if waits_for_slot(job):
                self._lines[line].append(_Waiting(_placed_order(job), job))
            else:
                self._running[line].append(job)
        self._running_ids = {job.id for running in self._running.values() for job in running}
        # Each waiting job's line and its place in it (0: the next to start).
        self._where: dict[str, tuple[str, int]] = {}
        for line, waiting in self._lines.items():
            waiting.sort(key=lambda waiter: waiter.order)
            self._where.update(
                (waiter.job.id, (line, index))
                for index, waiter in enumerate(waiting)
                if waiter.job is not None
            )
        self._run_times: defaultdict[str, list[float]] = defaultdict(list)
        for job in completed:
            line = self._line_of(job.current_attempt)
            if line is not None and job.started_at is not None and job.finished_at is not None:
                seconds = (job.finished_at - job.started_at).total_seconds()
                self._run_times[line].append(max(seconds, 0.0))
        self._starts: dict[str, list[float | None]] = {}

    def _add_parts(self, job: Job) -> None:
        placed = list(_placed_renders(job))
        self._parts_seen[job.id] = _parts_mark(placed)
        for part in placed:
            line = self._service_line(part.instance_id, part.address)
            self._services.setdefault(line, (part.instance_id, part.address))
            if part.waiting_for_slot:
                self._lines[line].append(_Waiting(_part_order(job, part)))
            else:
                self._running_parts[line] += 1

    def _line_of(self, attempt: RenderAttempt | None) -> str | None:
        if attempt is None:
            return None
        return self._service_line(attempt.instance_id, attempt.address)

    def _service_line(self, instance_id: str, address: str) -> str:
        return instance_id or self._instance_at.get(address) or address

    def holds(self, job: Job) -> bool:
        """Whether this view has ``job`` waiting in the line it waits in."""
        where = self._where.get(job.id)
        return where is not None and where[0] == self._line_of(job.current_attempt)

    def disagrees(self, job: Job) -> bool:
        """Whether ``job``, as read now, is no longer what this view holds of it: it waits in
        the view but not any more (it started, or ended) or in another line, or it runs in the
        view but waits again; or, a split job, its parts were placed, started or ended since."""
        if job.split is not None:
            seen = self._parts_seen.get(job.id, frozenset())
            return _parts_mark(list(_placed_renders(job))) != seen
        where = self._where.get(job.id)
        if where is not None:
            return not waits_for_slot(job) or where[0] != self._line_of(job.current_attempt)
        return job.id in self._running_ids and waits_for_slot(job)

    def join(self, job: Job) -> bool:
        """Holds ``job`` at the end of its line when it was placed there after every render
        this view holds in it (a job created since the view was taken): True when it does
        now."""
        if self.holds(job):
            return True
        if job.split is not None:
            return False  # its parts' renders are not this view's to place
        attempt = job.current_attempt
        line = self._line_of(attempt)
        if attempt is None or line is None or not waits_for_slot(job) or job.id in self._where:
            return False
        waiting = self._lines[line]
        if waiting and _placed_order(job) < waiting[-1].order:
            return False
        self._services.setdefault(line, (attempt.instance_id, attempt.address))
        self._where[job.id] = (line, len(waiting))
        waiting.append(_Waiting(_placed_order(job), job))
        self._starts.pop(line, None)
        return True

    def place_of(self, job: Job) -> QueuePlace | None:
        """None when ``job`` waits for no slot, or in no line this view holds it in (a split
        job: in none)."""
        if not waits_for_slot(job) or job.split is not None or not self.holds(job):
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
        instance_id, address = self._services[line]
        instance_id = instance_id or self._instance_at.get(address, "")
        slots = self._slots_of(instance_id, address)
        if not slots or self._running_parts[line]:
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
        for _waiting in self._lines[line]:
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
        jobs = list(jobs)
        view = self._view
        # A job read now that the view holds otherwise (the one ahead just started): the view
        # is stale for its line, whatever its age.
        if view is not None and any(view.disagrees(job) for job in jobs):
            self._view = None
        waiting = [
            job
            for job in jobs
            if waits_for_slot(job) and job.current_attempt is not None and job.split is None
        ]
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
