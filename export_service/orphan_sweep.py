"""The orphan sweep (``--orphan-sweep-interval``): every interval, the objects and unfinished
multipart uploads under the render services' output location (and the gateway's unfinished
uploads under the media root), or the files in their local output directory, that no job's
record claims are removed. What is an orphan is decided in export_service.orphans, from the
records alone and never by age; this module only lists, reads and removes (a directory's
listing and unlinks in a thread: never on the event loop).

The order matters: the store (or the directory) is listed first, the records are read after.
An output's render id is placed on its job's record before its render starts, so a record read
after the listing knows every attempt whose object, upload or file the listing saw (a job not
found then has no record: never created, or deleted).

Every export replica on one PostgreSQL database may sweep at the same time; nothing needs to be
coordinated: each decides from the records as committed (a terminal record never changes, and no
key is claimed again once its job is deleted), and a delete or an abort of what another replica
removed first answers all the same.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from export_service.background import BackgroundLoop
from export_service.orphans import (
    Orphan,
    Root,
    Stored,
    StoredKind,
    files_named,
    jobs_named,
    local_orphans,
    media_orphans,
    output_orphans,
)
from export_service.store import JobStore
from export_service.store.base import JOBS_AMONG_MAX
from export_service.store.records import Job
from videojob import metrics
from videojob.errors import ObjectStoreUnavailable, VideoJobError

if TYPE_CHECKING:
    from videojob.storage.location import S3Location
    from videojob.storage.object_store import ObjectStore

logger = logging.getLogger(__name__)


async def listed_under(objects: ObjectStore, location: S3Location) -> list[Stored]:
    """The unfinished uploads under ``location``, then its objects (listed in that order: see
    orphans.media_orphans)."""
    uploads = await objects.list_unfinished_uploads(location)
    stored = await objects.list_objects(location)
    return [Stored(StoredKind.UPLOAD, upload.key, upload.upload_id) for upload in uploads] + [
        Stored(StoredKind.OBJECT, listed.key) for listed in stored
    ]


def files_in(directory: Path) -> list[str]:
    """Blocking. The names of the regular files directly in ``directory`` (OSError when it
    cannot be listed)."""
    with os.scandir(directory) as entries:
        return [entry.name for entry in entries if entry.is_file(follow_symlinks=False)]


def remove_file(directory: Path, name: str) -> bool:
    """Blocking. True once no file ``name`` is left in ``directory`` (another replica sharing
    the directory may have removed it first)."""
    try:
        os.unlink(directory / name)
    except FileNotFoundError:
        return True
    except OSError as error:
        logger.warning("orphan sweep: could not remove the file %s: %s", directory / name, error)
        return False
    return True


class OrphanSweeper:
    """Sweeps ``outputs`` (the render services' output location) and ``media`` (the media
    root) in ``objects``, and ``local_outputs`` (the render services' output directory as this
    process sees it), every ``interval`` seconds once started."""

    def __init__(
        self,
        store: JobStore,
        objects: ObjectStore | None,
        *,
        outputs: S3Location | None,
        media: S3Location | None,
        interval: float,
        local_outputs: Path | None = None,
    ) -> None:
        self._store = store
        self._objects = objects
        self._outputs = outputs if objects is not None else None
        self._media = media if objects is not None else None
        self._local_outputs = local_outputs
        self._interval = interval
        self._loop = BackgroundLoop("orphan-sweep", self._run)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def sweep_once(self) -> Counter[str]:
        """One pass over every location: what it removed, by kind (Orphan.label).
        A failed listing or read of the records (StoreUnavailable, ObjectStoreUnavailable...)
        ends it before anything is judged; an unreachable store ends the removals too."""
        removed: Counter[str] = Counter()
        if self._local_outputs is not None:
            removed += await self._sweep_directory(self._local_outputs)
        if self._objects is None:
            return removed
        orphans: list[Orphan] = []
        if self._outputs is not None:
            listed = await listed_under(self._objects, self._outputs)
            records = await self._records(jobs_named(listed, self._outputs))
            orphans += output_orphans(listed, self._outputs, records)
        if self._media is not None:
            orphans += media_orphans(await listed_under(self._objects, self._media), self._media)
        for orphan in orphans:
            if await self._remove(self._objects, orphan):
                removed[orphan.label] += 1
                metrics.ORPHANS_REMOVED.labels(orphan.label).inc()
        return removed

    async def _records(self, job_ids: set[str]) -> dict[str, Job]:
        ordered = sorted(job_ids)
        records: dict[str, Job] = {}
        for start in range(0, len(ordered), JOBS_AMONG_MAX):
            for job in await self._store.jobs_among(ordered[start : start + JOBS_AMONG_MAX]):
                records[job.id] = job
        return records

    async def _sweep_directory(self, directory: Path) -> Counter[str]:
        """The files of ``directory`` that no record claims, removed: listed first, the records
        read after (as for the store). A directory that cannot be listed is logged and left
        for the next pass."""
        removed: Counter[str] = Counter()
        try:
            names = await asyncio.to_thread(files_in, directory)
        except OSError as error:
            logger.warning("orphan sweep: could not list %s: %s", directory, error)
            return removed
        records = await self._records(files_named(names))
        for orphan in local_orphans(names, records):
            if not await asyncio.to_thread(remove_file, directory, orphan.stored.key):
                continue
            removed[orphan.label] += 1
            metrics.ORPHANS_REMOVED.labels(orphan.label).inc()
            logger.info(
                "orphan sweep: removed the file %s: %s", directory / orphan.stored.key, orphan.why
            )
        return removed

    async def _remove(self, objects: ObjectStore, orphan: Orphan) -> bool:
        """True once it is gone (an unreachable store ends the pass: ObjectStoreUnavailable)."""
        location = self._outputs if orphan.root is Root.OUTPUT else self._media
        assert location is not None
        stored = orphan.stored
        try:
            if stored.kind is StoredKind.UPLOAD:
                await objects.abort_upload(location.bucket, stored.key, stored.upload_id)
            else:
                await objects.delete(location.bucket, stored.key)
        except ObjectStoreUnavailable:
            raise
        except VideoJobError as error:
            logger.warning(
                "orphan sweep: could not remove %s %s: %s",
                stored.kind.value,
                location.url_of(stored.key),
                error.message,
            )
            return False
        logger.info(
            "orphan sweep: removed the %s %s: %s",
            stored.kind.value,
            location.url_of(stored.key),
            orphan.why,
        )
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                removed = await self.sweep_once()
            except VideoJobError as error:
                # The database or the store did not answer (or refused the listing): nothing
                # was judged; the next pass tries again.
                logger.warning("orphan sweep: skipped this time: %s", error.message)
                continue
            if removed:
                logger.info("orphan sweep: removed %s", dict(sorted(removed.items())))
