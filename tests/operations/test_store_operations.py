"""What the job store keeps for operating the service, on both backends (the contract suite's
fixtures): the trace context written with the job's insert, and the lease takeovers a replica
counts by reason when it claims jobs."""

from __future__ import annotations

from export_service.ownership import Ownership
from export_service.store import JobStore
from tests.export import test_store as contract
from videojob import metrics

# The contract suite's fixtures: each test runs on SQLite and on PostgreSQL.
database_url = contract.database_url
backend = contract.backend
store = contract.store

TRACE_CONTEXT = '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'


def takeovers(reason: str) -> float:
    value = metrics.EXPORT.get_sample_value("videojob_lease_takeovers_total", {"reason": reason})
    assert value is not None, "every reason is exposed from the start"
    return value


async def test_a_job_is_created_with_its_trace_context(store: JobStore) -> None:
    job, created = await store.create(
        job_id="traced", request_id="req-traced", spec=b"spec", trace_context=TRACE_CONTEXT
    )
    assert created
    assert await store.trace_context(job.id) == TRACE_CONTEXT
    # A replayed create keeps the first request's trace.
    again, created = await store.create(
        job_id="other", request_id="req-traced", spec=b"spec", trace_context='{"x": "y"}'
    )
    assert (again.id, created) == ("traced", False)
    assert await store.trace_context("traced") == TRACE_CONTEXT
    untraced, _ = await store.create(job_id="plain", request_id="req-plain", spec=b"spec")
    assert await store.trace_context(untraced.id) == ""


async def test_claimed_jobs_count_as_takeovers_by_reason(store: JobStore) -> None:
    before = {reason: takeovers(reason) for reason in metrics.TAKEOVER_REASONS}
    # "dead" owns a job and its heartbeat has expired; "stopped" handed its job back.
    await store.heartbeat("dead", ttl_seconds=-60)
    await store.create(job_id="of-dead", request_id="r1", spec=b"spec", owner="dead")
    await store.heartbeat("stopped", ttl_seconds=60)
    await store.create(job_id="of-stopped", request_id="r2", spec=b"spec", owner="stopped")
    assert await store.release_replica("stopped") == 1

    ownership = Ownership(store, replica_id="new")
    claimed = await ownership.start()
    try:
        assert sorted(job.id for job in claimed) == ["of-dead", "of-stopped"]
        assert {job.id: job.claimed_from for job in claimed} == {
            "of-dead": "dead",
            "of-stopped": None,
        }
        # SQLite has one replica, which takes its predecessor's jobs at its start.
        dead_reason = "restart" if store.exclusive else "expired"
        moved = {reason: takeovers(reason) - before[reason] for reason in before}
        expected = {reason: 0.0 for reason in before} | {dead_reason: 1.0, "handed_back": 1.0}
        assert moved == expected
    finally:
        await ownership.stop()
