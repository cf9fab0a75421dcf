"""Whether the object store answers for a location, as health and readiness report it: bounded
by a short timeout of its own (a probe must not wait for every retry of a store call)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from videojob.errors import VideoJobError

if TYPE_CHECKING:
    from videojob.storage.location import S3Location
    from videojob.storage.object_store import ObjectStore

STORE_CHECK_TIMEOUT_SECONDS: Final = 2.0


async def store_problem(store: ObjectStore, location: S3Location, *, flag: str) -> str | None:
    """None when the store answers for ``location``, else why not, in one line (naming
    ``flag`` for a missing bucket)."""
    try:
        async with asyncio.timeout(STORE_CHECK_TIMEOUT_SECONDS):
            await store.check(location, flag=flag)
    except TimeoutError:
        endpoint = store.settings.described_endpoint
        within = STORE_CHECK_TIMEOUT_SECONDS
        return f"the object store at {endpoint} did not answer within {within:g} s"
    except VideoJobError as error:
        return error.message
    return None
