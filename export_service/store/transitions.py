"""Every change of a job, declared once: the table of transitions, and how one is applied.

A ``Transition`` says which statuses it may start from, what it sets (column: neutral expression,
see store.sql), any further condition and the refusal when that fails, whether it makes a new
version (version + 1, and so a history entry: each backend's job_history trigger), how a lease
fences it, the rows it writes in other tables in the same transaction, and its lane (how a
backend schedules and commits it). A versioned write that moves the job into a status records
the webhook deliveries that status owes in its own transaction (store.outbox). ``apply``
makes one conditional statement of it for one job, ``apply_batch`` one statement for many
(each row with its own arguments and lease); both are plans (store.sql) that each backend runs
in one transaction. Nothing else writes a job: the
create (store.sql.create) inserts it, claims (each backend's) move its lease.

Adding a transition: declare it here, give JobStore a method that applies it, and give
tests/export/test_transitions.py an entry (it checks every declared transition's start
statuses against what each backend accepts).
"""

from __future__ import annotations

import enum
import functools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from export_service.store import outbox
from export_service.store.records import (
    MAX_RUNNING_PROGRESS,
    STAGE_CANCELLED,
    STAGE_COMPLETE,
    STAGE_FAILED,
    STAGES_BEFORE_RUNNING,
    Change,
    Job,
    JobNotFound,
    JobStatus,
    Lease,
    StaleLease,
    TransitionRejected,
    attempts_to_json,
    lease_holds,
    with_placement,
    with_release_given_up,
)
from export_service.store.split_record import (
    PartRecord,
    PartState,
    SplitRecord,
    frames_to_json,
)
from export_service.store.sql import (
    JOB_COLUMNS,
    PARAMETER_TYPES,
    Plan,
    Statement,
    job_of,
    parameters,
    read_job,
    select_job,
    sql_list,
    sql_text,
    substitute,
)
from videojob import metrics

Params = Mapping[str, Any]


class Lane(enum.Enum):
    """How a backend schedules and commits an operation: SQLite's worker priority and
    synchronous mode, PostgreSQL's progress slots and synchronous_commit."""

    READ = "read"
    TERMINAL = "terminal"  # what every watcher waits for: ahead of the rest, durable
    CHANGE = "change"  # durable
    CHECK = "check"  # a fenced write that changes nothing: not synced
    PROGRESS = "progress"  # latest wins: after the rest, not synced, half the pool at most
    URGENT_PROGRESS = "urgent_progress"  # a terminal change follows: ahead, not synced


class Fence(enum.Enum):
    NONE = "none"  # no lease can be named (anyone's bookkeeping)
    OPTIONAL = "optional"  # fenced when the writer names its lease (a user's cancel does not)
    REQUIRED = "required"  # a check of the lease itself


# The fence every fenced write adds: it lands only while the job is held by that owner and epoch.
FENCE_SQL = "(:lease_owner IS NULL OR (owner = :lease_owner AND lease_epoch = :lease_epoch))"

# A batch's own params; every other one is each row's.
_BATCH_PARAMS = frozenset({"change", "writer", "rows"})

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
TERMINAL = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
ANY = tuple(JobStatus)


@dataclass(frozen=True)
class Transition:
    name: str  # the history's Change when versioned; the STORE_WRITE metric's label
    start: tuple[JobStatus, ...]
    sets: Mapping[str, str]  # column: neutral expression (the row's old values, :params)
    refusal: str | Callable[[Job, Params], str]  # a str is formatted with the params
    condition: str = ""  # besides the start statuses
    versioned: bool = True  # version + 1 and a history entry, listeners told
    fence: Fence = Fence.OPTIONAL
    lane: Lane = Lane.CHANGE
    # Params computed from the job as it is, read (and locked) first in the same transaction;
    # may raise TransitionRejected.
    derive: Callable[[Job, dict[str, Any]], dict[str, Any]] | None = None
    # Rows written in other tables in the same transaction, once the job's row is written.
    also: tuple[Callable[[Job, Params], Statement], ...] = ()
    deletes: bool = False  # the job's row is deleted (sets nothing)

    def __post_init__(self) -> None:
        if self.versioned:
            Change(self.name)  # a versioned transition is recorded under its name

    @property
    def atomic(self) -> bool:
        """Whether it needs a transaction of its own (a lone UPDATE is one already)."""
        # A terminal change may owe webhook deliveries, written with it (store.outbox).
        return self.derive is not None or bool(self.also) or self.lane is Lane.TERMINAL

    @functools.cached_property
    def sql(self) -> str:
        """The statement for one job (``:id``)."""
        return self._statement("id = :id", "")

    @functools.cached_property
    def row_params(self) -> tuple[str, ...]:
        """The params of each row of a batch (the others are the batch's)."""
        return tuple(name for name in parameters(self.sql) if name not in _BATCH_PARAMS)

    @functools.cached_property
    def batch_sql(self) -> str:
        """The statement for many (``:rows``: a JSON array of each row's ``p_<param>``)."""
        shared = _BATCH_PARAMS
        columns = ", ".join(f"p_{name} {PARAMETER_TYPES[name]}" for name in self.row_params)
        single = self._statement("jobs.id = :id", f" FROM json_to_recordset(:rows) AS u({columns})")
        return substitute(single, lambda name: f":{name}" if name in shared else f"u.p_{name}")

    def _statement(self, target: str, source: str) -> str:
        sets = dict(self.sets)
        if self.versioned:
            sets.update(
                version="version + 1",
                updated_at="now()",
                last_change=":change",
                written_by=":writer",
            )
        where = [target]
        if set(self.start) != set(ANY):
            where.append(f"status IN {sql_list(self.start)}")
        if self.condition:
            where.append(f"({self.condition})")
        if self.fence is not Fence.NONE:
            where.append(FENCE_SQL)
        conditions = " AND ".join(where)
        if self.deletes:
            return f"DELETE FROM jobs WHERE {conditions} RETURNING {JOB_COLUMNS}"
        assignments = ", ".join(f"{column} = {value}" for column, value in sets.items())
        return (
            f"UPDATE jobs SET {assignments or 'lease_epoch = lease_epoch'}{source} "
            f"WHERE {conditions} RETURNING {JOB_COLUMNS}"
        )

    def refused(self, current: Job, params: Params, lease: Lease | None) -> TransitionRejected:
        """Why the job as it is now did not take the change."""
        if not lease_holds(current, lease):
            assert lease is not None
            return StaleLease(current, lease)
        if isinstance(self.refusal, str):
            return TransitionRejected(current, self.refusal.format(**params))
        return TransitionRejected(current, self.refusal(current, params))


def _progress_refusal(current: Job, params: Params) -> str:
    progress = params["progress"]
    if not 0 <= progress <= MAX_RUNNING_PROGRESS:
        return f"progress {progress} is not allowed before COMPLETED"
    return f"progress {progress} refused (terminal, or below the stored progress)"


def _placed(current: Job, params: dict[str, Any]) -> dict[str, Any]:
    placed = params["placed"]
    attempts = with_placement(current.attempts, placed, params["superseded_outcome"])
    return {**params, "attempts": attempts_to_json(attempts), "attempt": placed.attempt}


def _release_given_up(current: Job, params: dict[str, Any]) -> dict[str, Any]:
    render_id = params["render_id"]
    attempts = with_release_given_up(current.attempts, render_id, datetime.now(UTC))
    if attempts is None:
        raise TransitionRejected(current, f"no attempt has render id {render_id}")
    attempt = next(a.attempt for a in attempts if a.render_id == render_id)
    return {**params, "attempts": attempts_to_json(attempts), "attempt": attempt}


def _tombstone(job: Job, params: Params) -> Statement:
    """A deleted job's request id is remembered: create() with it raises RequestIdDeleted."""
    return Statement(
        "INSERT INTO deleted_requests (request_id, job_id, deleted_at) "
        "VALUES (:request_id, :job_id, now()) ON CONFLICT (request_id) "
        "DO UPDATE SET job_id = excluded.job_id, deleted_at = excluded.deleted_at",
        {"request_id": job.request_id, "job_id": job.id},
    )


def _split_of(current: Job) -> SplitRecord:
    if current.split is None:
        raise TransitionRejected(current, "the job is not split")
    return current.split


def _render_of(current: Job, split: SplitRecord, index: int) -> PartRecord:
    try:
        return split.render(index)
    except KeyError:
        raise TransitionRejected(current, f"the job has no part {index}") from None


def _frames_with(current: Job, split: SplitRecord, index: int, frames: int) -> str:
    """The job's frames per part with part ``index``'s (not the join's) set to ``frames``."""
    known = list(current.split_frames) or [part.frames_done for part in split.parts]
    if 0 <= index < len(known):
        known[index] = frames
    return frames_to_json(tuple(known))


def _planned_split(current: Job, params: dict[str, Any]) -> dict[str, Any]:
    if current.split is not None:
        raise TransitionRejected(current, "the job's parts are planned already")
    split: SplitRecord | None = params["planned"]
    frames = () if split is None else tuple(0 for _ in split.parts)
    return {
        **params,
        "stage": current.stage if params["stage"] is None else params["stage"],
        "split": "" if split is None else split.to_json(),
        "split_frames": frames_to_json(frames),
    }


def _part_placed(current: Job, params: dict[str, Any]) -> dict[str, Any]:
    split = _split_of(current)
    index = params["index"]
    part = _render_of(current, split, index)
    if part.state is PartState.DONE:
        raise TransitionRejected(current, f"{part.label} is done")
    if params["part_attempt"] < part.attempts:
        raise TransitionRejected(current, f"{part.label} is on attempt {part.attempts} already")
    placed = split.with_render(
        index,
        lambda part: replace(
            part,
            state=PartState.RENDERING,
            render_id=params["render_id"],
            instance_id=params["instance_id"],
            address=params["address"],
            attempts=params["part_attempt"],
            frames_done=0,
            note="",
            placed_at=datetime.now(UTC).timestamp(),
            waiting_for_slot=True,
        ),
    )
    frames = _frames_with(current, split, index, 0)
    stage = current.stage if params["stage"] is None else params["stage"]
    return {**params, "split": placed.to_json(), "split_frames": frames, "stage": stage}


def _current_render(current: Job, split: SplitRecord, params: Params) -> PartRecord:
    part = _render_of(current, split, params["index"])
    if part.render_id != params["render_id"] or part.state is PartState.DONE:
        raise TransitionRejected(
            current, f"{part.label} is rendered by {part.render_id or 'nothing'} now"
        )
    return part


def _part_started(current: Job, params: dict[str, Any]) -> dict[str, Any]:
    split = _split_of(current)
    part = _current_render(current, split, params)
    if not part.waiting_for_slot:
        raise TransitionRejected(current, f"{part.label}'s render has started already")
    started = split.with_render(part.index, lambda part: replace(part, waiting_for_slot=False))
    return {**params, "split": started.to_json()}


def _part_done(current: Job, params: dict[str, Any]) -> dict[str, Any]:
    split = _split_of(current)
    part = _current_render(current, split, params)
    done = split.with_render(
        part.index,
        lambda part: replace(
            part,
            state=PartState.DONE,
            frames_done=part.frame_count,
            output_path=params["output_path"],
            waiting_for_slot=False,
        ),
    )
    frames = _frames_with(current, split, part.index, part.frame_count)
    return {**params, "split": done.to_json(), "split_frames": frames}


def _part_retry(current: Job, params: dict[str, Any]) -> dict[str, Any]:
    split = _split_of(current)
    part = _current_render(current, split, params)
    retrying = split.with_render(
        part.index,
        lambda part: replace(
            part,
            state=PartState.RETRYING,
            frames_done=0,
            note=params["note"],
            waiting_for_slot=False,
        ),
    )
    frames = _frames_with(current, split, part.index, 0)
    return {**params, "split": retrying.to_json(), "split_frames": frames}


# A progress write with a stage of the render's own moves a QUEUED job to RUNNING.
_RENDERING = f":stage NOT IN {sql_list(STAGES_BEFORE_RUNNING)}"

# The table. Columns a transition does not name keep their values.

PROGRESS = Transition(
    "progress",
    start=ACTIVE,
    sets={
        "progress": "greatest(progress, :progress)",
        "attempt_progress": ":progress",
        "stage": ":stage",
        "eta_seconds": ":eta",
        "stage_progress": ":stage_progress",
        "last_render_seq": "greatest(last_render_seq, :seq)",
        # A split job's frames per part ride on its progress write ("": not a split job's).
        "split_frames": "CASE WHEN :split_frames = '' THEN split_frames ELSE :split_frames END",
        "status": f"CASE WHEN {_RENDERING} THEN 'RUNNING' ELSE status END",
        "started_at": (
            f"CASE WHEN {_RENDERING} THEN coalesce(started_at, now()) ELSE started_at END"
        ),
    },
    # The progress rule's one guarantee, with each database's own check beneath it (the jobs
    # table's CHECKs and its invariants trigger): a job's progress never decreases (greatest), an
    # attempt's is never lowered, and it stays below 100 until COMPLETED. Earlier refusals only
    # save work: render_service/events.py, export_service/tracking/attempt.py and
    # export_service/progress_writer.py.
    condition=f":progress >= 0 AND :progress <= {MAX_RUNNING_PROGRESS} "
    "AND attempt_progress <= :progress",
    refusal=_progress_refusal,
    lane=Lane.PROGRESS,
)
COMPLETE = Transition(
    "complete",
    start=ACTIVE,
    sets={
        "status": "'COMPLETED'",
        "progress": "100",
        "stage": sql_text(STAGE_COMPLETE),
        "output_path": ":output_path",
        "output_sha256": ":sha256",
        "output_size_bytes": ":size",
        "stage_progress": "0",
        "output_duration_seconds": ":duration",
        "eta_seconds": "0",
        "last_render_seq": "greatest(last_render_seq, :seq)",
        "started_at": "coalesce(started_at, now())",
        "finished_at": "now()",
    },
    condition=":output_path <> ''",
    refusal=lambda current, _: (
        "cannot complete a finished job" if current.terminal else "COMPLETED needs an output path"
    ),
    lane=Lane.TERMINAL,
)
FAIL = Transition(
    "fail",
    start=ACTIVE,
    sets={
        "status": "'FAILED'",
        "stage": sql_text(STAGE_FAILED),
        "error_code": ":code",
        "error_message": ":message",
        "error_field": ":field",
        "error_log_tail": ":log_tail",
        "eta_seconds": "0",
        "finished_at": "now()",
        "cancel_requested": ":release",
    },
    refusal="cannot fail a finished job",
    lane=Lane.TERMINAL,
)
CANCEL = Transition(
    "cancel",
    start=ACTIVE,
    sets={
        "status": "'CANCELLED'",
        "stage": sql_text(STAGE_CANCELLED),
        "cancel_requested": "true",
        "eta_seconds": "0",
        "finished_at": "now()",
    },
    refusal="only queued or running jobs can be cancelled",
    lane=Lane.TERMINAL,
)
BEGIN_ATTEMPT = Transition(
    "begin_attempt",
    start=ACTIVE,
    sets={"attempt": "attempt + 1", "last_render_seq": "0", "attempt_progress": "0"},
    condition="attempt = :expected",
    refusal="attempt {expected} is no longer current",
)
# Bookkeeping of the job's attempts: no new version, no history entry.
PLACE_ATTEMPT = Transition(
    "place_attempt",
    start=ACTIVE,
    sets={"render_attempts": ":attempts"},
    condition="attempt = :attempt",
    refusal="attempt {attempt} is not current",
    versioned=False,
    derive=_placed,
)
GIVE_UP_RELEASE = Transition(
    "release_given_up",
    start=ANY,
    sets={"render_attempts": ":attempts"},
    condition="attempt <> :attempt",
    refusal="attempt {attempt} is the current one",
    versioned=False,
    derive=_release_given_up,
)
RENDER_RELEASED = Transition(
    "render_released",
    start=ANY,
    sets={"cancel_requested": "false"},
    refusal="",  # never: any status, no condition
    versioned=False,
    fence=Fence.NONE,
)
# Fenced writes that change nothing: made just before a call only the owner may make.
CONFIRM_LEASE = Transition(
    "confirm_lease",
    start=ACTIVE,
    sets={},
    refusal="the job is finished",
    versioned=False,
    fence=Fence.REQUIRED,
    lane=Lane.CHECK,
)
CONFIRM_RELEASE = Transition(
    "confirm_release",
    start=(JobStatus.FAILED, JobStatus.CANCELLED),  # the only ones with cancel_requested
    sets={},
    condition="cancel_requested",
    refusal="the job's render is released already",
    versioned=False,
    fence=Fence.REQUIRED,
    lane=Lane.CHECK,
)
# A split job (store.split_record). Each part's (and the join's) render is recorded before it
# starts, fenced like every owner's write, and each of its changes is a version of its own (a
# history entry naming it: placed, started once its render service gives it a slot, done or
# retried); the frames the running parts report ride on PROGRESS instead.
PLAN_SPLIT = Transition(
    "split_planned",
    start=ACTIVE,
    sets={
        "split_parts": ":split",
        "split_frames": ":split_frames",
        "split_reason": ":split_reason",
        "stage": ":stage",
    },
    refusal="the job's parts are planned already",
    derive=_planned_split,
)
PLACE_PART = Transition(
    "part_placed",
    start=ACTIVE,
    sets={"split_parts": ":split", "split_frames": ":split_frames", "stage": ":stage"},
    refusal="the part's render is placed already",
    derive=_part_placed,
)
PART_STARTED = Transition(
    "part_started",
    start=ACTIVE,
    sets={"split_parts": ":split"},
    refusal="the part's render does not wait for a slot",
    derive=_part_started,
)
PART_DONE = Transition(
    "part_done",
    start=ACTIVE,
    sets={"split_parts": ":split", "split_frames": ":split_frames"},
    refusal="the part is not rendering",
    derive=_part_done,
)
PART_RETRY = Transition(
    "part_retry",
    start=ACTIVE,
    sets={"split_parts": ":split", "split_frames": ":split_frames", "stage": ":stage"},
    refusal="the part is not rendering",
    derive=_part_retry,
)
DELETE = Transition(
    "delete",
    start=TERMINAL,
    sets={},
    condition="NOT cancel_requested",
    refusal="only a finished job whose render clean-up is done can be deleted",
    versioned=False,
    fence=Fence.NONE,
    also=(_tombstone,),
    deletes=True,
)

TRANSITIONS = (
    PROGRESS,
    COMPLETE,
    FAIL,
    CANCEL,
    BEGIN_ATTEMPT,
    PLACE_ATTEMPT,
    GIVE_UP_RELEASE,
    RENDER_RELEASED,
    CONFIRM_LEASE,
    CONFIRM_RELEASE,
    PLAN_SPLIT,
    PLACE_PART,
    PART_STARTED,
    PART_DONE,
    PART_RETRY,
    DELETE,
)


def _lease_params(transition: Transition, lease: Lease | None) -> dict[str, Any]:
    if transition.fence is Fence.REQUIRED and lease is None:
        raise ValueError(f"{transition.name} names a lease")
    if transition.fence is Fence.NONE and lease is not None:
        raise ValueError(f"{transition.name} cannot be fenced")
    if lease is None:
        return {"lease_owner": None, "lease_epoch": None}
    return {"lease_owner": lease.owner, "lease_epoch": lease.epoch}


def apply(
    transition: Transition, job_id: str, args: Params, lease: Lease | None, writer: str
) -> Plan[Job]:
    """One conditional write of one job: the job as written; TransitionRejected (StaleLease
    when ``lease`` no longer holds it) with the job re-read, or JobNotFound."""
    params = {**args, **_lease_params(transition, lease)}
    if transition.derive is not None:
        current = yield from read_job(job_id, for_update=True)
        params = transition.derive(current, params)
    params.update(id=job_id, change=transition.name, writer=writer)
    with metrics.STORE_WRITE.labels(transition.name).time():
        rows = yield Statement(transition.sql, params)
    if rows:
        job = job_of(rows[0])
        for write in transition.also:
            yield write(job, params)
        if transition.versioned and outbox.owed(job):
            yield outbox.record_event(job)
        return job
    current = yield from read_job(job_id)
    raise transition.refused(current, params, lease)


BatchResult = Job | TransitionRejected | JobNotFound


def apply_batch(
    transition: Transition, items: Sequence[tuple[str, Params, Lease | None]], writer: str
) -> Plan[list[BatchResult]]:
    """``apply`` for each (job id, args, lease) in one statement per round (a job written twice
    is in two rounds, in order): each row its own conditional write, and each result in its
    item's place instead of raised. Rows are locked in one order (by job id) by every batch."""
    assert transition.derive is None and not transition.also and not transition.deletes
    columns = [(f"p_{name}", name) for name in transition.row_params]
    results: dict[int, BatchResult] = {}
    for positions in _rounds([job_id for job_id, _, _ in items]):
        params = {position: _row_params(transition, *items[position]) for position in positions}
        ordered = sorted(positions, key=lambda position: items[position][0])
        rows = [{key: params[at][name] for key, name in columns} for at in ordered]
        shared = {"rows": _json(rows), "change": transition.name, "writer": writer}
        with metrics.STORE_WRITE.labels(transition.name).time():
            returned = yield Statement(transition.batch_sql, shared)
        written = {job.id: job for job in map(job_of, returned)}
        if transition.versioned:
            for job in written.values():
                if outbox.owed(job):
                    yield outbox.record_event(job)
        for position in positions:
            job_id, _, lease = items[position]
            if job_id in written:
                results[position] = written[job_id]
                continue
            found = yield select_job(job_id)
            results[position] = (
                transition.refused(job_of(found[0]), params[position], lease)
                if found
                else JobNotFound(job_id)
            )
    return [results[position] for position in range(len(items))]


def _row_params(
    transition: Transition, job_id: str, args: Params, lease: Lease | None
) -> dict[str, Any]:
    return {**args, **_lease_params(transition, lease), "id": job_id}


def _rounds(job_ids: Sequence[str]) -> list[list[int]]:
    """The positions of ``job_ids`` in rounds that hold each job at most once, in order."""
    rounds: list[list[int]] = []
    seen: dict[str, int] = {}
    for position, job_id in enumerate(job_ids):
        index = seen.get(job_id, 0)
        seen[job_id] = index + 1
        if index == len(rounds):
            rounds.append([])
        rounds[index].append(position)
    return rounds


def _json(rows: list[dict[str, Any]]) -> str:
    """The rows as JSON, which has no NaN or infinity: such a number travels as null (and is
    refused as one)."""
    try:
        return json.dumps(rows, allow_nan=False)
    except ValueError:
        finite = [
            {
                key: None if isinstance(value, float) and not math.isfinite(value) else value
                for key, value in row.items()
            }
            for row in rows
        ]
        return json.dumps(finite)
