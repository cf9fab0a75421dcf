"""The store's part of ownership, on both backends (the contract suite's fixtures): fenced writes,
claims, heartbeats and hand-backs. What replicas do with them is tested with real processes in
test_ownership.py."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest

from export_service.store import JobStatus, JobStore, ProgressUpdate, TransitionRejected
from export_service.store.base import FORGET_REPLICA_SECONDS, Change, Lease, StaleLease
from export_service.store.postgres import PostgresJobStore
from tests.export import test_store as contract
from tests.export.test_store import OUTPUT, Backend
from tests.support.polling import wait_until

# The contract suite's fixtures: each test runs on SQLite and on PostgreSQL.
database_url = contract.database_url
backend = contract.backend
store = contract.store


async def owned_job(store: JobStore, job_id: str, owner: str) -> Lease:
    job, created = await store.create(
        job_id=job_id, request_id=f"req-{job_id}", spec=b"spec", owner=owner
    )
    assert created and (job.owner, job.lease_epoch) == (owner, 1)
    return Lease(owner, 1)


async def test_a_write_naming_a_stale_lease_is_refused(store: JobStore) -> None:
    lease_a = await owned_job(store, "j", "replica-a")
    await store.record_progress(
        "j", progress=5, stage="Rendering", eta_seconds=1, render_seq=1, lease=lease_a
    )
    # replica-a has no heartbeat (it died): another replica may take the job.
    await store.heartbeat("replica-b", ttl_seconds=60)
    (claimed,) = await store.claim_jobs("replica-b", limit=10)
    assert (claimed.id, claimed.owner, claimed.lease_epoch) == ("j", "replica-b", 2)
    before = await store.get("j")
    assert before.version == claimed.version  # a claim is not a change of the job

    stale_writes = [
        store.record_progress(
            "j", progress=9, stage="Rendering", eta_seconds=1, render_seq=2, lease=lease_a
        ),
        store.complete(
            "j", output_path=OUTPUT, size_bytes=5, duration_seconds=1, render_seq=3, lease=lease_a
        ),
        store.fail("j", code="X", message="stale", lease=lease_a),
        store.cancel("j", lease=lease_a),
        store.begin_attempt("j", expected_attempt=1, lease=lease_a),
        store.confirm_lease("j", lease=lease_a),
    ]
    for write in stale_writes:
        with pytest.raises(StaleLease) as refused:
            await write
        assert refused.value.current.owner == "replica-b"
    (batched,) = await store.record_progress_batch(
        [ProgressUpdate("j", 9, "Rendering", 1, 2, lease_a)]
    )
    assert isinstance(batched, StaleLease)
    assert await store.get("j") == before

    lease_b = Lease("replica-b", 2)
    assert (await store.confirm_lease("j", lease=lease_b)).version == before.version
    written = await store.record_progress(
        "j", progress=9, stage="Rendering", eta_seconds=1, render_seq=2, lease=lease_b
    )
    assert written.version == before.version + 1
    entries = await store.history("j")
    assert [(e.change, e.owner, e.lease_epoch) for e in entries] == [
        (Change.CREATE, "replica-a", 1),
        (Change.PROGRESS, "replica-a", 1),
        (Change.PROGRESS, "replica-b", 2),
    ]


async def test_a_lease_on_a_finished_job_is_refused_as_finished(store: JobStore) -> None:
    lease = await owned_job(store, "done", "replica-a")
    await store.cancel("done")  # a user's cancel: no lease needed, any replica may
    with pytest.raises(TransitionRejected) as refused:
        await store.confirm_lease("done", lease=lease)
    assert not isinstance(refused.value, StaleLease)
    assert refused.value.current.status is JobStatus.CANCELLED


async def test_only_the_owner_confirms_the_release_of_a_cancelled_jobs_render(
    store: JobStore,
) -> None:
    lease = await owned_job(store, "cancelled", "replica-a")
    await store.cancel("cancelled")  # through any replica: the owner releases the render
    before = await store.get("cancelled")
    with pytest.raises(StaleLease):
        await store.confirm_release("cancelled", lease=Lease("replica-b", lease.epoch))
    with pytest.raises(StaleLease):
        await store.confirm_release("cancelled", lease=Lease("replica-a", lease.epoch - 1))
    assert await store.confirm_release("cancelled", lease=lease) == before  # changes nothing
    await store.render_released("cancelled")
    with pytest.raises(TransitionRejected) as refused:
        await store.confirm_release("cancelled", lease=lease)
    assert not isinstance(refused.value, StaleLease)


async def test_a_heartbeat_forgets_replicas_gone_for_long(backend: Backend) -> None:
    """A crashed replica never deletes its own row: the next heartbeat of any replica deletes
    the rows expired more than FORGET_REPLICA_SECONDS ago, and keeps the others."""
    store = await backend.open()
    await store.heartbeat("gone", ttl_seconds=-(FORGET_REPLICA_SECONDS + 60))
    await store.heartbeat("late", ttl_seconds=-60)  # expired, not for long
    await store.heartbeat("live", ttl_seconds=60)
    ids = await backend.column("SELECT id FROM export_replicas ORDER BY id")
    assert ids == ["late", "live"]
    # The one gone comes back: it registers again.
    await store.heartbeat("gone", ttl_seconds=60)
    assert await backend.column("SELECT id FROM export_replicas ORDER BY id") == [
        "gone",
        "late",
        "live",
    ]


async def test_a_heartbeat_brings_back_the_other_replicas_rows(store: JobStore) -> None:
    """In the same round trip as the renewal: every other replica's row as the database sees
    it (seconds since its renewal, until its expiry, negative once expired), not its own."""
    assert await store.heartbeat("a", ttl_seconds=60) == []
    await store.heartbeat("late", ttl_seconds=-5)
    (late,) = await store.heartbeat("a", ttl_seconds=60)
    assert late.replica_id == "late" and -6 < late.expires_in < -4.9
    assert 0 <= late.renewed_ago < 1, late
    beats = {beat.replica_id: beat for beat in await store.heartbeat("late", ttl_seconds=30)}
    assert set(beats) == {"a"}
    assert 59 < beats["a"].expires_in <= 60 and 0 <= beats["a"].renewed_ago < 1, beats


async def test_claims_skip_live_owners_and_raise_the_epoch_by_one(store: JobStore) -> None:
    await store.heartbeat("a", ttl_seconds=60)
    await store.heartbeat("b", ttl_seconds=60)
    await owned_job(store, "live", "a")
    assert await store.claim_jobs("b", limit=10) == []  # a is alive
    assert await store.claim_jobs("a", limit=10) == []  # its own jobs are not claimed again

    await store.heartbeat("a", ttl_seconds=0.2)  # a stops renewing: it expires soon

    async def taken_by_b() -> bool:
        return [job.id for job in await store.claim_jobs("b", limit=10)] == ["live"]

    await wait_until(taken_by_b, "b to claim the job of the expired replica")
    assert ((job := await store.get("live")).owner, job.lease_epoch) == ("b", 2)
    assert await store.release_replica("b") == 1
    assert ((job := await store.get("live")).owner, job.lease_epoch) == (None, 2)
    (again,) = await store.claim_jobs("a", limit=10)
    assert (again.owner, again.lease_epoch) == ("a", 3)


async def test_claims_take_oldest_first_up_to_the_limit_and_skip_finished_jobs(
    store: JobStore,
) -> None:
    for name in ("one", "two", "three"):
        await owned_job(store, name, "gone")
    await owned_job(store, "done", "gone")
    await store.complete(
        "done",
        output_path=OUTPUT,
        size_bytes=5,
        duration_seconds=1,
        render_seq=1,
        lease=Lease("gone", 1),
    )
    await owned_job(store, "cancelled", "gone")
    await store.cancel("cancelled")  # its render is still to be released: claimed too
    first = await store.claim_jobs("me", limit=2)
    assert [job.id for job in first] == ["one", "two"]
    rest = await store.claim_jobs("me", limit=10)
    assert [job.id for job in rest] == ["three", "cancelled"]
    await store.render_released("cancelled")
    assert await store.active_among(["one", "done", "cancelled", "unknown"]) == {"one"}


async def test_take_over_claims_jobs_of_live_owners(store: JobStore) -> None:
    await store.heartbeat("a", ttl_seconds=60)
    await owned_job(store, "x", "a")
    assert await store.claim_jobs("b", limit=10) == []
    (taken,) = await store.claim_jobs("b", limit=10, take_over=True)
    assert (taken.owner, taken.lease_epoch) == ("b", 2)


async def test_create_is_idempotent_across_replicas(backend: Backend) -> None:
    first, second = await backend.open("replica-1"), await backend.open("replica-2")
    results = await asyncio.gather(
        first.create(job_id="from-1", request_id="same", spec=b"s", owner="replica-1"),
        second.create(job_id="from-2", request_id="same", spec=b"s", owner="replica-2"),
    )
    assert sorted(created for _, created in results) == [False, True]
    (job_a, _), (job_b, _) = results
    assert job_a == job_b and job_a.lease_epoch == 1
    winner = "replica-1" if job_a.id == "from-1" else "replica-2"
    assert job_a.owner == winner


@pytest.mark.postgresql
async def test_claims_skip_rows_another_transaction_holds(backend: Backend) -> None:
    if backend.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: there are no row locks to skip")
    opened = await backend.open()
    await owned_job(opened, "held", "dead")
    await owned_job(opened, "free", "dead")
    conn = await asyncpg.connect(backend.url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM jobs WHERE id = 'held' FOR UPDATE")
            claimed = await asyncio.wait_for(opened.claim_jobs("me", limit=10), 10)
            assert [job.id for job in claimed] == ["free"]
        (later,) = await opened.claim_jobs("me", limit=10)
        assert (later.id, later.lease_epoch) == ("held", 2)
    finally:
        await conn.close()


@pytest.mark.postgresql
async def test_a_replica_paused_inside_a_transaction_holds_its_rows_no_longer_than_the_limit(
    backend: Backend,
) -> None:
    """A replica paused (SIGSTOP, a long GC, a partition) between a transaction's statements:
    the server ends its session once it has sat in the transaction past the limit, its row
    locks go with it, and another replica's claim takes the job instead of skipping it for as
    long as the pause lasts."""
    if backend.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: there are no row locks to skip")
    opened = await backend.open()
    await owned_job(opened, "held", "paused")
    paused = await PostgresJobStore.open(backend.url, "paused", idle_in_transaction_seconds=0.5)
    # The connection the paused replica's store was writing on, stopped after its lock.
    conn = await paused._pool.acquire()
    try:
        await conn.execute("BEGIN")
        await conn.execute("SELECT 1 FROM jobs WHERE id = 'held' FOR UPDATE")

        async def claimed() -> bool:
            taken = await opened.claim_jobs("other", limit=10, take_over=True)
            return [job.id for job in taken] == ["held"]

        await wait_until(claimed, "another replica to claim the held job", within=30)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await conn.execute("COMMIT")
    finally:
        with contextlib.suppress(asyncpg.InterfaceError):  # released with its session's end
            await paused._pool.release(conn)
        await paused.close()
