"""Uploads and the listing when the media root is an object store (``--media-root
s3://bucket/prefix``), in the same shape as a local media root (gateway.media).

``POST /api/media``: the body is spooled to a private file of the gateway's own (FFmpeg needs the
whole file: an MP4 may keep its index at the end), checked as for a local media root, then
stored: first its record (the original name and what FFmpeg found, as the hidden sidecar object
``uploads/.<stored name>.json``, the same name a local record has), then the file as
``uploads/<stored name>``. A refusal stores nothing; a failure while storing removes what was
stored (the multipart upload aborts itself); the spooled file is removed either way.

``GET /api/media``: the objects under the prefix (hidden ones left out), newest first, each
upload with its record. Records never change once stored, so they are remembered.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request

from gateway.media import (
    StoredUpload,
    listed_file,
    refuse_declared_too_large,
    spool_and_check,
)
from gateway.upload_record import (
    UPLOADS_FOLDER,
    UploadRecord,
    parse_record,
    record_json,
    record_name,
    upload_name,
)
from videojob.errors import ObjectStoreUnavailable, StoredObjectMissing, VideoJobError
from videojob.storage.location import S3Location
from videojob.storage.readiness import store_problem

if TYPE_CHECKING:
    from videojob.storage.object_store import ListedObject, ObjectStore

logger = logging.getLogger(__name__)

MAX_RECORD_BYTES: Final = 64 * 1024
# What a view may wait for the store: a store that hangs (accepts, never answers) costs a job's
# view this long for its records (then served without the names, asked for again next time),
# and the listing this long (then 503), not every retry of a store call.
RECORD_READ_SECONDS: Final = 2.0
LISTING_SECONDS: Final = 5.0
# Records fetched at once for a listing, and remembered (with their absence) for the next.
RECORD_READS_AT_ONCE: Final = 8
MAX_REMEMBERED_RECORDS: Final = 4096


class StoredMedia:
    """The media root ``location`` in ``store``; uploads spool in ``spool_dir`` (private)."""

    def __init__(self, store: ObjectStore, location: S3Location, spool_dir: Path) -> None:
        self._store = store
        self._location = location
        self._spool_dir = spool_dir
        self._records: OrderedDict[str, UploadRecord | None] = OrderedDict()
        self._record_reads = asyncio.Semaphore(RECORD_READS_AT_ONCE)

    async def problem(self) -> str | None:
        """None when the store answers for the media root, else what is wrong, in one line."""
        return await store_problem(self._store, self._location, flag="--media-root")

    def _key(self, relative: str) -> str:
        return self._location.key_for(relative)

    async def receive_upload(
        self, request: Request, max_bytes: int, filename_hint: str | None
    ) -> StoredUpload:
        refuse_declared_too_large(request, max_bytes)
        spooled = self._spool_dir / f"{uuid.uuid4().hex}.part"
        stored_keys: list[str] = []
        bucket = self._location.bucket
        try:
            upload = await spool_and_check(request, spooled, max_bytes, filename_hint)
            record_key = self._key(f"{UPLOADS_FOLDER}/{record_name(upload.name)}")
            file_key = self._key(f"{UPLOADS_FOLDER}/{upload.name}")
            stored_keys.append(record_key)
            await self._store.put_small(bucket, record_key, record_json(upload.record).encode())
            stored_keys.append(file_key)
            await self._store.upload_file(spooled, bucket, file_key)
        except BaseException:
            # Also when the client went away mid-upload (cancellation): leave nothing behind.
            await self._remove(stored_keys)
            raise
        finally:
            await asyncio.to_thread(spooled.unlink, missing_ok=True)
        self._remember(record_key, upload.record)
        logger.info(
            "stored the upload %s (%d bytes)", self._location.url_of(file_key), upload.size_bytes
        )
        return upload.stored()

    async def _remove(self, keys: list[str]) -> None:
        """Removes what a failed upload stored, as far as the store answers (shielded: a
        cancelled request still cleans up)."""
        for key in reversed(keys):
            try:
                await asyncio.shield(self._store.delete(self._location.bucket, key))
            except VideoJobError as error:
                logger.warning(
                    "could not remove %s after a failed upload: %s",
                    self._location.url_of(key),
                    error.message,
                )

    async def list_media(self, limit: int) -> list[dict[str, Any]]:
        """The objects under the media root (no hidden ones), newest first, at most
        ``limit``, an upload with its original name."""
        prefix = self._location.key_prefix
        found: list[tuple[ListedObject, str]] = []
        keys: set[str] = set()
        try:
            async with asyncio.timeout(LISTING_SECONDS):
                listing = await self._store.list_objects(self._location)
        except TimeoutError:
            raise self._not_answering(LISTING_SECONDS) from None
        for listed in listing:
            relative = listed.key.removeprefix(prefix)
            keys.add(listed.key)
            if not any(part.startswith(".") for part in relative.split("/")):
                found.append((listed, relative))
        found.sort(key=lambda entry: (entry[0].last_modified, entry[1]), reverse=True)
        shown = found[:limit]
        records = await asyncio.gather(
            *(self._record_if_readable(relative, keys) for _, relative in shown)
        )
        return [
            listed_file(relative, listed.size, listed.last_modified, record)
            for (listed, relative), (_, record) in zip(shown, records, strict=True)
        ]

    async def original_names(self, paths: set[str]) -> dict[str, str | None]:
        """For each of ``paths`` the store answered for: the upload's original name, None when
        it is no upload or has no name. A path whose record could not be read is left out (so
        that it is asked for again)."""
        ordered = sorted(paths)
        answers = await asyncio.gather(*(self._record_if_readable(path) for path in ordered))
        return {
            path: record.original_name if record is not None else None
            for path, (readable, record) in zip(ordered, answers, strict=True)
            if readable
        }

    async def _record_if_readable(
        self, relative: str, keys: set[str] | None = None
    ) -> tuple[bool, UploadRecord | None]:
        """(True, ``_record_of``), or (False, None) when the store did not answer (within
        RECORD_READ_SECONDS)."""
        try:
            async with asyncio.timeout(RECORD_READ_SECONDS):
                return True, await self._record_of(relative, keys)
        except TimeoutError:
            error: VideoJobError = self._not_answering(RECORD_READ_SECONDS)
        except VideoJobError as failed:
            error = failed
        logger.warning("the record of the upload %s cannot be read: %s", relative, error)
        return False, None

    def _not_answering(self, seconds: float) -> ObjectStoreUnavailable:
        endpoint = self._store.settings.described_endpoint
        return ObjectStoreUnavailable(
            f"the object store at {endpoint} did not answer within {seconds:g} s",
            endpoint=endpoint,
        )

    async def _record_of(self, relative: str, keys: set[str] | None = None) -> UploadRecord | None:
        """The record of the upload ``relative`` (None: not an upload, or stored without one);
        the store's errors as they are (nothing is remembered then). ``keys``: every key under
        the media root, when known (a record not among them is not read)."""
        name = upload_name(relative)
        if name is None:
            return None
        record_key = self._key(f"{UPLOADS_FOLDER}/{record_name(name)}")
        if record_key in self._records:
            self._records.move_to_end(record_key)
            return self._records[record_key]
        if keys is not None and record_key not in keys:
            return None
        async with self._record_reads:
            try:
                data = await self._store.get_small(
                    self._location.bucket, record_key, MAX_RECORD_BYTES
                )
            except StoredObjectMissing:
                record = None
            else:
                record = parse_record(data.decode(errors="replace"), name)
        self._remember(record_key, record)
        return record

    def _remember(self, record_key: str, record: UploadRecord | None) -> None:
        self._records[record_key] = record
        self._records.move_to_end(record_key)
        while len(self._records) > MAX_REMEMBERED_RECORDS:
            self._records.popitem(last=False)
