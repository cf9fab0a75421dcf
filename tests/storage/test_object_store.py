"""The object store module against a real SeaweedFS: multipart round trips whose checksums the
store confirms, progress, listings, aborts, deletes and presigned ranged links over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from pathlib import Path

import httpx
import pytest

from tests.support.seaweedfs import SeaweedFS
from videojob.errors import StoredObjectMissing
from videojob.storage.location import S3Location
from videojob.storage.object_store import ObjectStore
from videojob.storage.settings import MIN_PART_BYTES

pytestmark = pytest.mark.object_store


def write_random(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def composite_checksums(data: bytes, part_bytes: int) -> tuple[str, str]:
    """The ETag and the composite SHA-256 that S3 defines for ``data`` uploaded in parts of
    ``part_bytes``, computed here independently of the module."""
    parts = [data[start : start + part_bytes] for start in range(0, len(data), part_bytes)]
    md5s = b"".join(hashlib.md5(part).digest() for part in parts)
    sha256s = b"".join(hashlib.sha256(part).digest() for part in parts)
    etag = f"{hashlib.md5(md5s).hexdigest()}-{len(parts)}"
    sha256 = f"{base64.b64encode(hashlib.sha256(sha256s).digest()).decode()}-{len(parts)}"
    return etag, sha256


async def test_a_multipart_round_trip_keeps_every_byte_and_the_store_confirms_its_checksums(
    store: ObjectStore, location: S3Location, tmp_path: Path
) -> None:
    size = 2 * MIN_PART_BYTES + 12345
    data = write_random(tmp_path / "out.mp4", size)
    progress: list[int] = []
    key = location.key_for("attempt-1/out.mp4")

    uploaded = await store.upload_file(
        tmp_path / "out.mp4", location.bucket, key, on_progress=progress.append
    )

    expected_etag, expected_composite = composite_checksums(data, MIN_PART_BYTES)
    assert uploaded.parts == 3
    assert uploaded.size == size
    assert uploaded.sha256_hex == hashlib.sha256(data).hexdigest()
    assert (uploaded.etag, uploaded.composite_sha256) == (expected_etag, expected_composite)
    assert progress == sorted(progress) and len(set(progress)) == len(progress) == 3
    assert progress[-1] == size

    stored = await store.head(location.bucket, key)
    assert stored.size == size
    assert stored.etag == expected_etag
    assert stored.checksum_sha256 == expected_composite
    assert stored.checksum_type == "COMPOSITE"
    assert stored.confirms(uploaded)

    downloaded = tmp_path / "scratch" / "copy.mp4"
    downloaded.parent.mkdir()
    assert await store.download_file(location.bucket, key, downloaded) == size
    assert downloaded.read_bytes() == data
    assert os.listdir(downloaded.parent) == ["copy.mp4"]


async def test_a_stored_object_of_another_size_or_checksum_is_not_confirmed(
    store: ObjectStore, location: S3Location, tmp_path: Path
) -> None:
    write_random(tmp_path / "a.bin", 1000)
    write_random(tmp_path / "b.bin", 1000)
    first = await store.upload_file(tmp_path / "a.bin", location.bucket, location.key_for("a"))
    # The same key written again with other bytes of the same size, behind the first's back.
    await store.upload_file(tmp_path / "b.bin", location.bucket, location.key_for("a"))

    stored = await store.head(location.bucket, location.key_for("a"))

    assert stored.size == first.size
    assert not stored.confirms(first)


@pytest.mark.parametrize("size", [0, 1, MIN_PART_BYTES])
async def test_files_of_one_part_or_none_are_stored_as_one_part(
    store: ObjectStore, location: S3Location, tmp_path: Path, size: int
) -> None:
    data = write_random(tmp_path / "small.bin", size)
    progress: list[int] = []
    key = location.key_for("small.bin")

    uploaded = await store.upload_file(
        tmp_path / "small.bin", location.bucket, key, on_progress=progress.append
    )

    assert (uploaded.parts, uploaded.size, progress) == (1, size, [size])
    assert uploaded.sha256_hex == hashlib.sha256(data).hexdigest()
    assert (await store.head(location.bucket, key)).confirms(uploaded)


async def test_unfinished_uploads_are_listed_until_aborted(
    store: ObjectStore, location: S3Location
) -> None:
    key = location.key_for("attempt-2/out.webm")
    started = await store.client.create_multipart_upload(Bucket=location.bucket, Key=key)

    unfinished = await store.list_unfinished_uploads(location)

    assert [(upload.key, upload.upload_id) for upload in unfinished] == [(key, started["UploadId"])]
    await store.abort_upload(location.bucket, key, unfinished[0].upload_id)
    assert await store.list_unfinished_uploads(location) == []
    # Aborting what is gone already is not an error (a sweep may race a failed upload's abort).
    await store.abort_upload(location.bucket, key, unfinished[0].upload_id)
    assert await store.list_keys(location) == []


async def test_an_upload_that_fails_midway_is_aborted(
    store: ObjectStore, location: S3Location, tmp_path: Path
) -> None:
    write_random(tmp_path / "out.mp4", 2 * MIN_PART_BYTES + 1)

    def refuse_after_first_part(sent: int) -> None:
        raise RuntimeError(f"stopped after {sent} bytes")

    with pytest.raises(RuntimeError, match="stopped after"):
        await store.upload_file(
            tmp_path / "out.mp4",
            location.bucket,
            location.key_for("out.mp4"),
            on_progress=refuse_after_first_part,
        )

    assert await store.list_unfinished_uploads(location) == []
    assert await store.list_keys(location) == []


async def test_a_cancelled_upload_is_aborted(
    seaweedfs: SeaweedFS, location: S3Location, tmp_path: Path
) -> None:
    write_random(tmp_path / "out.mp4", 3 * MIN_PART_BYTES)
    first_part_stored = asyncio.Event()
    # One part at a time: the second is on its way when the cancel comes.
    settings = seaweedfs.settings(part_bytes=MIN_PART_BYTES, upload_concurrency=1)
    async with ObjectStore(settings) as store:
        upload = asyncio.create_task(
            store.upload_file(
                tmp_path / "out.mp4",
                location.bucket,
                location.key_for("out.mp4"),
                on_progress=lambda sent: first_part_stored.set(),
            )
        )
        await first_part_stored.wait()

        upload.cancel()
        with pytest.raises(asyncio.CancelledError):
            await upload

        assert await store.list_unfinished_uploads(location) == []
        assert await store.list_keys(location) == []


async def test_keys_are_listed_under_their_prefix_and_deleted(
    store: ObjectStore, location: S3Location, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    write_random(tmp_path / "f", 10)
    for name in ("job-b/out.mp4", "job-a/out.mp4", "job-a/part-1.mp4"):
        await store.upload_file(tmp_path / "f", location.bucket, location.key_for(name))
    neighbour = S3Location(location.bucket, f"{location.prefix}-other")
    await store.upload_file(tmp_path / "f", location.bucket, neighbour.key_for("x"))

    assert await store.list_keys(location) == [
        location.key_for(name) for name in ("job-a/out.mp4", "job-a/part-1.mp4", "job-b/out.mp4")
    ]

    await store.delete(location.bucket, location.key_for("job-a/out.mp4"))
    await store.delete(location.bucket, location.key_for("job-a/out.mp4"))  # gone: no error
    assert await store.list_keys(location) == [
        location.key_for("job-a/part-1.mp4"),
        location.key_for("job-b/out.mp4"),
    ]
    with pytest.raises(StoredObjectMissing) as missing:
        await store.head(location.bucket, location.key_for("job-a/out.mp4"))
    assert missing.value.location == location.url_of(location.key_for("job-a/out.mp4"))
    with pytest.raises(StoredObjectMissing):
        await store.download_file(
            location.bucket, location.key_for("job-a/out.mp4"), tmp_path / "never"
        )
    assert not (tmp_path / "never").exists()
    assert not (tmp_path / ".never.partial").exists()


async def test_a_presigned_link_serves_ranges_over_http_and_only_with_its_signature(
    seaweedfs: SeaweedFS, location: S3Location, tmp_path: Path
) -> None:
    data = write_random(tmp_path / "out.mp4", 4096)
    # Clients reach the store by another name than this process does.
    public = f"http://localhost:{seaweedfs.s3_port}"
    async with ObjectStore(seaweedfs.settings(public_endpoint=public)) as store:
        key = location.key_for("out.mp4")
        await store.upload_file(tmp_path / "out.mp4", location.bucket, key)
        link = await store.presign_get(location.bucket, key, expires_seconds=300)

    assert link.startswith(f"{public}/{location.bucket}/{key}?")
    async with httpx.AsyncClient(timeout=10) as http:
        whole = await http.get(link)
        ranged = await http.get(link, headers={"Range": "bytes=100-1123"})
        tail = await http.get(link, headers={"Range": "bytes=-10"})
        tampered = await http.get(link.replace("X-Amz-Signature=", "X-Amz-Signature=0"))
        unsigned = await http.get(link.partition("?")[0])

    assert (whole.status_code, whole.content) == (200, data)
    assert (ranged.status_code, ranged.content) == (206, data[100:1124])
    assert ranged.headers["content-range"] == f"bytes 100-1123/{len(data)}"
    assert (tail.status_code, tail.content) == (206, data[-10:])
    assert tampered.status_code == 403
    assert unsigned.status_code == 403
