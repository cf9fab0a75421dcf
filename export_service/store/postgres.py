"""PostgreSQL implementation of JobStore (asyncpg), for several processes sharing one record.

asyncpg rather than psycopg 3: the service is asyncio from end to end and asyncpg is a native
asyncio driver with its own pool, binary protocol and prepared-statement cache, the cheapest way
to carry many small progress writes; psycopg 3's strengths (a sync API, libpq's options, working
behind PgBouncer's transaction pooling without turning off statement caching) are not needed here.

Every change is one conditional ``UPDATE ... WHERE id = $1 AND (condition) RETURNING``: zero rows
means the transition is refused, and the job is re-read (a new snapshot) to say why. Constraints
and triggers repeat the invariants (a terminal status is final, progress never decreases, 100 only
with COMPLETED, version + 1 per change), so a raw UPDATE cannot break them either, and a trigger
appends every committed change to ``job_history`` in the same transaction.

Creates that respect ``max_active`` take a transaction-level advisory lock before counting, so
two processes cannot both see room for one more job. The schema is migrated at open under another
advisory lock; ``schema_migrations`` says which migrations ran.

Progress writes commit with ``synchronous_commit = off`` (like SQLite's NORMAL: a crash of the
database may lose the last ones, never a terminal state) and take at most half the pool, so
terminal changes and reads always find a connection.

A lost database raises StoreUnavailable: a connection found dead is replaced and the operation
tried once more, then the error is the caller's (the servicer answers UNAVAILABLE; the tracker
waits, see store.outage). Every change is conditional, so repeating one whose commit was not
acknowledged is safe.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg

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
    first_attempts_json,
    lease_holds,
    with_placement,
    with_release_given_up,
)
from videojob import metrics
from videojob.errors import ResourceExhausted

logger = logging.getLogger(__name__)

T = TypeVar("T")

POOL_SIZE = 10
CONNECT_TIMEOUT_SECONDS = 5.0
COMMAND_TIMEOUT_SECONDS = 30.0

# Advisory lock keys (one namespace per database): migrating the schema; counting active jobs.
MIGRATION_LOCK = zlib.crc32(b"videojob.schema_migrations")
ACTIVE_JOBS_LOCK = zlib.crc32(b"videojob.active_jobs")

_ACTIVE_SQL = "('QUEUED', 'RUNNING')"
_TERMINAL_SQL = "('COMPLETED', 'FAILED', 'CANCELLED')"
_DELETE_REFUSED = "only a finished job whose render clean-up is done can be deleted"

_HISTORY_COLUMNS = (
    "job_id, version, change, status, progress, stage, attempt, render_seq, error_code, "
    "recorded_at, writer, owner, lease_epoch"
)

SCHEMA_V1 = f"""
CREATE TABLE jobs (
    id text PRIMARY KEY,
    request_id text NOT NULL UNIQUE,
    status text NOT NULL
        CHECK (status IN ('QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    progress double precision NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 100),
    stage text NOT NULL DEFAULT '{STAGE_QUEUED}',
    output_path text NOT NULL DEFAULT '',
    error_code text NOT NULL DEFAULT '',
    error_message text NOT NULL DEFAULT '',
    error_field text NOT NULL DEFAULT '',
    attempt integer NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    version bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    spec bytea NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    last_render_seq bigint NOT NULL DEFAULT 0,
    eta_seconds double precision NOT NULL DEFAULT 0,
    output_size_bytes bigint NOT NULL DEFAULT 0,
    output_duration_seconds double precision NOT NULL DEFAULT 0,
    cancel_requested boolean NOT NULL DEFAULT false,
    -- The change that made this version and who wrote it (copied into job_history).
    last_change text NOT NULL DEFAULT '{Change.CREATE}',
    written_by text NOT NULL DEFAULT '',
    -- The owning replica and its lease: NULL until jobs have owners.
    owner text,
    lease_epoch bigint,
    CHECK ((progress = 100) = (status = 'COMPLETED')),
    CHECK (status <> 'COMPLETED' OR output_path <> '')
);
CREATE INDEX jobs_newest ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_status_newest ON jobs (status, created_at DESC, id DESC);
CREATE INDEX jobs_render_release ON jobs (id) WHERE cancel_requested;

CREATE TABLE job_history (
    job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    version bigint NOT NULL,
    change text NOT NULL,
    status text NOT NULL,
    progress double precision NOT NULL,
    stage text NOT NULL,
    attempt integer NOT NULL,
    render_seq bigint NOT NULL,
    error_code text NOT NULL,
    recorded_at timestamptz NOT NULL,
    writer text NOT NULL,
    owner text,
    lease_epoch bigint,
    PRIMARY KEY (job_id, version)
);

CREATE FUNCTION jobs_invariants() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IN {_TERMINAL_SQL}
       AND (NEW.status <> OLD.status OR NEW.version <> OLD.version) THEN
        RAISE EXCEPTION 'terminal state is final' USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.progress < OLD.progress THEN
        RAISE EXCEPTION 'progress never decreases' USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.version <> OLD.version AND NEW.version <> OLD.version + 1 THEN
        RAISE EXCEPTION 'version rises by exactly one per change'
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.version = OLD.version AND (
        NEW.status <> OLD.status OR NEW.progress <> OLD.progress OR NEW.stage <> OLD.stage
        OR NEW.output_path <> OLD.output_path OR NEW.attempt <> OLD.attempt) THEN
        RAISE EXCEPTION 'a change must raise the version' USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.id <> OLD.id OR NEW.request_id <> OLD.request_id OR NEW.spec <> OLD.spec THEN
        RAISE EXCEPTION 'a job keeps its id, request id and spec'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER jobs_invariants BEFORE UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_invariants();

CREATE FUNCTION job_history_append() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.version <> OLD.version THEN
        INSERT INTO job_history ({_HISTORY_COLUMNS}) VALUES (
            NEW.id, NEW.version, NEW.last_change, NEW.status, NEW.progress, NEW.stage,
            NEW.attempt, NEW.last_render_seq, NEW.error_code, NEW.updated_at, NEW.written_by,
            NEW.owner, NEW.lease_epoch);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER job_history_append AFTER INSERT OR UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION job_history_append();
"""


# The request ids of deleted jobs (a replayed request id must not render again), and the end of
# ffmpeg's log on a failed job.
SCHEMA_V20_LIFECYCLE = """
CREATE TABLE deleted_requests (
    request_id text PRIMARY KEY,
    job_id text NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE jobs ADD COLUMN error_log_tail text NOT NULL DEFAULT '';
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


# Ownership: one heartbeat row per export replica, renewed on the database's clock; a job whose
# owner has no live row (or that has no owner) is free to claim.
SCHEMA_V10_OWNERSHIP = f"""
CREATE TABLE export_replicas (
    id text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    renewed_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    refused_writes bigint NOT NULL DEFAULT 0
);
CREATE INDEX jobs_unfinished_by_owner ON jobs (owner)
    WHERE status IN {_ACTIVE_SQL} OR cancel_requested;
"""


# Every committed change of a job tells listeners of other processes which job changed, to
# which version (store.notifications). A trigger of its own, so that it stays whatever else
# replaces the history trigger; the channel name is notifications.CHANNEL.
SCHEMA_V11_CHANGE_NOTIFICATIONS = """
CREATE FUNCTION jobs_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('videojob_job_changes', OLD.id || ':');
    ELSIF TG_OP = 'INSERT' OR NEW.version <> OLD.version THEN
        PERFORM pg_notify('videojob_job_changes', NEW.id || ':' || NEW.version);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_notify_change AFTER INSERT OR UPDATE OR DELETE ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_notify_change();
"""

# A pool of render services: each job keeps the placements of its render (JSON: a list of
# base.RenderAttempt.to_dict) and the current attempt's own progress.
SCHEMA_V40_RENDER_ATTEMPTS = """
ALTER TABLE jobs ADD COLUMN render_attempts text NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN attempt_progress double precision NOT NULL DEFAULT 0;
UPDATE jobs SET attempt_progress = progress WHERE attempt = 1;
"""

MIGRATIONS = (
    Migration(1, "jobs and their history", SCHEMA_V1),
    Migration(10, "export replicas and job leases", SCHEMA_V10_OWNERSHIP),
    Migration(11, "notify each job change", SCHEMA_V11_CHANGE_NOTIFICATIONS),
    Migration(20, "deleted jobs' request ids and failure log tails", SCHEMA_V20_LIFECYCLE),
    Migration(
        30,
        "the trace context of each job",
        "ALTER TABLE jobs ADD COLUMN trace_context text NOT NULL DEFAULT ''",
    ),
    Migration(40, "render attempts and the current attempt's progress", SCHEMA_V40_RENDER_ATTEMPTS),
)

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

_COLUMNS = (
    "id, request_id, status, progress, stage, output_path, error_code, error_message, "
    "error_field, attempt, version, spec, created_at, updated_at, started_at, finished_at, "
    "last_render_seq, eta_seconds, output_size_bytes, output_duration_seconds, cancel_requested, "
    "owner, lease_epoch, error_log_tail, render_attempts, attempt_progress"
)

# What a lost database looks like: it refused or dropped the connection, is shutting down or
# starting up, or did not answer in time. InternalClientError is a connection whose protocol
# fell out of step with the server: when the server ends an idle connection (a FATAL such as
# "terminating connection due to administrator command" while the database shuts down), asyncpg
# takes the unexpected message as a protocol error and refuses every later query on that
# connection ("cannot switch to state 11; another operation (2) is in progress") until the
# socket's end arrives. Such a connection is never used again (see _run).
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.IdleSessionTimeoutError,
    asyncpg.IdleInTransactionSessionTimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
UNAVAILABLE_ERRORS = _UNAVAILABLE_ERRORS

# A transaction that PostgreSQL aborted to break a lock cycle or a serialisation conflict:
# rolled back whole, so it can be run again.
_CONFLICT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)
BATCH_CONFLICT_ATTEMPTS = 3


def _job(row: asyncpg.Record) -> Job:
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
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        last_render_seq=row["last_render_seq"],
        eta_seconds=row["eta_seconds"],
        output_size_bytes=row["output_size_bytes"],
        output_duration_seconds=row["output_duration_seconds"],
        cancel_requested=row["cancel_requested"],
        owner=row["owner"],
        lease_epoch=row["lease_epoch"],
        error_log_tail=row["error_log_tail"],
        attempt_progress=row["attempt_progress"],
        attempts=attempts_from_json(row["render_attempts"]),
    )


def _history_entry(row: asyncpg.Record) -> HistoryEntry:
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
        recorded_at=row["recorded_at"],
        writer=row["writer"],
        owner=row["owner"],
        lease_epoch=row["lease_epoch"],
    )


def _from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


async def migrate(conn: asyncpg.Connection[Any]) -> list[int]:
    """Runs the migrations the database lacks, in one transaction under an advisory lock (a
    process starting at the same time waits, then finds them done); the versions run."""
    ran: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(MIGRATIONS_TABLE)
        rows = await conn.fetch("SELECT version FROM schema_migrations")
        applied = {row["version"] for row in rows}
        newest = max(migration.version for migration in MIGRATIONS)
        if applied and max(applied) > newest:
            raise ValueError(
                f"the database has schema version {max(applied)}, newer than this code "
                f"knows ({newest}): upgrade the export service"
            )
        for migration in sorted(MIGRATIONS, key=lambda migration: migration.version):
            if migration.version in applied:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            ran.append(migration.version)
    if ran:
        logger.info("database schema migrated to version %d", ran[-1])
    return ran


class PostgresJobStore(JobStore):
    def __init__(self, url: str, pool: asyncpg.Pool[Any], writer: str = "") -> None:
        super().__init__(writer)
        self.url = url
        self._pool = pool
        self._progress_slots = asyncio.Semaphore(max(1, POOL_SIZE // 2))

    @classmethod
    async def open(cls, url: str, writer: str = "") -> PostgresJobStore:
        """Connects, migrates the schema and returns the store; ValueError when the database
        cannot be reached or refuses us (the process cannot start without its record)."""
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=POOL_SIZE,
                timeout=CONNECT_TIMEOUT_SECONDS,
                command_timeout=COMMAND_TIMEOUT_SECONDS,
            )
        except (*_UNAVAILABLE_ERRORS, asyncpg.PostgresError) as error:
            raise ValueError(f"cannot open the database {_redacted(url)}: {error}") from error
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
        except BaseException:
            await pool.close()
            raise
        return cls(url, pool, writer)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), CONNECT_TIMEOUT_SECONDS)
        except TimeoutError:
            self._pool.terminate()

    async def _run(self, operation: Callable[[asyncpg.Connection[Any]], Awaitable[T]]) -> T:
        """``operation`` on a pooled connection; a connection found dead is replaced once, then
        StoreUnavailable."""
        for attempt in (1, 2):
            try:
                async with self._pool.acquire() as conn:
                    try:
                        result = await operation(conn)
                    except asyncpg.InternalClientError:
                        conn.terminate()  # out of step with the server: never pooled again
                        raise
            except _UNAVAILABLE_ERRORS as error:
                if attempt == 1 and _stale_connection(error):
                    continue
                self._set_available(False, _describe(error))
                raise StoreUnavailable(_describe(error)) from error
            self._set_available(True)
            return result
        raise AssertionError("unreachable")

    async def _select(self, conn: asyncpg.Connection[Any], job_id: str) -> Job:
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM jobs WHERE id = $1", job_id)
        if row is None:
            raise JobNotFound(job_id)
        return _job(row)

    async def _update(
        self,
        conn: asyncpg.Connection[Any],
        job_id: str,
        change: Change,
        assignments: str,
        condition: str,
        args: Sequence[Any],
        reason: Callable[[Job], str],
        lease: Lease | None = None,
        new_version: bool = True,
    ) -> Job:
        """One conditional UPDATE, the one way a job changes. Parameters $1..$3 are the id,
        change and writer; ``args`` are $4 on. ``lease`` fences the write: it lands only while
        the job is held by that owner and epoch (StaleLease otherwise). ``new_version=False``:
        a fenced write that changes nothing (``assignments`` unused). Raises TransitionRejected
        (with the job re-read) or JobNotFound."""
        params: list[Any] = [job_id, change.value, self.writer, *args]
        if lease is not None:
            params += [lease.owner, lease.epoch]
            owner, epoch = f"${len(params) - 1}", f"${len(params)}"
            condition = f"({condition}) AND owner = {owner} AND lease_epoch = {epoch}"
        if new_version:
            assignments = (
                f"{assignments}, version = version + 1, updated_at = now(), "
                "last_change = $2, written_by = $3"
            )
        else:
            assignments = assignments or "lease_epoch = lease_epoch"
            condition = f"({condition}) AND $2::text IS NOT NULL AND $3::text IS NOT NULL"
        sql = f"UPDATE jobs SET {assignments} WHERE id = $1 AND ({condition}) RETURNING {_COLUMNS}"
        with metrics.STORE_WRITE.labels(change.value).time():
            row = await conn.fetchrow(sql, *params)
        if row is not None:
            return _job(row)
        current = await self._select(conn, job_id)
        if not lease_holds(current, lease):
            assert lease is not None
            raise StaleLease(current, lease)
        raise TransitionRejected(current, reason(current))

    async def _change(self, operation: Callable[[asyncpg.Connection[Any]], Awaitable[Job]]) -> Job:
        return self._committed(await self._run(operation))

    # Reads.

    async def get(self, job_id: str) -> Job:
        return await self._run(lambda conn: self._select(conn, job_id))

    async def list_jobs(
        self, *, limit: int, status: JobStatus | None = None, after: ListCursor | None = None
    ) -> list[Job]:
        where: list[str] = []
        args: list[Any] = [limit]
        if status is not None:
            args.append(status.value)
            where.append(f"status = ${len(args)}")
        if after is not None:
            args += [_from_us(after.created_at_us), after.job_id]
            created, job_id = f"${len(args) - 1}", f"${len(args)}"
            where.append(f"(created_at, id) < ({created}, {job_id})")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {_COLUMNS} FROM jobs {clause} ORDER BY created_at DESC, id DESC LIMIT $1"
        rows = await self._run(lambda conn: conn.fetch(sql, *args))
        return [_job(row) for row in rows]

    async def job_versions(self, job_ids: Sequence[str]) -> dict[str, int]:
        """The current version of each of ``job_ids`` that exists, in one query."""
        sql = "SELECT id, version FROM jobs WHERE id = ANY($1::text[])"
        rows = await self._run(lambda conn: conn.fetch(sql, list(job_ids)))
        return {row["id"]: row["version"] for row in rows}

    async def list_active(self) -> list[Job]:
        sql = f"SELECT {_COLUMNS} FROM jobs WHERE status IN {_ACTIVE_SQL} ORDER BY created_at, id"
        rows = await self._run(lambda conn: conn.fetch(sql))
        return [_job(row) for row in rows]

    async def list_pending_cancellations(self) -> list[Job]:
        sql = (
            f"SELECT {_COLUMNS} FROM jobs "
            "WHERE cancel_requested AND status IN ('CANCELLED', 'FAILED') ORDER BY created_at, id"
        )
        rows = await self._run(lambda conn: conn.fetch(sql))
        return [_job(row) for row in rows]

    async def history(
        self, job_id: str, *, after_version: int = 0, limit: int | None = None
    ) -> list[HistoryEntry]:
        sql = (
            f"SELECT {_HISTORY_COLUMNS} FROM job_history WHERE job_id = $1 AND version > $2 "
            "ORDER BY version LIMIT $3"
        )

        async def read(conn: asyncpg.Connection[Any]) -> list[asyncpg.Record]:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                rows: list[asyncpg.Record] = await conn.fetch(sql, job_id, after_version, limit)
                if not rows:
                    await self._select(conn, job_id)  # JobNotFound for an unknown job
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
        by_request = f"SELECT {_COLUMNS} FROM jobs WHERE request_id = $1"

        async def insert(conn: asyncpg.Connection[Any]) -> tuple[Job, bool]:
            async with conn.transaction():
                found = await self._by_request_id(conn, request_id)
                if found is not None:
                    return found, False
                if max_active is not None:
                    # Creates that count wait for each other here: the count below then sees
                    # every job a racing create committed.
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", ACTIVE_JOBS_LOCK)
                    active = await conn.fetchval(
                        f"SELECT count(*) FROM jobs WHERE status IN {_ACTIVE_SQL}"
                    )
                    if active >= max_active:
                        raise ResourceExhausted(
                            f"{active} jobs are queued or running (the limit is {max_active}); "
                            "retry later"
                        )
                row = await conn.fetchrow(
                    "INSERT INTO jobs (id, request_id, status, progress, stage, spec, created_at, "
                    "updated_at, last_change, written_by, owner, lease_epoch, trace_context, "
                    "render_attempts) "
                    "VALUES ($1, $2, 'QUEUED', 0, $3, $4, now(), now(), $5, $6, $7, "
                    "CASE WHEN $7::text IS NULL THEN NULL ELSE 1 END, $8, $9) "
                    f"ON CONFLICT (request_id) DO NOTHING RETURNING {_COLUMNS}",
                    job_id,
                    request_id,
                    STAGE_QUEUED,
                    spec,
                    Change.CREATE.value,
                    self.writer,
                    owner,
                    trace_context,
                    first_attempts_json(placement),
                )
                if row is not None:
                    return _job(row), True
            # A create with the same request id committed first (ON CONFLICT waited for it).
            row = await conn.fetchrow(by_request, request_id)
            assert row is not None, "the conflicting job is committed"
            return _job(row), False

        job, created = await self._run(insert)
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
        # Rows are locked in one order (by job id) by every batch, so two batches never wait on
        # each other in a cycle; a conflict with another writer retries the whole transaction.
        order = sorted(range(len(updates)), key=lambda position: updates[position].job_id)

        async def apply_all(conn: asyncpg.Connection[Any]) -> list[ProgressResult]:
            for attempt in range(1, BATCH_CONFLICT_ATTEMPTS + 1):
                try:
                    async with conn.transaction():
                        await conn.execute("SET LOCAL synchronous_commit TO off")
                        applied = [
                            await self._apply_progress(conn, updates[position])
                            for position in order
                        ]
                except _CONFLICT_ERRORS as error:
                    if attempt == BATCH_CONFLICT_ATTEMPTS:
                        raise
                    logger.info("a progress batch conflicted (%s): retrying", type(error).__name__)
                    continue
                in_place: dict[int, ProgressResult] = dict(zip(order, applied, strict=True))
                return [in_place[position] for position in range(len(updates))]
            raise AssertionError("unreachable")

        if urgent:
            results = await self._run(apply_all)
        else:
            async with self._progress_slots:
                results = await self._run(apply_all)
        for result in results:
            if isinstance(result, Job):
                self._committed(result)
        return results

    async def _apply_progress(
        self, conn: asyncpg.Connection[Any], update: ProgressUpdate
    ) -> ProgressResult:
        """One update inside the batch's transaction; a refusal changes nothing and is
        returned, so the other updates still commit."""
        try:
            if not 0 <= update.progress <= MAX_RUNNING_PROGRESS:
                reason = f"progress {update.progress} is not allowed before COMPLETED"
                return TransitionRejected(await self._select(conn, update.job_id), reason)
            running = update.stage not in STAGES_BEFORE_RUNNING
            return await self._update(
                conn,
                update.job_id,
                Change.PROGRESS,
                "progress = greatest(progress, $4), attempt_progress = $4, "
                "stage = $5, eta_seconds = $6, "
                "last_render_seq = greatest(last_render_seq, $7), "
                "status = CASE WHEN $8 THEN 'RUNNING' ELSE status END, "
                "started_at = CASE WHEN $8 THEN coalesce(started_at, now()) ELSE started_at END",
                f"status IN {_ACTIVE_SQL} AND attempt_progress <= $4",
                (update.progress, update.stage, update.eta_seconds, update.render_seq, running),
                lambda _: (
                    f"progress {update.progress} refused (terminal, or below the stored progress)"
                ),
                update.lease,
            )
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
        def reason(current: Job) -> str:
            if current.terminal:
                return "cannot complete a finished job"
            return "COMPLETED needs an output path"

        return await self._change(
            lambda conn: self._update(
                conn,
                job_id,
                Change.COMPLETE,
                "status = 'COMPLETED', progress = 100, stage = $4, output_path = $5, "
                "output_size_bytes = $6, output_duration_seconds = $7, eta_seconds = 0, "
                "last_render_seq = greatest(last_render_seq, $8), "
                "started_at = coalesce(started_at, now()), finished_at = now()",
                f"status IN {_ACTIVE_SQL} AND $5 <> ''",
                (STAGE_COMPLETE, output_path, size_bytes, duration_seconds, render_seq),
                reason,
                lease,
            )
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
        return await self._change(
            lambda conn: self._update(
                conn,
                job_id,
                Change.FAIL,
                "status = 'FAILED', stage = $4, error_code = $5, error_message = $6, "
                "error_field = $7, eta_seconds = 0, finished_at = now(), cancel_requested = $8, "
                "error_log_tail = $9",
                f"status IN {_ACTIVE_SQL}",
                (STAGE_FAILED, code, message, field, release_render, log_tail),
                lambda _: "cannot fail a finished job",
                lease,
            )
        )

    async def cancel(self, job_id: str, *, lease: Lease | None = None) -> Job:
        return await self._change(
            lambda conn: self._update(
                conn,
                job_id,
                Change.CANCEL,
                "status = 'CANCELLED', stage = $4, cancel_requested = true, eta_seconds = 0, "
                "finished_at = now()",
                f"status IN {_ACTIVE_SQL}",
                (STAGE_CANCELLED,),
                lambda _: "only queued or running jobs can be cancelled",
                lease,
            )
        )

    async def begin_attempt(
        self, job_id: str, *, expected_attempt: int, lease: Lease | None = None
    ) -> Job:
        return await self._change(
            lambda conn: self._update(
                conn,
                job_id,
                Change.BEGIN_ATTEMPT,
                "attempt = attempt + 1, last_render_seq = 0, attempt_progress = 0",
                f"status IN {_ACTIVE_SQL} AND attempt = $4",
                (expected_attempt,),
                lambda _: f"attempt {expected_attempt} is no longer current",
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
        async def place(conn: asyncpg.Connection[Any]) -> Job:
            async with conn.transaction():
                row = await conn.fetchrow(
                    f"SELECT {_COLUMNS} FROM jobs WHERE id = $1 FOR UPDATE", job_id
                )
                if row is None:
                    raise JobNotFound(job_id)
                attempts = with_placement(_job(row).attempts, placed, superseded_outcome)
                return await self._update(
                    conn,
                    job_id,
                    Change.PLACE_ATTEMPT,  # not recorded: bookkeeping of the render's place
                    "render_attempts = $4",
                    f"status IN {_ACTIVE_SQL} AND attempt = $5",
                    (attempts_to_json(attempts), placed.attempt),
                    lambda _: f"attempt {placed.attempt} is not current",
                    lease,
                    new_version=False,
                )

        return await self._run(place)

    async def give_up_release(
        self, job_id: str, *, render_id: str, lease: Lease | None = None
    ) -> Job:
        async def give_up(conn: asyncpg.Connection[Any]) -> Job:
            async with conn.transaction():
                row = await conn.fetchrow(
                    f"SELECT {_COLUMNS} FROM jobs WHERE id = $1 FOR UPDATE", job_id
                )
                if row is None:
                    raise JobNotFound(job_id)
                current = _job(row)
                attempts = with_release_given_up(current.attempts, render_id, datetime.now(UTC))
                if attempts is None:
                    raise TransitionRejected(current, f"no attempt has render id {render_id}")
                attempt = next(a.attempt for a in attempts if a.render_id == render_id)
                return await self._update(
                    conn,
                    job_id,
                    Change.RELEASE_GIVEN_UP,  # not recorded: bookkeeping of a superseded attempt
                    "render_attempts = $4",
                    "attempt <> $5",
                    (attempts_to_json(attempts), attempt),
                    lambda _: f"attempt {attempt} is the current one",
                    lease,
                    new_version=False,
                )

        return await self._run(give_up)

    # The job lifecycle.

    async def _by_request_id(self, conn: asyncpg.Connection[Any], request_id: str) -> Job | None:
        """The job of ``request_id``; RequestIdDeleted for a deleted one (the tombstone is
        written in the delete's transaction, so one of the two reads sees it)."""
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM jobs WHERE request_id = $1", request_id)
        if row is not None:
            return _job(row)
        deleted = await conn.fetchval(
            "SELECT job_id FROM deleted_requests WHERE request_id = $1", request_id
        )
        if deleted is not None:
            raise RequestIdDeleted(request_id, deleted)
        return None

    async def find_by_request_id(self, request_id: str) -> Job | None:
        return await self._run(lambda conn: self._by_request_id(conn, request_id))

    async def delete(self, job_id: str) -> Job:
        """One conditional DELETE (terminal, clean-up done) and the tombstone, in one
        transaction; the history goes with the job (ON DELETE CASCADE)."""

        async def delete(conn: asyncpg.Connection[Any]) -> Job:
            async with conn.transaction():
                row = await conn.fetchrow(
                    f"DELETE FROM jobs WHERE id = $1 AND status IN {_TERMINAL_SQL} "
                    f"AND NOT cancel_requested RETURNING {_COLUMNS}",
                    job_id,
                )
                if row is None:
                    current = await self._select(conn, job_id)
                    raise TransitionRejected(current, _DELETE_REFUSED)
                job = _job(row)
                await conn.execute(
                    "INSERT INTO deleted_requests (request_id, job_id) VALUES ($1, $2) "
                    "ON CONFLICT (request_id) DO UPDATE SET job_id = excluded.job_id",
                    job.request_id,
                    job.id,
                )
                return job

        return await self._run(delete)

    async def list_expired(self, *, finished_before: datetime, limit: int) -> list[Job]:
        sql = (
            f"SELECT {_COLUMNS} FROM jobs WHERE finished_at < $1 AND status IN {_TERMINAL_SQL} "
            "AND NOT cancel_requested ORDER BY finished_at, id LIMIT $2"
        )
        rows = await self._run(lambda conn: conn.fetch(sql, finished_before, limit))
        return [_job(row) for row in rows]

    async def render_released(self, job_id: str) -> None:
        await self._run(
            lambda conn: conn.execute(
                "UPDATE jobs SET cancel_requested = false WHERE id = $1", job_id
            )
        )

    async def trace_context(self, job_id: str) -> str:
        stored = await self._run(
            lambda conn: conn.fetchval("SELECT trace_context FROM jobs WHERE id = $1", job_id)
        )
        return str(stored) if stored is not None else ""

    # Ownership.

    async def confirm_lease(self, job_id: str, *, lease: Lease) -> Job:
        return await self._run(
            lambda conn: self._update(
                conn,
                job_id,
                Change.PROGRESS,  # not recorded: nothing changes
                "",
                f"status IN {_ACTIVE_SQL}",
                (),
                lambda _: "the job is finished",
                lease,
                new_version=False,
            )
        )

    async def confirm_release(self, job_id: str, *, lease: Lease) -> Job:
        return await self._run(
            lambda conn: self._update(
                conn,
                job_id,
                Change.PROGRESS,  # not recorded: nothing changes
                "",
                "cancel_requested",
                (),
                lambda _: "the job's render is released already",
                lease,
                new_version=False,
            )
        )

    async def heartbeat(
        self, replica_id: str, *, ttl_seconds: float, refused_writes: int = 0
    ) -> list[ReplicaBeat]:
        # One statement: the data-modifying CTEs always run; the SELECT reads the rows as the
        # statement began (the others' are what it wants; this replica's own is left out).
        rows = await self._run(
            lambda conn: conn.fetch(
                "WITH forgotten AS (DELETE FROM export_replicas WHERE id <> $1 "
                "AND expires_at < now() - make_interval(secs => $4)), "
                "renewed AS (INSERT INTO export_replicas (id, expires_at, refused_writes) "
                "VALUES ($1, now() + make_interval(secs => $2), $3) "
                "ON CONFLICT (id) DO UPDATE SET renewed_at = now(), "
                "expires_at = EXCLUDED.expires_at, refused_writes = EXCLUDED.refused_writes) "
                "SELECT id, extract(epoch FROM now() - renewed_at)::float8 AS renewed_ago, "
                "extract(epoch FROM expires_at - now())::float8 AS expires_in "
                "FROM export_replicas WHERE id <> $1",
                replica_id,
                ttl_seconds,
                refused_writes,
                FORGET_REPLICA_SECONDS,
            )
        )
        return [ReplicaBeat(row["id"], row["renewed_ago"], row["expires_in"]) for row in rows]

    async def release_replica(self, replica_id: str) -> int:
        async def release(conn: asyncpg.Connection[Any]) -> int:
            async with conn.transaction():
                released = await conn.fetchval(
                    "WITH released AS (UPDATE jobs SET owner = NULL WHERE owner = $1 "
                    "RETURNING 1) SELECT count(*) FROM released",
                    replica_id,
                )
                await conn.execute("DELETE FROM export_replicas WHERE id = $1", replica_id)
                return int(released)

        return await self._run(release)

    async def claim_jobs(
        self, replica_id: str, *, limit: int, take_over: bool = False
    ) -> list[Job]:
        # The CTE picks and locks the rows once (MATERIALIZED: the LIMIT applies once; rows a
        # concurrent claim or write holds are skipped, never waited for); the UPDATE takes them.
        returning = ", ".join(f"jobs.{column.strip()}" for column in _COLUMNS.split(","))
        sql = f"""
            WITH free AS MATERIALIZED (
                SELECT j.id, j.owner AS claimed_from FROM jobs j
                WHERE (j.status IN {_ACTIVE_SQL} OR j.cancel_requested)
                  AND j.owner IS DISTINCT FROM $1
                  AND ($3 OR j.owner IS NULL OR NOT EXISTS (
                      SELECT 1 FROM export_replicas r
                      WHERE r.id = j.owner AND r.expires_at > now()))
                ORDER BY j.created_at, j.id
                LIMIT $2
                FOR UPDATE OF j SKIP LOCKED
            )
            UPDATE jobs SET owner = $1, lease_epoch = coalesce(jobs.lease_epoch, 0) + 1
            FROM free WHERE jobs.id = free.id
            RETURNING {returning}, free.claimed_from
        """
        rows = await self._run(lambda conn: conn.fetch(sql, replica_id, limit, take_over))
        jobs = (replace(_job(row), claimed_from=row["claimed_from"]) for row in rows)
        return sorted(jobs, key=lambda job: (job.created_at, job.id))

    async def active_among(self, job_ids: Sequence[str]) -> set[str]:
        sql = f"SELECT id FROM jobs WHERE id = ANY($1::text[]) AND status IN {_ACTIVE_SQL}"
        rows = await self._run(lambda conn: conn.fetch(sql, list(job_ids)))
        return {row["id"] for row in rows}


def _stale_connection(error: BaseException) -> bool:
    """A pooled connection the database closed (it restarted, or ended an idle session) or that
    asyncpg found out of step with the server: another one may work."""
    return isinstance(
        error,
        asyncpg.ConnectionDoesNotExistError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError
        | asyncpg.AdminShutdownError
        | asyncpg.IdleSessionTimeoutError
        | asyncpg.IdleInTransactionSessionTimeoutError
        | ConnectionResetError,
    )


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _redacted(url: str) -> str:
    """The URL without a password."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
