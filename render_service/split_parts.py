"""Where a join finds its parts (and its audio render's file): the files their renders
reported, under this service's output directory (a local one, shared by the render services of
a pool), or objects under its output location in the object store, fetched into the join's own
scratch folder first. A path anywhere else is refused: a join reads parts, nothing else."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from render_service.failures import FailureCode, RenderFailure, invalid_input
from render_service.output_store import OutputStore
from render_service.split_verification import PartVideo, scan_part
from videojob.errors import (
    ObjectStoreFailed,
    ObjectStoreMisconfigured,
    ObjectStoreUnavailable,
    StoredObjectMissing,
)
from videojob.storage.location import BadLocation, S3Location, is_stored_object, parse_location

AUDIO_FIELD = "spec.join.audio_path"


def _field(index: int) -> str:
    return f"spec.join.part_paths[{index}]"


def local_file(output_dir: Path, raw: str, field: str) -> Path:
    """The file ``raw`` names (the value of ``field``), which must be a regular file in
    ``output_dir``."""
    if is_stored_object(raw):
        raise invalid_input(field, "is an object store's location; parts are local here")
    root = output_dir.resolve()
    try:
        path = Path(raw).resolve(strict=True)
    except (OSError, RuntimeError):
        raise invalid_input(field, "no such file in the output directory") from None
    if path.parent != root or not path.is_file():
        raise invalid_input(field, "is not a file in the output directory")
    return path


def _stored_key(output: OutputStore, raw: str, field: str) -> str:
    try:
        location = parse_location(raw)
    except BadLocation as why:
        raise invalid_input(field, str(why)) from None
    if not isinstance(location, S3Location):
        raise invalid_input(field, "is not an s3:// location; parts are stored there")
    key = location.prefix
    within = output.location
    if location.bucket != within.bucket or not key.startswith(within.key_prefix):
        raise invalid_input(field, f"is not under the output location {within}")
    if "/" in key.removeprefix(within.key_prefix):
        raise invalid_input(field, f"is not a file directly under {within}")
    return key


async def fetch_file(
    output: OutputStore, raw: str, field: str, folder: Path, name: str, what: str
) -> Path:
    """Downloads the object ``raw`` names (the value of ``field``; ``what`` it is, for a
    failure's message) into ``folder`` as ``name`` plus its extension."""
    key = _stored_key(output, raw, field)
    local = folder / f"{name}{os.path.splitext(key)[1]}"
    try:
        await output.store.download_file(output.location.bucket, key, local)
    except StoredObjectMissing:
        raise invalid_input(field, "no such object in the object store") from None
    except (ObjectStoreUnavailable, ObjectStoreMisconfigured, ObjectStoreFailed) as error:
        message = f"{what} could not be fetched: {error.message}"
        raise RenderFailure(FailureCode.STORAGE_UNAVAILABLE, message) from None
    return local


async def find_audio(
    raw: str, output_dir: Path, output_store: OutputStore | None, folder: Path
) -> Path:
    """The audio render's file ``raw`` names (found, or fetched into ``folder``)."""
    if output_store is None:
        return await asyncio.to_thread(local_file, output_dir, raw, AUDIO_FIELD)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    return await fetch_file(output_store, raw, AUDIO_FIELD, folder, "audio", "the audio")


async def read_parts(
    binary: str,
    raws: Sequence[str],
    output_dir: Path,
    output_store: OutputStore | None,
    folder: Path,
    on_read: Callable[[int], None],
) -> list[PartVideo]:
    """Each part in plan order, found (or fetched into ``folder``) and its video read as stored;
    ``on_read(parts read so far)`` after each. Raises unless they can be joined into the
    plan's frames (split_verification.check_parts does that, once all are read)."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    parts = []
    for index, raw in enumerate(raws):
        if output_store is None:
            path = await asyncio.to_thread(local_file, output_dir, raw, _field(index))
        else:
            path = await fetch_file(
                output_store, raw, _field(index), folder, f"part-{index}", f"part {index}"
            )
        parts.append(await scan_part(binary, path, index))
        on_read(index + 1)
    return parts
