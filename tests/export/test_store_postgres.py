"""What only the PostgreSQL store has: a database that goes away under it and comes back
(a throwaway cluster of this test), and the version table. The contract both backends keep is
tested in test_store.py."""

from __future__ import annotations

import asyncio
import fcntl
import struct
import termios
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from export_service.store import JobStatus, open_store
from export_service.store.base import Lease, StoreUnavailable
from export_service.store.outage import PatientStore
from export_service.store.postgres import MIGRATIONS, PostgresJobStore
from tests.support.polling import wait_until
from tests.support.ports import unused_address
from tests.support.postgres import ThrowawayCluster, create_schema
from tests.support.tcp_proxy import TcpProxy

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


def _unread_bytes(conn: asyncpg.Connection[Any]) -> int:
    """Bytes the server sent that this connection's protocol has not taken yet."""
    sock = conn._transport.get_extra_info("socket")
    (unread,) = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))
    return int(unread)


async def test_a_connection_the_server_ended_while_idle_is_replaced(
    postgres_database: str,
) -> None:
    """The chaos run's INTERNAL failure (seed 771203), made deterministic: PostgreSQL ends an
    idle pooled connection (its FATAL "terminating connection due to administrator command",
    as while the database shuts down), and that message reaches asyncpg before the socket's
    end. asyncpg, idle, takes it as a protocol error and refuses every query on the connection
    with InternalClientError ("cannot switch to state 11; another operation (2) is in
    progress") until the end arrives. The store must take that for a dead connection: replace
    it and run the write on a new one, never let the error escape to the tracker."""
    url = await create_schema(postgres_database)
    host_url, _, database = url.partition("@127.0.0.1:5432/")
    proxy = await TcpProxy("127.0.0.1", 5432).start()
    proxy.hold_server_close = True
    store = await PostgresJobStore.open(f"{host_url}@127.0.0.1:{proxy.port}/{database}", "r1")
    admin = await asyncpg.connect(url)
    try:
        job, _ = await store.create(job_id="j", request_id="rj", spec=b"", owner="r1")
        lease = Lease("r1", 1)
        pooled = [holder._con for holder in store._pool._holders if holder._con is not None]
        assert pooled, "the store keeps a connection open"
        pids = [conn.get_server_pid() for conn in pooled]
        await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", pids)

        async def ended_and_read() -> bool:
            return proxy.held_closes == len(pids) and all(_unread_bytes(c) == 0 for c in pooled)

        await wait_until(ended_and_read, "the servers' last message taken by asyncpg")
        confirmed = await store.confirm_lease("j", lease=lease)
        assert (confirmed.owner, confirmed.lease_epoch, confirmed.version) == ("r1", 1, 1)
        assert store.available
        assert (await store.get(job.id)).status is JobStatus.QUEUED
    finally:
        await admin.close()
        await store.close()
        await proxy.close()
