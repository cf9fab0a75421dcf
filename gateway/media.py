"""Uploads into the media root (the render services' inputs) and the listing of what is there.

``POST /api/media``: the request body is the file. It is streamed to a hidden temporary file in
``<media root>/uploads`` (never held whole in memory) and counted against the upload limit as
it arrives (413); ffmpeg then reads its header in a subprocess (gateway.media_probe): a file
with neither a video nor an audio stream is refused with 422. Either way nothing is left
behind. An accepted file is renamed to a name the gateway chose (``?filename=`` only lends it
an extension) and its path relative to the media root is returned: a transcode's input path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.media_probe import probe_media
from videojob.errors import InvalidArgument
from videojob.media_header import MediaHeader

UPLOADS_FOLDER = "uploads"
MAX_LISTED_FILES = 1000
_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,10})$")


@dataclass(frozen=True)
class StoredUpload:
    path: str  # relative to the media root
    size_bytes: int
    info: MediaHeader


def stored_name(filename_hint: str | None) -> str:
    """A fresh name; the hint's extension (letters and digits only) is kept, lower-cased."""
    extension = ""
    if filename_hint:
        match = _EXTENSION.search(filename_hint)
        if match:
            extension = "." + match.group(1).lower()
    return uuid.uuid4().hex + extension


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def receive_upload(
    request: Request, media_root: Path, max_bytes: int, filename_hint: str | None
) -> StoredUpload:
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    folder = media_root / UPLOADS_FOLDER
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    name = stored_name(filename_hint)
    # Hidden and without the client's extension: ffmpeg judges the content alone.
    partial = folder / f".{uuid.uuid4().hex}.part"
    try:
        size = await _write_body(request, partial, max_bytes)
        if size == 0:
            raise InvalidArgument("body", "is empty: send the file as the request body")
        info = await probe_media(partial)
        if info is None:
            raise InvalidArgument("body", "is not a video, audio or image file ffmpeg can read")
        await asyncio.to_thread(partial.rename, folder / name)
    except BaseException:
        # Also when the client went away mid-upload (cancellation): leave nothing behind.
        _remove(partial)
        raise
    return StoredUpload(f"{UPLOADS_FOLDER}/{name}", size, info)


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
    first, at most ``limit``. Blocking: run it in a thread."""
    found: list[tuple[float, str, int]] = []
    if not media_root.is_dir():
        return []
    for folder, folders, files in os.walk(media_root):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(folder) / name
            try:
                info = path.lstat()
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                found.append((info.st_mtime, path.relative_to(media_root).as_posix(), info.st_size))
    found.sort(reverse=True)
    return [
        {
            "path": relative,
            "sizeBytes": size,
            "modifiedAt": datetime.fromtimestamp(mtime, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
        }
        for mtime, relative, size in found[:limit]
    ]


async def media_collection(request: Request) -> Response:
    settings = request.app.state.settings
    media_root: Path = settings.media_root
    if request.method == "GET":
        files = await asyncio.to_thread(list_media, media_root)
        return JSONResponse({"files": files})
    hint = request.query_params.get("filename")
    upload = await receive_upload(request, media_root, settings.max_upload_bytes, hint)
    return JSONResponse(upload_json(upload), status_code=201)
