# ruff: noqa: F811 (the contract fixtures of test_store are used by name)
"""The webhook outbox on both backends (the contract fixtures of test_store): each event owed is
written in the transaction of the change it tells of, once per endpoint that wants it, never
for a change that did not commit nor for a status the job did not enter; claims skip what
another deliverer holds; a job's deliveries go with it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from export_service.store import (
    JobNotFound,
    JobStatus,
    JobStore,
    ProgressUpdate,
    TransitionRejected,
)
from export_service.store.outbox import (
    AttemptRecord,
    DeliveryState,
    NotifyEvents,
    WebhookTarget,
    origin_of,
)
from tests.export.test_store import (  # noqa: F401 (fixtures)
    OUTPUT,
    Backend,
    backend,
    complete,
    database_url,
    store,
)
from videojob.render.v1 import spec_pb2

SPEC = spec_pb2.RenderSpec(output=spec_pb2.OutputSpec(container="mp4")).SerializeToString()
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CALLER = WebhookTarget("https://hooks.example/one", NotifyEvents.TERMINAL, SECRET)
EVERY_CHANGE = WebhookTarget("https://hooks.example/all", NotifyEvents.ALL, SECRET)
OPERATOR = WebhookTarget("https://ops.example/hook", NotifyEvents.TERMINAL)


async def running(store: JobStore, job_id: str, progress: float = 10) -> None:
    await store.record_progress(
        job_id, progress=progress, stage="Rendering", eta_seconds=1, render_seq=int(progress)
    )


async def test_a_terminal_change_owes_each_endpoint_one_delivery(store: JobStore) -> None:
    job, _ = await store.create(
        job_id="j1", request_id="r1", spec=SPEC, webhooks=(CALLER, OPERATOR)
    )
    assert job.notify == "terminal"
    await running(store, "j1")
    assert await store.list_deliveries("j1") == []  # terminal only
    done = await complete(store, "j1")
    deliveries = await store.list_deliveries("j1")
    assert [(d.id, d.url, d.type) for d in deliveries] == [
        ("msg_j1_completed_0", CALLER.url, "dev.videojob.export.completed"),
        ("msg_j1_completed_1", OPERATOR.url, "dev.videojob.export.completed"),
    ]
    for delivery in deliveries:
        assert (delivery.state, delivery.attempts, delivery.job_version) == (
            DeliveryState.PENDING,
            0,
            done.version,
        )
        event = json.loads(delivery.payload)
        assert (event["specversion"], event["id"], event["subject"]) == (
            "1.0",
            "j1.completed",
            "j1",
        )
        assert event["data"]["status"] == "completed" and event["data"]["outputPath"] == OUTPUT
        assert event["data"]["version"] == done.version
        assert SECRET not in delivery.payload
        assert delivery.secret == ""  # only a claim reads it


async def test_every_status_change_is_owed_once_when_asked(store: JobStore) -> None:
    await store.create(job_id="j1", request_id="r1", spec=SPEC, webhooks=(EVERY_CHANGE,))
    await store.record_progress("j1", progress=0, stage="Queued", eta_seconds=0, render_seq=1)
    await running(store, "j1", 10)
    await running(store, "j1", 20)
    await store.record_progress_batch(
        [ProgressUpdate("j1", 30, "Rendering", 1, 30), ProgressUpdate("j1", 40, "Rendering", 1, 40)]
    )
    await store.begin_attempt("j1", expected_attempt=1)
    await running(store, "j1", 5)
    await store.fail("j1", code="X", message="broke")
    deliveries = await store.list_deliveries("j1")
    statuses = [json.loads(d.payload)["data"]["status"] for d in deliveries]
    assert statuses == ["queued", "running", "failed"]
    assert [d.type for d in deliveries] == [
        "dev.videojob.export.queued",
        "dev.videojob.export.running",
        "dev.videojob.export.failed",
    ]
    running_event = json.loads(deliveries[1].payload)["data"]
    assert running_event["progress"] == 10  # the job as the change that started it left it


async def test_no_delivery_for_a_refused_change_or_a_job_without_endpoints(
    store: JobStore, backend: Backend
) -> None:
    await store.create(job_id="j1", request_id="r1", spec=SPEC, webhooks=(CALLER,))
    await store.cancel("j1")
    with pytest.raises(TransitionRejected):
        await complete(store, "j1")
    with pytest.raises(TransitionRejected):
        await store.fail("j1", code="X", message="late")
    assert [d.type for d in await store.list_deliveries("j1")] == ["dev.videojob.export.cancelled"]
    plain, _ = await store.create(job_id="j2", request_id="r2", spec=SPEC)
    assert plain.notify == ""
    await complete(store, "j2")
    assert await store.list_deliveries("j2") == []
    assert await backend.column("SELECT count(*) FROM webhook_deliveries") == [1]
    with pytest.raises(JobNotFound):
        await store.list_deliveries("nope")


async def test_a_replayed_create_writes_no_endpoint(store: JobStore, backend: Backend) -> None:
    await store.create(job_id="j1", request_id="r1", spec=SPEC, webhooks=(CALLER,))
    _, created = await store.create(
        job_id="j2", request_id="r1", spec=SPEC, webhooks=(EVERY_CHANGE,)
    )
    assert not created
    assert await backend.column("SELECT url FROM job_webhooks") == [CALLER.url]


async def test_claims_hold_deliveries_and_attempts_are_fenced(store: JobStore) -> None:
    await store.create(job_id="j1", request_id="r1", spec=SPEC, webhooks=(CALLER, OPERATOR))
    await complete(store, "j1")
    now = datetime.now(UTC)
    hold = now + timedelta(seconds=30)
    first = await store.claim_deliveries("a", at=now, until=hold, limit=1)
    second = await store.claim_deliveries("b", at=now, until=hold, limit=5)
    assert [d.id for d in first] == ["msg_j1_completed_0"]
    assert [d.id for d in second] == ["msg_j1_completed_1"]
    assert (first[0].secret, second[0].secret) == (SECRET, "")
    assert await store.claim_deliveries("c", at=now, until=hold, limit=5) == []
    retry_at = now + timedelta(seconds=5)
    failed = AttemptRecord(DeliveryState.PENDING, 500, "", "oops", now, retry_at)
    assert not await store.record_delivery_attempt(first[0].id, owner="b", outcome=failed)
    assert await store.record_delivery_attempt(first[0].id, owner="a", outcome=failed)
    # Not due before its next try; due (and unheld) after it.
    assert await store.claim_deliveries("c", at=now, until=hold, limit=5) == []
    later = retry_at + timedelta(seconds=1)
    again = await store.claim_deliveries(
        "c", at=later, until=later + timedelta(seconds=30), limit=5
    )
    assert [d.id for d in again] == [first[0].id]
    # b's hold lapsed: another deliverer takes it over, and b's late answer is refused.
    lapsed = hold + timedelta(seconds=1)
    taken = await store.claim_deliveries("d", at=lapsed, until=lapsed, limit=5)
    assert [d.id for d in taken] == [second[0].id]
    delivered = AttemptRecord(DeliveryState.DELIVERED, 204, "", "", lapsed, None)
    assert not await store.record_delivery_attempt(second[0].id, owner="b", outcome=delivered)
    assert await store.record_delivery_attempt(second[0].id, owner="d", outcome=delivered)
    shown = {d.id: d for d in await store.list_deliveries("j1")}
    assert (shown[first[0].id].attempts, shown[first[0].id].last_status) == (1, 500)
    assert shown[first[0].id].last_response == "oops"
    assert shown[first[0].id].next_attempt_at == retry_at
    assert shown[second[0].id].state is DeliveryState.DELIVERED
    assert shown[second[0].id].finished_at == lapsed


async def test_a_deleted_job_takes_its_endpoints_and_deliveries(
    store: JobStore, backend: Backend
) -> None:
    await store.create(job_id="j1", request_id="r1", spec=SPEC, webhooks=(CALLER,))
    await complete(store, "j1")
    await store.delete("j1")
    assert await backend.column("SELECT count(*) FROM webhook_deliveries") == [0]
    assert await backend.column("SELECT count(*) FROM job_webhooks") == [0]


async def test_deliverers_claiming_at_once_never_share_a_delivery(
    store: JobStore, backend: Backend
) -> None:
    for number in range(12):
        await store.create(
            job_id=f"j{number}", request_id=f"r{number}", spec=SPEC, webhooks=(CALLER, OPERATOR)
        )
        await complete(store, f"j{number}")
    others = [await backend.open(f"deliverer-{n}") for n in range(3)]
    now = datetime.now(UTC)
    hold = now + timedelta(seconds=30)
    claims = await asyncio.gather(
        *(
            other.claim_deliveries(f"deliverer-{n}", at=now, until=hold, limit=10)
            for n, other in enumerate(others)
        )
    )
    claimed = [delivery.id for claim in claims for delivery in claim]
    assert len(claimed) == len(set(claimed))
    rest = await store.claim_deliveries("last", at=now, until=hold, limit=30)
    assert not {delivery.id for delivery in rest} & set(claimed)
    assert len(claimed) + len(rest) == 24


async def test_a_change_whose_delivery_cannot_be_written_does_not_commit(
    store: JobStore, backend: Backend
) -> None:
    """The outbox row and the transition share one transaction: when the database refuses the
    row, the job is not completed either."""
    await store.create(job_id="j1", request_id="r1", spec=SPEC, webhooks=(CALLER,))
    await running(store, "j1")
    if backend.name == "sqlite":
        await backend.raw(
            "CREATE TRIGGER refuse_deliveries BEFORE INSERT ON webhook_deliveries "
            "BEGIN SELECT RAISE(ABORT, 'deliveries refused'); END"
        )
    else:
        await backend.raw(
            "CREATE FUNCTION refuse_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'deliveries refused'; END $$; "
            "CREATE TRIGGER refuse_deliveries BEFORE INSERT ON webhook_deliveries "
            "FOR EACH ROW EXECUTE FUNCTION refuse_deliveries()"
        )
    with pytest.raises((sqlite3.DatabaseError, asyncpg.PostgresError), match="deliveries refused"):
        await complete(store, "j1")
    job = await store.get("j1")
    assert job.status is JobStatus.RUNNING and job.output_path == ""
    assert await store.list_deliveries("j1") == []


async def owe(store: JobStore, count: int, target: WebhookTarget, prefix: str) -> None:
    for number in range(count):
        job_id = f"{prefix}{number}"
        await store.create(job_id=job_id, request_id=job_id, spec=SPEC, webhooks=(target,))
        await complete(store, job_id)


async def test_a_claim_holds_at_most_per_endpoint_of_one_endpoint(store: JobStore) -> None:
    """One endpoint (scheme, host and port, however its URLs spell them) owed many events gets
    ``per_endpoint`` attempts at once; the rest of the claim goes to the others, oldest first."""
    await owe(store, 4, CALLER, "a")
    same_endpoint = WebhookTarget("HTTPS://Hooks.Example:443/two", NotifyEvents.TERMINAL, SECRET)
    await owe(store, 2, same_endpoint, "b")
    await owe(store, 2, OPERATOR, "o")
    now = datetime.now(UTC)
    hold = now + timedelta(seconds=30)
    first = await store.claim_deliveries("a", at=now, until=hold, limit=10, per_endpoint=2)
    assert [d.job_id for d in first] == ["a0", "a1", "o0", "o1"]
    # Held by anyone counts: another deliverer gets none of a full endpoint's.
    assert await store.claim_deliveries("b", at=now, until=hold, limit=10, per_endpoint=2) == []
    done = AttemptRecord(DeliveryState.DELIVERED, 204, "", "", now, None)
    assert await store.record_delivery_attempt(first[0].id, owner="a", outcome=done)
    freed = await store.claim_deliveries("b", at=now, until=hold, limit=10, per_endpoint=2)
    assert [d.job_id for d in freed] == ["a2"]
    # Lapsed holds no longer count (their deliveries are due again, and taken again).
    lapsed = hold + timedelta(seconds=1)
    later = await store.claim_deliveries(
        "c", at=lapsed, until=lapsed + timedelta(seconds=30), limit=10, per_endpoint=2
    )
    assert [d.job_id for d in later] == ["a1", "a2", "o0", "o1"]


async def test_deliverers_claiming_at_once_keep_the_cap(store: JobStore, backend: Backend) -> None:
    await owe(store, 10, CALLER, "a")
    await owe(store, 3, OPERATOR, "o")
    others = [await backend.open(f"deliverer-{n}") for n in range(4)]
    now = datetime.now(UTC)
    hold = now + timedelta(seconds=30)
    claims = await asyncio.gather(
        *(
            other.claim_deliveries(f"deliverer-{n}", at=now, until=hold, limit=10, per_endpoint=2)
            for n, other in enumerate(others)
        )
    )
    claimed = [delivery for claim in claims for delivery in claim]
    assert len({delivery.id for delivery in claimed}) == len(claimed)
    assert sorted(delivery.job_id for delivery in claimed) == ["a0", "a1", "o0", "o1"]


async def test_each_delivery_keeps_its_endpoints_origin(store: JobStore, backend: Backend) -> None:
    ipv6 = WebhookTarget("http://[::1]:8080/hook?x=1", NotifyEvents.TERMINAL, SECRET)
    await store.create(job_id="j1", request_id="r1", spec=SPEC, webhooks=(CALLER, ipv6))
    await complete(store, "j1")
    origins = await backend.column("SELECT origin FROM webhook_deliveries ORDER BY position")
    assert origins == ["https://hooks.example:443", "http://[::1]:8080"]


ORIGINS = {
    "https://hooks.example/one": "https://hooks.example:443",
    "HTTPS://Hooks.EXAMPLE:443/two?x=1": "https://hooks.example:443",
    "http://hooks.example:8080": "http://hooks.example:8080",
    "http://[::1]/hook": "http://[::1]:80",
    "http://[::1]:8443/hook": "http://[::1]:8443",
}


async def test_the_origins_of_rows_owed_before_the_upgrade_are_filled_in(
    store: JobStore, backend: Backend
) -> None:
    """Migration 70 on a database whose rows had no origin: each gets the one origin_of gives."""
    assert {url: origin_of(url) for url in ORIGINS} == ORIGINS
    targets = tuple(WebhookTarget(url, NotifyEvents.TERMINAL, SECRET) for url in ORIGINS)
    await store.create(job_id="j1", request_id="r1", spec=SPEC, webhooks=targets)
    await complete(store, "j1")
    for statement in (
        "DROP INDEX webhook_deliveries_held",
        "ALTER TABLE job_webhooks DROP COLUMN origin",
        "ALTER TABLE webhook_deliveries DROP COLUMN origin",
        "DELETE FROM schema_migrations WHERE version = 70",
    ):
        await backend.raw(statement)
    await backend.open("after-upgrade")
    expected = list(ORIGINS.values())
    for table in ("job_webhooks", "webhook_deliveries"):
        origins = await backend.column(f"SELECT origin FROM {table} ORDER BY position")
        assert origins == expected, table
