"""A render's input files when the media root is an object store (``--media-root
s3://bucket/prefix``): their keys are checked with HEAD when a render is submitted, and fetched
into a folder of the render's own under the scratch directory before FFmpeg runs (FFmpeg reads
only local files), which is removed once the render has ended, however it ended.

Input paths stay relative to the media root: ``clips/a.mp4`` is the key ``<prefix>/clips/a.mp4``,
checked as a local path is (videojob.spec_validation) before any call to the store. An object
that is not there is the same refusal naming the field as a missing local file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

from videojob.errors import InvalidArgument, ObjectStoreUnavailable, StoredObjectMissing
from videojob.render.v1 import spec_pb2
from videojob.spec_validation import check_relative_path
from videojob.storage.location import BadLocation, S3Location

if TYPE_CHECKING:
    from videojob.storage.object_store import ObjectStore

logger = logging.getLogger(__name__)

INPUTS_FOLDER: Final = "inputs"
# What the HEADs of a submission may take in all: the export service's input check waits a few
# seconds only, and a store that does not answer within this is answered as unavailable.
HEAD_SECONDS: Final = 1.5


def input_fields(spec: spec_pb2.RenderSpec) -> list[tuple[str, str]]:
    """Every input file of ``spec`` as (field, path relative to the media root)."""
    source = spec.source
    kind = source.WhichOneof("kind")
    prefix = "spec.source"
    if kind == "transcode":
        return [(f"{prefix}.transcode.input_path", source.transcode.input_path)]
    if kind != "slideshow":
        return []
    show = source.slideshow
    fields = [
        (f"{prefix}.slideshow.slides[{index}].image_path", slide.image_path)
        for index, slide in enumerate(show.slides)
    ]
    if show.audio_path:
        fields.append((f"{prefix}.slideshow.audio_path", show.audio_path))
    if show.subtitles_path:
        fields.append((f"{prefix}.slideshow.subtitles_path", show.subtitles_path))
    return fields


class StoredInputs:
    """The inputs of this render service's renders, in ``location`` of ``store``."""

    def __init__(self, store: ObjectStore, location: S3Location, scratch_dir: Path) -> None:
        self._store = store
        self._location = location
        self._folders = scratch_dir / INPUTS_FOLDER

    def _key(self, field: str, path: str) -> str:
        check_relative_path(path, field)
        try:
            return self._location.key_for(path)
        except BadLocation as why:
            raise InvalidArgument(field, str(why)) from None

    async def check_exist(self, spec: spec_pb2.RenderSpec) -> None:
        """InvalidArgument naming the field of an input that is not in the store;
        ObjectStoreUnavailable when the store does not answer within HEAD_SECONDS."""
        keys = [(field, path, self._key(field, path)) for field, path in input_fields(spec)]
        try:
            async with asyncio.timeout(HEAD_SECONDS):
                for field, path, key in keys:
                    try:
                        await self._store.head(self._location.bucket, key)
                    except StoredObjectMissing:
                        raise InvalidArgument(field, f"file not found: {path!r}") from None
        except TimeoutError:
            endpoint = self._store.settings.described_endpoint
            raise ObjectStoreUnavailable(
                f"the object store at {endpoint} did not answer within {HEAD_SECONDS:g} s",
                endpoint=endpoint,
            ) from None

    @contextlib.asynccontextmanager
    async def fetched(self, spec: spec_pb2.RenderSpec, folder_name: str) -> AsyncIterator[Path]:
        """A folder holding ``spec``'s inputs at their relative paths (a media root for this
        render alone), removed on the way out. InvalidArgument naming the field of an object
        that is not there; the store's own errors otherwise."""
        folder = self._folders / folder_name
        try:
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
            for field, path in input_fields(spec):
                key = self._key(field, path)
                local = folder / path
                if await asyncio.to_thread(local.exists):
                    continue  # the same file named twice (a slide shown twice)
                await asyncio.to_thread(local.parent.mkdir, parents=True, exist_ok=True)
                try:
                    size = await self._store.download_file(self._location.bucket, key, local)
                except StoredObjectMissing:
                    raise InvalidArgument(field, f"file not found: {path!r}") from None
                logger.debug("fetched %s (%d bytes)", self._location.url_of(key), size)
            yield folder
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
