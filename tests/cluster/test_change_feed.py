"""The change feed on the suite's PostgreSQL: another process's writes (a second store on the same
schema) reach this process's change hub by LISTEN/NOTIFY, by the batched poll alone when
notifications are off, and after the listener connection is killed from the database side every
watcher is woken and the listener comes back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from export_service.changes import ChangeHub
from export_service.store.notifications import (
    LISTENER_APPLICATION_NAME,
    ChangeFeed,
    parse_payload,
)
from export_service.store.postgres import PostgresJobStore
from tests.support.polling import wait_until
from tests.support.postgres import create_schema
from tests.support.specs import pattern_spec

pytestmark = pytest.mark.postgresql

# Long enough that only a notification or a wake-up can be what delivers a change.
NO_POLL_SECONDS = 3600.0
SPEC = pattern_spec().SerializeToString()


@pytest.fixture
async def schema(postgres_database: str) -> str:
    return await create_schema(postgres_database)


@pytest.fixture
async def stores(schema: str) -> AsyncIterator[tuple[PostgresJobStore, PostgresJobStore]]:
    """Two stores on one schema, as two export replicas have."""
    here = await PostgresJobStore.open(schema, "here")
    there = await PostgresJobStore.open(schema, "there")
    try:
        yield here, there
    finally:
        await there.close()
        await here.close()


async def start_feed(
    store: PostgresJobStore, hub: ChangeHub, *, listen: bool = True, poll: float = NO_POLL_SECONDS
) -> ChangeFeed:
    feed = ChangeFeed(store, hub, listen=listen, poll_interval=poll, list_poll_interval=poll)
    await feed.start()
    return feed


async def create(store: PostgresJobStore, job_id: str) -> None:
    await store.create(job_id=job_id, request_id=f"request-{job_id}", spec=SPEC)


async def progress(store: PostgresJobStore, job_id: str, percent: float) -> int:
    job = await store.record_progress(
        job_id, progress=percent, stage="Rendering", eta_seconds=1.0, render_seq=int(percent)
    )
    return job.version


def test_payloads() -> None:
    assert parse_payload("abc:7") == ("abc", 7)
    assert parse_payload("abc:") == ("abc", None)
    assert parse_payload("a:b:3") == ("a:b", 3)
    assert parse_payload("abc") is None
    assert parse_payload("abc:x") is None


async def test_a_write_by_another_process_wakes_the_watchers_of_its_job(
    stores: tuple[PostgresJobStore, PostgresJobStore],
) -> None:
    here, there = stores
    hub = ChangeHub()
    feed = await start_feed(here, hub)
    try:
        assert feed.listening
        with hub.subscribe("job-a") as changed, hub.subscribe_all() as any_changed:
            any_changed.take()  # the first look
            await create(there, "job-a")
            await wait_until(changed.is_set, "the create's notification")
            # List watchers hear which job changed (another process's: no row, read it).
            assert any_changed.take() == (False, {"job-a": None})
            assert hub.known_version("job-a") == 1
            changed.clear()
            version = await progress(there, "job-a", 10.0)
            await wait_until(changed.is_set, "the progress notification")
            assert hub.known_version("job-a") == version == 2
            # A change of another job does not wake this job's watchers.
            changed.clear()
            await create(there, "job-b")
            await wait_until(lambda: hub.known_version("job-b") == 1, "job-b's notification")
            assert not changed.is_set()
    finally:
        await feed.close()


async def test_the_batched_poll_alone_carries_changes_when_notifications_are_off(
    stores: tuple[PostgresJobStore, PostgresJobStore],
) -> None:
    here, there = stores
    hub = ChangeHub()
    feed = await start_feed(here, hub, listen=False, poll=0.1)
    try:
        assert not feed.listening
        await create(there, "job-p")
        with hub.subscribe("job-p") as changed:
            hub.saw("job-p", 1)
            version = await progress(there, "job-p", 20.0)
            await wait_until(changed.is_set, "the poll to notice the new version")
            assert hub.known_version("job-p") == version
    finally:
        await feed.close()


async def _terminate(schema: str, pid: int) -> bool:
    conn: asyncpg.Connection[Any] = await asyncpg.connect(schema)
    try:
        killed: bool = await conn.fetchval(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid = $1 AND application_name = $2",
            pid,
            LISTENER_APPLICATION_NAME,
        )
        return killed
    finally:
        await conn.close()


async def test_a_killed_listener_wakes_every_watcher_and_listens_again(
    schema: str, stores: tuple[PostgresJobStore, PostgresJobStore]
) -> None:
    here, there = stores
    hub = ChangeHub()
    feed = await start_feed(here, hub)
    try:
        await create(there, "job-k")
        await wait_until(lambda: hub.known_version("job-k") == 1, "the create's notification")
        first_pid = feed.listener_pid
        assert first_pid is not None
        with hub.subscribe("job-k") as changed, hub.subscribe_all() as any_changed:
            any_changed.take()  # the first look
            assert await _terminate(schema, first_pid)
            # Whatever was sent while nobody listened is lost: every watcher re-reads.
            await wait_until(changed.is_set, "the wake-up after losing the listener")
            assert any_changed.take()[0] is True
            await wait_until(
                lambda: feed.listening and feed.listener_pid != first_pid,
                "a new listener connection",
            )
            assert feed.connections == 2
            changed.clear()
            version = await progress(there, "job-k", 30.0)
            await wait_until(changed.is_set, "a notification on the new connection")
            assert hub.known_version("job-k") == version
    finally:
        await feed.close()


async def test_the_echo_of_a_change_this_process_published_wakes_nobody(
    stores: tuple[PostgresJobStore, PostgresJobStore],
) -> None:
    here, there = stores
    hub = ChangeHub()
    here.add_listener(hub.publish)
    feed = await start_feed(here, hub)
    try:
        await create(here, "job-e")
        with hub.subscribe("job-e") as changed:
            version = await progress(here, "job-e", 5.0)
            assert changed.is_set() and hub.known_version("job-e") == version
            changed.clear()
            # The NOTIFY of that write arrives after commit; a later write by another process
            # is heard after it (notifications arrive in commit order).
            await create(there, "marker")
            await wait_until(lambda: hub.known_version("marker") == 1, "the marker")
            await asyncio.sleep(0)
            assert not changed.is_set()
    finally:
        await feed.close()
