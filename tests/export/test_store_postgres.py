"""What only the PostgreSQL store has: a database that goes away under it and comes back
(a throwaway cluster of this test), and the version table. The contract both backends keep is
tested in test_store.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from export_service.store import JobStatus, open_store
from export_service.store.base import StoreUnavailable
from export_service.store.outage import PatientStore
from export_service.store.postgres import MIGRATIONS, PostgresJobStore
from tests.support.polling import wait_until
from tests.support.ports import unused_address
from tests.support.postgres import ThrowawayCluster, create_schema

pytestmark = pytest.mark.postgresql


@pytest.fixture
async def cluster() -> AsyncIterator[ThrowawayCluster]:
    throwaway = ThrowawayCluster()
    try:
        await asyncio.to_thread(throwaway.init)
        await asyncio.to_thread(throwaway.start)
        yield throwaway
    finally:
        await asyncio.to_thread(throwaway.destroy)


async def test_the_version_table_names_the_migrations_that_ran(postgres_database: str) -> None:
    url = await create_schema(postgres_database)
    store = await open_store(url)
    await store.close()
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [(row["version"], row["name"]) for row in rows] == [
        (migration.version, migration.name) for migration in MIGRATIONS
    ]


async def test_a_database_that_does_not_answer_is_refused_at_open() -> None:
    with pytest.raises(ValueError, match="cannot open the database"):
        await open_store(f"postgresql://postgres:secret@{unused_address()}/none")


async def test_the_store_outlives_a_database_restart(cluster: ThrowawayCluster) -> None:
    """Down: every operation raises StoreUnavailable (the listener hears of it once), a
    PatientStore change waits; up again: the same store works on new connections, and the
    waiting change lands exactly once."""
    store = await PostgresJobStore.open(cluster.url, "survivor")
    availability: list[bool] = []
    store.add_availability_listener(availability.append)
    try:
        await store.create(job_id="a", request_id="ra", spec=b"")
        await store.create(job_id="b", request_id="rb", spec=b"")
        await asyncio.to_thread(cluster.stop, "fast")
        with pytest.raises(StoreUnavailable):
            await store.get("a")
        with pytest.raises(StoreUnavailable):
            await store.cancel("a")
        assert availability == [False] and not store.available
        patient = PatientStore(store, first_delay=0.05, max_delay=0.2)
        waiting = asyncio.create_task(patient.cancel("b"))

        async def retried() -> bool:
            return patient.retries >= 3

        await wait_until(retried, "the patient cancel to be retried")
        assert not waiting.done()
        await asyncio.to_thread(cluster.start)
        cancelled = await asyncio.wait_for(waiting, 30)
        assert (cancelled.status, cancelled.version) == (JobStatus.CANCELLED, 2)
        assert availability == [False, True] and store.available
        assert (await store.get("a")).status is JobStatus.QUEUED
        assert [entry.version for entry in await store.history("b")] == [1, 2]
    finally:
        await store.close()
