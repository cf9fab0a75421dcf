"""How often the servicer's reads look at the store for the lines (export_service.queue_line.
QueueLines), on a real SQLite file and a clock the test moves: a view serves every read while it
is young, a job created since joins the end of its line without a look, and a view too old or
missing a job placed earlier is looked at again."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from export_service.queue_line import MAX_VIEW_AGE_SECONDS, QueueLines
from export_service.store import Job, JobStore, open_store
from export_service.store.base import RenderAttempt
from tests.support.specs import pattern_spec

PLACED = datetime(2025, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountedLooks:
    """Counts the store reads a look makes (every active job is one)."""

    def __init__(self, store: JobStore) -> None:
        self.count = 0
        list_active = store.list_active

        async def counted() -> list[Job]:
            self.count += 1
            return await list_active()

        store.list_active = counted  # type: ignore[method-assign]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    opened = await open_store(f"sqlite:///{tmp_path / 'export.db'}")
    yield opened
    await opened.close()


async def create(store: JobStore, placed_after: float) -> Job:
    job_id = uuid.uuid4().hex
    placed = PLACED + timedelta(seconds=placed_after)
    job, _ = await store.create(
        job_id=job_id,
        request_id=job_id,
        spec=pattern_spec().SerializeToString(),
        placement=RenderAttempt(1, job_id, "render-a", "127.0.0.1:1", started_at=placed),
    )
    return job


async def test_reads_share_a_young_view_and_new_jobs_join_it(store: JobStore) -> None:
    looks, clock = CountedLooks(store), Clock()
    lines = QueueLines(store, lambda _instance, _address: 1, clock=clock)
    first, second = await create(store, 10), await create(store, 20)

    assert (await lines.places([second]))[second.id].position == 2
    assert (await lines.places([first, second]))[first.id].position == 1
    assert looks.count == 1

    # Created (and placed) since the look: at the end of the line, no look.
    third = await create(store, 30)
    assert (await lines.places([third]))[third.id].position == 3
    assert looks.count == 1

    # Placed before a job the view holds: a new look says where it stands.
    early = await create(store, 5)
    assert (await lines.places([early]))[early.id].position == 1
    assert looks.count == 2

    # A view too old is looked at again.
    await store.cancel(first.id)
    clock.now += MAX_VIEW_AGE_SECONDS
    assert (await lines.places([third]))[third.id].position == 3
    assert looks.count == 3
