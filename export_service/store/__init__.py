"""The job store: the single record of every VideoJob (see base.JobStore)."""

from export_service.store.base import (
    ACTIVE_STATUSES,
    MAX_RUNNING_PROGRESS,
    TERMINAL_STATUSES,
    Change,
    HistoryEntry,
    Job,
    JobNotFound,
    JobStatus,
    JobStore,
    ListCursor,
    ProgressResult,
    ProgressUpdate,
    StoreUnavailable,
    TransitionRejected,
)
from export_service.store.factory import open_store

__all__ = [
    "ACTIVE_STATUSES",
    "MAX_RUNNING_PROGRESS",
    "TERMINAL_STATUSES",
    "Change",
    "HistoryEntry",
    "Job",
    "JobNotFound",
    "JobStatus",
    "JobStore",
    "ListCursor",
    "ProgressResult",
    "ProgressUpdate",
    "StoreUnavailable",
    "TransitionRejected",
    "open_store",
]
