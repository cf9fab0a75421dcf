"""The store's invariants, attacked directly on real SQLite files."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from export_service.store import (
    Job,
    JobNotFound,
    JobStatus,
    JobStore,
    ProgressUpdate,
    TransitionRejected,
    open_store,
)
from export_service.store.sqlite import SqliteJobStore, decode_cursor, encode_cursor
from videojob.errors import ResourceExhausted


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteJobStore]:
    opened = await SqliteJobStore.open(tmp_path / "jobs.db")
    yield opened
    await opened.close()


def output_file(tmp_path: Path, name: str = "out.mp4", content: bytes = b"video") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


async def new_job(store: SqliteJobStore, job_id: str = "job1", request_id: str = "") -> None:
    await store.create(job_id=job_id, request_id=request_id or f"req-{job_id}", spec=b"spec")


async def test_create_and_get(store: SqliteJobStore) -> None:
    job, created = await store.create(job_id="a1", request_id="r1", spec=b"\x01\x02")
    assert created
    assert (job.status, job.progress, job.version, job.attempt) == (JobStatus.QUEUED, 0, 1, 1)
    assert job.spec == b"\x01\x02" and job.stage == "Queued"
    assert await store.get("a1") == job
    with pytest.raises(JobNotFound):
        await store.get("nope")


async def test_create_is_idempotent_on_request_id(store: SqliteJobStore) -> None:
    first, created = await store.create(job_id="a1", request_id="same", spec=b"x")
    again, created_again = await store.create(job_id="a2", request_id="same", spec=b"y")
    assert created and not created_again
    assert again == first
    with pytest.raises(JobNotFound):
        await store.get("a2")


async def test_every_change_raises_version_by_one(store: SqliteJobStore, tmp_path: Path) -> None:
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
    job = await store.complete(
        "job1", output_path=output_file(tmp_path), size_bytes=5, duration_seconds=1, render_seq=9
    )
    assert (job.status, job.progress, job.stage, job.version) == (
        JobStatus.COMPLETED,
        100,
        "Complete",
        5,
    )
    assert job.finished_at is not None
    assert seen == [("job1", v) for v in range(1, 6)]


async def test_progress_never_decreases(store: SqliteJobStore) -> None:
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


async def test_progress_100_only_with_completed(store: SqliteJobStore) -> None:
    await new_job(store)
    for bad in (100.0, 150.0, -1.0):
        with pytest.raises(TransitionRejected):
            await store.record_progress(
                "job1", progress=bad, stage="Rendering", eta_seconds=0, render_seq=1
            )
    assert (await store.get("job1")).version == 1


async def test_late_progress_after_completion_is_rejected(
    store: SqliteJobStore, tmp_path: Path
) -> None:
    await new_job(store)
    await store.record_progress(
        "job1", progress=95, stage="Finalizing", eta_seconds=0, render_seq=3
    )
    done = await store.complete(
        "job1", output_path=output_file(tmp_path), size_bytes=5, duration_seconds=1, render_seq=4
    )
    with pytest.raises(TransitionRejected) as rejected:
        await store.record_progress(
            "job1", progress=96, stage="Finalizing", eta_seconds=0, render_seq=5
        )
    assert rejected.value.current.status is JobStatus.COMPLETED
    for change in (
        store.fail("job1", code="X", message="late"),
        store.cancel("job1"),
        store.begin_attempt("job1", expected_attempt=1),
        store.complete(
            "job1",
            output_path=output_file(tmp_path),
            size_bytes=5,
            duration_seconds=1,
            render_seq=6,
        ),
    ):
        with pytest.raises(TransitionRejected):
            await change
    assert await store.get("job1") == done


async def test_completion_needs_an_output_path_but_does_not_look_at_files(
    store: SqliteJobStore, tmp_path: Path
) -> None:
    """The store records; whether the file is there is checked by whoever can see the output
    storage, before complete() (a database server cannot)."""
    await new_job(store)
    with pytest.raises(TransitionRejected):
        await store.complete("job1", output_path="", size_bytes=0, duration_seconds=1, render_seq=2)
    job = await store.get("job1")
    assert (job.status, job.version, job.output_path) == (JobStatus.QUEUED, 1, "")
    elsewhere = str(tmp_path / "on-another-machine.mp4")
    done = await store.complete(
        "job1", output_path=elsewhere, size_bytes=5, duration_seconds=1, render_seq=2
    )
    assert (done.status, done.output_path, done.version) == (JobStatus.COMPLETED, elsewhere, 2)


async def test_a_failure_names_its_field(store: SqliteJobStore) -> None:
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


async def test_a_database_made_before_error_field_still_opens(tmp_path: Path) -> None:
    """A file whose jobs table lacks a later column gets it on open; its jobs read as before."""
    path = tmp_path / "old.db"
    store = await SqliteJobStore.open(path)
    await new_job(store, "old")
    await store.fail("old", code="FFMPEG_ERROR", message="boom")
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER jobs_invariants")
        conn.execute("ALTER TABLE jobs DROP COLUMN error_field")
        assert "error_field" not in {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    conn.close()
    reopened = await SqliteJobStore.open(path)
    try:
        old = await reopened.get("old")
        assert (old.status, old.error_code, old.error_field) == (
            JobStatus.FAILED,
            "FFMPEG_ERROR",
            "",
        )
        await new_job(reopened, "new")
        failed = await reopened.fail("new", code="INVALID_INPUT", message="m", field="spec.output")
        assert failed.error_field == "spec.output"
    finally:
        await reopened.close()


async def test_cancel_and_fail_are_final(store: SqliteJobStore, tmp_path: Path) -> None:
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
        await store.complete(
            "c", output_path=output_file(tmp_path), size_bytes=5, duration_seconds=1, render_seq=1
        )
    with pytest.raises(TransitionRejected):
        await store.cancel("f")
    assert [j.id for j in await store.list_pending_cancellations()] == ["c"]
    await store.render_released("c")
    assert await store.list_pending_cancellations() == []
    assert (await store.get("c")).version == cancelled.version


async def test_a_failure_can_ask_for_the_render_to_be_released(store: SqliteJobStore) -> None:
    await new_job(store, "given-up")
    await new_job(store, "verdict")
    given_up = await store.fail("given-up", code="RENDER_LOST", message="lost", release_render=True)
    verdict = await store.fail("verdict", code="FFMPEG_ERROR", message="boom")
    assert (given_up.cancel_requested, verdict.cancel_requested) == (True, False)
    assert [j.id for j in await store.list_pending_cancellations()] == ["given-up"]
    await store.render_released("given-up")
    assert await store.list_pending_cancellations() == []
    assert (await store.get("given-up")).status is JobStatus.FAILED


async def test_unknown_job_changes_are_not_found(store: SqliteJobStore) -> None:
    with pytest.raises(JobNotFound):
        await store.cancel("ghost")
    with pytest.raises(JobNotFound):
        await store.record_progress(
            "ghost", progress=1, stage="Rendering", eta_seconds=0, render_seq=1
        )


async def test_begin_attempt_is_compare_and_set(store: SqliteJobStore) -> None:
    await new_job(store)
    await store.begin_attempt("job1", expected_attempt=1)
    with pytest.raises(TransitionRejected):
        await store.begin_attempt("job1", expected_attempt=1)
    assert (await store.get("job1")).attempt == 2


async def test_raw_sql_cannot_break_the_invariants(store: SqliteJobStore, tmp_path: Path) -> None:
    await new_job(store)
    await store.record_progress("job1", progress=40, stage="Rendering", eta_seconds=0, render_seq=1)
    conn = sqlite3.connect(store.path, isolation_level=None)
    try:
        attacks = [
            "UPDATE jobs SET progress = 10, version = version + 1",
            "UPDATE jobs SET progress = 100, version = version + 1",
            "UPDATE jobs SET status = 'COMPLETED', progress = 100, version = version + 1",
            "UPDATE jobs SET version = version + 2",
            "UPDATE jobs SET stage = 'Sneaky'",
        ]
        for attack in attacks:
            with pytest.raises(sqlite3.IntegrityError):
                conn.execute(attack)
        await store.complete(
            "job1",
            output_path=output_file(tmp_path),
            size_bytes=5,
            duration_seconds=1,
            render_seq=2,
        )
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE jobs SET status = 'RUNNING', version = version + 1")
    finally:
        conn.close()
    assert (await store.get("job1")).status is JobStatus.COMPLETED


async def test_max_active_jobs(store: SqliteJobStore) -> None:
    await store.create(job_id="a", request_id="ra", spec=b"", max_active=2)
    await store.create(job_id="b", request_id="rb", spec=b"", max_active=2)
    with pytest.raises(ResourceExhausted):
        await store.create(job_id="c", request_id="rc", spec=b"", max_active=2)
    again, created = await store.create(job_id="x", request_id="ra", spec=b"", max_active=2)
    assert again.id == "a" and not created
    await store.cancel("a")
    await store.create(job_id="c", request_id="rc", spec=b"", max_active=2)


async def test_list_newest_first_with_cursor_and_filter(store: SqliteJobStore) -> None:
    for index in range(7):
        await new_job(store, f"j{index}")
    await store.cancel("j3")
    page = await store.list_jobs(limit=3)
    assert [j.id for j in page] == ["j6", "j5", "j4"]
    from export_service.store import ListCursor
    from export_service.store.sqlite import created_at_us

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


async def test_wal_mode_and_persistence(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'db.sqlite'}"
    first = await open_store(url)
    await new_job(first)  # type: ignore[arg-type]
    await first.close()
    second = await open_store(str(tmp_path / "sub" / "db.sqlite"))
    try:
        assert (await second.get("job1")).status is JobStatus.QUEUED
    finally:
        await second.close()
    conn = sqlite3.connect(tmp_path / "sub" / "db.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_postgresql_is_not_yet_supported() -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        await open_store("postgresql://localhost/videojob")
    with pytest.raises(ValueError):
        await open_store("mysql://x")


async def test_concurrent_writers_never_lose_or_double_apply(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    stores = [await SqliteJobStore.open(path), await SqliteJobStore.open(path)]
    out = output_file(tmp_path)
    try:
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
            if await write_terminal(rng.choice(stores), job_id, kind, out):
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
            expected = {"complete": JobStatus.COMPLETED, "cancel": JobStatus.CANCELLED}
            assert job.status is expected.get(applied[job_id][0], JobStatus.FAILED)
            assert job.version == 1 + progress_writes[job_id] + 1
    finally:
        for store in stores:
            await store.close()


async def test_progress_batch_applies_each_update_on_its_own(
    store: SqliteJobStore, tmp_path: Path
) -> None:
    for job_id in ("queued", "running", "done", "twice"):
        await new_job(store, job_id)
    await store.record_progress(
        "running", progress=50, stage="Rendering", eta_seconds=1, render_seq=5
    )
    await store.complete(
        "done", output_path=output_file(tmp_path), size_bytes=5, duration_seconds=1, render_seq=3
    )
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


async def test_batched_progress_racing_terminal_changes(tmp_path: Path) -> None:
    """Batches from two stores on one file against complete/cancel/fail: one terminal state
    per job, and version = 1 + applied progress updates + 1."""
    path = tmp_path / "shared.db"
    stores = [await SqliteJobStore.open(path), await SqliteJobStore.open(path)]
    out = output_file(tmp_path)
    try:
        job_ids = [f"race{index}" for index in range(10)]
        for job_id in job_ids:
            await new_job(stores[0], job_id)
        applied: dict[str, int] = dict.fromkeys(job_ids, 0)
        terminal_writes: dict[str, int] = dict.fromkeys(job_ids, 0)
        rng = random.Random(11)

        async def batch(value: float) -> None:
            chosen = rng.sample(job_ids, 6)
            updates = [
                ProgressUpdate(job_id, value, "Rendering", 1, int(value)) for job_id in chosen
            ]
            results = await rng.choice(stores).record_progress_batch(
                updates, urgent=rng.random() < 0.3
            )
            for job_id, result in zip(chosen, results, strict=True):
                if isinstance(result, Job):
                    applied[job_id] += 1
                else:
                    assert isinstance(result, TransitionRejected)

        async def terminal(job_id: str, kind: str) -> None:
            if await write_terminal(rng.choice(stores), job_id, kind, out):
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
    finally:
        for store in stores:
            await store.close()


async def synchronous_mode(store: SqliteJobStore) -> int:
    """The connection's current setting: the one its last commit used (1 NORMAL, 2 FULL)."""
    return int(await store._run(lambda: store._db.execute("PRAGMA synchronous").fetchone()[0]))


async def test_only_progress_commits_without_fsync(store: SqliteJobStore, tmp_path: Path) -> None:
    normal, full = 1, 2
    for job_id in ("a", "b", "c"):
        await new_job(store, job_id)
        assert await synchronous_mode(store) == full
    changes = [
        (
            store.record_progress("a", progress=5, stage="Rendering", eta_seconds=1, render_seq=1),
            normal,
        ),
        (store.fail("b", code="X", message="boom"), full),
        (store.record_progress_batch([ProgressUpdate("a", 6, "Rendering", 1, 2)]), normal),
        (store.cancel("c"), full),
        (
            store.record_progress_batch([ProgressUpdate("a", 7, "Rendering", 1, 3)], urgent=True),
            normal,
        ),
        (store.begin_attempt("a", expected_attempt=1), full),
        (
            store.record_progress("a", progress=8, stage="Rendering", eta_seconds=1, render_seq=1),
            normal,
        ),
        (
            store.complete(
                "a",
                output_path=output_file(tmp_path),
                size_bytes=5,
                duration_seconds=1,
                render_seq=2,
            ),
            full,
        ),
    ]
    for change, mode in changes:
        await change
        assert await synchronous_mode(store) == mode
    assert (await store.get("a")).version == 7


async def test_terminal_changes_overtake_queued_progress_writes(store: SqliteJobStore) -> None:
    job_ids = [f"p{index}" for index in range(200)]
    for job_id in [*job_ids, "finishing"]:
        await new_job(store, job_id)
    committed: list[str] = []
    store.add_listener(lambda job: committed.append(job.id))
    progress = [
        store.record_progress(job_id, progress=5, stage="Rendering", eta_seconds=1, render_seq=1)
        for job_id in job_ids
    ]
    await asyncio.gather(*progress, store.fail("finishing", code="X", message="done"))
    assert len(committed) == 201
    assert committed.index("finishing") < 100, committed.index("finishing")


async def write_terminal(store: JobStore, job_id: str, kind: str, output: str) -> bool:
    """Completes, cancels or fails the job; False when the store rejects the transition."""
    try:
        if kind == "complete":
            await store.complete(
                job_id, output_path=output, size_bytes=5, duration_seconds=1, render_seq=99
            )
        elif kind == "cancel":
            await store.cancel(job_id)
        else:
            await store.fail(job_id, code="FFMPEG_ERROR", message="x")
    except TransitionRejected:
        return False
    return True
