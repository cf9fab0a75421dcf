"""The webhook outbox: the endpoints each job tells of its changes, and the deliveries it owes.

A job's endpoints (``job_webhooks``) are written by its create, in the same transaction. Every
versioned transition that leaves the job in a status it has just entered (``entered_status``:
QUEUED at the create, RUNNING at the progress write that started it, a terminal status) writes
one ``webhook_deliveries`` row per endpoint that wants that event, in the transition's own
transaction (store.transitions.apply): a committed change never lacks its owed deliveries, and
a change that did not commit owes none. The row keeps the event's body as the change left the
job (a CloudEvent whose data is the job as the HTTP API shows it), so a delivery never tells of
a state the job did not have, however late it is sent. Each row's id, the ``webhook-id`` of
every attempt, is made of the job, the event and the endpoint: the same event is never owed
twice (``ON CONFLICT DO NOTHING``), whichever replica writes it.

Deliverers on any replica claim due rows for a while (``claim``) and record each attempt
(``record_attempt``, fenced by the claim). A claim takes the oldest due rows, but never more
than ``per_endpoint`` held at once for one endpoint (its ``origin``: scheme, host and port),
counting every deliverer's holds: a receiver that hangs holds that many attempts, and the
others' deliveries take the rest. Claims are made one at a time (the file's write lock on
SQLite, a transaction-level advisory lock on PostgreSQL), so each sees every earlier claim and
the cap is exact across replicas; rows another transaction is writing are skipped (FOR UPDATE
SKIP LOCKED), never waited for. A job's rows are deleted with it.
"""

from __future__ import annotations

import enum
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from export_service.store.records import (
    TERMINAL_STATUSES,
    Job,
    JobNotFound,
    JobStatus,
    datetime_of,
)
from export_service.store.sql import POSTGRESQL, SQLITE, Plan, Row, Statement

# PostgreSQL's advisory lock key of claiming deliveries (claims wait for each other, briefly).
CLAIMS_LOCK = zlib.crc32(b"videojob.webhook_claims")
# A claim's ``per_endpoint`` when there is no cap.
NO_CAP = 2**31 - 1

EVENT_TYPE_PREFIX = "dev.videojob.export."
# The CloudEvents ``source`` of every event: the export service's jobs.
EVENT_SOURCE = "/videojob/export/jobs"
# The operator's endpoints sign with the secret given by flag, never stored: their rows keep "".
OPERATOR_SECRET = ""


class NotifyEvents(enum.StrEnum):
    """Which changes an endpoint is told of; a job's ``notify`` is the widest of its
    endpoints' ("" when it has none)."""

    NONE = ""
    TERMINAL = "terminal"
    ALL = "all"


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    GAVE_UP = "gave_up"


@dataclass(frozen=True)
class WebhookTarget:
    """One endpoint of a job: where, which events, and the secret that signs its deliveries
    (OPERATOR_SECRET: the operator's, given by flag)."""

    url: str
    events: NotifyEvents
    secret: str = OPERATOR_SECRET

    @property
    def origin(self) -> str:
        return origin_of(self.url)


def origin_of(url: str) -> str:
    """The endpoint ``url`` names, as the per-endpoint cap counts it: ``scheme://host:port``
    (the host in lower case, the scheme's port when the URL names none); the URL itself when
    it is not one (such a destination is refused at every attempt anyway)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


@dataclass(frozen=True)
class Delivery:
    id: str  # the webhook-id
    job_id: str
    position: int  # the endpoint's place among the job's
    type: str
    url: str
    state: DeliveryState
    attempts: int
    payload: str  # the CloudEvent, as sent
    job_version: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    finished_at: datetime | None
    last_status: int
    last_error: str
    last_response: str
    # Only on a claimed delivery: the endpoint's secret (OPERATOR_SECRET: the operator's).
    secret: str = ""


@dataclass(frozen=True)
class AttemptRecord:
    """What one attempt ended with, and what comes next."""

    state: DeliveryState
    status: int
    error: str
    response: str
    at: datetime
    next_attempt_at: datetime | None


def widest(targets: Sequence[WebhookTarget]) -> NotifyEvents:
    events = {target.events for target in targets}
    if NotifyEvents.ALL in events:
        return NotifyEvents.ALL
    return NotifyEvents.TERMINAL if events else NotifyEvents.NONE


def event_type(status: JobStatus) -> str:
    return EVENT_TYPE_PREFIX + status.value.lower()


def entered_status(job: Job) -> bool:
    """Whether the write that returned ``job`` moved it into its status: the create (version 1),
    the progress write that started it (started_at and updated_at are that statement's one
    ``now()``), any terminal write (a terminal status is final)."""
    if job.status in TERMINAL_STATUSES:
        return True
    if job.status is JobStatus.RUNNING:
        return job.started_at is not None and job.started_at == job.updated_at
    return job.version == 1


def owed(job: Job) -> bool:
    """Whether the write that returned ``job`` owes its endpoints an event."""
    if job.notify == NotifyEvents.NONE or not entered_status(job):
        return False
    return job.notify == NotifyEvents.ALL or job.status in TERMINAL_STATUSES


def event_body(job: Job) -> str:
    """The CloudEvent (structured JSON) telling of the job as ``job`` is."""
    # Imported here: the API's view of a job is built on the protos, which the store's
    # records do not need.
    from export_service.job_proto import job_to_api_json

    event = {
        "specversion": "1.0",
        "id": f"{job.id}.{job.status.value.lower()}",
        "source": EVENT_SOURCE,
        "type": event_type(job.status),
        "subject": job.id,
        "time": job.updated_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": job_to_api_json(job),
    }
    return json.dumps(event, separators=(",", ":"), allow_nan=False)


def record_event(job: Job) -> Statement:
    """The deliveries ``job``'s write owes (see ``owed``), one per endpoint that wants it."""
    terminal = job.status in TERMINAL_STATUSES
    return Statement(
        "INSERT INTO webhook_deliveries (id, job_id, position, type, job_version, payload, url, "
        "origin, state, attempts, created_at, next_attempt_at) "
        "SELECT 'msg_' || w.job_id || '_' || :event || '_' || CAST(w.position AS TEXT), "
        "w.job_id, w.position, :type, :version, :payload, w.url, w.origin, 'pending', 0, now(), "
        "now() "
        "FROM job_webhooks w WHERE w.job_id = :job_id AND (w.events = 'all' OR :terminal) "
        "ON CONFLICT (id) DO NOTHING",
        {
            "event": job.status.value.lower(),
            "type": event_type(job.status),
            "version": job.version,
            "payload": event_body(job),
            "job_id": job.id,
            "terminal": terminal,
        },
    )


def record_target(job_id: str, position: int, target: WebhookTarget) -> Statement:
    return Statement(
        "INSERT INTO job_webhooks (job_id, position, url, origin, events, secret) "
        "VALUES (:job_id, :position, :url, :origin, :events, :secret)",
        {
            "job_id": job_id,
            "position": position,
            "url": target.url,
            "origin": target.origin,
            "events": target.events.value,
            "secret": target.secret,
        },
    )


DELIVERY_COLUMNS = (
    "id, job_id, position, type, url, state, attempts, payload, job_version, created_at, "
    "next_attempt_at, last_attempt_at, finished_at, last_status, last_error, last_response"
)


def _time(value: datetime | int | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime_of(value)


def delivery_of(row: Row, secret: str = "") -> Delivery:
    created = _time(row["created_at"])
    assert created is not None
    return Delivery(
        id=row["id"],
        job_id=row["job_id"],
        position=row["position"],
        type=row["type"],
        url=row["url"],
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        payload=row["payload"],
        job_version=row["job_version"],
        created_at=created,
        next_attempt_at=_time(row["next_attempt_at"]),
        last_attempt_at=_time(row["last_attempt_at"]),
        finished_at=_time(row["finished_at"]),
        last_status=row["last_status"],
        last_error=row["last_error"],
        last_response=row["last_response"],
        secret=secret,
    )


def list_deliveries(job_id: str) -> Plan[list[Delivery]]:
    """The job's deliveries, oldest first; JobNotFound for an unknown job (one snapshot)."""
    columns = ", ".join(f"d.{column.strip()}" for column in DELIVERY_COLUMNS.split(","))
    rows = yield Statement(
        f"SELECT j.id AS known, {columns} FROM jobs j LEFT JOIN webhook_deliveries d "
        "ON d.job_id = j.id WHERE j.id = :id ORDER BY d.created_at, d.id",
        {"id": job_id},
    )
    if not rows:
        raise JobNotFound(job_id)
    return [delivery_of(row) for row in rows if row["id"] is not None]


# The due deliveries nobody holds that a claim may take, oldest first: of each endpoint, only
# as many as it has attempts left under the cap (``per_endpoint`` less those held, by anyone).
# An endpoint at its cap is left out before the ranking: a large backlog owed to a receiver that
# hangs is read, not sorted, by every claim.
_CLAIMABLE = (
    "WITH held AS ("
    "SELECT origin, count(*) AS sending FROM webhook_deliveries "
    "WHERE state = 'pending' AND claimed_until >= :at GROUP BY origin"
    "), due AS ("
    "SELECT id, origin, next_attempt_at, row_number() OVER "
    "(PARTITION BY origin ORDER BY next_attempt_at, id) AS place "
    "FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= :at "
    "AND (claimed_until IS NULL OR claimed_until < :at) "
    "AND origin NOT IN (SELECT origin FROM held WHERE sending >= :per_endpoint)"
    ") SELECT due.id FROM due LEFT JOIN held ON held.origin = due.origin "
    "WHERE due.place + coalesce(held.sending, 0) <= :per_endpoint "
    "ORDER BY due.next_attempt_at, due.id LIMIT :limit"
)


def any_due(at: datetime, per_endpoint: int = NO_CAP) -> Plan[bool]:
    """Whether a claim at ``at`` would take a delivery (a read: no lock is taken)."""
    rows = yield Statement(_CLAIMABLE, {"at": at, "per_endpoint": per_endpoint, "limit": 1})
    return bool(rows)


def claim(
    owner: str, at: datetime, until: datetime, limit: int, per_endpoint: int = NO_CAP
) -> Plan[list[Delivery]]:
    """At most ``limit`` due deliveries nobody holds, oldest first but at most ``per_endpoint``
    held at once for one endpoint, held by ``owner`` until ``until``, each with its endpoint's
    secret; rows another transaction is writing are skipped, never waited for."""
    params: dict[str, Any] = {
        "owner": owner,
        "at": at,
        "until": until,
        "limit": limit,
        "per_endpoint": per_endpoint,
        "lock": CLAIMS_LOCK,
    }
    yield Statement("SELECT pg_advisory_xact_lock(:lock)", params, only=POSTGRESQL)
    # The row lock's own conditions are checked again on a row that changed since the
    # statement's snapshot (PostgreSQL), so a row just recorded is not claimed again.
    claim_sql = (
        "UPDATE webhook_deliveries SET claimed_by = :owner, claimed_until = :until "
        "WHERE id IN (SELECT id FROM webhook_deliveries WHERE id IN "
        f"({_CLAIMABLE}) AND state = 'pending' AND next_attempt_at <= :at "
        "AND (claimed_until IS NULL OR claimed_until < :at){lock})"
    )
    yield Statement(claim_sql.format(lock=" FOR UPDATE SKIP LOCKED"), params, only=POSTGRESQL)
    yield Statement(claim_sql.format(lock=""), params, only=SQLITE)
    columns = ", ".join(f"d.{column.strip()}" for column in DELIVERY_COLUMNS.split(","))
    rows = yield Statement(
        f"SELECT {columns}, w.secret FROM webhook_deliveries d JOIN job_webhooks w "
        "ON w.job_id = d.job_id AND w.position = d.position "
        "WHERE d.claimed_by = :owner AND d.claimed_until = :until AND d.state = 'pending' "
        "ORDER BY d.next_attempt_at, d.id",
        params,
    )
    return [delivery_of(row, row["secret"]) for row in rows]


def record_attempt(delivery_id: str, owner: str, outcome: AttemptRecord) -> Plan[bool]:
    """One attempt's outcome, written while ``owner`` still holds the delivery (the hold is
    released); False when it no longer does (its claim lapsed and another took it)."""
    finished = outcome.at if outcome.state is not DeliveryState.PENDING else None
    rows = yield Statement(
        "UPDATE webhook_deliveries SET state = :state, attempts = attempts + 1, "
        "last_status = :status_code, last_error = :error, last_response = :response, "
        "last_attempt_at = :at, next_attempt_at = :next, finished_at = :finished, "
        "claimed_by = NULL, claimed_until = NULL "
        "WHERE id = :id AND claimed_by = :owner AND state = 'pending' RETURNING id",
        {
            "id": delivery_id,
            "owner": owner,
            "state": outcome.state.value,
            "status_code": outcome.status,
            "error": outcome.error,
            "response": outcome.response,
            "at": outcome.at,
            "next": outcome.next_attempt_at,
            "finished": finished,
        },
    )
    return bool(rows)
