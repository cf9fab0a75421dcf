"""What only the SQLite store has: files made by earlier code, WAL, and fsync only where it
matters. The contract both backends keep is tested in test_store.py."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from export_service.store import JobNotFound, JobStatus, TransitionRejected, open_store
from export_service.store.base import Change
from export_service.store.sql import SQLITE_JOBS_KEY, render_sqlite
from export_service.store.sqlite import MIGRATIONS, SqliteJobStore
from export_service.store.transitions import PROGRESS
from export_service.store.worker import Outcome

# The schema as the code made it before migrations were recorded, copied verbatim: a file of
# that time has exactly this and nothing else.
SCHEMA_BEFORE_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL
        CHECK (status IN ('QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    progress REAL NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 100),
    stage TEXT NOT NULL DEFAULT 'Queued',
    output_path TEXT NOT NULL DEFAULT '',
    error_code TEXT NOT NULL DEFAULT '',
    error_message TEXT NOT NULL DEFAULT '',
    error_field TEXT NOT NULL DEFAULT '',
    attempt INTEGER NOT NULL DEFAULT 1,
    version INTEGER NOT NULL DEFAULT 1,
    spec BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    last_render_seq INTEGER NOT NULL DEFAULT 0,
    eta_seconds REAL NOT NULL DEFAULT 0,
    output_size_bytes INTEGER NOT NULL DEFAULT 0,
    output_duration_seconds REAL NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    CHECK ((progress = 100) = (status = 'COMPLETED')),
    CHECK (status != 'COMPLETED' OR output_path != '')
);
CREATE INDEX IF NOT EXISTS jobs_newest ON jobs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_status_newest ON jobs (status, created_at DESC, id DESC);
CREATE TRIGGER IF NOT EXISTS jobs_invariants BEFORE UPDATE ON jobs
BEGIN
    SELECT RAISE(ABORT, 'terminal state is final')
        WHERE OLD.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
          AND (NEW.status != OLD.status OR NEW.version != OLD.version);
    SELECT RAISE(ABORT, 'progress never decreases') WHERE NEW.progress < OLD.progress;
    SELECT RAISE(ABORT, 'version rises by exactly one per change')
        WHERE NEW.version != OLD.version AND NEW.version != OLD.version + 1;
    SELECT RAISE(ABORT, 'a change must raise the version')
        WHERE NEW.version = OLD.version AND (
            NEW.status != OLD.status OR NEW.progress != OLD.progress OR NEW.stage != OLD.stage
            OR NEW.output_path != OLD.output_path OR NEW.attempt != OLD.attempt);
END;
"""

# Older still: before a job's error named its field.
SCHEMA_BEFORE_ERROR_FIELD = SCHEMA_BEFORE_MIGRATIONS.replace(
    "    error_field TEXT NOT NULL DEFAULT '',\n", ""
)


def make_old_file(path: Path, schema: str) -> None:
    """A file as the earlier code left it: one running job, one failed job."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript(schema)
        conn.execute(
            "INSERT INTO jobs (id, request_id, status, progress, stage, spec, created_at, "
            "updated_at, started_at, version, last_render_seq) "
            "VALUES ('running', 'r1', 'RUNNING', 42.5, 'Rendering', x'0a00', 1000, 2000, 1500, "
            "7, 31)"
        )
        conn.execute(
            "INSERT INTO jobs (id, request_id, status, progress, stage, spec, created_at, "
            "updated_at, version, error_code, error_message, finished_at) "
            "VALUES ('failed', 'r2', 'FAILED', 10, 'Failed', x'0a01', 3000, 4000, 3, "
            "'FFMPEG_ERROR', 'boom', 4000)"
        )
        conn.commit()
    finally:
        conn.close()


def applied_migrations(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
    finally:
        conn.close()


@pytest.mark.parametrize(
    "schema",
    [SCHEMA_BEFORE_MIGRATIONS, SCHEMA_BEFORE_ERROR_FIELD],
    ids=["before-migrations", "before-error-field"],
)
async def test_a_file_made_by_earlier_code_is_migrated_on_open(tmp_path: Path, schema: str) -> None:
    path = tmp_path / "old.db"
    make_old_file(path, schema)
    store = await SqliteJobStore.open(path, "after-upgrade")
    try:
        assert applied_migrations(path) == [migration.version for migration in MIGRATIONS]
        running = await store.get("running")
        assert (running.status, running.progress, running.version, running.last_render_seq) == (
            JobStatus.RUNNING,
            42.5,
            7,
            31,
        )
        failed = await store.get("failed")
        assert (failed.status, failed.error_code, failed.error_field) == (
            JobStatus.FAILED,
            "FFMPEG_ERROR",
            "",
        )
        # Each job's history starts with its state at the migration, then records changes.
        (migrated,) = await store.history("running")
        assert (migrated.version, migrated.change, migrated.progress) == (7, Change.MIGRATED, 42.5)
        await store.record_progress(
            "running", progress=50, stage="Rendering", eta_seconds=1, render_seq=32
        )
        done = await store.complete(
            "running", output_path="/o.mp4", size_bytes=1, duration_seconds=1, render_seq=33
        )
        assert done.version == 9
        assert [(e.version, e.change, e.writer) for e in await store.history("running")] == [
            (7, Change.MIGRATED, "migration 2"),
            (8, Change.PROGRESS, "after-upgrade"),
            (9, Change.COMPLETE, "after-upgrade"),
        ]
        with pytest.raises(TransitionRejected):
            await store.cancel("failed")
    finally:
        await store.close()
    reopened = await SqliteJobStore.open(path)
    try:
        assert applied_migrations(path) == [migration.version for migration in MIGRATIONS]
        assert len(await reopened.history("running")) == 3
    finally:
        await reopened.close()


async def test_wal_mode_and_bare_paths(tmp_path: Path) -> None:
    first = await open_store(f"sqlite:///{tmp_path / 'sub' / 'db.sqlite'}")
    await first.create(job_id="job1", request_id="r", spec=b"")
    await first.close()
    second = await open_store(str(tmp_path / "sub" / "db.sqlite"))
    try:
        assert (await second.get("job1")).status is JobStatus.QUEUED
    finally:
        await second.close()
    conn = sqlite3.connect(tmp_path / "sub" / "db.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_unsupported_urls_are_refused() -> None:
    for url in ("mysql://x", "sqlite://relative.db", ""):
        with pytest.raises(ValueError):
            await open_store(url)


async def synchronous_mode(store: SqliteJobStore) -> int:
    """The connection's current setting: the one its last commit used (1 NORMAL, 2 FULL)."""
    return int(await store._run(lambda: store._db.execute("PRAGMA synchronous").fetchone()[0]))


async def test_only_progress_commits_without_fsync(tmp_path: Path) -> None:
    store = await SqliteJobStore.open(tmp_path / "jobs.db")
    normal, full = 1, 2
    try:
        for job_id in ("a", "b", "c"):
            await store.create(job_id=job_id, request_id=job_id, spec=b"")
            assert await synchronous_mode(store) == full
        await store.record_progress("a", progress=5, stage="Rendering", eta_seconds=1, render_seq=1)
        assert await synchronous_mode(store) == normal
        await store.fail("b", code="X", message="boom")
        assert await synchronous_mode(store) == full
        await store.record_progress("a", progress=6, stage="Rendering", eta_seconds=1, render_seq=2)
        assert await synchronous_mode(store) == normal
        await store.cancel("c")
        assert await synchronous_mode(store) == full
        await store.begin_attempt("a", expected_attempt=1)
        assert await synchronous_mode(store) == full
        await store.record_progress("a", progress=8, stage="Rendering", eta_seconds=1, render_seq=1)
        assert await synchronous_mode(store) == normal
        await store.complete(
            "a", output_path="/o.mp4", size_bytes=5, duration_seconds=1, render_seq=2
        )
        assert await synchronous_mode(store) == full
        assert (await store.get("a")).version == 6
    finally:
        await store.close()


async def test_a_batch_reaches_its_jobs_by_primary_key(tmp_path: Path) -> None:
    """One UPDATE for a batch of progress writes joins its JSON rows to the jobs: each job is
    found by its key, never all jobs scanned for each row (SQLite's planner, without
    statistics, prefers the status index unless told)."""
    store = await SqliteJobStore.open(tmp_path / "jobs.db")
    try:
        for index in range(50):
            await store.create(job_id=f"j{index}", request_id=f"r{index}", spec=b"")
        rendered = render_sqlite(PROGRESS.batch_sql)
        values = ["[]" if name == "rows" else None for name in rendered.names]

        def plan() -> list[str]:
            explained = store._db.execute(f"EXPLAIN QUERY PLAN {rendered.sql}", values)
            return [row["detail"] for row in explained]

        steps = await store._run(plan)
        assert steps[0].startswith("SCAN json_each"), steps
        assert steps[1] == f"SEARCH jobs USING INDEX {SQLITE_JOBS_KEY} (id=?)", steps
    finally:
        await store.close()


async def test_writes_queued_together_share_one_commit_and_fail_alone(tmp_path: Path) -> None:
    """Group commit: the writes of one priority waiting for the store's thread share one
    transaction (one fsync); each is in a savepoint of its own, so a refused one changes
    nothing and the others commit, and none is answered before the commit."""
    store = await SqliteJobStore.open(tmp_path / "jobs.db")
    groups: list[int] = []
    run_group = store._run_group

    def recording(writes: Sequence[tuple[Callable[[], Any], Any]]) -> list[Outcome]:
        groups.append(len(writes))
        return run_group(writes)

    store._worker._run_group = recording
    try:
        await store.create(job_id="done", request_id="done", spec=b"")
        await store.cancel("done")
        holding, gate = threading.Event(), threading.Event()

        def hold() -> None:
            holding.set()
            gate.wait()

        blocked = asyncio.create_task(store._run(hold))  # the thread is busy meanwhile
        await asyncio.to_thread(holding.wait)
        writes = [
            *(
                store.create(job_id=f"j{index}", request_id=f"r{index}", spec=b"")
                for index in range(20)
            ),
            store.cancel("done"),  # refused: finished
            store.cancel("ghost"),  # not found
            store.create(job_id="j0-again", request_id="r0", spec=b""),  # finds j0
        ]
        pending = asyncio.gather(*writes, return_exceptions=True)
        await asyncio.sleep(0.1)
        gate.set()
        await blocked
        *created, finished, ghost, again = await pending
        assert groups[-2:] == [2, 21], groups  # the cancels (terminal) first, then the creates
        assert all(isinstance(result, tuple) and result[1] for result in created)
        assert isinstance(finished, TransitionRejected) and isinstance(ghost, JobNotFound)
        assert isinstance(again, tuple) and (again[0].id, again[1]) == ("j0", False)
        assert len(await store.list_active()) == 20
        assert [entry.version for entry in await store.history("j7")] == [1]
    finally:
        await store.close()
