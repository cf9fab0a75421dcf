"""Outputs that are objects in a store (``s3://bucket/key``, as a render service with an
``s3://`` output directory reports them): the check before COMPLETED and their removal. Every
other output is a file (videojob.output_check, lifecycle.remove_output)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Final

from videojob.errors import (
    ObjectStoreFailed,
    ObjectStoreMisconfigured,
    ObjectStoreUnavailable,
    StoredObjectMissing,
)
from videojob.limits import CONTAINERS
from videojob.output_check import OutputFault, OutputProblem, check_output
from videojob.storage.location import (
    BadLocation,
    S3Location,
    is_stored_object,
    parse_location,
)

if TYPE_CHECKING:
    from videojob.storage.object_store import ObjectStore

logger = logging.getLogger(__name__)

# What one look at a stored output may take: a store that hangs (accepts, never answers) is
# unreachable for this look, not a tracker held for every retry of a store call.
OBJECT_CHECK_SECONDS: Final = 5.0


def object_of(path: str) -> tuple[str, str] | None:
    """The bucket and key of an ``s3://bucket/key`` output; None when it names no object."""
    try:
        location = parse_location(path)
    except BadLocation:
        return None
    if not isinstance(location, S3Location) or not location.prefix:
        return None
    return location.bucket, location.prefix


def remove_output(path: str) -> bool:
    """Blocking. True once no file is left at ``path`` (a job's output: of a job deleted, or of
    one that did not complete)."""
    if not path:
        return True
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return True
    except OSError as error:
        logger.warning("could not remove the output %s: %s", path, error)
        return False
    logger.info("removed the output %s", path)
    return True


class Outputs:
    """Checks and removes a job's output, a file or an object. ``store`` None: this process
    reaches no object store (no ``s3://`` --render-output-dir), so an object cannot be checked
    (a completion naming one fails verification) nor removed (logged). ``location``: the render
    services' output location in that store, where a render's object is named by its render id
    (``remove_render_outputs``)."""

    def __init__(
        self, store: ObjectStore | None = None, location: S3Location | None = None
    ) -> None:
        self.store = store
        self.location = location

    async def check(
        self, path: str, *, size_bytes: int, store_checksum: str = ""
    ) -> OutputProblem | None:
        """None when the output is there as the render reported it: a file of ``size_bytes``,
        or an object of ``size_bytes`` with the store's checksum ``store_checksum``. A missing
        or unreachable one is a passing problem (it may yet be seen); the rest last."""
        if not is_stored_object(path):
            result = await asyncio.to_thread(check_output, path, size_bytes=size_bytes)
            return result if isinstance(result, OutputProblem) else None
        return await self._check_object(path, size_bytes, store_checksum)

    async def _check_object(
        self, url: str, size_bytes: int, store_checksum: str
    ) -> OutputProblem | None:
        where = object_of(url)
        if where is None:
            return OutputProblem(OutputFault.NO_PATH, f"output {url!r} names no object")
        if self.store is None:
            return OutputProblem(
                OutputFault.UNREACHABLE,
                f"output {url} is in an object store this export service does not reach "
                "(--render-output-dir)",
            )
        try:
            async with asyncio.timeout(OBJECT_CHECK_SECONDS):
                info = await self.store.head(*where)
        except TimeoutError:
            endpoint = self.store.settings.described_endpoint
            return OutputProblem(
                OutputFault.UNREACHABLE,
                f"output {url} cannot be reached (the object store at {endpoint} did not "
                f"answer within {OBJECT_CHECK_SECONDS:g} s)",
            )
        except StoredObjectMissing:
            return OutputProblem(OutputFault.MISSING, f"output {url} is not in the object store")
        except (ObjectStoreUnavailable, ObjectStoreMisconfigured, ObjectStoreFailed) as error:
            return OutputProblem(
                OutputFault.UNREACHABLE, f"output {url} cannot be reached ({error.message})"
            )
        if info.size == 0:
            return OutputProblem(OutputFault.EMPTY, f"output {url} is empty")
        if info.size != size_bytes:
            return OutputProblem(
                OutputFault.SIZE_MISMATCH,
                f"output {url} has {info.size} bytes, the render reported {size_bytes}",
            )
        stored = info.checksum_sha256 if info.checksum_sha256 is not None else info.etag
        if not store_checksum or stored != store_checksum:
            return OutputProblem(
                OutputFault.CHECKSUM_MISMATCH,
                f"output {url} has the store's checksum {stored!r}, the render reported "
                f"{store_checksum!r}",
            )
        return None

    async def remove(self, path: str) -> bool:
        """True once no file or object is left at ``path`` (a job's output: of a job deleted,
        or of one that did not complete)."""
        if not path:
            return True
        if not is_stored_object(path):
            return await asyncio.to_thread(remove_output, path)
        where = object_of(path)
        if where is None:
            return True
        if self.store is None:
            logger.warning("cannot remove the output %s: no object store is configured", path)
            return False
        try:
            await self.store.delete(*where)
        except (ObjectStoreUnavailable, ObjectStoreMisconfigured, ObjectStoreFailed) as error:
            logger.warning("could not remove the output %s: %s", path, error.message)
            return False
        logger.info("removed the output %s", path)
        return True

    async def remove_render_outputs(self, render_id: str) -> bool:
        """After a render service forgot a render (it restarted; the render's outcome is
        unknown): whatever that render may have stored under the output location, its object
        and any unfinished upload of it, for each container. True once none is left (or no
        store is known here); False when the store did not answer (logged; the orphan sweep
        takes it later). Only for a render whose job does not claim it: a superseded attempt,
        or the attempt of a failed or cancelled job."""
        if self.store is None or self.location is None:
            return True
        bucket = self.location.bucket
        for container in CONTAINERS:
            key = self.location.key_for(f"{render_id}.{container}")
            try:
                aborted = await self.store.abort_uploads_of(bucket, key)
                await self.store.delete(bucket, key)
            except (ObjectStoreUnavailable, ObjectStoreMisconfigured, ObjectStoreFailed) as error:
                logger.warning(
                    "could not remove what render %s stored: %s", render_id, error.message
                )
                return False
            if aborted:
                logger.info(
                    "aborted %d unfinished upload(s) of %s", aborted, self.location.url_of(key)
                )
        return True
