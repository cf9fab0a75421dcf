"""The orphan sweep on a real SeaweedFS and a real job database: what no job's record claims is
removed (objects and unfinished uploads of failed, cancelled, superseded, deleted and unknown
jobs' renders, the gateway's disowned uploads), and nothing else: a completed job's output, a
running job's uploads however slow, keys that name no render, the users' media."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from export_service.orphan_sweep import OrphanSweeper
from export_service.store import JobStore, open_store
from export_service.store.records import RenderAttempt, render_id_for
from tests.support.postgres import create_schema
from tests.support.seaweedfs import SeaweedFS
from videojob import metrics
from videojob.storage.location import S3Location
from videojob.storage.object_store import ObjectStore

pytestmark = pytest.mark.object_store


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
    ]
)
async def jobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        url = await create_schema(request.getfixturevalue("postgres_database"))
    store = await open_store(url, "sweep-test")
    yield store
    await store.close()


@pytest.fixture
def outputs(seaweedfs: SeaweedFS) -> S3Location:
    return seaweedfs.location(f"tests/{secrets.token_hex(6)}/renders")


@pytest.fixture
def media(seaweedfs: SeaweedFS) -> S3Location:
    return seaweedfs.location(f"tests/{secrets.token_hex(6)}/media")


def sweeper(
    jobs: JobStore, store: ObjectStore, outputs: S3Location, media: S3Location
) -> OrphanSweeper:
    return OrphanSweeper(jobs, store, outputs=outputs, media=media, interval=60)


async def new_job(jobs: JobStore, attempts: int = 1) -> str:
    """A job placed on ``attempts`` attempts in turn (the last one current)."""
    job_id = uuid.uuid4().hex
    await jobs.create(job_id=job_id, request_id=f"req-{job_id}", spec=b"spec")
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            await jobs.begin_attempt(job_id, expected_attempt=attempt - 1)
        placed = RenderAttempt(
            attempt, render_id_for(job_id, attempt), "render-1", "127.0.0.1:1", datetime.now(UTC)
        )
        await jobs.place_attempt(job_id, placed=placed, superseded_outcome="superseded")
    return job_id


async def put(store: ObjectStore, location: S3Location, name: str) -> str:
    key = location.key_for(name)
    await store.put_small(location.bucket, key, b"\x00\x00\x00\x18ftypisom" + name.encode())
    return key


async def start_upload(store: ObjectStore, location: S3Location, name: str) -> str:
    """An unfinished multipart upload of ``name`` with one part sent: a render's slow upload
    as the store sees it (or one whose uploader is gone: the store cannot tell)."""
    key = location.key_for(name)
    created = await store.client.create_multipart_upload(
        Bucket=location.bucket, Key=key, ChecksumAlgorithm="SHA256"
    )
    await store.client.upload_part(
        Bucket=location.bucket,
        Key=key,
        UploadId=created["UploadId"],
        PartNumber=1,
        Body=b"x" * 1024,
    )
    return key


async def left(store: ObjectStore, location: S3Location) -> tuple[set[str], set[str]]:
    keys = set(await store.list_keys(location))
    uploads = {upload.key for upload in await store.list_unfinished_uploads(location)}
    return keys, uploads


def removed_count(kind: str) -> float:
    value = metrics.EXPORT.get_sample_value("videojob_orphans_removed_total", {"kind": kind})
    assert value is not None
    return value


async def test_what_no_record_claims_goes_and_the_rest_stays(
    jobs: JobStore, store: ObjectStore, outputs: S3Location, media: S3Location
) -> None:
    # A job completed on its second attempt: its output stays; the first attempt's object
    # (that render finished after all), its upload, and a second upload of the final key go.
    completed = await new_job(jobs, attempts=2)
    final = await put(store, outputs, f"{completed}-a2.mp4")
    await jobs.complete(
        completed,
        output_path=outputs.url_of(final),
        size_bytes=30,
        duration_seconds=1,
        render_seq=9,
    )
    superseded = await put(store, outputs, f"{completed}.mp4")
    superseded_upload = await start_upload(store, outputs, f"{completed}.webm")
    twice = await start_upload(store, outputs, f"{completed}-a2.mp4")
    # Failed, cancelled (between upload and commit), deleted and unknown jobs claim nothing.
    failed = await new_job(jobs)
    failed_key = await put(store, outputs, f"{failed}.mp4")
    await jobs.fail(failed, code="VERIFICATION_FAILED", message="wrong checksum")
    cancelled = await new_job(jobs, attempts=2)
    cancelled_key = await put(store, outputs, f"{cancelled}-a2.mp4")
    cancelled_upload = await start_upload(store, outputs, f"{cancelled}.mp4")
    await jobs.cancel(cancelled)
    await jobs.render_released(cancelled)
    deleted = await new_job(jobs)
    await jobs.complete(
        deleted, output_path="s3://elsewhere/x.mp4", size_bytes=1, duration_seconds=1, render_seq=1
    )
    await jobs.delete(deleted)
    deleted_key = await put(store, outputs, f"{deleted}.mp4")
    unknown_key = await put(store, outputs, f"{uuid.uuid4().hex}-a3.mp4")
    unknown_upload = await start_upload(store, outputs, f"{uuid.uuid4().hex}.mp4")
    # A running job keeps everything: its current attempt's slow upload, a superseded
    # attempt's object (its owner releases it), an upload of a later attempt.
    running = await new_job(jobs, attempts=2)
    await jobs.record_progress(running, progress=99, stage="Uploading", eta_seconds=0, render_seq=5)
    live = {
        await start_upload(store, outputs, f"{running}-a2.mp4"),
        await start_upload(store, outputs, f"{running}-a3.mp4"),
    }
    running_superseded = await put(store, outputs, f"{running}.mp4")
    queued = await new_job(jobs)
    queued_upload = await start_upload(store, outputs, f"{queued}.mp4")
    foreign = await put(store, outputs, "notes.txt")
    # The media root: the gateway's uploads with their records stay, users' files stay.
    await put(store, media, "uploads/.live.mp4.json")
    media_live = await start_upload(store, media, "uploads/live.mp4")
    media_disowned = await start_upload(store, media, "uploads/disowned.mp4")
    await put(store, media, "uploads/done.mp4")
    await put(store, media, "uploads/.done.mp4.json")
    media_twice = await start_upload(store, media, "uploads/done.mp4")
    user_file = await put(store, media, "clips/holiday.mp4")
    before = {kind: removed_count(kind) for kind in metrics.ORPHAN_KINDS}

    removed = await sweeper(jobs, store, outputs, media).sweep_once()

    assert removed == {"output_object": 5, "output_upload": 4, "media_upload": 2}, removed
    keys, uploads = await left(store, outputs)
    assert keys == {final, running_superseded, foreign}
    assert uploads == live | {queued_upload}
    for gone in (superseded, failed_key, cancelled_key, deleted_key, unknown_key):
        assert gone not in keys
    for gone in (superseded_upload, twice, cancelled_upload, unknown_upload):
        assert gone not in uploads
    media_keys, media_uploads = await left(store, media)
    assert user_file in media_keys and media.key_for("uploads/done.mp4") in media_keys
    assert media_uploads == {media_live}
    assert media_disowned not in media_uploads and media_twice not in media_uploads
    after = {kind: removed_count(kind) for kind in metrics.ORPHAN_KINDS}
    assert {kind: after[kind] - before[kind] for kind in after} == {
        kind: removed[kind] for kind in metrics.ORPHAN_KINDS
    }

    # Once the running job fails, its uploads and its superseded attempt's object go too.
    await jobs.fail(running, code="RENDER_LOST", message="gone")
    again = await sweeper(jobs, store, outputs, media).sweep_once()
    assert again == {"output_object": 1, "output_upload": 2}, again
    keys, uploads = await left(store, outputs)
    assert keys == {final, foreign} and uploads == {queued_upload}


async def test_replicas_sweeping_together_remove_each_orphan_once_and_leave_the_rest(
    jobs: JobStore, store: ObjectStore, outputs: S3Location, media: S3Location
) -> None:
    """Several export replicas may sweep at the same moment: each decides from the records,
    and removing what another removed first answers all the same."""
    failed = await new_job(jobs, attempts=2)
    orphans = {
        await put(store, outputs, f"{failed}.mp4"),
        await put(store, outputs, f"{failed}-a2.mp4"),
    }
    orphan_upload = await start_upload(store, outputs, f"{failed}-a2.webm")
    await jobs.fail(failed, code="RENDER_LOST", message="gone")
    running = await new_job(jobs)
    live = await start_upload(store, outputs, f"{running}.mp4")

    passes = await asyncio.gather(
        *(sweeper(jobs, store, outputs, media).sweep_once() for _ in range(3))
    )

    # Each pass saw them all (and either removed them or found them removed already).
    assert all(set(done) <= {"output_object", "output_upload"} for done in passes), passes
    keys, uploads = await left(store, outputs)
    assert not keys & orphans and orphan_upload not in uploads
    assert uploads == {live}
    assert await sweeper(jobs, store, outputs, media).sweep_once() == {}
