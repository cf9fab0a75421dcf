"""Uploads into the media root (the render services' inputs) and the listing of what is there.

``POST /api/media``: the request body is the file. It is streamed to a hidden temporary file in
``<media root>/uploads`` (never held whole in memory) and counted against the upload limit as
it arrives (413); ffmpeg then reads its header in a subprocess (gateway.media_probe): a file
with neither a video nor an audio stream is refused with 422. Either way nothing is left
behind. An accepted file is renamed to a name the gateway chose, with the extension of the
format FFmpeg found (gateway.upload_record), and its path relative to the media root is
returned: a transcode's input path. ``?filename=`` is kept beside it as the upload's original
name (a record the listing reads), for display only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.media_probe import probe_media
from gateway.upload_record import (
    UPLOADS_FOLDER,
    UploadRecord,
    display_name,
    is_transcodable,
    looks_transcodable,
    read_record,
    record_path,
    remove_record,
    stored_extension,
    write_record,
)
from videojob.errors import InvalidArgument
from videojob.media_header import MediaHeader

if TYPE_CHECKING:
    from gateway.stored_media import StoredMedia

MAX_LISTED_FILES = 1000


@dataclass(frozen=True)
class StoredUpload:
    path: str  # relative to the media root
    size_bytes: int
    info: MediaHeader
    original_name: str | None


def stored_name(info: MediaHeader, filename_hint: str | None) -> str:
    """A fresh name, with the extension of the format FFmpeg found in the file."""
    return uuid.uuid4().hex + stored_extension(info, filename_hint)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@dataclass(frozen=True)
class CheckedUpload:
    """An upload's body, spooled and found to be media: what it is to be stored as."""

    size_bytes: int
    info: MediaHeader
    name: str  # its stored name, in the uploads folder
    original_name: str | None

    @property
    def record(self) -> UploadRecord:
        return UploadRecord(self.original_name, self.info)

    def stored(self) -> StoredUpload:
        return StoredUpload(
            f"{UPLOADS_FOLDER}/{self.name}", self.size_bytes, self.info, self.original_name
        )


def refuse_declared_too_large(request: Request, max_bytes: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)


async def spool_and_check(
    request: Request, partial: Path, max_bytes: int, filename_hint: str | None
) -> CheckedUpload:
    """Writes the body to ``partial`` (413 past ``max_bytes``) and has FFmpeg read it (422 for
    an empty body or one that is no media). The caller removes ``partial``."""
    size = await _write_body(request, partial, max_bytes)
    if size == 0:
        raise InvalidArgument("body", "is empty: send the file as the request body")
    info = await probe_media(partial)
    if info is None:
        raise InvalidArgument("body", "is not a video, audio or image file ffmpeg can read")
    return CheckedUpload(size, info, stored_name(info, filename_hint), display_name(filename_hint))


async def receive_upload(
    request: Request, media_root: Path, max_bytes: int, filename_hint: str | None
) -> StoredUpload:
    refuse_declared_too_large(request, max_bytes)
    folder = media_root / UPLOADS_FOLDER
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    # Hidden and without the client's extension: ffmpeg judges the content alone.
    partial = folder / f".{uuid.uuid4().hex}.part"
    stored: Path | None = None
    try:
        upload = await spool_and_check(request, partial, max_bytes, filename_hint)
        stored = folder / upload.name
        await asyncio.to_thread(write_record, stored, upload.record)
        await asyncio.to_thread(partial.rename, stored)
    except BaseException:
        # Also when the client went away mid-upload (cancellation): leave nothing behind.
        _remove(partial)
        if stored is not None:
            remove_record(stored)
        raise
    return upload.stored()


async def _write_body(request: Request, partial: Path, max_bytes: int) -> int:
    size = 0
    handle = await asyncio.to_thread(partial.open, "xb")
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes)
            if chunk:
                await asyncio.to_thread(handle.write, chunk)
    finally:
        await asyncio.to_thread(handle.close)
    return size


def _too_large(max_bytes: int) -> HTTPException:
    return HTTPException(
        413, f"an upload must be at most {max_bytes} bytes", headers={"Connection": "close"}
    )


def upload_json(upload: StoredUpload) -> dict[str, Any]:
    info = upload.info
    return {
        "path": upload.path,
        "originalName": upload.original_name,
        "transcodable": is_transcodable(info),
        "sizeBytes": upload.size_bytes,
        "format": info.format_name,
        "durationSeconds": info.duration_seconds,
        "width": info.width,
        "height": info.height,
        "videoCodec": info.video_codec,
        "audioCodec": info.audio_codec,
    }


def list_media(media_root: Path, limit: int = MAX_LISTED_FILES) -> list[dict[str, Any]]:
    """Regular files under the media root (hidden ones and symbolic links left out), newest
    first, at most ``limit``, an upload with its original name. Blocking: run it in a thread."""
    found: list[tuple[float, str, int, bool]] = []
    if not media_root.is_dir():
        return []
    for folder, folders, files in os.walk(media_root):
        folders[:] = [name for name in folders if not name.startswith(".")]
        hidden = {name for name in files if name.startswith(".")}
        for name in files:
            if name in hidden:
                continue
            path = Path(folder) / name
            try:
                info = path.lstat()
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                relative = path.relative_to(media_root).as_posix()
                has_record = record_path(path).name in hidden
                found.append((info.st_mtime, relative, info.st_size, has_record))
    found.sort(reverse=True)
    return [_listed_file(media_root, *entry) for entry in found[:limit]]


def _listed_file(
    media_root: Path, mtime: float, relative: str, size: int, has_record: bool
) -> dict[str, Any]:
    record = read_record(media_root / relative) if has_record else None
    return listed_file(relative, size, datetime.fromtimestamp(mtime, UTC), record)


def listed_file(
    relative: str, size: int, modified: datetime, record: UploadRecord | None
) -> dict[str, Any]:
    """A file of the listing, wherever the media root is."""
    return {
        "path": relative,
        "originalName": record.original_name if record else None,
        # From what ffmpeg found at upload; for other files, from the extension.
        "transcodable": is_transcodable(record.info) if record else looks_transcodable(relative),
        "sizeBytes": size,
        "modifiedAt": modified.astimezone(UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
    }


async def media_collection(request: Request) -> Response:
    settings = request.app.state.settings
    stored_media: StoredMedia | None = request.app.state.stored_media
    hint = request.query_params.get("filename")
    if stored_media is not None:
        if request.method == "GET":
            return JSONResponse({"files": await stored_media.list_media(MAX_LISTED_FILES)})
        upload = await stored_media.receive_upload(request, settings.max_upload_bytes, hint)
        return JSONResponse(upload_json(upload), status_code=201)
    media_root: Path = settings.media_root
    if request.method == "GET":
        files = await asyncio.to_thread(list_media, media_root)
        return JSONResponse({"files": files})
    upload = await receive_upload(request, media_root, settings.max_upload_bytes, hint)
    return JSONResponse(upload_json(upload), status_code=201)
