"""PatientStore: a JobStore view that waits out a database outage instead of failing.

The servicer uses the store as it is: while the database is unreachable a client is answered
UNAVAILABLE at once, and retries. The tracker must not give up a job because the record was
briefly unreachable (a lost completion would leave the job running, or fail a good render), so
it uses this view: every operation that raises StoreUnavailable is retried with capped backoff
until the database answers or the caller is cancelled (the service stopping). Repeating a change
is safe: every change is conditional (see base.StoreUnavailable).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

from export_service.store.base import (
    ChangeListener,
    HistoryEntry,
    Job,
    JobStatus,
    JobStore,
    Lane,
    Lease,
    ListCursor,
    ProgressResult,
    ProgressUpdate,
    RenderAttempt,
    ReplicaBeat,
    StoreUnavailable,
)
from export_service.store.sql import Plan

logger = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY_SECONDS = 0.2
MAX_DELAY_SECONDS = 2.0


class PatientStore(JobStore):
    """Delegates to ``inner``, retrying StoreUnavailable. Listeners are the inner store's;
    closing is its owner's business."""

    def __init__(
        self,
        inner: JobStore,
        first_delay: float = FIRST_DELAY_SECONDS,
        max_delay: float = MAX_DELAY_SECONDS,
    ) -> None:
        super().__init__(inner.writer)
        self.inner = inner
        self._first_delay = first_delay
        self._max_delay = max_delay
        self.retries = 0  # operations repeated because the database was unavailable

    def add_listener(self, listener: ChangeListener) -> None:
        self.inner.add_listener(listener)

    async def close(self) -> None:
        """The inner store is closed by whoever opened it."""

    async def _execute(self, plan: Callable[[], Plan[T]], lane: Lane, *, atomic: bool) -> T:
        return await self.inner._execute(plan, lane, atomic=atomic)

    async def _patiently(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        delay = self._first_delay
        waited = False
        while True:
            try:
                result = await operation()
            except StoreUnavailable as unavailable:
                if not waited:
                    logger.warning("%s waits for the database: %s", what, unavailable.detail)
                    waited = True
                self.retries += 1
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, self._max_delay)
                continue
            if waited:
                logger.info("%s done after the database came back", what)
            return result

    async def get(self, job_id: str) -> Job:
        return await self._patiently(f"reading job {job_id}", lambda: self.inner.get(job_id))

    async def list_jobs(
        self, *, limit: int, status: JobStatus | None = None, after: ListCursor | None = None
    ) -> list[Job]:
        return await self._patiently(
            "listing jobs", lambda: self.inner.list_jobs(limit=limit, status=status, after=after)
        )

    async def list_active(self) -> list[Job]:
        return await self._patiently("listing active jobs", self.inner.list_active)

    async def list_pending_cancellations(self) -> list[Job]:
        return await self._patiently(
            "listing pending cancellations", self.inner.list_pending_cancellations
        )

    async def history(
        self, job_id: str, *, after_version: int = 0, limit: int | None = None
    ) -> list[HistoryEntry]:
        return await self._patiently(
            f"reading the history of job {job_id}",
            lambda: self.inner.history(job_id, after_version=after_version, limit=limit),
        )

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
    ) -> tuple[Job, bool]:
        job, created = await self._patiently(
            f"creating job {job_id}",
            lambda: self.inner.create(
                job_id=job_id,
                request_id=request_id,
                spec=spec,
                max_active=max_active,
                owner=owner,
                placement=placement,
                trace_context=trace_context,
            ),
        )
        # A repeat after an unacknowledged commit finds the job it created itself.
        return job, created or job.id == job_id

    async def record_progress(
        self,
        job_id: str,
        *,
        progress: float,
        stage: str,
        eta_seconds: float,
        render_seq: int,
        lease: Lease | None = None,
    ) -> Job:
        return await self._patiently(
            f"progress of job {job_id}",
            lambda: self.inner.record_progress(
                job_id,
                progress=progress,
                stage=stage,
                eta_seconds=eta_seconds,
                render_seq=render_seq,
                lease=lease,
            ),
        )

    async def record_progress_batch(
        self, updates: Sequence[ProgressUpdate], *, urgent: bool = False
    ) -> list[ProgressResult]:
        return await self._patiently(
            f"progress of {len(updates)} jobs",
            lambda: self.inner.record_progress_batch(updates, urgent=urgent),
        )

    async def complete(
        self,
        job_id: str,
        *,
        output_path: str,
        size_bytes: int,
        duration_seconds: float,
        render_seq: int,
        lease: Lease | None = None,
    ) -> Job:
        return await self._patiently(
            f"completion of job {job_id}",
            lambda: self.inner.complete(
                job_id,
                output_path=output_path,
                size_bytes=size_bytes,
                duration_seconds=duration_seconds,
                render_seq=render_seq,
                lease=lease,
            ),
        )

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
        return await self._patiently(
            f"failure of job {job_id}",
            lambda: self.inner.fail(
                job_id,
                code=code,
                message=message,
                field=field,
                release_render=release_render,
                lease=lease,
                log_tail=log_tail,
            ),
        )

    async def find_by_request_id(self, request_id: str) -> Job | None:
        return await self._patiently(
            f"finding request {request_id}", lambda: self.inner.find_by_request_id(request_id)
        )

    async def delete(self, job_id: str) -> Job:
        return await self._patiently(f"deleting job {job_id}", lambda: self.inner.delete(job_id))

    async def list_expired(self, *, finished_before: datetime, limit: int) -> list[Job]:
        return await self._patiently(
            "listing expired jobs",
            lambda: self.inner.list_expired(finished_before=finished_before, limit=limit),
        )

    async def cancel(self, job_id: str, *, lease: Lease | None = None) -> Job:
        return await self._patiently(
            f"cancel of job {job_id}", lambda: self.inner.cancel(job_id, lease=lease)
        )

    async def begin_attempt(
        self, job_id: str, *, expected_attempt: int, lease: Lease | None = None
    ) -> Job:
        return await self._patiently(
            f"new attempt of job {job_id}",
            lambda: self.inner.begin_attempt(
                job_id, expected_attempt=expected_attempt, lease=lease
            ),
        )

    async def place_attempt(
        self,
        job_id: str,
        *,
        placed: RenderAttempt,
        superseded_outcome: str = "",
        lease: Lease | None = None,
    ) -> Job:
        return await self._patiently(
            f"placement of job {job_id}",
            lambda: self.inner.place_attempt(
                job_id, placed=placed, superseded_outcome=superseded_outcome, lease=lease
            ),
        )

    async def give_up_release(
        self, job_id: str, *, render_id: str, lease: Lease | None = None
    ) -> Job:
        return await self._patiently(
            f"noting the given-up release of render {render_id}",
            lambda: self.inner.give_up_release(job_id, render_id=render_id, lease=lease),
        )

    async def confirm_lease(self, job_id: str, *, lease: Lease) -> Job:
        return await self._patiently(
            f"lease of job {job_id}", lambda: self.inner.confirm_lease(job_id, lease=lease)
        )

    async def confirm_release(self, job_id: str, *, lease: Lease) -> Job:
        return await self._patiently(
            f"release of job {job_id}", lambda: self.inner.confirm_release(job_id, lease=lease)
        )

    # Ownership bookkeeping is export_service.ownership's, which retries on its own schedule:
    # passed through as it is.

    async def heartbeat(
        self, replica_id: str, *, ttl_seconds: float, refused_writes: int = 0
    ) -> list[ReplicaBeat]:
        return await self.inner.heartbeat(
            replica_id, ttl_seconds=ttl_seconds, refused_writes=refused_writes
        )

    async def release_replica(self, replica_id: str) -> int:
        return await self.inner.release_replica(replica_id)

    async def claim_jobs(
        self, replica_id: str, *, limit: int, take_over: bool = False
    ) -> list[Job]:
        return await self.inner.claim_jobs(replica_id, limit=limit, take_over=take_over)

    async def active_among(self, job_ids: Sequence[str]) -> set[str]:
        return await self.inner.active_among(job_ids)

    async def render_released(self, job_id: str) -> None:
        await self._patiently(
            f"render release of job {job_id}", lambda: self.inner.render_released(job_id)
        )

    async def trace_context(self, job_id: str) -> str:
        return await self._patiently(
            f"reading the trace context of job {job_id}",
            lambda: self.inner.trace_context(job_id),
        )
