"""The store contract: every named transition's invariants, attacked directly, on both backends.

Each test runs on SQLite (a real file) and on PostgreSQL (a schema of this run's database, see
tests/conftest.py); what only one backend has is tested in test_store_sqlite.py and
test_store_postgres.py."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from export_service.store import (
    Job,
    JobNotFound,
    JobStatus,
    JobStore,
    ListCursor,
    ProgressUpdate,
    TransitionRejected,
    open_store,
)
from export_service.store.base import (
    JOBS_AMONG_MAX,
    STAGE_WAITING_FOR_RENDER,
    Change,
    RenderAttempt,
    RequestIdDeleted,
    created_at_us,
    decode_cursor,
    encode_cursor,
)
from export_service.store.worker import Priority, PriorityWorker
from tests.support.polling import wait_until
from tests.support.postgres import create_schema, run_sync
from videojob.errors import Reason, ResourceExhausted


class RawRefused(Exception):
    """The database refused a raw statement (a constraint or trigger)."""


@dataclass
class Backend:
    """One database, with ways to open stores on it and to run raw SQL against it."""

    name: str
    url: str
    opened: list[JobStore] = field(default_factory=list)

    async def open(self, writer: str = "") -> JobStore:
        store = await open_store(self.url, writer)
        self.opened.append(store)
        return store

    async def raw(self, sql: str) -> None:
        """Runs ``sql`` outside the store; RawRefused when the database refuses it."""
        if self.name == "sqlite":
            await asyncio.to_thread(self._raw_sqlite, sql)
            return
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(sql)
        except asyncpg.IntegrityConstraintViolationError as error:
            raise RawRefused(str(error)) from error
        finally:
            await conn.close()

    async def column(self, sql: str) -> list[Any]:
        """The first column of the rows ``sql`` selects, read outside the store."""
        if self.name == "sqlite":
            return await asyncio.to_thread(self._column_sqlite, sql)
        conn = await asyncpg.connect(self.url)
        try:
            return [row[0] for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    def _column_sqlite(self, sql: str) -> list[Any]:
        conn = sqlite3.connect(self.url.removeprefix("sqlite:///"))
        try:
            return [row[0] for row in conn.execute(sql)]
        finally:
            conn.close()

    def _raw_sqlite(self, sql: str) -> None:
        conn = sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(sql)
        except sqlite3.IntegrityError as error:
            raise RawRefused(str(error)) from error
        finally:
            conn.close()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return run_sync(create_schema(request.getfixturevalue("postgres_database")))


@pytest.fixture
async def backend(database_url: str) -> AsyncIterator[Backend]:
    name = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    opened = Backend(name, database_url)
    yield opened
    for store in opened.opened:
        await store.close()


@pytest.fixture
async def store(backend: Backend) -> JobStore:
    return await backend.open("contract-test")


OUTPUT = "/renders/out.mp4"  # the store never looks at it


async def new_job(store: JobStore, job_id: str = "job1", request_id: str = "") -> None:
    await store.create(job_id=job_id, request_id=request_id or f"req-{job_id}", spec=b"spec")


async def complete(store: JobStore, job_id: str, render_seq: int = 9) -> Job:
    return await store.complete(
        job_id, output_path=OUTPUT, size_bytes=5, duration_seconds=1, render_seq=render_seq
    )


async def test_create_and_get(store: JobStore) -> None:
    job, created = await store.create(job_id="a1", request_id="r1", spec=b"\x01\x02")
    assert created
    assert (job.status, job.progress, job.version, job.attempt) == (JobStatus.QUEUED, 0, 1, 1)
    assert job.spec == b"\x01\x02" and job.stage == "Queued"
    assert await store.get("a1") == job
    with pytest.raises(JobNotFound):
        await store.get("nope")


async def test_create_is_idempotent_on_request_id(store: JobStore) -> None:
    first, created = await store.create(job_id="a1", request_id="same", spec=b"x")
    again, created_again = await store.create(job_id="a2", request_id="same", spec=b"y")
    assert created and not created_again
    assert again == first
    with pytest.raises(JobNotFound):
        await store.get("a2")


async def test_a_create_can_record_the_first_placement(store: JobStore) -> None:
    placed = RenderAttempt(
        attempt=1,
        render_id="p1-a1",
        instance_id="render-1",
        address="127.0.0.1:1",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    job, created = await store.create(job_id="p1", request_id="rp", spec=b"x", placement=placed)
    assert created and (job.attempt, job.attempts, job.version) == (1, (placed,), 1)
    assert await store.get("p1") == job
    elsewhere = replace(placed, instance_id="render-2")
    again, created = await store.create(
        job_id="p2", request_id="rp", spec=b"x", placement=elsewhere
    )
    assert not created and again.attempts == (placed,)  # a replay records nothing
    with pytest.raises(ValueError, match="attempt 1"):
        await store.create(
            job_id="p3", request_id="rq", spec=b"x", placement=replace(placed, attempt=2)
        )
    with pytest.raises(JobNotFound):
        await store.get("p3")


async def test_every_change_raises_version_by_one(store: JobStore) -> None:
    seen: list[tuple[str, int]] = []
    store.add_listener(lambda job: seen.append((job.id, job.version)))
    await new_job(store)
    job = await store.record_progress(
        "job1", progress=0, stage="Queued", eta_seconds=0, render_seq=1
    )
    assert (job.status, job.version, job.started_at) == (JobStatus.QUEUED, 2, None)
    job = await store.record_progress(
        "job1", progress=10, stage="Rendering", eta_seconds=3, render_seq=2
    )
    assert (job.status, job.version, job.last_render_seq) == (JobStatus.RUNNING, 3, 2)
    assert job.started_at is not None
    job = await store.begin_attempt("job1", expected_attempt=1)
    assert (job.attempt, job.version, job.last_render_seq) == (2, 4, 0)
    job = await complete(store, "job1")
    assert (job.status, job.progress, job.stage, job.version) == (
        JobStatus.COMPLETED,
        100,
        "Complete",
        5,
    )
    assert job.finished_at is not None
    assert seen == [("job1", v) for v in range(1, 6)]


async def test_waiting_for_a_render_service_starts_nothing_and_says_retrying(
    store: JobStore,
) -> None:
    """The tracker's own stage leaves a job that never started QUEUED (and a running one
    RUNNING), and the job says it is retrying while it shows it."""
    await new_job(store)
    job = await store.record_progress(
        "job1", progress=0, stage=STAGE_WAITING_FOR_RENDER, eta_seconds=0, render_seq=0
    )
    assert (job.status, job.stage, job.started_at, job.retrying) == (
        JobStatus.QUEUED,
        STAGE_WAITING_FOR_RENDER,
        None,
        True,
    )
    job = await store.record_progress(
        "job1", progress=30, stage="Rendering", eta_seconds=5, render_seq=4
    )
    assert (job.status, job.retrying) == (JobStatus.RUNNING, False)
    job = await store.record_progress(
        "job1", progress=30, stage=STAGE_WAITING_FOR_RENDER, eta_seconds=0, render_seq=0
    )
    assert (job.status, job.progress, job.last_render_seq, job.retrying) == (
        JobStatus.RUNNING,
        30,
        4,
        True,
    )
    assert not (await complete(store, "job1")).retrying


async def test_progress_never_decreases(store: JobStore) -> None:
    await new_job(store)
    await store.record_progress("job1", progress=50, stage="Rendering", eta_seconds=1, render_seq=5)
    with pytest.raises(TransitionRejected) as rejected:
        await store.record_progress(
            "job1", progress=49.9, stage="Rendering", eta_seconds=1, render_seq=6
        )
    assert rejected.value.current.progress == 50
    assert (await store.get("job1")).version == 2
    same = await store.record_progress(
        "job1", progress=50, stage="Finalizing", eta_seconds=0, render_seq=7
    )
    assert (same.stage, same.version) == ("Finalizing", 3)


async def test_progress_100_only_with_completed(store: JobStore) -> None:
    await new_job(store)
    for bad in (100.0, 150.0, -1.0):
        with pytest.raises(TransitionRejected):
            await store.record_progress(
                "job1", progress=bad, stage="Rendering", eta_seconds=0, render_seq=1
            )
    assert (await store.get("job1")).version == 1


async def test_late_changes_after_completion_are_rejected(store: JobStore) -> None:
    await new_job(store)
    await store.record_progress(
        "job1", progress=95, stage="Finalizing", eta_seconds=0, render_seq=3
    )
    done = await complete(store, "job1", render_seq=4)
    with pytest.raises(TransitionRejected) as rejected:
        await store.record_progress(
            "job1", progress=96, stage="Finalizing", eta_seconds=0, render_seq=5
        )
    assert rejected.value.current.status is JobStatus.COMPLETED
    for change in (
        store.fail("job1", code="X", message="late"),
        store.cancel("job1"),
        store.begin_attempt("job1", expected_attempt=1),
        complete(store, "job1", render_seq=6),
    ):
        with pytest.raises(TransitionRejected) as refused:
            await change
        assert refused.value.current == done
    assert await store.get("job1") == done


async def test_completion_needs_an_output_path_but_does_not_look_at_files(
    store: JobStore, tmp_path: Path
) -> None:
    """The store records; whether the file is there is checked by whoever can see the output
    storage, before complete() (a database server cannot)."""
    await new_job(store)
    with pytest.raises(TransitionRejected) as refused:
        await store.complete("job1", output_path="", size_bytes=0, duration_seconds=1, render_seq=2)
    assert "output path" in refused.value.reason
    job = await store.get("job1")
    assert (job.status, job.version, job.output_path) == (JobStatus.QUEUED, 1, "")
    elsewhere = str(tmp_path / "on-another-machine.mp4")
    done = await store.complete(
        "job1", output_path=elsewhere, size_bytes=5, duration_seconds=1, render_seq=2
    )
    assert (done.status, done.output_path, done.version) == (JobStatus.COMPLETED, elsewhere, 2)


async def test_an_upload_s_stage_progress_and_the_stored_object_s_sha256_are_kept(
    store: JobStore,
) -> None:
    await new_job(store)
    uploading = await store.record_progress(
        "job1", progress=99, stage="Uploading", eta_seconds=0, render_seq=3, stage_progress=40
    )
    assert (uploading.stage, uploading.stage_progress) == ("Uploading", 40)
    assert (await store.get("job1")).stage_progress == 40
    url, sha256 = "s3://videojob/renders/r1.mp4", "ab" * 32
    done = await store.complete(
        "job1",
        output_path=url,
        size_bytes=5,
        duration_seconds=1,
        render_seq=4,
        output_sha256=sha256,
    )
    assert (done.output_path, done.output_sha256, done.stage_progress) == (url, sha256, 0)
    assert await store.get("job1") == done


async def test_a_failure_names_its_field(store: JobStore) -> None:
    await new_job(store, "a")
    await new_job(store, "b")
    failed = await store.fail(
        "a", code="INVALID_INPUT", message="no such file", field="spec.source.transcode.input_path"
    )
    assert (failed.error_code, failed.error_field) == (
        "INVALID_INPUT",
        "spec.source.transcode.input_path",
    )
    assert (await store.get("a")).error_field == "spec.source.transcode.input_path"
    assert (await store.fail("b", code="FFMPEG_ERROR", message="boom")).error_field == ""


async def test_cancel_and_fail_are_final(store: JobStore) -> None:
    await new_job(store, "c")
    await new_job(store, "f")
    cancelled = await store.cancel("c")
    assert (cancelled.status, cancelled.cancel_requested) == (JobStatus.CANCELLED, True)
    failed = await store.fail("f", code="FFMPEG_ERROR", message="boom")
    assert (failed.error_code, failed.error_message, failed.stage) == (
        "FFMPEG_ERROR",
        "boom",
        "Failed",
    )
    with pytest.raises(TransitionRejected):
        await complete(store, "c", render_seq=1)
    with pytest.raises(TransitionRejected):
        await store.cancel("f")
    assert [j.id for j in await store.list_pending_cancellations()] == ["c"]
    await store.render_released("c")
    assert await store.list_pending_cancellations() == []
    assert (await store.get("c")).version == cancelled.version
    assert [entry.version for entry in await store.history("c")] == [1, 2]


async def test_a_failure_can_ask_for_the_render_to_be_released(store: JobStore) -> None:
    await new_job(store, "given-up")
    await new_job(store, "verdict")
    given_up = await store.fail("given-up", code="RENDER_LOST", message="lost", release_render=True)
    verdict = await store.fail("verdict", code="FFMPEG_ERROR", message="boom")
    assert (given_up.cancel_requested, verdict.cancel_requested) == (True, False)
    assert [j.id for j in await store.list_pending_cancellations()] == ["given-up"]
    await store.render_released("given-up")
    assert await store.list_pending_cancellations() == []
    assert (await store.get("given-up")).status is JobStatus.FAILED


async def test_jobs_among_reads_the_jobs_that_exist_in_one_read(store: JobStore) -> None:
    for job_id in ("a", "b", "c"):
        await new_job(store, job_id)
    await complete(store, "b")
    await store.delete("b")
    found = await store.jobs_among(["c", "a", "b", "never", "a'); DROP TABLE jobs; --"])
    assert sorted(job.id for job in found) == ["a", "c"]
    assert {job.id: job for job in found}["a"] == await store.get("a")
    assert await store.jobs_among([]) == []
    with pytest.raises(ValueError, match="at most"):
        await store.jobs_among([f"j{n}" for n in range(JOBS_AMONG_MAX + 1)])


async def test_unknown_job_changes_are_not_found(store: JobStore) -> None:
    with pytest.raises(JobNotFound):
        await store.cancel("ghost")
    with pytest.raises(JobNotFound):
        await store.record_progress(
            "ghost", progress=1, stage="Rendering", eta_seconds=0, render_seq=1
        )
    with pytest.raises(JobNotFound):
        await store.history("ghost")


async def test_begin_attempt_is_compare_and_set(store: JobStore) -> None:
    await new_job(store)
    await store.begin_attempt("job1", expected_attempt=1)
    with pytest.raises(TransitionRejected):
        await store.begin_attempt("job1", expected_attempt=1)
    assert (await store.get("job1")).attempt == 2


async def test_raw_sql_cannot_break_the_invariants(store: JobStore, backend: Backend) -> None:
    await new_job(store)
    await store.record_progress("job1", progress=40, stage="Rendering", eta_seconds=0, render_seq=1)
    attacks = [
        "UPDATE jobs SET progress = 10, version = version + 1",
        "UPDATE jobs SET progress = 100, version = version + 1",
        "UPDATE jobs SET status = 'COMPLETED', progress = 100, version = version + 1",
        "UPDATE jobs SET version = version + 2",
        "UPDATE jobs SET stage = 'Sneaky'",
        "UPDATE jobs SET status = 'LOST', version = version + 1",
    ]
    for attack in attacks:
        with pytest.raises(RawRefused):
            await backend.raw(attack)
    await complete(store, "job1", render_seq=2)
    with pytest.raises(RawRefused):
        await backend.raw("UPDATE jobs SET status = 'RUNNING', progress = 50, version = 4")
    job = await store.get("job1")
    assert (job.status, job.version) == (JobStatus.COMPLETED, 3)
    assert [entry.version for entry in await store.history("job1")] == [1, 2, 3]


async def test_max_active_jobs(store: JobStore) -> None:
    await store.create(job_id="a", request_id="ra", spec=b"", max_active=2)
    await store.create(job_id="b", request_id="rb", spec=b"", max_active=2)
    with pytest.raises(ResourceExhausted):
        await store.create(job_id="c", request_id="rc", spec=b"", max_active=2)
    again, created = await store.create(job_id="x", request_id="ra", spec=b"", max_active=2)
    assert again.id == "a" and not created
    await store.cancel("a")
    await store.create(job_id="c", request_id="rc", spec=b"", max_active=2)


async def test_list_newest_first_with_cursor_and_filter(store: JobStore) -> None:
    for index in range(7):
        await new_job(store, f"j{index}")
    await store.cancel("j3")
    page = await store.list_jobs(limit=3)
    assert [j.id for j in page] == ["j6", "j5", "j4"]
    cursor = ListCursor(created_at_us(page[-1]), page[-1].id)
    assert decode_cursor(encode_cursor(cursor)) == cursor
    rest = await store.list_jobs(limit=10, after=cursor)
    assert [j.id for j in rest] == ["j3", "j2", "j1", "j0"]
    cancelled = await store.list_jobs(limit=10, status=JobStatus.CANCELLED)
    assert [j.id for j in cancelled] == ["j3"]
    assert [j.id for j in await store.list_active()] == ["j0", "j1", "j2", "j4", "j5", "j6"]
    for bad in ("", "!!!", "bm9jb2xvbg"):
        with pytest.raises(ValueError):
            decode_cursor(bad)


async def test_list_only_done_or_only_active_jobs(store: JobStore) -> None:
    for index in range(5):
        await new_job(store, f"j{index}")
    await store.cancel("j1")
    await store.cancel("j3")
    done = await store.list_jobs(limit=10, done=True)
    assert [j.id for j in done] == ["j3", "j1"]
    active = await store.list_jobs(limit=2, done=False)
    assert [j.id for j in active] == ["j4", "j2"]
    after = ListCursor(created_at_us(active[-1]), active[-1].id)
    assert [j.id for j in await store.list_jobs(limit=10, done=False, after=after)] == ["j0"]


async def test_jobs_and_history_persist_across_reopening(backend: Backend) -> None:
    first = await backend.open("first")
    await new_job(first)
    await first.record_progress("job1", progress=5, stage="Rendering", eta_seconds=1, render_seq=1)
    await first.close()
    second = await backend.open("second")
    job = await second.get("job1")
    assert (job.status, job.version, job.progress) == (JobStatus.RUNNING, 2, 5)
    await second.cancel("job1")
    history = await second.history("job1")
    assert [(entry.version, entry.writer) for entry in history] == [
        (1, "first"),
        (2, "first"),
        (3, "second"),
    ]


async def test_the_history_records_every_committed_change(store: JobStore) -> None:
    """One entry per version, in the same transaction as the change: the named change, the
    state it left, when and who wrote it. Refused changes leave no entry."""
    await new_job(store)
    await store.record_progress("job1", progress=0, stage="Queued", eta_seconds=0, render_seq=1)
    await store.record_progress("job1", progress=30, stage="Rendering", eta_seconds=2, render_seq=4)
    with pytest.raises(TransitionRejected):
        await store.record_progress(
            "job1", progress=20, stage="Rendering", eta_seconds=2, render_seq=5
        )
    await store.begin_attempt("job1", expected_attempt=1)
    with pytest.raises(TransitionRejected):
        await store.begin_attempt("job1", expected_attempt=1)
    failed = await store.fail("job1", code="RENDER_LOST", message="gone", release_render=True)
    with pytest.raises(TransitionRejected):
        await store.cancel("job1")
    await store.render_released("job1")  # bookkeeping, not a change

    history = await store.history("job1")
    assert [
        (e.version, e.change, e.status, e.progress, e.stage, e.attempt, e.render_seq, e.error_code)
        for e in history
    ] == [
        (1, Change.CREATE, JobStatus.QUEUED, 0, "Queued", 1, 0, ""),
        (2, Change.PROGRESS, JobStatus.QUEUED, 0, "Queued", 1, 1, ""),
        (3, Change.PROGRESS, JobStatus.RUNNING, 30, "Rendering", 1, 4, ""),
        (4, Change.BEGIN_ATTEMPT, JobStatus.RUNNING, 30, "Rendering", 2, 0, ""),
        (5, Change.FAIL, JobStatus.FAILED, 30, "Failed", 2, 0, "RENDER_LOST"),
    ]
    assert {(e.writer, e.owner, e.lease_epoch) for e in history} == {("contract-test", None, None)}
    times = [e.recorded_at for e in history]
    assert times == sorted(times) and times[-1] == failed.updated_at
    assert [e.version for e in await store.history("job1", after_version=2, limit=2)] == [3, 4]
    assert await store.history("job1", after_version=5) == []


async def test_the_history_is_deleted_with_its_job(store: JobStore, backend: Backend) -> None:
    await new_job(store, "gone")
    await new_job(store, "kept")
    await store.cancel("gone")
    await store.cancel("kept")
    await backend.raw("DELETE FROM jobs WHERE id = 'gone'")
    with pytest.raises(JobNotFound):
        await store.history("gone")
    assert [e.change for e in await store.history("kept")] == [Change.CREATE, Change.CANCEL]
    await new_job(store, "gone")  # the id is free again, with a history of its own
    assert [e.version for e in await store.history("gone")] == [1]


async def test_every_store_opening_at_once_migrates_the_schema_once(backend: Backend) -> None:
    """Processes starting together: the migration runs under a lock, once; the version table
    says which migrations ran."""
    stores = await asyncio.gather(*(backend.open(f"starter-{index}") for index in range(4)))
    await new_job(stores[0])
    assert (await stores[3].get("job1")).version == 1
    await backend.raw("INSERT INTO schema_migrations (version, name) VALUES (99, 'future')")
    with pytest.raises(ValueError, match="schema version 99"):
        await backend.open("too-old")


async def test_concurrent_terminal_writes_on_one_job_apply_exactly_one(backend: Backend) -> None:
    """Four stores (four connections, as four processes would have) race every terminal
    change on each job: one wins, the others are refused and see the winner."""
    stores = [await backend.open(f"writer-{index}") for index in range(4)]
    rng = random.Random(3)
    for round_number in range(5):
        job_id = f"contested{round_number}"
        await new_job(stores[0], job_id)
        kinds = ["complete", "cancel", "fail", "attempt"] * 3
        rng.shuffle(kinds)
        outcomes = await asyncio.gather(
            *(write_change(stores[index % 4], job_id, kind) for index, kind in enumerate(kinds)),
            return_exceptions=True,
        )
        winners = [kind for kind, won in zip(kinds, outcomes, strict=True) if won is True]
        terminal_winners = [kind for kind in winners if kind != "attempt"]
        assert len(terminal_winners) == 1, (kinds, outcomes)
        assert all(won in (True, False) for won in outcomes), outcomes
        job = await stores[1].get(job_id)
        assert job.status is TERMINAL_OF[terminal_winners[0]]
        assert job.version == 1 + len(winners)
        history = await stores[2].history(job_id)
        assert [e.version for e in history] == list(range(1, job.version + 1))
        assert [e.status in TERMINAL_OF.values() for e in history].count(True) == 1
        assert history[-1].status is job.status


async def test_creates_with_one_request_id_at_once_make_one_job(backend: Backend) -> None:
    stores = [await backend.open(f"creator-{index}") for index in range(3)]
    for round_number in range(5):
        request_id = f"same-request-{round_number}"
        results = await asyncio.gather(
            *(
                stores[index % 3].create(
                    job_id=f"r{round_number}-{index}", request_id=request_id, spec=b"s"
                )
                for index in range(6)
            )
        )
        assert [created for _, created in results].count(True) == 1
        assert len({job.id for job, _ in results}) == 1
        assert len({job.version for job, _ in results}) == 1
    jobs = await stores[0].list_jobs(limit=100)
    assert len(jobs) == 5


async def test_max_active_jobs_holds_when_writers_create_at_once(backend: Backend) -> None:
    """No count-then-insert race: creates from several stores at once never exceed the limit."""
    stores = [await backend.open(f"creator-{index}") for index in range(3)]
    limit = 4

    async def create(index: int) -> bool:
        try:
            await stores[index % 3].create(
                job_id=f"j{index}", request_id=f"r{index}", spec=b"", max_active=limit
            )
        except ResourceExhausted:
            return False
        return True

    accepted = await asyncio.gather(*(create(index) for index in range(24)))
    assert accepted.count(True) == limit
    assert len(await stores[0].list_active()) == limit
    await stores[1].cancel((await stores[1].list_active())[0].id)
    accepted = await asyncio.gather(*(create(index) for index in range(100, 112)))
    assert accepted.count(True) == 1
    assert len(await stores[2].list_active()) == limit


async def test_concurrent_writers_never_lose_or_double_apply(backend: Backend) -> None:
    stores = [await backend.open("a"), await backend.open("b")]
    job_ids = [f"race{index}" for index in range(12)]
    for job_id in job_ids:
        await new_job(stores[0], job_id)
    applied: dict[str, list[str]] = {job_id: [] for job_id in job_ids}
    progress_writes: dict[str, int] = dict.fromkeys(job_ids, 0)
    rng = random.Random(7)

    async def progress(job_id: str, value: float) -> None:
        try:
            await rng.choice(stores).record_progress(
                job_id, progress=value, stage="Rendering", eta_seconds=1, render_seq=int(value)
            )
            progress_writes[job_id] += 1
        except TransitionRejected:
            pass

    async def terminal(job_id: str, kind: str) -> None:
        if await write_change(rng.choice(stores), job_id, kind):
            applied[job_id].append(kind)

    tasks = []
    for job_id in job_ids:
        tasks += [progress(job_id, float(v)) for v in range(1, 30)]
        tasks += [terminal(job_id, kind) for kind in ("complete", "cancel", "fail") * 3]
    rng.shuffle(tasks)
    await asyncio.gather(*tasks)

    for job_id in job_ids:
        assert len(applied[job_id]) == 1, applied[job_id]
        job = await stores[1].get(job_id)
        assert job.status is TERMINAL_OF[applied[job_id][0]]
        assert job.version == 1 + progress_writes[job_id] + 1
        assert len(await stores[0].history(job_id)) == job.version


async def test_progress_batch_applies_each_update_on_its_own(store: JobStore) -> None:
    for job_id in ("queued", "running", "done", "twice"):
        await new_job(store, job_id)
    await store.record_progress(
        "running", progress=50, stage="Rendering", eta_seconds=1, render_seq=5
    )
    await complete(store, "done", render_seq=3)
    before = {job_id: await store.get(job_id) for job_id in ("running", "done")}
    notified: list[tuple[str, int]] = []
    store.add_listener(lambda job: notified.append((job.id, job.version)))

    def update(job_id: str, progress: float, seq: int) -> ProgressUpdate:
        return ProgressUpdate(job_id, progress, "Rendering", 1.0, seq)

    results = await store.record_progress_batch(
        [
            update("queued", 10, 1),
            update("running", 40, 6),  # below the stored 50
            update("done", 60, 4),  # terminal
            update("ghost", 10, 1),
            update("queued", 100, 2),  # 100 belongs to COMPLETED
            update("twice", 20, 1),
            update("twice", 30, 2),
        ]
    )
    queued, lower, terminal, ghost, hundred, twice_first, twice_second = results
    assert isinstance(queued, Job) and (queued.status, queued.version) == (JobStatus.RUNNING, 2)
    assert isinstance(lower, TransitionRejected) and lower.current.progress == 50
    assert isinstance(terminal, TransitionRejected)
    assert terminal.current.status is JobStatus.COMPLETED
    assert isinstance(ghost, JobNotFound)
    assert isinstance(hundred, TransitionRejected) and hundred.current.progress == 10
    assert isinstance(twice_first, Job) and isinstance(twice_second, Job)
    assert (twice_first.version, twice_second.version, twice_second.progress) == (2, 3, 30)
    assert notified == [("queued", 2), ("twice", 2), ("twice", 3)]
    for job_id, job in before.items():
        assert await store.get(job_id) == job
    assert [e.progress for e in await store.history("twice")] == [0, 20, 30]


async def test_batched_progress_racing_terminal_changes(backend: Backend) -> None:
    """Batches from two stores on one database against complete/cancel/fail: one terminal
    state per job, and version = 1 + applied progress updates + 1."""
    stores = [await backend.open("a"), await backend.open("b")]
    job_ids = [f"race{index}" for index in range(10)]
    for job_id in job_ids:
        await new_job(stores[0], job_id)
    applied: dict[str, int] = dict.fromkeys(job_ids, 0)
    terminal_writes: dict[str, int] = dict.fromkeys(job_ids, 0)
    rng = random.Random(11)

    async def batch(value: float) -> None:
        chosen = rng.sample(job_ids, 6)
        updates = [ProgressUpdate(job_id, value, "Rendering", 1, int(value)) for job_id in chosen]
        results = await rng.choice(stores).record_progress_batch(updates, urgent=rng.random() < 0.3)
        for job_id, result in zip(chosen, results, strict=True):
            if isinstance(result, Job):
                applied[job_id] += 1
            else:
                assert isinstance(result, TransitionRejected)

    async def terminal(job_id: str, kind: str) -> None:
        if await write_change(rng.choice(stores), job_id, kind):
            terminal_writes[job_id] += 1

    tasks = [batch(float(value)) for value in range(1, 40)]
    for job_id in job_ids:
        tasks += [terminal(job_id, kind) for kind in ("complete", "cancel", "fail") * 2]
    rng.shuffle(tasks)
    await asyncio.gather(*tasks)
    for job_id in job_ids:
        job = await stores[1].get(job_id)
        assert job.terminal and terminal_writes[job_id] == 1
        assert job.version == 1 + applied[job_id] + 1
        assert job.progress == 100 or job.status is not JobStatus.COMPLETED


async def test_terminal_changes_overtake_queued_progress_writes(store: JobStore) -> None:
    """200 progress writes, then a failure: the failure does not wait behind them. On SQLite
    its one thread is held until all 201 are queued (else it drains progress writes while the
    event loop is still queueing the rest, as many as a loaded machine lets it), and then the
    failure is the first commit; PostgreSQL lets progress wait for a few slots, never a
    terminal change."""
    job_ids = [f"p{index}" for index in range(200)]
    for job_id in [*job_ids, "finishing"]:
        await new_job(store, job_id)
    committed: list[str] = []
    store.add_listener(lambda job: committed.append(job.id))
    progress = [
        store.record_progress(job_id, progress=5, stage="Rendering", eta_seconds=1, render_seq=1)
        for job_id in job_ids
    ]
    worker: PriorityWorker | None = getattr(store, "_worker", None)
    if worker is None:
        await asyncio.gather(*progress, store.fail("finishing", code="X", message="done"))
        assert committed.index("finishing") < 100, committed.index("finishing")
    else:
        gate, holding = threading.Event(), threading.Event()

        def hold() -> None:
            holding.set()
            gate.wait()

        held = asyncio.ensure_future(worker.run(hold, Priority.TERMINAL))
        await wait_until(holding.is_set, "the store's thread held")
        writes = asyncio.gather(*progress, store.fail("finishing", code="X", message="done"))
        await wait_until(lambda: worker.waiting() == 201, "every write queued")
        gate.set()
        await asyncio.gather(held, writes)
        assert committed.index("finishing") == 0, committed.index("finishing")
    assert len(committed) == 201


TERMINAL_OF = {
    "complete": JobStatus.COMPLETED,
    "cancel": JobStatus.CANCELLED,
    "fail": JobStatus.FAILED,
}


async def write_change(store: JobStore, job_id: str, kind: str) -> bool:
    """Completes, cancels, fails the job or begins its next attempt; False when the store
    rejects the transition."""
    change: Callable[[], Awaitable[Job]]
    if kind == "complete":
        change = lambda: complete(store, job_id, render_seq=99)  # noqa: E731
    elif kind == "cancel":
        change = lambda: store.cancel(job_id)  # noqa: E731
    elif kind == "attempt":
        change = lambda: store.begin_attempt(job_id, expected_attempt=1)  # noqa: E731
    else:
        change = lambda: store.fail(job_id, code="FFMPEG_ERROR", message="x")  # noqa: E731
    try:
        await change()
    except TransitionRejected:
        return False
    return True


# --- The job lifecycle: delete, tombstones, retention, failure log tails ------------------------


async def test_delete_removes_a_finished_job_and_its_history(store: JobStore) -> None:
    await new_job(store, "done")
    deleted = await complete(store, "done")
    assert (await store.delete("done")).id == deleted.id
    with pytest.raises(JobNotFound):
        await store.get("done")
    with pytest.raises(JobNotFound):
        await store.history("done")
    with pytest.raises(JobNotFound):
        await store.delete("done")


async def test_delete_refuses_active_jobs_and_pending_clean_ups(store: JobStore) -> None:
    await new_job(store, "queued")
    with pytest.raises(TransitionRejected) as refused:
        await store.delete("queued")
    assert refused.value.current.status is JobStatus.QUEUED
    await new_job(store, "cancelled")
    await store.cancel("cancelled")  # cancel_requested until the render is released
    with pytest.raises(TransitionRejected) as pending:
        await store.delete("cancelled")
    assert pending.value.current.cancel_requested
    await store.render_released("cancelled")
    await store.delete("cancelled")
    assert (await store.get("queued")).status is JobStatus.QUEUED


async def test_a_deleted_jobs_request_id_is_never_used_again(store: JobStore) -> None:
    await new_job(store, "first", request_id="key")
    await store.fail("first", code="FFMPEG_ERROR", message="boom")
    assert (await store.find_by_request_id("key")) is not None
    await store.delete("first")
    with pytest.raises(RequestIdDeleted) as gone:
        await store.create(job_id="second", request_id="key", spec=b"spec")
    assert (gone.value.job_id, gone.value.error_reason) == ("first", Reason.REQUEST_ID_DELETED)
    with pytest.raises(RequestIdDeleted):
        await store.find_by_request_id("key")
    with pytest.raises(JobNotFound):
        await store.get("second")
    assert await store.find_by_request_id("unknown") is None


async def test_tombstones_outlive_reopening(backend: Backend) -> None:
    store = await backend.open()
    await new_job(store, "kept", request_id="kept-key")
    await store.cancel("kept")
    await store.render_released("kept")
    await store.delete("kept")
    await store.close()
    reopened = await backend.open()
    with pytest.raises(RequestIdDeleted):
        await reopened.create(job_id="again", request_id="kept-key", spec=b"spec")


async def test_list_expired_names_only_deletable_jobs_finished_before(store: JobStore) -> None:
    await new_job(store, "old")
    await complete(store, "old")
    await new_job(store, "pending")
    await store.cancel("pending")
    await new_job(store, "active")
    cutoff = datetime.now(UTC) + timedelta(seconds=1)
    expired = await store.list_expired(finished_before=cutoff, limit=10)
    assert [job.id for job in expired] == ["old"]
    assert await store.list_expired(finished_before=cutoff - timedelta(hours=1), limit=10) == []
    await new_job(store, "newer")
    await complete(store, "newer")
    later = datetime.now(UTC) + timedelta(seconds=1)
    page = await store.list_expired(finished_before=later, limit=1)
    assert [job.id for job in page] == ["old"]


async def test_a_failure_keeps_ffmpegs_log_tail(store: JobStore) -> None:
    await new_job(store, "f")
    tail = "frame=1\n[in#0] Invalid data found when processing input"
    failed = await store.fail("f", code="FFMPEG_ERROR", message="boom", log_tail=tail)
    assert failed.error_log_tail == tail
    assert (await store.get("f")).error_log_tail == tail
    await new_job(store, "quiet")
    assert (await store.fail("quiet", code="INTERNAL", message="x")).error_log_tail == ""


async def test_a_change_has_one_moment(store: JobStore) -> None:
    """Every time a change writes is the same moment (PostgreSQL's now() is one per transaction;
    SQLite's clock is read once per statement): a terminal change's finished_at is its
    updated_at, which the finished-jobs metric relies on."""
    await new_job(store)
    await store.record_progress("job1", progress=5, stage="Rendering", eta_seconds=1, render_seq=1)
    failed = await store.fail("job1", code="FFMPEG_ERROR", message="x", release_render=True)
    assert failed.finished_at == failed.updated_at
    assert failed.started_at is not None
