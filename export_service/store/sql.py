"""The SQL both backends run, written once in a neutral dialect, and its rendering for each.

Neutral SQL is what SQLite and PostgreSQL agree on, plus four things each backend renders its own
way (``render_sqlite``, ``render_postgres``):

- ``:name`` parameters. PostgreSQL gets ``$n`` cast to the parameter's type (``PARAMETER_TYPES``:
  one type per name, whatever the statement); SQLite gets ``?``.
- ``greatest(a, b)``: SQLite's ``max(a, b)``.
- ``now()``: on SQLite this host's clock in microseconds, bound as a parameter.
- ``FOR UPDATE`` (a row lock): SQLite drops it (its write transaction holds the whole file), and
  ``json_to_recordset(:rows) AS u(col type, ...)`` (a JSON array of objects as a table, how a
  batch of writes travels in one parameter): SQLite reads it with ``json_each``, and reaches
  the jobs it names by their primary key.

Times are microseconds since the epoch in SQLite and timestamptz in PostgreSQL: ``job_of`` reads
either, and the SQLite driver binds a datetime as microseconds. Booleans need nothing: SQLite
takes ``true``, ``false`` and Python's bools as 1 and 0.

A plan is a generator that yields statements and is sent back their rows: the steps of one
operation, which a backend runs in one transaction (``drive`` on SQLite's thread,
``drive_async`` on a PostgreSQL connection). Plans never see a connection, so both backends run
the same ones: the reads and the create here, the transitions in store.transitions.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections.abc import Awaitable, Callable, Collection, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from export_service.store.records import (
    ACTIVE_STATUSES,
    STAGE_QUEUED,
    TERMINAL_STATUSES,
    Change,
    HistoryEntry,
    Job,
    JobNotFound,
    JobStatus,
    ListCursor,
    RenderAttempt,
    RequestIdDeleted,
    attempts_from_json,
    datetime_of,
    first_attempts_json,
)
from export_service.store.split_record import frames_from_json, split_from_json
from videojob.errors import ResourceExhausted

if TYPE_CHECKING:
    from export_service.store import outbox

T = TypeVar("T")

# A row as a driver returns it (sqlite3.Row, asyncpg.Record): read by column name.
Row = Any

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
# The index SQLite made for the jobs table's primary key (its first constraint).
SQLITE_JOBS_KEY = "sqlite_autoindex_jobs_1"


@dataclass(frozen=True)
class Statement:
    """One neutral statement and its parameters (extra ones are ignored)."""

    sql: str
    params: Mapping[str, Any] = field(default_factory=dict)
    # The one backend that runs it ("": both); the other skips it and sees no rows.
    only: str = ""


# The steps of one operation: yields statements, is sent their rows, returns the result.
Plan = Generator[Statement, list[Row], T]


# Every parameter name the neutral SQL uses, with its PostgreSQL type.
PARAMETER_TYPES: Mapping[str, str] = {
    "id": "text",
    "job_id": "text",
    "request_id": "text",
    "spec": "bytea",
    "stage": "text",
    "status": "text",
    "owner": "text",
    "trace_context": "text",
    "attempts": "text",
    "change": "text",
    "writer": "text",
    "lease_owner": "text",
    "lease_epoch": "int8",
    "progress": "float8",
    "eta": "float8",
    "seq": "int8",
    "output_path": "text",
    "size": "int8",
    "duration": "float8",
    "sha256": "text",
    "stage_progress": "float8",
    # A split job (store.split_record).
    "split": "text",
    "split_frames": "text",
    "split_reason": "text",
    "code": "text",
    "message": "text",
    "field": "text",
    "log_tail": "text",
    "release": "bool",
    "expected": "int8",
    "attempt": "int8",
    "rows": "json",
    "limit": "int8",
    "after_version": "int8",
    "after_created": "timestamptz",
    "after_id": "text",
    "before": "timestamptz",
    "lock": "int8",
    # The webhook outbox (store.outbox).
    "notify": "text",
    "event": "text",
    "type": "text",
    "version": "int8",
    "payload": "text",
    "terminal": "bool",
    "position": "int8",
    "url": "text",
    "origin": "text",
    "per_endpoint": "int8",
    "events": "text",
    "secret": "text",
    "at": "timestamptz",
    "until": "timestamptz",
    "next": "timestamptz",
    "finished": "timestamptz",
    "state": "text",
    "status_code": "int8",
    "error": "text",
    "response": "text",
}

# Quoted strings pass untouched; ``:name`` outside them is a parameter.
_TOKENS = re.compile(r"'[^']*'|:(\w+)")
_RECORDSET = re.compile(r"json_to_recordset\(:(\w+)\) AS (\w+)\(([^)]*)\)")


def substitute(sql: str, parameter: Callable[[str], str]) -> str:
    """``sql`` with each ``:name`` (outside quoted strings) replaced by ``parameter(name)``."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        return match.group(0) if name is None else parameter(name)

    return _TOKENS.sub(replace, sql)


def parameters(sql: str) -> list[str]:
    """The parameter names of ``sql`` in order of first use."""
    names: dict[str, None] = {}
    substitute(sql, lambda name: names.setdefault(name) or "")
    return list(names)


@dataclass(frozen=True)
class Rendered:
    sql: str
    names: tuple[str, ...]  # the parameter bound to each placeholder, in order


@functools.lru_cache(maxsize=512)
def render_sqlite(sql: str) -> Rendered:
    def from_json(match: re.Match[str]) -> str:
        rows, alias, columns = match.groups()
        names = [column.split()[0] for column in columns.split(",")]
        picked = ", ".join(f"json_extract(value, '$.{name}') AS {name}" for name in names)
        return f"(SELECT {picked} FROM json_each(:{rows})) AS {alias}"

    text = _RECORDSET.sub(from_json, sql)
    if text != sql:
        # A batch reaches each of its jobs by primary key: without statistics SQLite's planner
        # would rather scan the jobs by status and search the whole JSON for each.
        text = text.replace("UPDATE jobs SET", f"UPDATE jobs INDEXED BY {SQLITE_JOBS_KEY} SET")
    text = text.replace("greatest(", "max(").replace("now()", ":now").replace(" FOR UPDATE", "")
    names: list[str] = []

    def place(name: str) -> str:
        names.append(name)
        return "?"

    return Rendered(substitute(text, place), tuple(names))


@functools.lru_cache(maxsize=512)
def render_postgres(sql: str) -> Rendered:
    numbers: dict[str, int] = {}

    def place(name: str) -> str:
        number = numbers.setdefault(name, len(numbers) + 1)
        return f"${number}::{PARAMETER_TYPES[name]}"

    return Rendered(substitute(sql, place), tuple(numbers))


def drive(plan: Plan[T], run: Callable[[Statement], list[Row]]) -> T:
    """Runs ``plan``'s statements with ``run``, in order; what the plan returns."""
    try:
        statement = next(plan)
        while True:
            statement = plan.send(run(statement))
    except StopIteration as done:
        return cast(T, done.value)
    finally:
        plan.close()


async def drive_async(plan: Plan[T], run: Callable[[Statement], Awaitable[list[Row]]]) -> T:
    """``drive`` with a driver that awaits."""
    try:
        statement = next(plan)
        while True:
            statement = plan.send(await run(statement))
    except StopIteration as done:
        return cast(T, done.value)
    finally:
        plan.close()


def sql_text(value: str) -> str:
    """``value`` as an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def sql_list(values: Collection[str]) -> str:
    """``('a', 'b')``: the values for ``IN``."""
    return "(" + ", ".join(sql_text(value) for value in values) + ")"


ACTIVE_SQL = sql_list(ACTIVE_STATUSES)
TERMINAL_SQL = sql_list(TERMINAL_STATUSES)

# A job's columns, in the order job_of reads them.
JOB_COLUMNS = (
    "id, request_id, status, progress, stage, output_path, error_code, error_message, "
    "error_field, attempt, version, spec, created_at, updated_at, started_at, finished_at, "
    "last_render_seq, eta_seconds, output_size_bytes, output_duration_seconds, cancel_requested, "
    "owner, lease_epoch, error_log_tail, render_attempts, attempt_progress, output_sha256, "
    "stage_progress, notify, split_parts, split_frames, split_reason"
)
HISTORY_COLUMNS = (
    "job_id, version, change, status, progress, stage, attempt, render_seq, error_code, "
    "recorded_at, writer, owner, lease_epoch"
)
_JOBS = f"SELECT {JOB_COLUMNS} FROM jobs"

# PostgreSQL's advisory lock key for counting active jobs (creates that respect max_active wait
# for each other there; SQLite's write lock already makes them).
ACTIVE_JOBS_LOCK = zlib.crc32(b"videojob.active_jobs")


def _time(value: datetime | int) -> datetime:
    return value if isinstance(value, datetime) else datetime_of(value)


def job_of(row: Row) -> Job:
    """The job in a row that starts with JOB_COLUMNS, in their order (read by position: the
    cheapest way, and every write returns one)."""
    (
        job_id,
        request_id,
        status,
        progress,
        stage,
        output_path,
        error_code,
        error_message,
        error_field,
        attempt,
        version,
        spec,
        created_at,
        updated_at,
        started_at,
        finished_at,
        last_render_seq,
        eta_seconds,
        output_size_bytes,
        output_duration_seconds,
        cancel_requested,
        owner,
        lease_epoch,
        error_log_tail,
        render_attempts,
        attempt_progress,
        output_sha256,
        stage_progress,
        notify,
        split_parts,
        split_frames,
        split_reason,
        *_,
    ) = row
    return Job(
        id=job_id,
        request_id=request_id,
        status=JobStatus(status),
        progress=progress,
        stage=stage,
        output_path=output_path,
        error_code=error_code,
        error_message=error_message,
        error_field=error_field,
        attempt=attempt,
        version=version,
        spec=bytes(spec),
        created_at=_time(created_at),
        updated_at=_time(updated_at),
        started_at=None if started_at is None else _time(started_at),
        finished_at=None if finished_at is None else _time(finished_at),
        last_render_seq=last_render_seq,
        eta_seconds=eta_seconds,
        output_size_bytes=output_size_bytes,
        output_duration_seconds=output_duration_seconds,
        cancel_requested=bool(cancel_requested),
        owner=owner,
        lease_epoch=lease_epoch,
        error_log_tail=error_log_tail,
        attempt_progress=attempt_progress,
        attempts=attempts_from_json(render_attempts),
        output_sha256=output_sha256,
        stage_progress=stage_progress,
        notify=notify,
        split=split_from_json(split_parts),
        split_frames=frames_from_json(split_frames),
        split_reason=split_reason,
    )


def history_entry_of(row: Row) -> HistoryEntry:
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
        recorded_at=_time(row["recorded_at"]),
        writer=row["writer"],
        owner=row["owner"],
        lease_epoch=row["lease_epoch"],
    )


# The plans of reads and of the create.


def select_job(job_id: str, *, for_update: bool = False) -> Statement:
    lock = " FOR UPDATE" if for_update else ""
    return Statement(f"{_JOBS} WHERE id = :id{lock}", {"id": job_id})


def read_job(job_id: str, *, for_update: bool = False) -> Plan[Job]:
    rows = yield select_job(job_id, for_update=for_update)
    if not rows:
        raise JobNotFound(job_id)
    return job_of(rows[0])


def read_jobs(tail: str, params: Mapping[str, Any] | None = None) -> Plan[list[Job]]:
    """The jobs ``SELECT ... FROM jobs {tail}`` selects (tail: WHERE, ORDER BY, LIMIT)."""
    rows = yield Statement(f"{_JOBS} {tail}", params or {})
    return [job_of(row) for row in rows]


def jobs_among(job_ids: Collection[str]) -> Plan[list[Job]]:
    """The jobs of ``job_ids`` that exist, in one statement (the ids travel as one JSON
    parameter)."""
    ids = json.dumps([{"id": job_id} for job_id in sorted(job_ids)])
    rows = yield Statement(
        f"{_JOBS} WHERE id IN (SELECT u.id FROM json_to_recordset(:rows) AS u(id text))",
        {"rows": ids},
    )
    return [job_of(row) for row in rows]


def list_jobs(
    limit: int, status: JobStatus | None, after: ListCursor | None, done: bool | None = None
) -> Plan[list[Job]]:
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    if status is not None:
        where.append("status = :status")
        params["status"] = status.value
    if done is not None:
        where.append(f"status IN {TERMINAL_SQL if done else ACTIVE_SQL}")
    if after is not None:
        where.append("(created_at, id) < (:after_created, :after_id)")
        params.update(after_created=datetime_of(after.created_at_us), after_id=after.job_id)
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    return read_jobs(f"{clause}ORDER BY created_at DESC, id DESC LIMIT :limit", params)


ACTIVE_JOBS = f"WHERE status IN {ACTIVE_SQL} ORDER BY created_at, id"
PENDING_CANCELLATIONS = (
    "WHERE cancel_requested AND status IN ('CANCELLED', 'FAILED') ORDER BY created_at, id"
)
EXPIRED_JOBS = (
    f"WHERE finished_at < :before AND status IN {TERMINAL_SQL} AND NOT cancel_requested "
    "ORDER BY finished_at, id LIMIT :limit"
)


def history(job_id: str, after_version: int, limit: int | None) -> Plan[list[HistoryEntry]]:
    """One statement (one snapshot): the job's row joined to its entries; none for an unknown
    job, one without an entry for a job with none after ``after_version``."""
    columns = ", ".join(f"h.{column.strip()}" for column in HISTORY_COLUMNS.split(",")[1:])
    rows = yield Statement(
        f"SELECT j.id AS job_id, {columns} FROM jobs j LEFT JOIN job_history h "
        "ON h.job_id = j.id AND h.version > :after_version WHERE j.id = :id ORDER BY h.version"
        + ("" if limit is None else " LIMIT :limit"),
        {"id": job_id, "after_version": after_version, "limit": limit},
    )
    if not rows:
        raise JobNotFound(job_id)
    return [history_entry_of(row) for row in rows if row["version"] is not None]


def trace_context(job_id: str) -> Plan[str]:
    rows = yield Statement("SELECT trace_context FROM jobs WHERE id = :id", {"id": job_id})
    return str(rows[0]["trace_context"]) if rows else ""


def find_by_request_id(request_id: str) -> Plan[Job | None]:
    """The job of ``request_id``; RequestIdDeleted for a deleted one (the tombstone is written in
    the delete's transaction, so one of the two reads sees it)."""
    params = {"request_id": request_id}
    rows = yield Statement(f"{_JOBS} WHERE request_id = :request_id", params)
    if rows:
        return job_of(rows[0])
    rows = yield Statement(
        "SELECT job_id FROM deleted_requests WHERE request_id = :request_id", params
    )
    if rows:
        raise RequestIdDeleted(request_id, rows[0]["job_id"])
    return None


def create(
    *,
    job_id: str,
    request_id: str,
    spec: bytes,
    max_active: int | None,
    owner: str | None,
    trace_context: str,
    placement: RenderAttempt | None,
    writer: str,
    webhooks: Sequence[outbox.WebhookTarget] = (),
) -> Plan[tuple[Job, bool]]:
    """Inserts the job unless its request id is known (see JobStore.create), with its webhook
    endpoints and the event they are owed for QUEUED."""
    from export_service.store import outbox  # it writes its rows with this module's words

    attempts = first_attempts_json(placement)
    found = yield from find_by_request_id(request_id)
    if found is not None:
        return found, False
    if max_active is not None:
        lock = {"lock": ACTIVE_JOBS_LOCK}
        yield Statement("SELECT pg_advisory_xact_lock(:lock)", lock, only=POSTGRESQL)
        rows = yield Statement(f"SELECT count(*) AS active FROM jobs WHERE status IN {ACTIVE_SQL}")
        active = rows[0]["active"]
        if active >= max_active:
            raise ResourceExhausted(
                f"{active} jobs are queued or running (the limit is {max_active}); retry later"
            )
    rows = yield Statement(
        "INSERT INTO jobs (id, request_id, status, progress, stage, spec, created_at, "
        "updated_at, last_change, written_by, owner, lease_epoch, trace_context, "
        "render_attempts, notify) VALUES (:id, :request_id, 'QUEUED', 0, :stage, :spec, now(), "
        "now(), :change, :writer, :owner, CASE WHEN :owner IS NULL THEN NULL ELSE 1 END, "
        f":trace_context, :attempts, :notify) ON CONFLICT (request_id) DO NOTHING "
        f"RETURNING {JOB_COLUMNS}",
        {
            "id": job_id,
            "request_id": request_id,
            "stage": STAGE_QUEUED,
            "spec": spec,
            "change": Change.CREATE.value,
            "writer": writer,
            "owner": owner,
            "trace_context": trace_context,
            "attempts": attempts,
            "notify": outbox.widest(webhooks).value,
        },
    )
    if rows:
        job = job_of(rows[0])
        for position, target in enumerate(webhooks):
            yield outbox.record_target(job.id, position, target)
        if outbox.owed(job):
            yield outbox.record_event(job)
        return job, True
    # A create with the same request id committed first (ON CONFLICT waited for it).
    rows = yield Statement(f"{_JOBS} WHERE request_id = :request_id", {"request_id": request_id})
    return job_of(rows[0]), False
