"""An ObjectStore on the session's SeaweedFS, and a key prefix of each test's own."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from tests.support.seaweedfs import SeaweedFS
from videojob.storage.location import S3Location
from videojob.storage.object_store import ObjectStore
from videojob.storage.settings import MIN_PART_BYTES


@pytest.fixture
def location(seaweedfs: SeaweedFS) -> S3Location:
    """A prefix of this test alone in the shared store's bucket."""
    return seaweedfs.location(f"tests/{secrets.token_hex(6)}")


@pytest.fixture
async def store(seaweedfs: SeaweedFS) -> AsyncIterator[ObjectStore]:
    """The shared store with S3's smallest parts, so a few MiB make several parts."""
    async with ObjectStore(seaweedfs.settings(part_bytes=MIN_PART_BYTES)) as opened:
        yield opened
