"""What a process is told when the object store refuses it or goes away: one line naming the
flag or variable to fix, or a domain error naming the endpoint, never a hang."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.ports import unused_address
from tests.support.seaweedfs import SeaweedFS
from videojob.errors import ObjectStoreMisconfigured, ObjectStoreUnavailable
from videojob.storage.location import S3Location
from videojob.storage.object_store import ObjectStore
from videojob.storage.settings import MIN_PART_BYTES, StoreSettings, StoreTimeouts

pytestmark = pytest.mark.object_store

# Short bounds, so that a store that went away fails the call within seconds.
QUICK = StoreTimeouts(connect_seconds=1.0, read_seconds=3.0, attempts=2)


async def misconfiguration(settings: StoreSettings, location: S3Location) -> str:
    async with ObjectStore(settings) as store:
        with pytest.raises(ObjectStoreMisconfigured) as refused:
            await store.check(location, flag="--output-dir")
    message = str(refused.value)
    assert "\n" not in message
    assert refused.value.setting in message
    assert settings.secret_key is not None and settings.secret_key not in message
    return refused.value.setting


async def test_the_start_up_check_passes_with_the_store_s_own_credentials(
    seaweedfs: SeaweedFS,
) -> None:
    async with ObjectStore(seaweedfs.settings()) as store:
        await store.check(seaweedfs.location("renders"), flag="--output-dir")


async def test_a_wrong_secret_is_refused_naming_its_variable(seaweedfs: SeaweedFS) -> None:
    settings = seaweedfs.settings(secret_key="not-" + seaweedfs.secret_key)

    assert await misconfiguration(settings, seaweedfs.location()) == "AWS_SECRET_ACCESS_KEY"


async def test_an_unknown_access_key_is_refused_naming_its_variable(seaweedfs: SeaweedFS) -> None:
    settings = seaweedfs.settings(access_key="nobody")

    assert await misconfiguration(settings, seaweedfs.location()) == "AWS_ACCESS_KEY_ID"


async def test_a_missing_bucket_is_refused_naming_the_flag(seaweedfs: SeaweedFS) -> None:
    async with ObjectStore(seaweedfs.settings()) as store:
        with pytest.raises(ObjectStoreMisconfigured) as refused:
            await store.check(S3Location("no-such-bucket", "renders"), flag="--output-dir")

    assert str(refused.value) == (
        f"--output-dir: bucket 'no-such-bucket' does not exist at {seaweedfs.endpoint}"
    )


async def test_a_store_that_does_not_answer_is_unavailable_naming_the_endpoint() -> None:
    endpoint = f"http://{unused_address()}"
    settings = StoreSettings(endpoint=endpoint, access_key="k", secret_key="s", timeouts=QUICK)

    async with ObjectStore(settings) as store:
        with pytest.raises(ObjectStoreUnavailable) as unavailable:
            await store.check(S3Location("videojob"), flag="--output-dir")

    assert str(unavailable.value).startswith(f"AWS_ENDPOINT_URL: the object store at {endpoint}")
    assert unavailable.value.error_metadata == {"endpoint": endpoint}


async def test_a_store_killed_mid_upload_fails_the_upload_and_the_download_clearly(
    private_seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    source = tmp_path / "out.mp4"
    source.write_bytes(os.urandom(4 * MIN_PART_BYTES))
    location = private_seaweedfs.location("renders")
    settings = private_seaweedfs.settings(
        timeouts=QUICK, part_bytes=MIN_PART_BYTES, upload_concurrency=1
    )
    progress: list[int] = []

    def kill_the_store_after_the_first_part(sent: int) -> None:
        progress.append(sent)
        if len(progress) == 1:
            private_seaweedfs.kill()

    async with ObjectStore(settings) as store:
        await store.upload_file(source, location.bucket, location.key_for("kept.mp4"))
        with pytest.raises(ObjectStoreUnavailable) as unavailable:
            await store.upload_file(
                source,
                location.bucket,
                location.key_for("out.mp4"),
                on_progress=kill_the_store_after_the_first_part,
            )
        with pytest.raises(ObjectStoreUnavailable):
            await store.download_file(
                location.bucket, location.key_for("kept.mp4"), tmp_path / "copy.mp4"
            )

    assert progress == [MIN_PART_BYTES]
    assert str(unavailable.value).startswith(
        f"AWS_ENDPOINT_URL: the object store at {private_seaweedfs.endpoint} did not answer "
        f"upload of s3://{location.bucket}/{location.key_for('out.mp4')}"
    )
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"]
