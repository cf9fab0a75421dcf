"""PatientStore: a JobStore view that waits out a database outage instead of failing.

The servicer uses the store as it is: while the database is unreachable a client is answered
UNAVAILABLE at once, and retries. The tracker must not give up a job because the record was
briefly unreachable (a lost completion would leave the job running, or fail a good render), so
it uses this view: every operation that raises StoreUnavailable is retried with capped backoff
until the database answers or the caller is cancelled (the service stopping). Repeating a change
is safe: every change is conditional (see base.StoreUnavailable).

It is a retry policy around one hook: every call of a JobStore operation goes through
``JobStore._operation``, which this view overrides to make the same call on the inner store,
again and again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar, cast

from export_service.store.base import Call, JobStore
from export_service.store.records import (
    ChangeListener,
    Job,
    ReplicaBeat,
    StoreUnavailable,
)
from export_service.store.sql import Plan
from export_service.store.transitions import Lane
from videojob.backoff import Backoff, Retries

logger = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY_SECONDS = 0.2
MAX_DELAY_SECONDS = 2.0


class PatientStore(JobStore):
    """Runs every operation on ``inner``, retrying StoreUnavailable. Listeners are the inner
    store's; closing is its owner's business."""

    def __init__(
        self,
        inner: JobStore,
        first_delay: float = FIRST_DELAY_SECONDS,
        max_delay: float = MAX_DELAY_SECONDS,
    ) -> None:
        super().__init__(inner.writer)
        self.inner = inner
        self._backoff = Backoff(first=first_delay, cap=max_delay)
        self.retries = 0  # operations repeated because the database was unavailable

    def add_listener(self, listener: ChangeListener) -> None:
        self.inner.add_listener(listener)

    async def close(self) -> None:
        """The inner store is closed by whoever opened it."""

    async def _operation(self, call: Call, run: Callable[[], Awaitable[T]]) -> T:
        """``call`` made on the inner store until the database answers (videojob.backoff)."""
        retries = Retries(self._backoff)
        while True:
            try:
                result = await call.on(self.inner)
            except StoreUnavailable as unavailable:
                if retries.attempt == 0:
                    logger.warning("%s waits for the database: %s", call, unavailable.detail)
                self.retries += 1
                await retries.wait()
                continue
            if retries.attempt:
                logger.info("%s done after the database came back", call)
            return cast(T, result)

    async def _execute(self, plan: Callable[[], Plan[T]], lane: Lane, *, atomic: bool) -> T:
        return await self.inner._execute(plan, lane, atomic=atomic)

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
