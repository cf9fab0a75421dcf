"""The export service's check of a stored output before COMPLETED, and its removal, on a real
SeaweedFS: there, of the size and with the store's checksum the render reported, or a problem
saying what is wrong (a missing object may yet appear; a wrong one will not)."""

from __future__ import annotations

from pathlib import Path

import pytest

from export_service.stored_outputs import OBJECT_CHECK_SECONDS, Outputs
from tests.support.seaweedfs import SeaweedFS
from tests.support.tcp_proxy import TcpProxy
from videojob.output_check import OutputFault
from videojob.storage.location import S3Location
from videojob.storage.object_store import ObjectStore, UploadedObject

pytestmark = pytest.mark.object_store


async def stored(store: ObjectStore, location: S3Location, tmp_path: Path) -> UploadedObject:
    source = tmp_path / "out.mp4"
    source.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 40)
    return await store.upload_file(source, location.bucket, location.key_for("r1.mp4"))


async def test_an_object_as_reported_passes(
    store: ObjectStore, location: S3Location, tmp_path: Path
) -> None:
    uploaded = await stored(store, location, tmp_path)
    outputs = Outputs(store)
    problem = await outputs.check(
        uploaded.url, size_bytes=uploaded.size, store_checksum=uploaded.composite_sha256
    )
    assert problem is None


async def test_a_wrong_checksum_or_size_is_a_lasting_problem(
    store: ObjectStore, location: S3Location, tmp_path: Path
) -> None:
    uploaded = await stored(store, location, tmp_path)
    outputs = Outputs(store)
    wrong_checksum = await outputs.check(
        uploaded.url, size_bytes=uploaded.size, store_checksum="AAAA-1"
    )
    assert wrong_checksum is not None and wrong_checksum.fault is OutputFault.CHECKSUM_MISMATCH
    assert wrong_checksum.lasting and uploaded.url in wrong_checksum.reason
    wrong_size = await outputs.check(
        uploaded.url, size_bytes=uploaded.size + 1, store_checksum=uploaded.composite_sha256
    )
    assert wrong_size is not None and wrong_size.fault is OutputFault.SIZE_MISMATCH
    assert wrong_size.lasting


async def test_a_missing_object_may_yet_appear_and_removal_leaves_none(
    store: ObjectStore, location: S3Location, tmp_path: Path
) -> None:
    uploaded = await stored(store, location, tmp_path)
    outputs = Outputs(store)
    assert await outputs.remove(uploaded.url)
    assert await store.list_keys(location) == []
    missing = await outputs.check(
        uploaded.url, size_bytes=uploaded.size, store_checksum=uploaded.composite_sha256
    )
    assert missing is not None and missing.fault is OutputFault.MISSING
    assert not missing.lasting
    assert await outputs.remove(uploaded.url)  # removing what is gone answers too


async def test_without_a_store_an_object_cannot_be_confirmed() -> None:
    problem = await Outputs().check("s3://videojob-test/a/r1.mp4", size_bytes=1, store_checksum="x")
    assert problem is not None and "--render-output-dir" in problem.reason


async def test_a_store_that_hangs_is_unreachable_for_the_look_not_a_held_check(
    seaweedfs: SeaweedFS, location: S3Location, store: ObjectStore, tmp_path: Path
) -> None:
    uploaded = await stored(store, location, tmp_path)
    proxy = await TcpProxy("127.0.0.1", seaweedfs.s3_port).start()
    try:
        async with ObjectStore(seaweedfs.settings(endpoint=f"http://{proxy.address}")) as hung:
            proxy.stall()
            problem = await Outputs(hung).check(
                uploaded.url, size_bytes=uploaded.size, store_checksum=uploaded.composite_sha256
            )
    finally:
        await proxy.close()
    assert problem is not None and problem.fault is OutputFault.UNREACHABLE, problem
    assert not problem.lasting
    assert f"did not answer within {OBJECT_CHECK_SECONDS:g} s" in problem.reason, problem
