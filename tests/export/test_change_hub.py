"""The change hub hands a watcher the row this process committed, and only while nothing newer
may exist: a version heard of from another process, a hint without a version or a lost feed
send the watcher back to the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from export_service.changes import ChangeHub
from export_service.store.sqlite import SqliteJobStore
from tests.support.specs import pattern_spec

SPEC = pattern_spec().SerializeToString()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteJobStore]:
    store = await SqliteJobStore.open(tmp_path / "jobs.db")
    try:
        yield store
    finally:
        await store.close()


async def progress(store: SqliteJobStore, job_id: str, percent: float) -> int:
    job = await store.record_progress(
        job_id, progress=percent, stage="Rendering", eta_seconds=1.0, render_seq=int(percent)
    )
    return job.version


async def test_a_watched_job_gets_the_row_its_commit_returned(store: SqliteJobStore) -> None:
    hub = ChangeHub()
    store.add_listener(hub.publish)
    await store.create(job_id="watched", request_id="r1", spec=SPEC)
    await store.create(job_id="unwatched", request_id="r2", spec=SPEC)
    with hub.subscribe("watched") as changed:
        version = await progress(store, "watched", 10.0)
        await progress(store, "unwatched", 10.0)
        assert changed.is_set()
        row = hub.committed("watched", newer_than=version - 1)
        assert row is not None and (row.version, row.progress) == (version, 10.0)
        assert row == await store.get("watched")
        assert hub.committed("watched", newer_than=version) is None  # already sent
        newer = await progress(store, "watched", 20.0)
        row = hub.committed("watched", newer_than=version)
        assert row is not None and row.version == newer  # the newest, skipping none it holds
    assert hub.committed("unwatched", newer_than=0) is None
    assert hub.committed("watched", newer_than=0) is None  # forgotten with its last watcher


async def test_a_newer_version_from_elsewhere_sends_the_watcher_to_the_store(
    store: SqliteJobStore,
) -> None:
    hub = ChangeHub()
    store.add_listener(hub.publish)
    await store.create(job_id="job", request_id="r1", spec=SPEC)
    with hub.subscribe("job"):
        version = await progress(store, "job", 10.0)
        hub.notify("job", version + 1)  # another replica committed a later version
        assert hub.committed("job", newer_than=0) is None
        await progress(store, "job", 20.0)
        assert hub.committed("job", newer_than=0) is not None
        hub.notify("job")  # a change of unknown version
        assert hub.committed("job", newer_than=0) is None
        await progress(store, "job", 30.0)
        hub.wake_all()  # the feed may have lost hints
        assert hub.committed("job", newer_than=0) is None


async def test_list_watchers_hear_which_jobs_changed_with_the_rows_committed_here(
    store: SqliteJobStore,
) -> None:
    hub = ChangeHub()
    store.add_listener(hub.publish)
    with hub.subscribe_all() as changes:
        assert changes.take() == (True, {})  # the first look reads everything
        await store.create(job_id="a", request_id="ra", spec=SPEC)
        await progress(store, "a", 10.0)
        everything, changed = changes.take()
        assert not everything and list(changed) == ["a"]
        row = changed["a"]
        assert row is not None and row.version == 2  # the newest row, no read needed
        hub.notify("b", 7)  # another process's change: no row here
        hub.notify("a", 3)  # a newer version of a than the row held
        assert changes.take() == (False, {"a": None, "b": None})
        hub.saw("c", 4)  # a job watcher read a version nobody heard of yet
        assert changes.take() == (False, {"c": None})
        hub.notify("c", 4)  # ... whose notification then comes: nothing new
        assert changes.take() == (False, {})
        hub.wake_all()
        assert changes.take() == (True, {})
        assert not changes.event.is_set()
