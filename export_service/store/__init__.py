"""The job store: the single record of every VideoJob (see base.JobStore).

``open_store`` is imported on first use: the models (base) load no database driver, so pure
code (tracking.decide) can import them alone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    if name == "open_store":
        from export_service.store.factory import open_store

        return open_store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
