"""Job metrics from the store's committed changes (a change listener): jobs finished by status
and failure code, how long they took and waited, and how many this process sees active."""

from __future__ import annotations

from export_service.store import Job, JobStatus
from videojob import metrics


class JobMetrics:
    """Counts each job's transitions as this process commits them. A terminal commit is the
    one that set ``finished_at``; the first RUNNING (or terminal) commit the one that set
    ``started_at`` (both equal ``updated_at`` in that commit only)."""

    def __init__(self) -> None:
        self._active: dict[str, JobStatus] = {}

    def observe(self, job: Job) -> None:
        if job.started_at is not None and job.started_at == job.updated_at:
            metrics.JOB_QUEUED.observe((job.started_at - job.created_at).total_seconds())
        if job.terminal:
            self._leave(job.id)
            if job.finished_at is not None and job.finished_at == job.updated_at:
                metrics.JOBS_FINISHED.labels(
                    job.status.value, metrics.failure_code_label(job.error_code)
                ).inc()
                metrics.JOB_DURATION.labels(job.status.value).observe(
                    (job.finished_at - job.created_at).total_seconds()
                )
            return
        previous = self._active.get(job.id)
        if previous == job.status:
            return
        self._leave(job.id)
        self._active[job.id] = job.status
        metrics.JOBS_ACTIVE.labels(job.status.value.lower()).inc()

    def _leave(self, job_id: str) -> None:
        previous = self._active.pop(job_id, None)
        if previous is not None:
            metrics.JOBS_ACTIVE.labels(previous.value.lower()).dec()

    def close(self) -> None:
        """Takes this process's jobs out of the gauges (the server stopped)."""
        for job_id in list(self._active):
            self._leave(job_id)
