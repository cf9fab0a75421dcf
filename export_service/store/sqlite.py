"""SQLite implementation of JobStore: one sqlite3 connection owned by one worker thread.

Every operation is one function run on that thread, inside one ``BEGIN IMMEDIATE`` transaction,
so the event loop never blocks and a change is never interleaved with another on this store.
The thread takes terminal changes first, then reads and other changes, then progress writes.
Durability is split: progress transactions commit with ``synchronous=NORMAL`` (no fsync), every
other change with ``FULL``. In WAL mode a FULL commit syncs the log up to it, earlier progress
frames included, so a power loss can only lose the last progress writes, never a terminal state.
Several stores (or processes) may share the file: SQLite's write lock and busy timeout serialize
them, and the conditional updates keep the invariants whoever writes. Triggers repeat the
invariants at the database level, so even a raw UPDATE cannot break them, and append every
committed change to ``job_history`` in the same transaction.

The schema is migrated on open, inside one ``BEGIN IMMEDIATE`` transaction (SQLite's write lock
is the migration lock: a second process opening the file waits, then finds the work done);
``schema_migrations`` says which migrations ran. A file made before migrations were recorded
has the jobs table and no ``schema_migrations``: migration 1 is written so that it completes such
a file (and an empty one) alike.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from export_service.store.base import (
    FORGET_REPLICA_SECONDS,
    MAX_RUNNING_PROGRESS,
    STAGE_CANCELLED,
    STAGE_COMPLETE,
    STAGE_FAILED,
    STAGE_QUEUED,
    STAGES_BEFORE_RUNNING,
    Change,
    HistoryEntry,
    Job,
    JobNotFound,
    JobStatus,
    JobStore,
    Lease,
    ListCursor,
    ProgressResult,
    ProgressUpdate,
    RenderAttempt,
    ReplicaBeat,
    RequestIdDeleted,
    StaleLease,
    StoreUnavailable,
    TransitionRejected,
    attempts_from_json,
    attempts_to_json,
    created_at_us,
    decode_cursor,
    encode_cursor,
    first_attempts_json,
    lease_holds,
    with_placement,
    with_release_given_up,
)
from export_service.store.worker import Priority, PriorityWorker
from videojob import metrics
from videojob.errors import ResourceExhausted

T = TypeVar("T")

BUSY_TIMEOUT_MS = 15_000
WAL_RETRY_SECONDS = 0.01

_ACTIVE_SQL = "('QUEUED', 'RUNNING')"
_DELETE_REFUSED = "only a finished job whose render clean-up is done can be deleted"
_TERMINAL_SQL = "('COMPLETED', 'FAILED', 'CANCELLED')"

# Migration 1: the jobs table as it was before migrations were recorded (IF NOT EXISTS: a file
# of that time already has it; ADDED_COLUMNS brings an even older one up to it).
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL
        CHECK (status IN ('QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    progress REAL NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 100),
    stage TEXT NOT NULL DEFAULT '{STAGE_QUEUED}',
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
        WHERE OLD.status IN {_TERMINAL_SQL}
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

# Columns added after the first release: (name, definition). A database file made before one of
# them gets it on open, so existing files keep working.
ADDED_COLUMNS = (("error_field", "TEXT NOT NULL DEFAULT ''"),)

_HISTORY_VALUES = """(
        NEW.id, NEW.version, NEW.last_change, NEW.status, NEW.progress, NEW.stage, NEW.attempt,
        NEW.last_render_seq, NEW.error_code, NEW.updated_at, NEW.written_by, NEW.owner,
        NEW.lease_epoch)"""
_HISTORY_COLUMNS = (
    "job_id, version, change, status, progress, stage, attempt, render_seq, error_code, "
    "recorded_at, writer, owner, lease_epoch"
)

# Migration 2: the job history, and who wrote each change (owner and lease_epoch stay NULL
# until jobs have owners). Jobs already in the file start their history with one "migrated"
# entry: their state as it is.
HISTORY_SCHEMA = f"""
ALTER TABLE jobs ADD COLUMN last_change TEXT NOT NULL DEFAULT '{Change.CREATE}';
ALTER TABLE jobs ADD COLUMN written_by TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_epoch INTEGER;
CREATE TABLE job_history (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    change TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL,
    stage TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    render_seq INTEGER NOT NULL,
    error_code TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    writer TEXT NOT NULL,
    owner TEXT,
    lease_epoch INTEGER,
    PRIMARY KEY (job_id, version)
) WITHOUT ROWID;
UPDATE jobs SET last_change = '{Change.MIGRATED}', written_by = 'migration 2';
INSERT INTO job_history ({_HISTORY_COLUMNS})
    SELECT id, version, last_change, status, progress, stage, attempt, last_render_seq,
           error_code, updated_at, written_by, owner, lease_epoch FROM jobs;
CREATE TRIGGER job_history_on_insert AFTER INSERT ON jobs
BEGIN
    INSERT INTO job_history ({_HISTORY_COLUMNS}) VALUES {_HISTORY_VALUES};
END;
CREATE TRIGGER job_history_on_change AFTER UPDATE OF version ON jobs
    WHEN NEW.version != OLD.version
BEGIN
    INSERT INTO job_history ({_HISTORY_COLUMNS}) VALUES {_HISTORY_VALUES};
END;
CREATE TRIGGER job_history_on_delete AFTER DELETE ON jobs
BEGIN
    DELETE FROM job_history WHERE job_id = OLD.id;
END;
"""


# Migration 10: one heartbeat row per export replica (see export_service.ownership). Times in
# microseconds since the epoch, as every time here.
OWNERSHIP_SCHEMA = f"""
CREATE TABLE export_replicas (
    id TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL,
    renewed_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    refused_writes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_unfinished_by_owner ON jobs (owner)
    WHERE status IN {_ACTIVE_SQL} OR cancel_requested;
"""


# Migration 20: the request ids of deleted jobs (a replayed request id must not render again),
# and the end of ffmpeg's log on a failed job. Times in microseconds since the epoch.
LIFECYCLE_SCHEMA = """
CREATE TABLE deleted_requests (
    request_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    deleted_at INTEGER NOT NULL
) WITHOUT ROWID;
ALTER TABLE jobs ADD COLUMN error_log_tail TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[sqlite3.Connection], None]


def _migration_1(conn: sqlite3.Connection) -> None:
    _run_script(conn, SCHEMA)
    _add_missing_columns(conn)


MIGRATIONS = (
    Migration(1, "jobs", _migration_1),
    Migration(2, "job history", lambda conn: _run_script(conn, HISTORY_SCHEMA)),
    Migration(
        10, "export replicas and job leases", lambda conn: _run_script(conn, OWNERSHIP_SCHEMA)
    ),
    Migration(
        20,
        "deleted jobs' request ids and failure log tails",
        lambda conn: _run_script(conn, LIFECYCLE_SCHEMA),
    ),
    Migration(
        30,
        "the trace context of each job",
        lambda conn: _run_script(
            conn, "ALTER TABLE jobs ADD COLUMN trace_context TEXT NOT NULL DEFAULT '';"
        ),
    ),
    Migration(
        40,
        "render attempts and the current attempt's progress",
        lambda conn: _run_script(conn, POOL_SCHEMA),
    ),
)

# Migration 40: a pool of render services. Each job keeps the placements of its render (JSON: a
# list of base.RenderAttempt.to_dict) and the current attempt's own progress.
POOL_SCHEMA = """
ALTER TABLE jobs ADD COLUMN render_attempts TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN attempt_progress REAL NOT NULL DEFAULT 0;
UPDATE jobs SET attempt_progress = progress WHERE attempt = 1;
"""

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at INTEGER NOT NULL
        DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))
)
"""

_COLUMNS = (
    "id, request_id, status, progress, stage, output_path, error_code, error_message, "
    "error_field, attempt, version, spec, created_at, updated_at, started_at, finished_at, "
    "last_render_seq, eta_seconds, output_size_bytes, output_duration_seconds, cancel_requested, "
    "owner, lease_epoch, error_log_tail, render_attempts, attempt_progress"
)

__all__ = [
    "MIGRATIONS",
    "SqliteJobStore",
    "created_at_us",
    "decode_cursor",
    "encode_cursor",
    "migrate",
]


def now_us() -> int:
    return time.time_ns() // 1000


def _us(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _datetime(us: int | None) -> datetime | None:
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


def _job(row: sqlite3.Row) -> Job:
    created = _datetime(row["created_at"])
    updated = _datetime(row["updated_at"])
    assert created is not None and updated is not None
    return Job(
        id=row["id"],
        request_id=row["request_id"],
        status=JobStatus(row["status"]),
        progress=row["progress"],
        stage=row["stage"],
        output_path=row["output_path"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        error_field=row["error_field"],
        attempt=row["attempt"],
        version=row["version"],
        spec=bytes(row["spec"]),
        created_at=created,
        updated_at=updated,
        started_at=_datetime(row["started_at"]),
        finished_at=_datetime(row["finished_at"]),
        last_render_seq=row["last_render_seq"],
        eta_seconds=row["eta_seconds"],
        output_size_bytes=row["output_size_bytes"],
        output_duration_seconds=row["output_duration_seconds"],
        cancel_requested=bool(row["cancel_requested"]),
        owner=row["owner"],
        lease_epoch=row["lease_epoch"],
        error_log_tail=row["error_log_tail"],
        attempt_progress=row["attempt_progress"],
        attempts=attempts_from_json(row["render_attempts"]),
    )


def _history_entry(row: sqlite3.Row) -> HistoryEntry:
    recorded = _datetime(row["recorded_at"])
    assert recorded is not None
    return HistoryEntry(
        job_id=row["job_id"],
        version=row["version"],
        change=Change(row["change"]),
        status=JobStatus(row["status"]),
        progress=row["progress"],
        stage=row["stage"],
        attempt=row["attempt"],
        render_seq=row["render_seq"],
        error_code=row["error_code"],
        recorded_at=recorded,
        writer=row["writer"],
        owner=row["owner"],
        lease_epoch=row["lease_epoch"],
    )


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Runs the migrations this file lacks, in one IMMEDIATE transaction; the versions run."""
    ran: list[int] = []
    with _transaction(conn):
        conn.execute(MIGRATIONS_TABLE)
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        newest = max(migration.version for migration in MIGRATIONS)
        if applied and max(applied) > newest:
            raise ValueError(
                f"the database has schema version {max(applied)}, newer than this code "
                f"knows ({newest}): upgrade the export service"
            )
        for migration in MIGRATIONS:
            if migration.version in applied:
                continue
            migration.apply(conn)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, now_us()),
            )
            ran.append(migration.version)
    return ran


class SqliteJobStore(JobStore):
    exclusive = True

    def __init__(self, path: Path, writer: str = "") -> None:
        super().__init__(writer)
        self.path = path
        self._worker = PriorityWorker("sqlite-store")
        self._conn: sqlite3.Connection | None = None
        self._synchronous = ""

    @classmethod
    async def open(cls, path: Path, writer: str = "") -> SqliteJobStore:
        store = cls(path, writer)
        await store._run(store._connect)
        return store

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        _enable_wal(conn)
        conn.execute("PRAGMA synchronous=FULL")
        self._synchronous = "FULL"
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys=ON")
        try:
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._run(conn.close)
        await self._worker.close()

    async def _run(self, fn: Callable[[], T], priority: Priority = Priority.NORMAL) -> T:
        """``fn`` on the store's thread. A database file that cannot be read or written (I/O
        error, gone, full, locked past the busy timeout) raises StoreUnavailable and makes the
        store unavailable until an operation succeeds again, as PostgreSQL does."""
        try:
            result = await self._worker.run(fn, priority)
        except sqlite3.OperationalError as error:
            if _unavailable_error(error):
                self._set_available(False, str(error))
                raise StoreUnavailable(str(error)) from error
            raise
        self._set_available(True)
        return result

    def _durable(self, fn: Callable[[], T], *, full: bool) -> Callable[[], T]:
        """``fn`` committing with synchronous FULL (fsync) or NORMAL. Set between
        transactions: SQLite refuses to change it inside one."""

        def run() -> T:
            mode = "FULL" if full else "NORMAL"
            if self._synchronous != mode:
                self._db.execute(f"PRAGMA synchronous={mode}")
                self._synchronous = mode
            return fn()

        return run

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("store is closed")
        return self._conn

    def _select(self, job_id: str) -> Job:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return _job(row)

    def _update(
        self,
        job_id: str,
        change: Change,
        assignments: str,
        condition: str,
        params: dict[str, Any],
        reason: str,
        lease: Lease | None = None,
        new_version: bool = True,
    ) -> Job:
        """One conditional UPDATE in one transaction, the one way a job changes. ``lease``
        fences the write: it lands only while the job is held by that owner and epoch
        (StaleLease otherwise). ``new_version=False``: a fenced write that changes nothing
        (``assignments`` unused). Raises TransitionRejected (with the current job) or
        JobNotFound when the condition does not hold."""
        values = {**params, "id": job_id, "now": now_us(), "change": change, "writer": self.writer}
        if lease is not None:
            condition = f"({condition}) AND owner = :lease_owner AND lease_epoch = :lease_epoch"
            values.update(lease_owner=lease.owner, lease_epoch=lease.epoch)
        if new_version:
            assignments = (
                f"{assignments}, version = version + 1, updated_at = :now, "
                "last_change = :change, written_by = :writer"
            )
        else:
            assignments = assignments or "lease_epoch = lease_epoch"
        sql = f"UPDATE jobs SET {assignments} WHERE id = :id AND ({condition}) RETURNING {_COLUMNS}"
        with metrics.STORE_WRITE.labels(change.value).time(), _transaction(self._db):
            row = self._db.execute(sql, values).fetchone()
            if row is not None:
                return _job(row)
            current = self._select(job_id)
        if not lease_holds(current, lease):
            assert lease is not None
            raise StaleLease(current, lease)
        raise TransitionRejected(current, reason)

    async def _change(self, fn: Callable[[], Job], priority: Priority = Priority.NORMAL) -> Job:
        return self._committed(await self._run(self._durable(fn, full=True), priority))

    # Reads.

    async def get(self, job_id: str) -> Job:
        return await self._run(lambda: self._select(job_id))

    async def list_jobs(
        self, *, limit: int, status: JobStatus | None = None, after: ListCursor | None = None
    ) -> list[Job]:
        where: list[str] = []
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            where.append("status = :status")
            params["status"] = status.value
        if after is not None:
            where.append(
                "(created_at < :after_created OR (created_at = :after_created AND id < :after_id))"
            )
            params.update(after_created=after.created_at_us, after_id=after.job_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {_COLUMNS} FROM jobs {clause} ORDER BY created_at DESC, id DESC LIMIT :limit"
        rows = await self._run(lambda: self._db.execute(sql, params).fetchall())
        return [_job(row) for row in rows]

    async def list_active(self) -> list[Job]:
        sql = f"SELECT {_COLUMNS} FROM jobs WHERE status IN {_ACTIVE_SQL} ORDER BY created_at, id"
        rows = await self._run(lambda: self._db.execute(sql).fetchall())
        return [_job(row) for row in rows]

    async def list_pending_cancellations(self) -> list[Job]:
        sql = (
            f"SELECT {_COLUMNS} FROM jobs "
            "WHERE status IN ('CANCELLED', 'FAILED') AND cancel_requested = 1"
        )
        rows = await self._run(lambda: self._db.execute(sql).fetchall())
        return [_job(row) for row in rows]

    async def history(
        self, job_id: str, *, after_version: int = 0, limit: int | None = None
    ) -> list[HistoryEntry]:
        sql = (
            f"SELECT {_HISTORY_COLUMNS} FROM job_history WHERE job_id = ? AND version > ? "
            "ORDER BY version LIMIT ?"
        )

        def read() -> list[sqlite3.Row]:
            with _transaction(self._db, write=False):
                rows = self._db.execute(sql, (job_id, after_version, limit or -1)).fetchall()
                if not rows:
                    self._select(job_id)  # JobNotFound for an unknown job
                return rows

        return [_history_entry(row) for row in await self._run(read)]

    # Changes.

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
        def insert() -> tuple[Job, bool]:
            with _transaction(self._db):
                found = self._by_request_id(request_id)
                if found is not None:
                    return found, False
                if max_active is not None:
                    (active,) = self._db.execute(
                        f"SELECT count(*) FROM jobs WHERE status IN {_ACTIVE_SQL}"
                    ).fetchone()
                    if active >= max_active:
                        raise ResourceExhausted(
                            f"{active} jobs are queued or running (the limit is {max_active}); "
                            "retry later"
                        )
                now = now_us()
                row = self._db.execute(
                    "INSERT INTO jobs (id, request_id, status, progress, stage, spec, created_at, "
                    "updated_at, last_change, written_by, owner, lease_epoch, trace_context, "
                    "render_attempts) VALUES (?, ?, 'QUEUED', 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    f"RETURNING {_COLUMNS}",
                    (
                        job_id,
                        request_id,
                        STAGE_QUEUED,
                        spec,
                        now,
                        now,
                        Change.CREATE,
                        self.writer,
                        owner,
                        None if owner is None else 1,
                        trace_context,
                        first_attempts_json(placement),
                    ),
                ).fetchone()
                return _job(row), True

        job, created = await self._run(self._durable(insert, full=True))
        if created:
            self._committed(job)
        return job, created

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
        update = ProgressUpdate(job_id, progress, stage, eta_seconds, render_seq, lease)
        (result,) = await self.record_progress_batch([update])
        if isinstance(result, Job):
            return result
        raise result

    async def record_progress_batch(
        self, updates: Sequence[ProgressUpdate], *, urgent: bool = False
    ) -> list[ProgressResult]:
        def apply_all() -> list[ProgressResult]:
            with _transaction(self._db):
                return [self._apply_progress(update) for update in updates]

        priority = Priority.TERMINAL if urgent else Priority.PROGRESS
        results = await self._run(self._durable(apply_all, full=False), priority)
        for result in results:
            if isinstance(result, Job):
                self._committed(result)
        return results

    def _apply_progress(self, update: ProgressUpdate) -> ProgressResult:
        """One update inside the batch's transaction; a refusal changes nothing and is
        returned, so the other updates still commit."""
        try:
            if not 0 <= update.progress <= MAX_RUNNING_PROGRESS:
                reason = f"progress {update.progress} is not allowed before COMPLETED"
                return TransitionRejected(self._select(update.job_id), reason)
            try:
                return self._update(
                    update.job_id,
                    Change.PROGRESS,
                    "progress = max(progress, :progress), attempt_progress = :progress, "
                    "stage = :stage, eta_seconds = :eta, "
                    "last_render_seq = max(last_render_seq, :seq), "
                    "status = CASE WHEN :running THEN 'RUNNING' ELSE status END, "
                    "started_at = CASE WHEN :running THEN coalesce(started_at, :now) "
                    "ELSE started_at END",
                    f"status IN {_ACTIVE_SQL} AND attempt_progress <= :progress",
                    {
                        "progress": update.progress,
                        "stage": update.stage,
                        "eta": update.eta_seconds,
                        "seq": update.render_seq,
                        "running": update.stage not in STAGES_BEFORE_RUNNING,
                    },
                    f"progress {update.progress} refused (terminal, or below the stored progress)",
                    update.lease,
                )
            except sqlite3.IntegrityError as error:  # a trigger: only this statement is undone
                reason = f"refused by the database: {error}"
                return TransitionRejected(self._select(update.job_id), reason)
        except (TransitionRejected, JobNotFound) as refused:
            return refused

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
        def complete() -> Job:
            with _transaction(self._db):
                current = self._select(job_id)
                if current.terminal:
                    raise TransitionRejected(current, "cannot complete a finished job")
                if not output_path:
                    raise TransitionRejected(current, "COMPLETED needs an output path")
                return self._update(
                    job_id,
                    Change.COMPLETE,
                    "status = 'COMPLETED', progress = 100, stage = :stage, "
                    "output_path = :path, output_size_bytes = :size, "
                    "output_duration_seconds = :duration, eta_seconds = 0, "
                    "last_render_seq = max(last_render_seq, :seq), "
                    "started_at = coalesce(started_at, :now), finished_at = :now",
                    f"status IN {_ACTIVE_SQL}",
                    {
                        "stage": STAGE_COMPLETE,
                        "path": output_path,
                        "size": size_bytes,
                        "duration": duration_seconds,
                        "seq": render_seq,
                    },
                    "cannot complete a finished job",
                    lease,
                )

        return await self._change(complete, Priority.TERMINAL)

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
        return await self._change(
            lambda: self._update(
                job_id,
                Change.FAIL,
                "status = 'FAILED', stage = :stage, error_code = :code, error_message = :message, "
                "error_field = :field, error_log_tail = :log_tail, eta_seconds = 0, "
                "finished_at = :now, cancel_requested = :release",
                f"status IN {_ACTIVE_SQL}",
                {
                    "stage": STAGE_FAILED,
                    "code": code,
                    "message": message,
                    "field": field,
                    "log_tail": log_tail,
                    "release": release_render,
                },
                "cannot fail a finished job",
                lease,
            ),
            Priority.TERMINAL,
        )

    async def cancel(self, job_id: str, *, lease: Lease | None = None) -> Job:
        return await self._change(
            lambda: self._update(
                job_id,
                Change.CANCEL,
                "status = 'CANCELLED', stage = :stage, cancel_requested = 1, eta_seconds = 0, "
                "finished_at = :now",
                f"status IN {_ACTIVE_SQL}",
                {"stage": STAGE_CANCELLED},
                "only queued or running jobs can be cancelled",
                lease,
            ),
            Priority.TERMINAL,
        )

    async def begin_attempt(
        self, job_id: str, *, expected_attempt: int, lease: Lease | None = None
    ) -> Job:
        return await self._change(
            lambda: self._update(
                job_id,
                Change.BEGIN_ATTEMPT,
                "attempt = attempt + 1, last_render_seq = 0, attempt_progress = 0",
                f"status IN {_ACTIVE_SQL} AND attempt = :expected",
                {"expected": expected_attempt},
                f"attempt {expected_attempt} is no longer current",
                lease,
            )
        )

    async def place_attempt(
        self,
        job_id: str,
        *,
        placed: RenderAttempt,
        superseded_outcome: str = "",
        lease: Lease | None = None,
    ) -> Job:
        def place() -> Job:
            with _transaction(self._db):
                current = self._select(job_id)
                attempts = with_placement(current.attempts, placed, superseded_outcome)
                return self._update(
                    job_id,
                    Change.PLACE_ATTEMPT,  # not recorded: bookkeeping of the render's place
                    "render_attempts = :attempts",
                    f"status IN {_ACTIVE_SQL} AND attempt = :attempt",
                    {"attempts": attempts_to_json(attempts), "attempt": placed.attempt},
                    f"attempt {placed.attempt} is not current",
                    lease,
                    new_version=False,
                )

        return await self._run(self._durable(place, full=True))

    async def give_up_release(
        self, job_id: str, *, render_id: str, lease: Lease | None = None
    ) -> Job:
        def give_up() -> Job:
            with _transaction(self._db):
                current = self._select(job_id)
                attempts = with_release_given_up(current.attempts, render_id, datetime.now(UTC))
                if attempts is None:
                    raise TransitionRejected(current, f"no attempt has render id {render_id}")
                attempt = next(a.attempt for a in attempts if a.render_id == render_id)
                return self._update(
                    job_id,
                    Change.RELEASE_GIVEN_UP,  # not recorded: bookkeeping of a superseded attempt
                    "render_attempts = :attempts",
                    "attempt != :attempt",
                    {"attempts": attempts_to_json(attempts), "attempt": attempt},
                    f"attempt {attempt} is the current one",
                    lease,
                    new_version=False,
                )

        return await self._run(self._durable(give_up, full=True))

    # The job lifecycle.

    def _by_request_id(self, request_id: str) -> Job | None:
        """Inside a transaction: the job of ``request_id``; RequestIdDeleted for a deleted one."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE request_id = ?", (request_id,)
        ).fetchone()
        if row is not None:
            return _job(row)
        deleted = self._db.execute(
            "SELECT job_id FROM deleted_requests WHERE request_id = ?", (request_id,)
        ).fetchone()
        if deleted is not None:
            raise RequestIdDeleted(request_id, deleted[0])
        return None

    async def find_by_request_id(self, request_id: str) -> Job | None:
        def read() -> Job | None:
            with _transaction(self._db, write=False):
                return self._by_request_id(request_id)

        return await self._run(read)

    async def delete(self, job_id: str) -> Job:
        """One conditional DELETE (terminal, clean-up done) and the tombstone, in one
        transaction; the history goes with the job (its trigger and foreign key)."""

        def delete() -> Job:
            with _transaction(self._db):
                row = self._db.execute(
                    f"DELETE FROM jobs WHERE id = ? AND status IN {_TERMINAL_SQL} "
                    f"AND cancel_requested = 0 RETURNING {_COLUMNS}",
                    (job_id,),
                ).fetchone()
                if row is None:
                    current = self._select(job_id)
                    raise TransitionRejected(current, _DELETE_REFUSED)
                job = _job(row)
                self._db.execute(
                    "INSERT OR REPLACE INTO deleted_requests (request_id, job_id, deleted_at) "
                    "VALUES (?, ?, ?)",
                    (job.request_id, job.id, now_us()),
                )
                return job

        return await self._run(self._durable(delete, full=True))

    async def list_expired(self, *, finished_before: datetime, limit: int) -> list[Job]:
        sql = (
            f"SELECT {_COLUMNS} FROM jobs WHERE finished_at < ? AND status IN {_TERMINAL_SQL} "
            "AND cancel_requested = 0 ORDER BY finished_at, id LIMIT ?"
        )
        before = _us(finished_before)
        rows = await self._run(lambda: self._db.execute(sql, (before, limit)).fetchall())
        return [_job(row) for row in rows]

    async def render_released(self, job_id: str) -> None:
        def release() -> None:
            with _transaction(self._db):
                self._db.execute("UPDATE jobs SET cancel_requested = 0 WHERE id = ?", (job_id,))

        await self._run(self._durable(release, full=True))

    async def trace_context(self, job_id: str) -> str:
        def read() -> str:
            row = self._db.execute(
                "SELECT trace_context FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            return str(row[0]) if row is not None else ""

        return await self._run(read)

    # Ownership: one process alone uses the file (exclusive), yet the same fenced writes, claims
    # and heartbeats hold here as on PostgreSQL; the clock is this host's.

    async def confirm_lease(self, job_id: str, *, lease: Lease) -> Job:
        return await self._run(
            self._durable(
                lambda: self._update(
                    job_id,
                    Change.PROGRESS,  # not recorded: nothing changes
                    "",
                    f"status IN {_ACTIVE_SQL}",
                    {},
                    "the job is finished",
                    lease,
                    new_version=False,
                ),
                full=False,
            )
        )

    async def confirm_release(self, job_id: str, *, lease: Lease) -> Job:
        return await self._run(
            self._durable(
                lambda: self._update(
                    job_id,
                    Change.PROGRESS,  # not recorded: nothing changes
                    "",
                    "cancel_requested",
                    {},
                    "the job's render is released already",
                    lease,
                    new_version=False,
                ),
                full=False,
            )
        )

    async def heartbeat(
        self, replica_id: str, *, ttl_seconds: float, refused_writes: int = 0
    ) -> list[ReplicaBeat]:
        def renew() -> list[ReplicaBeat]:
            now = now_us()
            with _transaction(self._db):
                self._db.execute(
                    "DELETE FROM export_replicas WHERE id != ? AND expires_at < ?",
                    (replica_id, now - int(FORGET_REPLICA_SECONDS * 1_000_000)),
                )
                self._db.execute(
                    "INSERT INTO export_replicas (id, started_at, renewed_at, expires_at, "
                    "refused_writes) VALUES (:id, :now, :now, :expires, :refused) "
                    "ON CONFLICT (id) DO UPDATE SET renewed_at = :now, expires_at = :expires, "
                    "refused_writes = :refused",
                    {
                        "id": replica_id,
                        "now": now,
                        "expires": now + int(ttl_seconds * 1_000_000),
                        "refused": refused_writes,
                    },
                )
                rows = self._db.execute(
                    "SELECT id, renewed_at, expires_at FROM export_replicas WHERE id != ?",
                    (replica_id,),
                ).fetchall()
            return [
                ReplicaBeat(
                    row["id"],
                    (now - row["renewed_at"]) / 1_000_000,
                    (row["expires_at"] - now) / 1_000_000,
                )
                for row in rows
            ]

        return await self._run(self._durable(renew, full=False))

    async def release_replica(self, replica_id: str) -> int:
        def release() -> int:
            with _transaction(self._db):
                released = self._db.execute(
                    "UPDATE jobs SET owner = NULL WHERE owner = ?", (replica_id,)
                ).rowcount
                self._db.execute("DELETE FROM export_replicas WHERE id = ?", (replica_id,))
                return released

        return await self._run(self._durable(release, full=True))

    async def claim_jobs(
        self, replica_id: str, *, limit: int, take_over: bool = False
    ) -> list[Job]:
        free = f"""
            SELECT j.id, j.owner FROM jobs j
            WHERE (j.status IN {_ACTIVE_SQL} OR j.cancel_requested)
              AND j.owner IS NOT :me
              AND (:take_over OR j.owner IS NULL OR NOT EXISTS (
                  SELECT 1 FROM export_replicas r
                  WHERE r.id = j.owner AND r.expires_at > :now))
            ORDER BY j.created_at, j.id
            LIMIT :limit
        """
        sql = f"""
            UPDATE jobs SET owner = :me, lease_epoch = coalesce(lease_epoch, 0) + 1
            WHERE id IN (SELECT id FROM ({free}))
            RETURNING {_COLUMNS}
        """
        values = {"me": replica_id, "take_over": take_over, "now": now_us(), "limit": limit}

        def claim() -> list[Job]:
            with _transaction(self._db):
                # The owners before the claim (UPDATE ... RETURNING sees only the new row);
                # the transaction holds the file, so the UPDATE picks the same rows.
                owners = {row[0]: row[1] for row in self._db.execute(free, values)}
                rows = self._db.execute(sql, values).fetchall()
                return [replace(_job(row), claimed_from=owners[row["id"]]) for row in rows]

        jobs = await self._run(self._durable(claim, full=True))
        return sorted(jobs, key=lambda job: (job.created_at, job.id))

    async def active_among(self, job_ids: Sequence[str]) -> set[str]:
        ids = list(job_ids)
        if not ids:
            return set()
        marks = ", ".join("?" for _ in ids)
        sql = f"SELECT id FROM jobs WHERE id IN ({marks}) AND status IN {_ACTIVE_SQL}"
        rows = await self._run(lambda: self._db.execute(sql, ids).fetchall())
        return {row["id"] for row in rows}


# SQLite result codes (the low byte of an extended code) of a database that cannot be used now.
_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
    }
)


def _enable_wal(conn: sqlite3.Connection) -> None:
    """``PRAGMA journal_mode=WAL``, asked again while the database is locked: when processes
    open a new database file at once, SQLite can refuse the switch without waiting in its busy
    handler (on the store's thread, where waiting blocks nothing else)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
        time.sleep(WAL_RETRY_SECONDS)


def _unavailable_error(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _UNAVAILABLE_CODES


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """executescript() would COMMIT our transaction first; run the statements one by one."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    present = {row["name"] for row in conn.execute("PRAGMA table_info(jobs)")}
    for name, definition in ADDED_COLUMNS:
        if name not in present:
            conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, *, write: bool = True) -> Iterator[None]:
    """IMMEDIATE (the write lock at once) for changes, DEFERRED (one snapshot) for reads."""
    if conn.in_transaction:  # nested: the outer transaction commits
        yield
        return
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
