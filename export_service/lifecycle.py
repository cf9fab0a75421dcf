"""The end of a job's life: deleting one (its record, its history, its output file) and the
retention sweep that deletes finished jobs after a given age (``--job-retention``).

The store's ``delete`` is the one conditional change (terminal, render clean-up done) and leaves
a tombstone of the request id; the output file is removed here, after the record: a file whose
removal failed is only logged (the record, the thing clients see, is gone either way)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from export_service.background import BackgroundLoop
from export_service.store import (
    Job,
    JobNotFound,
    JobStore,
    StoreUnavailable,
    TransitionRejected,
)
from export_service.stored_outputs import Outputs
from videojob.limits import JOB_RETENTION_BATCH, MAX_JOB_RETENTION_SWEEP_SECONDS

logger = logging.getLogger(__name__)

# A retention sweep runs at least this often (and at most every MAX_JOB_RETENTION_SWEEP_SECONDS).
MIN_SWEEP_SECONDS = 0.5


async def delete_job(store: JobStore, job_id: str, outputs: Outputs | None = None) -> Job:
    """Deletes a finished job and its output (a file, or an object in the store); the job as it
    was. TransitionRejected for a job that is active or whose render clean-up is pending,
    JobNotFound for an unknown one."""
    job = await store.delete(job_id)
    removed = await (outputs or Outputs()).remove(job.output_path)
    with_file = f" with {job.output_path}" if job.output_path and removed else ""
    logger.info("job %s deleted%s", job.id, with_file)
    return job


def sweep_interval(retention_seconds: float) -> float:
    """How often the sweep looks: a fraction of the retention, bounded both ways."""
    return min(max(retention_seconds / 4, MIN_SWEEP_SECONDS), MAX_JOB_RETENTION_SWEEP_SECONDS)


class RetentionSweeper:
    """Deletes jobs that finished more than ``retention_seconds`` ago (with their files), at
    most JOB_RETENTION_BATCH per pass; a full batch is followed by the next pass at once."""

    def __init__(
        self, store: JobStore, retention_seconds: float, outputs: Outputs | None = None
    ) -> None:
        self._store = store
        self._outputs = outputs
        self._retention = timedelta(seconds=retention_seconds)
        self._interval = sweep_interval(retention_seconds)
        self._loop = BackgroundLoop("job-retention", self._run)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def sweep_once(self) -> int:
        """One pass: the number of jobs deleted."""
        cutoff = datetime.now(UTC) - self._retention
        expired = await self._store.list_expired(finished_before=cutoff, limit=JOB_RETENTION_BATCH)
        deleted = 0
        for job in expired:
            try:
                await delete_job(self._store, job.id, self._outputs)
            except (TransitionRejected, JobNotFound):  # another replica deleted it meanwhile
                continue
            deleted += 1
        return deleted

    async def _run(self) -> None:
        while True:
            try:
                swept = await self.sweep_once()
            except StoreUnavailable as error:
                logger.warning("job retention: the database is unavailable (%s)", error.detail)
                swept = 0
            if swept:
                logger.info("job retention: deleted %d finished job(s)", swept)
            if swept < JOB_RETENTION_BATCH:
                await asyncio.sleep(self._interval)
