"""open_store(url): the JobStore for a database URL."""

from __future__ import annotations

from pathlib import Path

from export_service.store.base import JobStore
from export_service.store.sqlite import SqliteJobStore


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative/path``, ``sqlite:////absolute/path`` or a bare path."""
    if url.startswith("sqlite://"):
        rest = url.removeprefix("sqlite://")
        if not rest.startswith("/") or rest == "/":
            raise ValueError(f"database URL {url!r}: expected sqlite:///path/to/file.db")
        return Path(rest[1:])
    if "://" in url:
        raise ValueError(f"database URL {url!r}: unsupported scheme")
    if not url:
        raise ValueError("database URL is empty")
    return Path(url)


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


async def open_store(url: str, writer: str = "") -> JobStore:
    """The store for ``url``, its schema migrated. ``writer`` names this process in the job
    history (default ``host:pid``). ValueError for a URL it cannot use."""
    if url.startswith(POSTGRES_SCHEMES):
        from export_service.store.postgres import PostgresJobStore  # asyncpg: only when used

        return await PostgresJobStore.open(url, writer)
    return await SqliteJobStore.open(sqlite_path(url), writer)
