"""SQLite backend of JobStore: one sqlite3 connection owned by one worker thread.

Every operation is one plan (store.sql) run on that thread, inside one ``BEGIN IMMEDIATE``
transaction (``BEGIN DEFERRED`` for reads), so the event loop never blocks and a change is never
interleaved with another on this store. The thread takes terminal changes first, then reads and
other changes, then progress writes; durable writes queued together share one transaction, each
in a savepoint of its own, and one commit (group commit, store.worker). Durability is split:
progress commits with ``synchronous=NORMAL`` (no fsync), every other change with ``FULL``. In
WAL mode a FULL commit syncs the log up to it, earlier progress frames included, so a power loss
can only lose the last progress writes, never a terminal state. Several stores (or processes)
may share the file: SQLite's write lock and busy timeout serialize them, and the conditional
updates keep the invariants whoever writes. Triggers repeat the invariants at the database
level, so even a raw UPDATE cannot break them, and append every committed change to
``job_history`` in the same transaction.

The schema is migrated on open, inside one ``BEGIN IMMEDIATE`` transaction (SQLite's write lock
is the migration lock: a second process opening the file waits, then finds the work done);
``schema_migrations`` says which migrations ran. A file made before migrations were recorded has
the jobs table and no ``schema_migrations``: migration 1 is written so that it completes such a
file (and an empty one) alike.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Self, TypeVar

from export_service.store import outbox
from export_service.store.base import FORGET_REPLICA_SECONDS, STAGE_QUEUED, Change, JobStore
from export_service.store.records import Job, ReplicaBeat, StoreUnavailable, us_of
from export_service.store.sql import (
    ACTIVE_SQL,
    HISTORY_COLUMNS,
    JOB_COLUMNS,
    SQLITE,
    TERMINAL_SQL,
    Plan,
    Row,
    Statement,
    drive,
    job_of,
    render_sqlite,
)
from export_service.store.transitions import Lane
from export_service.store.worker import Outcome, Priority, PriorityWorker

T = TypeVar("T")

BUSY_TIMEOUT_MS = 15_000
WAL_RETRY_SECONDS = 0.01

# How each lane runs here: the worker's priority, and whether its commit syncs (FULL).
PRIORITIES = {
    Lane.READ: Priority.NORMAL,
    Lane.TERMINAL: Priority.TERMINAL,
    Lane.CHANGE: Priority.NORMAL,
    Lane.CHECK: Priority.NORMAL,
    Lane.PROGRESS: Priority.PROGRESS,
    Lane.URGENT_PROGRESS: Priority.TERMINAL,
}
FULL_SYNC = frozenset({Lane.TERMINAL, Lane.CHANGE})

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
        WHERE OLD.status IN {TERMINAL_SQL}
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
INSERT INTO job_history ({HISTORY_COLUMNS})
    SELECT id, version, last_change, status, progress, stage, attempt, last_render_seq,
           error_code, updated_at, written_by, owner, lease_epoch FROM jobs;
CREATE TRIGGER job_history_on_insert AFTER INSERT ON jobs
BEGIN
    INSERT INTO job_history ({HISTORY_COLUMNS}) VALUES {_HISTORY_VALUES};
END;
CREATE TRIGGER job_history_on_change AFTER UPDATE OF version ON jobs
    WHEN NEW.version != OLD.version
BEGIN
    INSERT INTO job_history ({HISTORY_COLUMNS}) VALUES {_HISTORY_VALUES};
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
    WHERE status IN {ACTIVE_SQL} OR cancel_requested;
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


# Migration 70: each endpoint's origin (scheme, host, port), which caps the attempts held at
# once for one endpoint (store.outbox.claim), written from the URLs of the rows already there.
ORIGIN_SCHEMA = """
ALTER TABLE job_webhooks ADD COLUMN origin TEXT NOT NULL DEFAULT '';
ALTER TABLE webhook_deliveries ADD COLUMN origin TEXT NOT NULL DEFAULT '';
CREATE INDEX webhook_deliveries_held ON webhook_deliveries (claimed_until)
    WHERE state = 'pending';
"""


def _migration_70(conn: sqlite3.Connection) -> None:
    _run_script(conn, ORIGIN_SCHEMA)
    for table in ("job_webhooks", "webhook_deliveries"):
        urls = [row[0] for row in conn.execute(f"SELECT DISTINCT url FROM {table}")]
        conn.executemany(
            f"UPDATE {table} SET origin = ? WHERE url = ?",
            [(outbox.origin_of(url), url) for url in urls],
        )


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
    Migration(
        50,
        "the stored output's SHA-256 and the current stage's own progress",
        lambda conn: _run_script(conn, STORED_OUTPUT_SCHEMA),
    ),
    Migration(
        60,
        "webhook endpoints and the deliveries owed to them",
        lambda conn: _run_script(conn, WEBHOOK_SCHEMA),
    ),
    Migration(
        61,
        "a split job's parts, their frames and why a job renders whole",
        lambda conn: _run_script(conn, SPLIT_SCHEMA),
    ),
    Migration(70, "the endpoint (origin) of each webhook delivery", _migration_70),
)

# Migration 40: a pool of render services. Each job keeps the placements of its render (JSON: a
# list of base.RenderAttempt.to_dict) and the current attempt's own progress.
POOL_SCHEMA = """
ALTER TABLE jobs ADD COLUMN render_attempts TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN attempt_progress REAL NOT NULL DEFAULT 0;
UPDATE jobs SET attempt_progress = progress WHERE attempt = 1;
"""

# Migration 50: an output in an object store. The job keeps the whole file's SHA-256 (hex) and
# the current stage's own progress (Uploading: bytes stored of the file's size).
STORED_OUTPUT_SCHEMA = """
ALTER TABLE jobs ADD COLUMN output_sha256 TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN stage_progress REAL NOT NULL DEFAULT 0;
"""

# Migration 60: the webhook outbox (store.outbox). Each job's endpoints, and one row per event
# owed to one of them, written in the transaction of the change it tells of. Times in
# microseconds since the epoch.
WEBHOOK_SCHEMA = """
ALTER TABLE jobs ADD COLUMN notify TEXT NOT NULL DEFAULT '';
CREATE TABLE job_webhooks (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL CHECK (events IN ('terminal', 'all')),
    secret TEXT NOT NULL,
    PRIMARY KEY (job_id, position)
) WITHOUT ROWID;
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    type TEXT NOT NULL,
    job_version INTEGER NOT NULL,
    payload TEXT NOT NULL,
    url TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'gave_up')),
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    next_attempt_at INTEGER,
    last_attempt_at INTEGER,
    finished_at INTEGER,
    last_status INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    last_response TEXT NOT NULL DEFAULT '',
    claimed_by TEXT,
    claimed_until INTEGER,
    FOREIGN KEY (job_id, position) REFERENCES job_webhooks (job_id, position) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_of_job ON webhook_deliveries (job_id, created_at);
"""

# Migration 61: a split job (store.split_record). Its plan and each part's render (JSON), the
# frames each running part reported last (JSON, written with the job's progress), and why the
# policy renders a job whole.
SPLIT_SCHEMA = """
ALTER TABLE jobs ADD COLUMN split_parts TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN split_frames TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN split_reason TEXT NOT NULL DEFAULT '';
"""

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at INTEGER NOT NULL
        DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))
)
"""
__all__ = ["MIGRATIONS", "SqliteJobStore", "migrate"]


def now_us() -> int:
    return time.time_ns() // 1000


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
        self._worker = PriorityWorker("sqlite-store", self._run_group)
        self._conn: sqlite3.Connection | None = None
        self._synchronous = ""

    @classmethod
    async def open(cls, path: Path, writer: str = "") -> Self:
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

    async def _run(
        self, fn: Callable[[], T], priority: Priority = Priority.NORMAL, *, joins: Any = None
    ) -> T:
        """``fn`` on the store's thread (``joins``: see PriorityWorker.run). A database file that
        cannot be read or written (I/O error, gone, full, locked past the busy timeout) raises
        StoreUnavailable and makes the store unavailable until an operation succeeds again, as
        PostgreSQL does."""
        try:
            result = await self._worker.run(fn, priority, joins=joins)
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

    async def _execute(self, plan: Callable[[], Plan[T]], lane: Lane, *, atomic: bool) -> T:
        """Always one transaction: a read in a DEFERRED one (one snapshot); a write in an
        IMMEDIATE one (the write lock at once), which a durable write may share with the
        durable writes queued behind it (_run_group: one fsync for all)."""

        def run() -> T:
            return drive(plan(), self._statement)

        if lane is Lane.READ:
            return await self._run(lambda: _in_transaction(self._db, run, write=False))
        if lane not in FULL_SYNC:  # no fsync to share; and progress, latest-wins, runs alone
            unsynced = self._durable(lambda: _in_transaction(self._db, run, write=True), full=False)
            return await self._run(unsynced, PRIORITIES[lane])
        return await self._run(run, PRIORITIES[lane], joins=True)

    def _run_group(self, writes: Sequence[tuple[Callable[[], Any], Any]]) -> list[Outcome]:
        """Durable writes in one IMMEDIATE transaction, each in a savepoint of its own (one that
        raises is undone alone and answered with its error), committed once with synchronous
        FULL: one fsync makes them all durable. None is answered before the commit; a failed
        commit answers every one with its error."""

        def run_all() -> list[Outcome]:
            outcomes: list[Outcome] = []
            with _transaction(self._db):
                for write, _ in writes:
                    self._db.execute("SAVEPOINT write")
                    try:
                        outcomes.append((True, write()))
                    except BaseException as error:  # noqa: BLE001 - its caller re-raises it
                        self._db.execute("ROLLBACK TO write")
                        outcomes.append((False, error))
                    self._db.execute("RELEASE write")
            return outcomes

        return self._durable(run_all, full=True)()

    def _statement(self, statement: Statement) -> list[Row]:
        if statement.only and statement.only != SQLITE:
            return []
        rendered = render_sqlite(statement.sql)
        params = statement.params
        now = now_us()  # one moment per statement, as PostgreSQL's now() is one per transaction
        values = [now if name == "now" else _bound(params[name]) for name in rendered.names]
        return self._db.execute(rendered.sql, values).fetchall()

    # Ownership: one process alone uses the file (exclusive), yet the same fenced writes, claims
    # and heartbeats hold here as on PostgreSQL; the clock is this host's.

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
            WHERE (j.status IN {ACTIVE_SQL} OR j.cancel_requested)
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
            RETURNING {JOB_COLUMNS}
        """
        values = {"me": replica_id, "take_over": take_over, "now": now_us(), "limit": limit}

        def claim() -> list[Job]:
            with _transaction(self._db):
                # The owners before the claim (UPDATE ... RETURNING sees only the new row);
                # the transaction holds the file, so the UPDATE picks the same rows.
                owners = {row[0]: row[1] for row in self._db.execute(free, values)}
                rows = self._db.execute(sql, values).fetchall()
                return [replace(job_of(row), claimed_from=owners[row["id"]]) for row in rows]

        jobs = await self._run(self._durable(claim, full=True))
        return sorted(jobs, key=lambda job: (job.created_at, job.id))

    async def active_among(self, job_ids: Sequence[str]) -> set[str]:
        ids = list(job_ids)
        if not ids:
            return set()
        marks = ", ".join("?" for _ in ids)
        sql = f"SELECT id FROM jobs WHERE id IN ({marks}) AND status IN {ACTIVE_SQL}"
        rows = await self._run(lambda: self._db.execute(sql, ids).fetchall())
        return {row["id"] for row in rows}


def _bound(value: Any) -> Any:
    """A parameter as SQLite keeps it: a time as microseconds since the epoch."""
    return us_of(value) if isinstance(value, datetime) else value


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


def _in_transaction(conn: sqlite3.Connection, fn: Callable[[], T], *, write: bool) -> T:
    with _transaction(conn, write=write):
        return fn()


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
