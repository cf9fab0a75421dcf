"""PostgreSQL backend of JobStore (asyncpg), for several processes sharing one record.

asyncpg rather than psycopg 3: the service is asyncio from end to end and asyncpg is a native
asyncio driver with its own pool, binary protocol and prepared-statement cache, the cheapest way
to carry many small progress writes; psycopg 3's strengths (a sync API, libpq's options, working
behind PgBouncer's transaction pooling without turning off statement caching) are not needed here.

Every change is one conditional ``UPDATE ... WHERE id = $1 AND (condition) RETURNING`` (or one
for a whole batch of progress writes): zero rows means the transition is refused, and the job is
re-read (a new snapshot) to say why. A plan whose statements belong together (a read-then-write,
a row in another table, a batch) runs in one transaction; a lone conditional UPDATE is one
already. Constraints and triggers repeat the invariants (a terminal status is final, progress
never decreases, 100 only with COMPLETED, version + 1 per change), so a raw UPDATE cannot break
them either, and a trigger appends every committed change to ``job_history`` in the same
transaction.

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
import functools
import logging
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import asyncpg

from export_service.store.base import FORGET_REPLICA_SECONDS, STAGE_QUEUED, Change, JobStore
from export_service.store.records import Job, ReplicaBeat, StoreUnavailable
from export_service.store.sql import (
    ACTIVE_SQL,
    HISTORY_COLUMNS,
    JOB_COLUMNS,
    POSTGRESQL,
    TERMINAL_SQL,
    Plan,
    Row,
    Statement,
    drive_async,
    job_of,
    render_postgres,
)
from export_service.store.transitions import Lane

logger = logging.getLogger(__name__)

T = TypeVar("T")

POOL_SIZE = 10
CONNECT_TIMEOUT_SECONDS = 5.0
COMMAND_TIMEOUT_SECONDS = 30.0
# A session left inside a transaction this long is ended by the server, and its row locks go
# with it: a replica paused (SIGSTOP, a long GC, a partition) between a transaction's statements
# would otherwise hold its jobs' rows, which other replicas' claims skip, for as long as it stays
# paused. A transaction here is a few round trips; its own writes are fenced by the lease.
IDLE_IN_TRANSACTION_SECONDS = 5.0

# Advisory lock key (one namespace per database) of migrating the schema; the one of counting
# active jobs is store.sql.ACTIVE_JOBS_LOCK.
MIGRATION_LOCK = zlib.crc32(b"videojob.schema_migrations")


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
    IF OLD.status IN {TERMINAL_SQL}
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
        INSERT INTO job_history ({HISTORY_COLUMNS}) VALUES (
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
    WHERE status IN {ACTIVE_SQL} OR cancel_requested;
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

# An output in an object store: the job keeps the whole file's SHA-256 (hex) and the current
# stage's own progress (Uploading: bytes stored of the file's size).
SCHEMA_V50_STORED_OUTPUT = """
ALTER TABLE jobs ADD COLUMN output_sha256 text NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN stage_progress double precision NOT NULL DEFAULT 0;
"""

# The webhook outbox (store.outbox): each job's endpoints, and one row per event owed to one of
# them, written in the transaction of the change it tells of.
SCHEMA_V60_WEBHOOKS = """
ALTER TABLE jobs ADD COLUMN notify text NOT NULL DEFAULT '';
CREATE TABLE job_webhooks (
    job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    position integer NOT NULL,
    url text NOT NULL,
    events text NOT NULL CHECK (events IN ('terminal', 'all')),
    secret text NOT NULL,
    PRIMARY KEY (job_id, position)
);
CREATE TABLE webhook_deliveries (
    id text PRIMARY KEY,
    job_id text NOT NULL,
    position integer NOT NULL,
    type text NOT NULL,
    job_version bigint NOT NULL,
    payload text NOT NULL,
    url text NOT NULL,
    state text NOT NULL CHECK (state IN ('pending', 'delivered', 'gave_up')),
    attempts integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    next_attempt_at timestamptz,
    last_attempt_at timestamptz,
    finished_at timestamptz,
    last_status integer NOT NULL DEFAULT 0,
    last_error text NOT NULL DEFAULT '',
    last_response text NOT NULL DEFAULT '',
    claimed_by text,
    claimed_until timestamptz,
    FOREIGN KEY (job_id, position) REFERENCES job_webhooks (job_id, position) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_of_job ON webhook_deliveries (job_id, created_at);
"""

# A split job (store.split_record): its plan and each part's render (JSON), the frames each
# running part reported last (JSON, written with the job's progress), and why the policy renders
# a job whole.
SCHEMA_V61_SPLIT = """
ALTER TABLE jobs ADD COLUMN split_parts text NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN split_frames text NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN split_reason text NOT NULL DEFAULT '';
"""

# Migration 70: each endpoint's origin (scheme, host, port), which caps the attempts held at
# once for one endpoint (store.outbox.claim), written from the URLs of the rows already there as
# store.outbox.origin_of does: lower case, the scheme's port when the URL names none.
_ORIGIN_OF_URL = r"""
    lower(substring(url from '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*')) ||
    CASE WHEN substring(url from '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*') ~ ':[0-9]+$' THEN ''
         WHEN lower(url) LIKE 'https:%' THEN ':443' ELSE ':80' END
"""
SCHEMA_V70_ORIGINS = f"""
ALTER TABLE job_webhooks ADD COLUMN origin text NOT NULL DEFAULT '';
ALTER TABLE webhook_deliveries ADD COLUMN origin text NOT NULL DEFAULT '';
UPDATE job_webhooks SET origin = {_ORIGIN_OF_URL};
UPDATE webhook_deliveries SET origin = {_ORIGIN_OF_URL};
CREATE INDEX webhook_deliveries_held ON webhook_deliveries (claimed_until)
    WHERE state = 'pending';
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
    Migration(
        50,
        "the stored output's SHA-256 and the current stage's own progress",
        SCHEMA_V50_STORED_OUTPUT,
    ),
    Migration(60, "webhook endpoints and the deliveries owed to them", SCHEMA_V60_WEBHOOKS),
    Migration(
        61, "a split job's parts, their frames and why a job renders whole", SCHEMA_V61_SPLIT
    ),
    Migration(70, "the endpoint (origin) of each webhook delivery", SCHEMA_V70_ORIGINS),
)

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

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
CONFLICT_ATTEMPTS = 3


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
    async def open(
        cls,
        url: str,
        writer: str = "",
        *,
        idle_in_transaction_seconds: float = IDLE_IN_TRANSACTION_SECONDS,
    ) -> PostgresJobStore:
        """Connects, migrates the schema and returns the store; ValueError when the database
        cannot be reached or refuses us (the process cannot start without its record)."""
        idle_ms = str(round(idle_in_transaction_seconds * 1000))
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=POOL_SIZE,
                timeout=CONNECT_TIMEOUT_SECONDS,
                command_timeout=COMMAND_TIMEOUT_SECONDS,
                server_settings={"idle_in_transaction_session_timeout": idle_ms},
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

    async def _execute(self, plan: Callable[[], Plan[T]], lane: Lane, *, atomic: bool) -> T:
        """In one transaction when ``atomic`` (retried whole when PostgreSQL aborted it to break
        a lock cycle or a serialisation conflict), else each statement on its own; progress
        commits without waiting for the disk and, unless urgent, waits for a progress slot."""
        progress = lane in (Lane.PROGRESS, Lane.URGENT_PROGRESS)

        async def run(conn: asyncpg.Connection[Any]) -> T:
            statement = functools.partial(self._statement, conn)
            if not atomic:
                return await drive_async(plan(), statement)
            for attempt in range(1, CONFLICT_ATTEMPTS + 1):
                try:
                    async with conn.transaction(readonly=lane is Lane.READ):
                        if progress:
                            await conn.execute("SET LOCAL synchronous_commit TO off")
                        return await drive_async(plan(), statement)
                except _CONFLICT_ERRORS as error:
                    if attempt == CONFLICT_ATTEMPTS:
                        raise
                    logger.info("a transaction conflicted (%s): retrying", type(error).__name__)
            raise AssertionError("unreachable")

        if lane is not Lane.PROGRESS:
            return await self._run(run)
        async with self._progress_slots:
            return await self._run(run)

    @staticmethod
    async def _statement(conn: asyncpg.Connection[Any], statement: Statement) -> list[Row]:
        if statement.only and statement.only != POSTGRESQL:
            return []
        rendered = render_postgres(statement.sql)
        params = statement.params
        rows: list[Row] = await conn.fetch(rendered.sql, *(params[name] for name in rendered.names))
        return rows

    async def job_versions(self, job_ids: Sequence[str]) -> dict[str, int]:
        """The current version of each of ``job_ids`` that exists, in one query."""
        sql = "SELECT id, version FROM jobs WHERE id = ANY($1::text[])"
        rows = await self._run(lambda conn: conn.fetch(sql, list(job_ids)))
        return {row["id"]: row["version"] for row in rows}

    # Ownership.

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
        returning = ", ".join(f"jobs.{column.strip()}" for column in JOB_COLUMNS.split(","))
        sql = f"""
            WITH free AS MATERIALIZED (
                SELECT j.id, j.owner AS claimed_from FROM jobs j
                WHERE (j.status IN {ACTIVE_SQL} OR j.cancel_requested)
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
        jobs = (replace(job_of(row), claimed_from=row["claimed_from"]) for row in rows)
        return sorted(jobs, key=lambda job: (job.created_at, job.id))

    async def active_among(self, job_ids: Sequence[str]) -> set[str]:
        sql = f"SELECT id FROM jobs WHERE id = ANY($1::text[]) AND status IN {ACTIVE_SQL}"
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
